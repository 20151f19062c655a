"""Assembling the roles: which operators run, and the processor role on its own."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client as NATS

from processors import (
    AnomalyOperator,
    ByzantineOperator,
    LivenessOperator,
    NetworkHealthOperator,
    Operator,
    Runtime,
    ThresholdRules,
    TumblingWindows,
    load_rules,
)
from swarmwatch.config import Config

log = logging.getLogger(__name__)


WINDOW_CLOSES_PER_TICK = 24  # node windows closed per 50 ms tick: bounds the stall a burst of closes can cause


def build_operators(cfg: Config, extra: Sequence[Operator] = ()) -> list[Operator]:
    """The operators the processor role runs, from configuration, plus user-supplied ones.

    Order matters for latency: threshold rules run first, so an alert goes out
    before any other work on the same message.
    """
    p = cfg.processor
    wanted = set(p.operators)
    ops: list[Operator] = []
    if "rules" in wanted:
        ops.append(ThresholdRules(load_rules(p.rules)))
    if "liveness" in wanted:
        ops.append(LivenessOperator(p.liveness_timeout_s))
    if "windows" in wanted:
        ops.append(TumblingWindows(p.windows_s, p.allowed_lateness_s, closes_per_tick=WINDOW_CLOSES_PER_TICK))
    if "network" in wanted:
        ops.append(NetworkHealthOperator(expected_peers=p.expected_peers))
    if "byzantine" in wanted:
        ops.append(ByzantineOperator())
    if "anomaly" in wanted:
        ops.append(AnomalyOperator())
    ops.extend(extra)
    return ops


def make_runtime(
    nc: NATS, cfg: Config, extra: Sequence[Operator] = (), fresh: bool = False, *, plugins: bool = True
) -> Runtime:
    """The processor role's runtime: configured operators, then installed plugins (``swarmwatch.operators``
    entry points, unless ``plugins=False``), then ``extra``. Raises PluginError for a plugin that fails to load."""
    from swarmwatch.plugins import load_installed

    p = cfg.processor
    custom = [*load_installed(), *extra] if plugins else list(extra)
    return Runtime(
        nc,
        build_operators(cfg, custom),
        name=p.name,
        filter_subjects=p.filter or (),
        checkpoint_interval_s=p.checkpoint_interval_s,
        state_replicas=cfg.retention.replicas,
        fresh=fresh,
        partition=(int(p.partition.split("/")[0]), int(p.partition.split("/")[1])),
    )


async def export_watches(nc: NATS, operators: Sequence[Operator], processor: str) -> int:
    """Publish the thresholds of the running rules to the ``sw_watch`` bucket for producers' edge sampling.

    Returns how many; a processor without threshold rules deletes its record.
    A failure is logged, never fatal: producers then just publish on their tick.
    """
    from nats.js.errors import KeyNotFoundError

    from schemas.watches import WATCH_BUCKET, encode_watches, watch_key

    watches = [w for op in operators if isinstance(op, ThresholdRules) for w in op.watches()]
    try:
        kv = await nc.jetstream().key_value(WATCH_BUCKET)
        if watches:
            await kv.put(watch_key(processor), encode_watches(watches))
        else:
            try:
                await kv.delete(watch_key(processor))
            except KeyNotFoundError:
                pass
    except Exception as exc:  # noqa: BLE001 - edge sampling is an optimisation; alerting goes on without it
        log.warning("could not publish watched thresholds to %s: %s: %s", WATCH_BUCKET, type(exc).__name__, exc)
        return 0
    log.info("published %d watched thresholds to %s", len(watches), WATCH_BUCKET)
    return len(watches)


async def run_until_stopped(stop: asyncio.Event) -> None:
    """Wait for ``stop`` (set by a signal handler)."""
    await stop.wait()
