"""Stream provisioning: TELEMETRY (inputs) and DERIVED (what processors produce)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from schemas.subjects import DERIVED_SUBJECTS, TELEMETRY_SUBJECTS
from schemas.watches import WATCH_BUCKET

TELEMETRY = "TELEMETRY"
DERIVED = "DERIVED"
STATE_BUCKET = "sw_state"  # processor checkpoints
DEFAULT_TELEMETRY_MAX_AGE_S = 7 * 86_400.0
DEFAULT_DERIVED_MAX_AGE_S = 30 * 86_400.0
DEFAULT_MAX_BYTES = 8 * 1024**3
DEFAULT_DUPLICATE_WINDOW_S = 600.0  # covers a checkpoint interval plus a restart


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Retention of one stream: age in seconds, size in bytes, replicas (1, 3 or 5)."""

    max_age_s: float
    max_bytes: int = DEFAULT_MAX_BYTES
    replicas: int = 1
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S


def stream_configs(
    telemetry: StreamLimits | None = None, derived: StreamLimits | None = None
) -> list[StreamConfig]:
    """The two stream configs, file-backed, oldest discarded at the limits."""
    t = telemetry or StreamLimits(DEFAULT_TELEMETRY_MAX_AGE_S)
    d = derived or StreamLimits(DEFAULT_DERIVED_MAX_AGE_S)
    return [
        StreamConfig(
            name=name,
            subjects=list(subs),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=lim.max_age_s,
            max_bytes=lim.max_bytes,
            num_replicas=lim.replicas,
            duplicate_window=lim.duplicate_window_s,
            allow_direct=True,
        )
        for name, subs, lim in ((TELEMETRY, TELEMETRY_SUBJECTS, t), (DERIVED, DERIVED_SUBJECTS, d))
    ]


async def ensure_streams(
    js: JetStreamContext, telemetry: StreamLimits | None = None, derived: StreamLimits | None = None
) -> None:
    """Create the streams, or update their limits if they exist. Idempotent."""
    for cfg in stream_configs(telemetry, derived):
        try:
            await js.stream_info(cfg.name)
        except NotFoundError:
            await js.add_stream(cfg)
            continue
        try:
            await js.update_stream(cfg)
        except BadRequestError as exc:
            raise RuntimeError(f"stream {cfg.name} exists with an incompatible config: {exc}") from exc
    replicas = (telemetry or StreamLimits(DEFAULT_TELEMETRY_MAX_AGE_S)).replicas
    await ensure_state_store(js, replicas)
    await ensure_watch_bucket(js, replicas)


async def ensure_watch_bucket(js: JetStreamContext, replicas: int = 1) -> None:
    """The KV bucket where processors publish the thresholds producers sample fast (schemas.watches)."""
    try:
        await js.key_value(WATCH_BUCKET)
    except NotFoundError:
        try:
            await js.create_key_value(KeyValueConfig(bucket=WATCH_BUCKET, history=1, replicas=replicas))
        except BadRequestError:  # created concurrently by another process
            await js.key_value(WATCH_BUCKET)


async def ensure_state_store(js: JetStreamContext, replicas: int = 1) -> None:
    """The object store that holds processor checkpoints, replicated like the streams."""
    try:
        await js.object_store(STATE_BUCKET)
    except NotFoundError:
        try:
            await js.create_object_store(STATE_BUCKET, config=ObjectStoreConfig(bucket=STATE_BUCKET, replicas=replicas))
        except BadRequestError:  # created concurrently by another process
            await js.object_store(STATE_BUCKET)


async def wait_for_streams(
    js: JetStreamContext, names: tuple[str, ...] = (TELEMETRY, DERIVED), stop: Any = None, log_every_s: float = 30.0
) -> bool:
    """Wait until the streams exist (a standalone sink must not create them with default limits).

    Returns False if ``stop`` (an asyncio.Event) was set first.
    """
    import asyncio
    import logging

    log = logging.getLogger(__name__)
    waited = log_every_s
    while stop is None or not stop.is_set():
        missing = []
        for name in names:
            try:
                await js.stream_info(name)
            except NotFoundError:
                missing.append(name)
        if not missing:
            return True
        if waited >= log_every_s:
            log.warning("waiting for stream(s) %s; start `swarmwatch up` or `swarmwatch process`, which create them", ", ".join(missing))
            waited = 0.0
        await asyncio.sleep(1.0)
        waited += 1.0
    return False
