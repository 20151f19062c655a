"""Bounded spool for messages the broker has not stored: an in-memory ring plus an optional file.

New messages go to the memory ring. When the ring is over its byte limit the
oldest messages move to the spool file (when one is configured) or are dropped;
when the file is over its byte limit they are dropped. Every drop is counted.
:meth:`Spool.take` hands back the oldest messages first (file, then ring) for
replay. On close the ring is written to the file so a restarted producer
replays it; only a crash loses the ring (at most ``max_memory_bytes``).
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from pathlib import Path
from typing import NamedTuple

DEFAULT_MEMORY_BYTES = 4 * 1024 * 1024  # about 45 minutes of 1.5 KB snapshots at 1 s
DEFAULT_DISK_BYTES = 64 * 1024 * 1024
SPOOL_FILE_NAME = "spool.bin"
ITEM_OVERHEAD_BYTES = 96  # rough per-item Python object cost counted against the memory limit

_HEAD = struct.Struct("<II")  # crc32 of body, body length
_BODY_HEAD = struct.Struct("<HH")  # subject length, msg id length
MAX_RECORD_BYTES = 64 * 1024 * 1024


class SpoolItem(NamedTuple):
    """One message waiting for the broker."""

    subject: str
    msg_id: str
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.subject) + len(self.msg_id) + ITEM_OVERHEAD_BYTES


class Spool:
    """Bounded FIFO of :class:`SpoolItem` with counters ``spooled``, ``dropped`` and ``corrupt``."""

    def __init__(
        self,
        max_memory_bytes: int = DEFAULT_MEMORY_BYTES,
        directory: str | Path | None = None,
        max_disk_bytes: int = DEFAULT_DISK_BYTES,
    ) -> None:
        if max_memory_bytes < 0:
            raise ValueError(f"spool memory limit {max_memory_bytes!r} must be >= 0 bytes")
        if max_disk_bytes < 0:
            raise ValueError(f"spool disk limit {max_disk_bytes!r} must be >= 0 bytes")
        self.max_memory_bytes = max_memory_bytes
        self.max_disk_bytes = max_disk_bytes
        self._ring: deque[SpoolItem] = deque()
        self._ring_bytes = 0
        self.spooled = 0  # messages accepted into the spool
        self.dropped = 0  # messages lost to the byte limits
        self.corrupt = 0  # unreadable records found in the spool file (torn write after a crash)
        self.path: Path | None = None
        self._disk_items = 0
        self._read_pos = 0
        if directory is not None:
            d = Path(directory)
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"spool directory {str(d)!r} cannot be created: {exc}") from None
            if not os.access(d, os.W_OK):
                raise ValueError(f"spool directory {str(d)!r} is not writable")
            self.path = d / SPOOL_FILE_NAME
            self._disk_items = self._count_disk_items()

    # --- public ----------------------------------------------------------------------------

    def put(self, item: SpoolItem) -> None:
        """Keep ``item`` for later; may move or drop the oldest to stay within the limits."""
        self.spooled += 1
        self._ring.append(item)
        self._ring_bytes += item.size
        while self._ring_bytes > self.max_memory_bytes and self._ring:
            old = self._ring.popleft()
            self._ring_bytes -= old.size
            if not self._to_disk(old):
                self.dropped += 1

    def take(self, n: int) -> list[SpoolItem]:
        """Remove and return up to ``n`` of the oldest items (spool file first, then memory)."""
        out: list[SpoolItem] = []
        if self._disk_items > 0 and self.path is not None:
            out.extend(self._read_disk(n))
        while len(out) < n and self._ring:
            it = self._ring.popleft()
            self._ring_bytes -= it.size
            out.append(it)
        return out

    def flush_to_disk(self) -> int:
        """Write the memory ring to the spool file (on shutdown); returns how many items moved."""
        if self.path is None:
            return 0
        moved = 0
        while self._ring:
            it = self._ring.popleft()
            self._ring_bytes -= it.size
            if self._to_disk(it):
                moved += 1
            else:
                self.dropped += 1
        return moved

    @property
    def memory_bytes(self) -> int:
        return self._ring_bytes

    @property
    def disk_bytes(self) -> int:
        if self.path is None:
            return 0
        try:
            return max(0, self.path.stat().st_size - self._read_pos)
        except FileNotFoundError:
            return 0

    def __len__(self) -> int:
        return len(self._ring) + self._disk_items

    def __bool__(self) -> bool:
        return len(self) > 0

    # --- file ------------------------------------------------------------------------------

    def _to_disk(self, item: SpoolItem) -> bool:
        if self.path is None:
            return False
        s, m = item.subject.encode(), item.msg_id.encode()
        body = _BODY_HEAD.pack(len(s), len(m)) + s + m + item.payload
        rec = _HEAD.pack(zlib.crc32(body), len(body)) + body
        size = self._file_size()
        if size + len(rec) > self.max_disk_bytes:
            return False
        try:
            with open(self.path, "ab") as f:
                f.write(rec)
        except OSError:
            return False
        self._disk_items += 1
        return True

    def _file_size(self) -> int:
        try:
            return self.path.stat().st_size if self.path is not None else 0
        except FileNotFoundError:
            return 0

    def _read_disk(self, n: int) -> list[SpoolItem]:
        assert self.path is not None
        out: list[SpoolItem] = []
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self._disk_items = 0
            self._read_pos = 0
            return out
        with f:
            f.seek(self._read_pos)
            while len(out) < n:
                item = self._read_record(f)
                if item is None:  # end of file, or a record that cannot be read: nothing after it is usable
                    self._disk_items = len(out)
                    break
                out.append(item)
            self._read_pos = f.tell()
            self._disk_items = max(0, self._disk_items - len(out))
            end = f.seek(0, os.SEEK_END)
        if self._disk_items == 0 or self._read_pos >= end:
            # Everything read (or the rest is unreadable): start the file afresh.
            self.path.unlink(missing_ok=True)
            self._read_pos = 0
            self._disk_items = 0
        return out

    def _read_record(self, f: object) -> SpoolItem | None:
        head = f.read(_HEAD.size)  # type: ignore[attr-defined]
        if len(head) < _HEAD.size:
            if head:
                self.corrupt += 1
            return None
        crc, length = _HEAD.unpack(head)
        if length > MAX_RECORD_BYTES:
            self.corrupt += 1
            return None
        body = f.read(length)  # type: ignore[attr-defined]
        if len(body) < length or zlib.crc32(body) != crc or length < _BODY_HEAD.size:
            self.corrupt += 1
            return None
        ls, lm = _BODY_HEAD.unpack_from(body)
        p = _BODY_HEAD.size
        try:
            subject = body[p : p + ls].decode()
            msg_id = body[p + ls : p + ls + lm].decode()
        except UnicodeDecodeError:
            self.corrupt += 1
            return None
        return SpoolItem(subject, msg_id, bytes(body[p + ls + lm :]))

    def _count_disk_items(self) -> int:
        """Records in an existing spool file (left by an earlier run); a torn tail is cut off."""
        assert self.path is not None
        if not self.path.exists():
            return 0
        count = 0
        good_end = 0
        with open(self.path, "rb") as f:
            while True:
                head = f.read(_HEAD.size)
                if len(head) < _HEAD.size:
                    if head:
                        self.corrupt += 1
                    break
                crc, length = _HEAD.unpack(head)
                body = f.read(length) if length <= MAX_RECORD_BYTES else b""
                if len(body) < length or length > MAX_RECORD_BYTES or zlib.crc32(body) != crc:
                    self.corrupt += 1
                    break
                count += 1
                good_end = f.tell()
        if good_end < self._file_size():
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return count
