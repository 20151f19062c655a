"""Producers: the per-node sidecar (collectors, batching, publishing, spool), the app SDK and peer probes.

Every public name loads on first use (PEP 562), so ``python -m producers`` (what ``swarmwatch
produce`` runs) and an app that only wants the SDK load only what they use. The training-update
helpers (numpy) live in :mod:`producers.training`; import them from there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from swarmwatch.lazy import lazy_exports

if TYPE_CHECKING:
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
    from producers.scrape import Scraper, ScrapeTarget
    from producers.checks import HealthChecker, HttpCheck
    from producers.otlp import OtlpMapper, OtlpReceiver, ResourceMapping
    from producers.probes import (
        JitterEstimator,
        PeerProber,
        ProbeResponder,
        ProbeSettings,
        ProbeWindow,
        parse_target,
        probe_subject,
        run_probes,
    )

_LAZY: dict[str, tuple[str, str]] = {
    "Scraper": ("producers.scrape", "Scraper"),
    "ScrapeTarget": ("producers.scrape", "ScrapeTarget"),
    "HealthChecker": ("producers.checks", "HealthChecker"),
    "HttpCheck": ("producers.checks", "HttpCheck"),
    "OtlpMapper": ("producers.otlp", "OtlpMapper"),
    "OtlpReceiver": ("producers.otlp", "OtlpReceiver"),
    "ResourceMapping": ("producers.otlp", "ResourceMapping"),
    "SystemCollector": ("producers.collectors", "SystemCollector"),
    "Discovery": ("producers.discovery", "Discovery"),
    "PeerTable": ("producers.discovery", "PeerTable"),
    "GpuCollector": ("producers.gpu", "GpuCollector"),
    "connect_options": ("producers.options", "connect_options"),
    "default_node_name": ("producers.options", "default_node_name"),
    "parse_interval": ("producers.options", "parse_interval"),
    "ProcessWatcher": ("producers.process", "ProcessWatcher"),
    "Publisher": ("producers.publisher", "Publisher"),
    "CounterRates": ("producers.rates", "CounterRates"),
    "SampleBuffer": ("producers.samples", "SampleBuffer"),
    "REGISTRY": ("producers.sdk", "REGISTRY"),
    "Counter": ("producers.sdk", "Counter"),
    "Gauge": ("producers.sdk", "Gauge"),
    "Registry": ("producers.sdk", "Registry"),
    "Timer": ("producers.sdk", "Timer"),
    "counter": ("producers.sdk", "counter"),
    "gauge": ("producers.sdk", "gauge"),
    "timed": ("producers.sdk", "timed"),
    "BackgroundProducer": ("producers.sidecar", "BackgroundProducer"),
    "Producer": ("producers.sidecar", "Producer"),
    "SampleSource": ("producers.sidecar", "SampleSource"),
    "SidecarTask": ("producers.sidecar", "SidecarTask"),
    "run_producer": ("producers.sidecar", "run_producer"),
    "Spool": ("producers.spool", "Spool"),
    "SpoolItem": ("producers.spool", "SpoolItem"),
    "JitterEstimator": ("producers.probes", "JitterEstimator"),
    "PeerProber": ("producers.probes", "PeerProber"),
    "ProbeResponder": ("producers.probes", "ProbeResponder"),
    "ProbeSettings": ("producers.probes", "ProbeSettings"),
    "ProbeWindow": ("producers.probes", "ProbeWindow"),
    "parse_target": ("producers.probes", "parse_target"),
    "probe_subject": ("producers.probes", "probe_subject"),
    "run_probes": ("producers.probes", "run_probes"),
}

__all__ = [
    "REGISTRY",
    "BackgroundProducer",
    "Counter",
    "CounterRates",
    "Discovery",
    "Gauge",
    "GpuCollector",
    "HealthChecker",
    "HttpCheck",
    "JitterEstimator",
    "OtlpMapper",
    "OtlpReceiver",
    "PeerProber",
    "PeerTable",
    "ProbeResponder",
    "ProbeSettings",
    "ProbeWindow",
    "ProcessWatcher",
    "Producer",
    "Publisher",
    "Registry",
    "ResourceMapping",
    "ScrapeTarget",
    "Scraper",
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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
