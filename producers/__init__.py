"""Producers: the per-node sidecar (collectors, batching, publishing, spool), the app SDK and peer probes.

Kept light: ``python -m producers`` (what ``swarmwatch produce`` runs) imports this package.
The training-update helpers (numpy) live in :mod:`producers.training`; import them from there.
"""
from __future__ import annotations

from producers.collectors import SystemCollector
from producers.discovery import Discovery, PeerTable
from producers.gpu import GpuCollector
from producers.options import connect_options, default_node_name, parse_interval
from producers.process import ProcessWatcher
from producers.publisher import Publisher
from producers.rates import CounterRates
from producers.samples import SampleBuffer
from producers.sdk import REGISTRY, Counter, Gauge, Registry, Timer, counter, gauge, timed
from producers.sidecar import BackgroundProducer, Producer, SampleSource, SidecarTask, run_producer
from producers.spool import Spool, SpoolItem

_PROBES = ("JitterEstimator", "PeerProber", "ProbeResponder", "ProbeSettings", "ProbeWindow", "parse_target", "probe_subject", "run_probes")


def __getattr__(name: str) -> object:
    """Peer-probe names load on first use, so ``python -m producers.probes`` runs cleanly."""
    if name in _PROBES:
        from producers import probes

        return getattr(probes, name)
    raise AttributeError(f"module 'producers' has no attribute {name!r}")

__all__ = [
    "REGISTRY",
    "BackgroundProducer",
    "Counter",
    "CounterRates",
    "Discovery",
    "Gauge",
    "GpuCollector",
    "JitterEstimator",
    "PeerProber",
    "PeerTable",
    "ProbeResponder",
    "ProbeSettings",
    "ProbeWindow",
    "ProcessWatcher",
    "Producer",
    "Publisher",
    "Registry",
    "SampleBuffer",
    "SampleSource",
    "SidecarTask",
    "Spool",
    "SpoolItem",
    "SystemCollector",
    "Timer",
    "connect_options",
    "counter",
    "default_node_name",
    "gauge",
    "parse_interval",
    "parse_target",
    "probe_subject",
    "run_probes",
    "run_producer",
    "timed",
]
