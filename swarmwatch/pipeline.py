"""Assembling the roles: which operators run, and the processor role on its own."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client as NATS

from processors import Operator, Runtime, ThresholdRules, TumblingWindows, load_rules
from schemas import subjects
from swarmwatch.config import Config

log = logging.getLogger(__name__)


def build_operators(cfg: Config, extra: Sequence[Operator] = ()) -> list[Operator]:
    """The operators the processor role runs, from configuration, plus user-supplied ones."""
    p = cfg.processor
    ops: list[Operator] = [  # rules first: an alert goes out before any window work on the same message
        ThresholdRules(load_rules(p.rules)),
        TumblingWindows(p.windows_s, p.allowed_lateness_s),
    ]
    ops.extend(extra)
    return ops


def make_runtime(nc: NATS, cfg: Config, extra: Sequence[Operator] = (), fresh: bool = False) -> Runtime:
    p = cfg.processor
    return Runtime(
        nc,
        build_operators(cfg, extra),
        name=p.name,
        filter_subjects=p.filter or subjects.TELEMETRY_SUBJECTS,
        fresh=fresh,
    )


async def run_until_stopped(stop: asyncio.Event) -> None:
    """Wait for ``stop`` (set by a signal handler)."""
    await stop.wait()
