"""Prometheus scrape bridge: exporters' ``/metrics`` become samples in the node's own batch.

Each target is fetched every ``interval_s`` and parsed with ``prometheus_client``'s
parser. Families map to samples as follows (``<name>`` is the sample name, with
``prefix`` prepended when one is set):

- gauge, untyped, info, stateset: ``<name>`` as read;
- counter: ``<name>:rate`` in units per second between two scrapes; the first
  scrape and a reset (the value went down) give no rate and are counted
  (:class:`producers.rates.CounterRates`, as the system collectors do);
- histogram: ``<family>:p50``/``:p95``/``:p99`` over the observations made
  between two scrapes (bucket deltas, interpolated as ``histogram_quantile``
  does), ``<family>:mean`` and ``<family>_count:rate``;
- summary: ``<family>:p<q>`` from its quantiles, ``<family>:mean`` between two
  scrapes and ``<family>_count:rate``.

Every sample keeps its labels plus ``instance`` (the target's name; an exporter's
own ``instance`` label becomes ``exported_instance``), within the
caps: at most 16 labels, values of at most 256 characters, and ``max_series``
samples per scrape; what exceeds a cap is dropped and counted. Each scrape's
samples are published once, in the next batch. Per target the bridge also
reports ``scrape.up``, ``scrape.duration_ms``, ``scrape.samples`` and
``scrape.dropped`` (label ``instance``).
"""
from __future__ import annotations

import asyncio
import fnmatch
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from producers.fetch import Response, aget, check_url, tls_context
from producers.options import entry_timing
from producers.rates import CounterRates
from producers.schedule import run_every
from schemas.models import MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, Sample, check_metric_name

if TYPE_CHECKING:
    from producers.publisher import Publisher

log = logging.getLogger("swarmwatch.producer.scrape")

DEFAULT_SCRAPE_INTERVAL_S = 10.0
DEFAULT_SCRAPE_TIMEOUT_S = 10.0  # capped at the interval
DEFAULT_MAX_SERIES = 2_000  # per target and scrape
DEFAULT_QUANTILES = (0.5, 0.95, 0.99)
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
_TARGET_KEYS = {"url", "interval", "timeout", "name", "allow", "deny", "labels", "drop_labels", "max_series",
                "prefix", "quantiles", "tls_verify", "ca"}


def quantile_name(q: float) -> str:
    """0.5 -> ``p50``, 0.999 -> ``p99.9``."""
    return "p" + f"{q * 100:.6g}"


def _strings(raw: Any, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"scrape {key!r} must be a list of strings, got {raw!r}")
    return tuple(raw)


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One exporter to scrape; ``allow``/``deny`` are globs on family names (``node_cpu_*``)."""

    url: str
    interval_s: float = DEFAULT_SCRAPE_INTERVAL_S
    timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S
    name: str = ""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    drop_labels: tuple[str, ...] = ()
    max_series: int = DEFAULT_MAX_SERIES
    prefix: str = ""
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    tls_verify: bool = True
    ca: str | None = None

    def __post_init__(self) -> None:
        parts = check_url(self.url, "scrape url")
        if not self.name:
            object.__setattr__(self, "name", parts.netloc)
        if self.max_series < 1:
            raise ValueError(f"scrape max_series {self.max_series!r} must be >= 1")
        if not 0 < self.timeout_s:
            raise ValueError(f"scrape timeout {self.timeout_s!r} must be > 0")
        object.__setattr__(self, "timeout_s", min(self.timeout_s, self.interval_s))
        for q in self.quantiles:
            if not 0.0 < q < 1.0:
                raise ValueError(f"scrape quantile {q!r} must be between 0 and 1")
        if self.prefix:
            check_metric_name(self.prefix + "x")
        if len(self.labels) + 1 > MAX_LABELS:
            raise ValueError(f"scrape labels {dict(self.labels)!r}: at most {MAX_LABELS - 1} extra labels")
        if self.ca is not None or not self.tls_verify:
            tls_context(self.ca, self.tls_verify)  # checks the CA file now

    @classmethod
    def from_config(cls, raw: str | Mapping[str, Any], default_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S) -> ScrapeTarget:
        """A target from a URL or a mapping (``url``, ``interval``, ``timeout``, ``allow``, ...); ValueError names a bad key."""
        if isinstance(raw, str):
            return cls(raw, default_interval_s, min(DEFAULT_SCRAPE_TIMEOUT_S, default_interval_s))
        interval, timeout = entry_timing(raw, "scrape", _TARGET_KEYS, default_interval_s, DEFAULT_SCRAPE_TIMEOUT_S)
        labels = raw.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise ValueError(f"scrape 'labels' must be a mapping, got {labels!r}")
        quantiles = raw.get("quantiles", DEFAULT_QUANTILES)
        try:
            qs = tuple(float(q) for q in quantiles)
        except (TypeError, ValueError):
            raise ValueError(f"scrape 'quantiles' must be a list of numbers, got {quantiles!r}") from None
        return cls(
            url=str(raw["url"]),
            interval_s=interval,
            timeout_s=timeout,
            name=str(raw.get("name") or ""),
            allow=_strings(raw.get("allow"), "allow"),
            deny=_strings(raw.get("deny"), "deny"),
            labels={str(k): str(v) for k, v in labels.items()},
            drop_labels=_strings(raw.get("drop_labels"), "drop_labels"),
            max_series=int(raw.get("max_series", DEFAULT_MAX_SERIES)),
            prefix=str(raw.get("prefix") or ""),
            quantiles=qs,
            tls_verify=bool(raw.get("tls_verify", True)),
            ca=raw.get("ca"),
        )

    def wants(self, family: str) -> bool:
        """Whether a family passes the allow-list (empty: all) and not the deny-list.

        A counter matches by either of its names (``x_total`` as exposed, ``x`` as parsed).
        """
        names = (family, family[:-6]) if family.endswith("_total") else (family, family + "_total")
        if self.allow and not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.allow):
            return False
        return not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.deny)

    def prefilter(self, text: str) -> str:
        """Only the lines of wanted families, before parsing (parsing dominates a scrape's cost)."""
        if not self.allow and not self.deny:
            return text
        keep: list[str] = []
        current: str | None = None
        wanted = False
        for line in text.splitlines(keepends=True):
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    if parts[2] != current:
                        current, wanted = parts[2], self.wants(parts[2])
                    if wanted:
                        keep.append(line)
                continue
            name = line.split("{", 1)[0].split(None, 1)[0] if line.strip() else ""
            if not name:
                continue
            if current is None or not name.startswith(current):
                current, wanted = name, self.wants(name)
            if wanted:
                keep.append(line)
        return "".join(keep)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper_bound, count)`` buckets sorted by bound, as PromQL's
    ``histogram_quantile`` computes it (linear within a bucket; the +Inf bucket gives the highest finite bound)."""
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(bound):
                return buckets[i - 1][0] if i > 0 else None
            if i == 0 and bound <= 0:
                return bound
            lower = prev_bound if i > 0 else (0.0 if bound > 0 else bound)
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return bound
            return lower + (bound - lower) * (rank - prev_count) / in_bucket
        prev_bound, prev_count = bound, count
    return None


class ExpositionMapper:
    """Turns successive scrapes of one target into samples; holds the counter and bucket baselines."""

    def __init__(self, target: ScrapeTarget) -> None:
        self.target = target
        self.rates = CounterRates()
        self._buckets: dict[str, tuple[list[tuple[float, float]], float]] = {}
        self.dropped = 0  # samples over max_series or the label caps, in total
        self.last_dropped = 0
        self.parse_errors = 0

    def _labels(self, raw: Mapping[str, str], drop: tuple[str, ...] = ()) -> dict[str, str] | None:
        t = self.target
        out = {k: v for k, v in raw.items() if k not in t.drop_labels and k not in drop}
        out.update(t.labels)
        if "instance" in out and out["instance"] != t.name:  # the exporter's own, kept as Prometheus does
            out["exported_instance"] = out["instance"]
        out["instance"] = t.name
        if len(out) > MAX_LABELS or any(len(k) > MAX_LABEL_KEY_LEN or len(v) > MAX_LABEL_VALUE_LEN for k, v in out.items()):
            return None
        return out

    def convert(self, text: str, now_s: float) -> list[Sample]:
        """Samples for one scrape's exposition text taken at monotonic time ``now_s``; ValueError if unparsable."""
        from prometheus_client.parser import text_string_to_metric_families

        t = self.target
        out: list[Sample] = []
        dropped = 0

        def add(name: str, value: float, labels: dict[str, str] | None, unit: str | None = None) -> None:
            nonlocal dropped
            if labels is None or len(out) >= t.max_series or not math.isfinite(value):
                dropped += 1
                return
            try:
                out.append(Sample(t.prefix + name, float(value), unit, labels).validate())
            except (ValueError, TypeError):
                dropped += 1

        try:
            families = list(text_string_to_metric_families(t.prefilter(text)))
        except Exception as exc:  # noqa: BLE001 - the parser raises ValueError and friends on bad text
            self.parse_errors += 1
            raise ValueError(f"exposition from {t.url} is not the Prometheus text format: {exc}") from None
        for fam in families:
            if not t.wants(fam.name):
                continue
            if fam.type == "counter":
                for s in fam.samples:
                    if s.name.endswith("_created"):
                        continue
                    labels = self._labels(s.labels)
                    key = _key(s.name, s.labels)
                    r = self.rates.rate(key, s.value, now_s)
                    if r is not None:
                        add(s.name + ":rate", r, labels, "/s")
            elif fam.type in ("histogram", "gaugehistogram"):
                self._histogram(fam, now_s, add)
            elif fam.type == "summary":
                self._summary(fam, now_s, add)
            else:  # gauge, untyped/unknown, info, stateset
                for s in fam.samples:
                    if s.name.endswith("_created"):
                        continue
                    add(s.name, s.value, self._labels(s.labels))
        self.last_dropped = dropped
        self.dropped += dropped
        return out

    def _histogram(self, fam: Any, now_s: float, add: Any) -> None:
        groups: dict[str, tuple[dict[str, str], list[tuple[float, float]], dict[str, float]]] = {}
        for s in fam.samples:
            base = {k: v for k, v in s.labels.items() if k != "le"}
            key = _key(fam.name, base)
            g = groups.setdefault(key, (base, [], {}))
            if s.name.endswith("_bucket") and "le" in s.labels:
                try:
                    g[1].append((float(s.labels["le"]), s.value))
                except ValueError:
                    continue
            elif s.name.endswith("_count") or s.name.endswith("_gcount"):
                g[2]["count"] = s.value
            elif s.name.endswith("_sum") or s.name.endswith("_gsum"):
                g[2]["sum"] = s.value
        for key, (base, buckets, extra) in groups.items():
            labels = self._labels(base)
            buckets.sort()
            prev = self._buckets.get(key)
            self._buckets[key] = (buckets, now_s)
            if "count" in extra:
                r = self.rates.rate(key + "|count", extra["count"], now_s)
                if r is not None:
                    add(fam.name + "_count:rate", r, labels, "/s")
            self._mean(fam.name, key, extra, now_s, labels, add)
            if prev is None or [b for b, _ in prev[0]] != [b for b, _ in buckets]:
                continue
            delta = [(b, c - pc) for (b, c), (_, pc) in zip(buckets, prev[0])]
            if any(d < 0 for _, d in delta):
                self.rates.resets += 1
                continue
            for q in self.target.quantiles:
                v = bucket_quantile(q, delta)
                if v is not None:
                    add(f"{fam.name}:{quantile_name(q)}", v, labels)

    def _summary(self, fam: Any, now_s: float, add: Any) -> None:
        groups: dict[str, tuple[dict[str, str], dict[str, float]]] = {}
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            base = {k: v for k, v in s.labels.items() if k != "quantile"}
            key = _key(fam.name, base)
            g = groups.setdefault(key, (base, {}))
            if "quantile" in s.labels and s.name == fam.name:
                try:
                    q = float(s.labels["quantile"])
                except ValueError:
                    continue
                if not math.isnan(s.value):
                    add(f"{fam.name}:{quantile_name(q)}", s.value, self._labels(base))
            elif s.name.endswith("_count"):
                g[1]["count"] = s.value
            elif s.name.endswith("_sum"):
                g[1]["sum"] = s.value
        for key, (base, extra) in groups.items():
            labels = self._labels(base)
            if "count" in extra:
                r = self.rates.rate(key + "|count", extra["count"], now_s)
                if r is not None:
                    add(fam.name + "_count:rate", r, labels, "/s")
            self._mean(fam.name, key, extra, now_s, labels, add)

    def _mean(self, family: str, key: str, extra: dict[str, float], now_s: float, labels: dict[str, str] | None,
              add: Any) -> None:
        """Mean observation between two scrapes: delta sum / delta count (none when nothing was observed)."""
        if "count" not in extra or "sum" not in extra:
            return
        dc = self.rates.delta(key + "|mcount", extra["count"], now_s)
        ds = self.rates.delta(key + "|msum", extra["sum"], now_s)
        if dc is not None and ds is not None and dc[0] > 0:
            add(family + ":mean", ds[0] / dc[0], labels)


def _key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


class Scraper:
    """Scrapes its targets on their own intervals; :meth:`samples` hands each finished scrape to the next batch.

    ``samples`` is a :data:`producers.sidecar.SampleSource` and :meth:`run` a
    :data:`producers.sidecar.SidecarTask`, so the sidecar needs nothing else.
    """

    def __init__(self, targets: Iterable[ScrapeTarget], max_pending: int = 4) -> None:
        self.targets = list(targets)
        self.mappers = [ExpositionMapper(t) for t in self.targets]
        self._pending: list[list[Sample]] = []
        self.max_pending = max_pending  # scrapes waiting for a batch; older ones are dropped and counted
        self.overflow = 0
        self.scrapes = 0
        self.failures = 0

    def samples(self) -> list[Sample]:
        """Everything scraped since the last call (the sidecar calls this once per tick)."""
        pending, self._pending = self._pending, []
        return [s for chunk in pending for s in chunk]

    async def scrape_once(self, i: int) -> list[Sample]:
        """Scrape target ``i`` now and queue its samples; returns them (health samples included)."""
        t, mapper = self.targets[i], self.mappers[i]
        ctx = tls_context(t.ca, t.tls_verify) if t.url.startswith("https") else None
        resp: Response = await aget(t.url, t.timeout_s, context=ctx, accept=ACCEPT)
        self.scrapes += 1
        inst = {"instance": t.name}
        samples: list[Sample] = []
        up = 0.0
        if resp.error is None and 200 <= resp.status < 300:
            try:
                t0 = time.perf_counter()
                text = resp.body.decode("utf-8", "replace")
                samples = mapper.convert(text, time.monotonic())
                log.debug("scraped %s: %d samples in %.1f ms", t.url, len(samples), (time.perf_counter() - t0) * 1e3)
                up = 1.0
            except ValueError as exc:
                log.warning("scrape %s: %s", t.url, exc)
        else:
            log.debug("scrape %s failed: %s", t.url, resp.error or f"HTTP {resp.status}")
        if up == 0.0:
            self.failures += 1
        samples += [
            Sample("scrape.up", up, None, inst),
            Sample("scrape.duration_ms", resp.latency_ms, "ms", inst),
            Sample("scrape.samples", float(len(samples)), None, inst),
            Sample("scrape.dropped", float(mapper.last_dropped if up else 0), None, inst),
        ]
        self._pending.append(samples)
        if len(self._pending) > self.max_pending:
            self.overflow += len(self._pending.pop(0))
        return samples

    async def _loop(self, i: int, stop: asyncio.Event) -> None:
        def failed() -> None:
            self.failures += 1
            log.exception("scrape of %s failed", self.targets[i].url)

        await run_every(self.targets[i].interval_s, stop, lambda: self.scrape_once(i), failed)

    async def run(self, publisher: Publisher | None, stop: asyncio.Event) -> None:
        """Scrape every target until ``stop`` (a sidecar task; the publisher is not needed)."""
        await asyncio.gather(*(self._loop(i, stop) for i in range(len(self.targets))))
