"""The bounded spool: memory ring, spill to file, replay oldest first, limits counted."""
from __future__ import annotations

from pathlib import Path

import pytest

from producers.spool import ITEM_OVERHEAD_BYTES, SPOOL_FILE_NAME, Spool, SpoolItem


def _item(i: int, size: int = 100) -> SpoolItem:
    return SpoolItem(f"sw.metrics.c.n{i % 3}", f"n:{i}", bytes([i % 256]) * size)


def _per_item(size: int = 100) -> int:
    return _item(0, size).size


def test_memory_ring_keeps_the_newest_and_counts_what_it_drops() -> None:
    sp = Spool(max_memory_bytes=_per_item() * 3)
    for i in range(5):
        sp.put(_item(i))
    assert sp.spooled == 5
    assert sp.dropped == 2
    assert [it.msg_id for it in sp.take(10)] == ["n:2", "n:3", "n:4"]
    assert len(sp) == 0 and sp.memory_bytes == 0


def test_overflow_goes_to_the_file_and_replays_oldest_first(tmp_path: Path) -> None:
    sp = Spool(max_memory_bytes=_per_item() * 2, directory=tmp_path)
    for i in range(6):
        sp.put(_item(i))
    assert sp.dropped == 0
    assert len(sp) == 6
    assert sp.disk_bytes > 0
    got = [it.msg_id for it in sp.take(4)] + [it.msg_id for it in sp.take(4)]
    assert got == [f"n:{i}" for i in range(6)]
    assert not (tmp_path / SPOOL_FILE_NAME).exists()  # fully replayed: file removed


def test_items_survive_the_file_round_trip_unchanged(tmp_path: Path) -> None:
    sp = Spool(max_memory_bytes=0, directory=tmp_path)
    original = SpoolItem("sw.metrics.c-1.node_2", "node_2:ab12:77", b'{"x": "\xc3\xa9"}' + bytes(range(256)))
    sp.put(original)
    assert sp.take(1) == [original]


def test_file_is_bounded_in_bytes_and_overflow_is_counted(tmp_path: Path) -> None:
    rec = 100 + 8 + 4 + len("sw.metrics.c.n0") + len("n:0")  # payload + headers + names
    sp = Spool(max_memory_bytes=0, directory=tmp_path, max_disk_bytes=rec * 3)
    for i in range(5):
        sp.put(_item(i))
    assert len(sp) == 3
    assert sp.dropped == 2
    assert (tmp_path / SPOOL_FILE_NAME).stat().st_size <= rec * 3


def test_close_writes_the_ring_to_the_file_and_a_new_spool_replays_it(tmp_path: Path) -> None:
    sp = Spool(directory=tmp_path)
    for i in range(3):
        sp.put(_item(i))
    assert sp.flush_to_disk() == 3
    again = Spool(directory=tmp_path)  # the producer restarted
    assert len(again) == 3
    assert [it.msg_id for it in again.take(10)] == ["n:0", "n:1", "n:2"]


def test_a_torn_record_at_the_end_of_the_file_is_cut_off_and_counted(tmp_path: Path) -> None:
    sp = Spool(max_memory_bytes=0, directory=tmp_path)
    for i in range(3):
        sp.put(_item(i))
    path = tmp_path / SPOOL_FILE_NAME
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # crash in the middle of the last write
    again = Spool(directory=tmp_path)
    assert again.corrupt == 1
    assert [it.msg_id for it in again.take(10)] == ["n:0", "n:1"]


def test_without_a_directory_nothing_touches_the_disk(tmp_path: Path) -> None:
    sp = Spool(max_memory_bytes=ITEM_OVERHEAD_BYTES)
    sp.put(_item(1))
    assert sp.dropped == 1 and sp.disk_bytes == 0
    assert list(tmp_path.iterdir()) == []


def test_unwritable_spool_directory_is_refused_with_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be created") as err:
        Spool(directory=blocker / "sub")
    assert str(blocker / "sub") in str(err.value)
