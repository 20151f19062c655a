"""Hostile input at the wire contract: length limits refuse oversized fields, dead letters always fit."""
from __future__ import annotations

import asyncio
import hashlib
import time

import nats
import pytest

from processors import Runtime, ThresholdRules
from schemas import DeadLetter, DecodeError, MetricBatch, Sample, decode, decode_batch, encode, subjects
from schemas.models import MAX_DEAD_LETTER_DATA, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_UNIT_LEN
from swarmwatch.streams import ensure_streams
from tests.support import stored, wait_for

NATS_MAX_PAYLOAD = 1024 * 1024


def _batch_json(sample: str) -> bytes:
    return (
        b'{"cluster":"c1","node":"n1","ts":' + str(time.time()).encode() + b',"samples":[' + sample.encode() + b"]}"
    )


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ('{"name":"cpu","value":1,"unit":"' + "u" * 900_000 + '"}', "unit"),
        ('{"name":"cpu","value":1,"labels":{"' + "k" * 100_000 + '":"v"}}', "labels"),
        ('{"name":"cpu","value":1,"labels":{"k":"' + "v" * (MAX_LABEL_VALUE_LEN + 1) + '"}}', "labels"),
        ('{"name":"cpu","value":1,"labels":{"":"v"}}', "labels"),
        ('{"name":"' + "n" * 201 + '","value":1}', "name"),
    ],
    ids=["900kB-unit", "100kB-label-key", "long-label-value", "empty-label-key", "long-name"],
)
def test_oversized_fields_are_refused_at_decode_with_a_reason_naming_the_field(sample: str, expected: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(_batch_json(sample))
    assert expected in str(info.value) and "length" in str(info.value)


def test_samples_built_in_code_are_held_to_the_same_limits() -> None:
    with pytest.raises(ValueError, match="unit"):
        Sample("cpu", 1.0, unit="u" * (MAX_UNIT_LEN + 1)).validate()
    with pytest.raises(ValueError, match="label key"):
        Sample("cpu", 1.0, labels={"k" * (MAX_LABEL_KEY_LEN + 1): "v"}).validate()
    with pytest.raises(ValueError, match="value is"):
        Sample("cpu", 1.0, labels={"k": "v" * (MAX_LABEL_VALUE_LEN + 1)}).validate()
    assert Sample("cpu", 1.0, unit="%", labels={"core": "0"}).validate().unit == "%"


def test_a_dead_letter_of_a_large_input_is_truncated_but_keeps_its_size_and_hash() -> None:
    data = bytes(range(256)) * 4000  # 1,024,000 bytes
    dl = DeadLetter.of("processor", "sw.metrics.c1.n1", "x" * 100_000, data)
    wire = encode(dl)
    assert len(wire) < NATS_MAX_PAYLOAD
    back = decode(wire, DeadLetter)
    assert back.truncated and back.size == len(data) and back.data == data[:MAX_DEAD_LETTER_DATA]
    assert back.sha256 == hashlib.sha256(data).hexdigest()
    assert len(back.reason) <= 4096 and back.reason.endswith("[truncated]")
    small = DeadLetter.of("processor", "sw.metrics.c1.n1", "bad", b"{x")
    assert not small.truncated and small.data == b"{x" and small.size == 2


async def test_a_rejected_22000_sample_batch_still_gets_its_dead_letter(nc: nats.NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    samples = [Sample(f"app.metric.{i:06d}", 12345.678) for i in range(22_000)]
    data = encode({"cluster": "c1", "node": "n1", "ts": time.time(), "samples": samples})
    assert 900_000 < len(data) < NATS_MAX_PAYLOAD  # fits as input; its base64 would not fit as a dead letter
    rt = Runtime(nc, [ThresholdRules([])], name="p-big", checkpoint_interval_s=0.2)
    await rt.start()
    try:
        await js.publish(subjects.metrics("c1", "n1"), data)
        await wait_for(lambda: rt.stats.invalid >= 1)
        dead: list[DeadLetter] = []

        async def arrived() -> bool:
            dead[:] = [decode(d, DeadLetter) for d in await stored(js, "sw.dlq.>")]
            return bool(dead)

        for _ in range(100):
            if await arrived():
                break
            await asyncio.sleep(0.1)
    finally:
        await rt.stop()
    assert len(dead) == 1
    dl = dead[0]
    assert "22000 samples" in dl.reason and dl.truncated
    assert dl.size == len(data) and dl.sha256 == hashlib.sha256(data).hexdigest()
    assert dl.data == data[:MAX_DEAD_LETTER_DATA]
