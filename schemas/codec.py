"""Fast JSON codec (msgspec) with validation on decode.

``decode_batch(b)`` and friends raise :class:`DecodeError` whose message says
exactly what was wrong; callers send the bytes to the DLQ with that reason.
"""
from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from schemas.models import Alert, DeadLetter, Event, HealthScore, MetricBatch, TrustScore, WindowAggregate

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (MetricBatch, Event, WindowAggregate, Alert, TrustScore, HealthScore, DeadLetter)
}


class DecodeError(ValueError):
    """Bytes that are not a valid message of the expected type."""


def encode(obj: Any) -> bytes:
    """Encode a model (or any msgspec-encodable value) to JSON bytes."""
    return _encoder.encode(obj)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode and validate ``data`` as ``type_``; DecodeError names the problem."""
    dec = _decoders.get(type_)
    try:
        if dec is None:
            return msgspec.json.decode(data, type=type_)
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {type_.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"malformed JSON for {type_.__name__}: {exc}") from None
    except ValueError as exc:  # SubjectError and friends raised outside msgspec wrapping
        raise DecodeError(f"invalid {type_.__name__}: {exc}") from None
    except RecursionError:  # e.g. a payload of 5,000 nested lists: msgspec gives up past Python's recursion limit
        raise DecodeError(f"malformed JSON for {type_.__name__}: nested too deeply") from None


METRICS_PREFIX = "sw.metrics."
EVENTS_PREFIX = "sw.events."


def decode_telemetry(subject: str, data: bytes) -> MetricBatch | Event:
    """Decode a TELEMETRY message and check that its subject names its payload's cluster/node (and event kind).

    The one place this identity check lives: the processors' dispatch step and the file sinks' rows both
    call it. DecodeError when the bytes or the subject do not fit.
    """
    if subject.startswith(METRICS_PREFIX):
        b = decode(data, MetricBatch)
        tok = subject.split(".")
        if len(tok) != 4 or tok[2] != b.cluster or tok[3] != b.node:
            raise DecodeError(f"subject {subject!r} does not match payload cluster/node {b.cluster!r}/{b.node!r}")
        return b
    if subject.startswith(EVENTS_PREFIX):
        e = decode(data, Event)
        tok = subject.split(".", 4)
        if len(tok) != 5 or tok[2] != e.cluster or tok[3] != e.node or tok[4] != e.kind:
            raise DecodeError(
                f"subject {subject!r} does not match payload cluster/node/kind {e.cluster!r}/{e.node!r}/{e.kind!r}"
            )
        return e
    raise DecodeError(f"unexpected subject {subject!r}; expected sw.metrics.* or sw.events.*")


def decode_batch(data: bytes) -> MetricBatch:
    return decode(data, MetricBatch)


def decode_event(data: bytes) -> Event:
    return decode(data, Event)


def decode_alert(data: bytes) -> Alert:
    return decode(data, Alert)


def to_builtins(obj: Any) -> Any:
    """Model -> plain dicts/lists (enums as their values) for JSON, Arrow or the API."""
    return msgspec.to_builtins(obj)


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) for every wire model, for producers in other languages."""
    from schemas.models import WIRE_MODELS

    (schemas_, components) = msgspec.json.schema_components(list(WIRE_MODELS.values()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "swarmwatch wire models",
        "description": "Messages on sw.* subjects. Timestamps are UNIX seconds; values finite.",
        "$defs": components,
        "oneOf": list(schemas_),
    }
