"""Tumbling event-time windows: count, min, max, mean, sum, p50, p95, p99 per node and series.

Raw values are kept once, in base windows (the smallest size, default 10 s);
larger sizes (default 1 min) are merged from the base windows they contain.
A node's windows close when its watermark (newest event time minus
``allowed_lateness_s``) passes their end, or on a timer when the node has
been quiet for a base window plus the lateness, so a silent node still
closes its windows. Samples for a closed window are counted as late.
"""
from __future__ import annotations

import math
from array import array

import numpy as np
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import MetricBatch, Sample, SeriesStats, WindowAggregate, series_key, subjects

from processors.cardinality import CardinalityLimiter
from processors.operator import Emit, Operator

DEFAULT_WINDOWS_S = (10.0, 60.0)
DEFAULT_ALLOWED_LATENESS_S = 5.0
DEFAULT_MAX_NODES = 100_000
DEFAULT_MAX_SERIES_PER_NODE = 2_000
DEFAULT_MAX_SERIES_PER_CLUSTER = 1_000_000
DEFERRED_TICK_S = 0.05  # tick period when closing is deferred
QUIET_SCAN_S = 1.0  # how often silent nodes are looked for
DEFAULT_MAX_ROWS_PER_WINDOW = 10_000  # batches per node and base window; beyond this they are dropped and counted



_last_layout: list[object] = [None, None, None]


def layout(batch: MetricBatch) -> tuple[list[str], list[dict[str, str] | None]]:
    """(names, labels) of a batch's samples, computed once per batch for all operators."""
    cache = _last_layout
    if cache[0] is batch:
        return cache[1], cache[2]  # type: ignore[return-value]
    samples = batch.samples
    names = [x.name for x in samples]
    labels = [x.labels for x in samples]
    cache[0], cache[1], cache[2] = batch, names, labels
    return names, labels


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(metric: str, values: list[float], last: float, labels: dict[str, str] | None, unit: str | None) -> SeriesStats:
    """Statistics of one series' values in one window."""
    s = sorted(values)
    total = math.fsum(values)
    return SeriesStats(
        metric=metric,
        count=len(values),
        min=s[0],
        max=s[-1],
        mean=total / len(values),
        sum=total,
        p50=quantile(s, 0.50),
        p95=quantile(s, 0.95),
        p99=quantile(s, 0.99),
        last=last,
        labels=labels,
        unit=unit,
    )


_SeriesMeta = tuple[str, "dict[str, str] | None", "str | None"]


def summarize_many(items: list[tuple[_SeriesMeta, list[float], float]]) -> list[SeriesStats]:
    """Statistics of many series at once; series of equal length are sorted as one numpy array."""
    by_len: dict[int, list[int]] = {}
    for i, (_, vals, _) in enumerate(items):
        by_len.setdefault(len(vals), []).append(i)
    out: list[SeriesStats | None] = [None] * len(items)
    for n, idxs in by_len.items():
        if len(idxs) < 4:
            for i in idxs:
                (name, labels, unit), vals, last = items[i]
                out[i] = summarize(name, vals, last, labels, unit)
            continue
        arr = np.array([items[i][1] for i in idxs], dtype=np.float64)
        stats = summarize_array(arr, [items[i][0] for i in idxs], [items[i][2] for i in idxs])
        for j, i in enumerate(idxs):
            out[i] = stats[j]
    return out  # type: ignore[return-value]


def summarize_array(arr: np.ndarray, metas: Sequence[_SeriesMeta], lasts: Sequence[float]) -> list[SeriesStats]:
    """Statistics of equal-length series given as one C-contiguous float64 array (series x values);
    ``arr`` is sorted in place. The numpy path of ``summarize_many``."""
    n = arr.shape[1]
    arr.sort(axis=1)
    sums = arr.sum(axis=1)
    cols = [arr[:, 0], arr[:, -1], sums, sums / n]
    for q in (0.50, 0.95, 0.99):
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        cols.append(arr[:, lo] + (arr[:, hi] - arr[:, lo]) * (pos - lo))
    mins, maxs, tot, means, p50, p95, p99 = (c.tolist() for c in cols)
    return [
        SeriesStats(
            metric=name, count=n, min=mins[j], max=maxs[j], mean=means[j], sum=tot[j],
            p50=p50[j], p95=p95[j], p99=p99[j], last=lasts[j], labels=labels, unit=unit,
        )
        for j, (name, labels, unit) in enumerate(metas)
    ]


@dataclass(slots=True)
class _Bucket:
    """Values by series key, with the last value and its time per series."""

    values: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    last_ts: dict[str, float] = field(default_factory=dict)


class _Shape:
    """The layout of a node's batches: which series each sample position holds.

    Producers send the same samples in the same order every time, so a base
    window stores each batch as one row of values and the rows are split into
    series only when the window closes.
    """

    __slots__ = ("names", "labels", "keys", "refused", "kept", "cols")

    def __init__(self, names: list[str], labels: list[dict[str, str] | None], keys: list[str | None]) -> None:
        self.names = names
        self.labels = labels
        self.keys = keys  # None: a series refused by the per-node limit
        self.refused = keys.count(None)
        kept = [k for k in keys if k is not None]
        self.kept = kept  # the series keys held, in sample order
        # positions of the kept series, or None when a key repeats (its values must be concatenated)
        self.cols: list[int] | None = [i for i, k in enumerate(keys) if k is not None] if len(set(kept)) == len(kept) else None


@dataclass(slots=True)
class _Rows:
    """One base window's raw input: per shape, the value rows and their timestamps."""

    parts: list[tuple[_Shape, list[array[float]], list[float]]] = field(default_factory=list)

    rows: int = 0

    def add(self, shape: _Shape, row: array[float], ts: float) -> None:
        self.rows += 1
        if self.parts and self.parts[-1][0] is shape:
            part = self.parts[-1]
            part[1].append(row)
            part[2].append(ts)
        else:
            self.parts.append((shape, [row], [ts]))

    def merge(self, other: _Rows) -> None:
        """Append another window's rows (consecutive rows of one layout stay one part)."""
        for shape, rows, tss in other.parts:
            if self.parts and self.parts[-1][0] is shape:
                self.parts[-1][1].extend(rows)
                self.parts[-1][2].extend(tss)
            else:
                self.parts.append((shape, list(rows), list(tss)))
        self.rows += other.rows

    def to_bucket(self) -> _Bucket:
        b = _Bucket()
        values, last, last_ts = b.values, b.last, b.last_ts
        for shape, rows, tss in self.parts:
            newest = max(range(len(tss)), key=tss.__getitem__)
            newest_ts = tss[newest]
            newest_row = rows[newest]
            for i, (key, col) in enumerate(zip(shape.keys, zip(*rows))):
                if key is None:
                    continue
                lst = values.get(key)
                if lst is None:
                    values[key] = list(col)
                else:
                    lst.extend(col)
                if newest_ts >= last_ts.get(key, -math.inf):
                    last[key] = newest_row[i]
                    last_ts[key] = newest_ts
        return b


def _summarize_one_shape(rows: _Rows, meta: dict[str, _SeriesMeta]) -> list[SeriesStats] | None:
    """Statistics of a window whose rows all share one layout, straight from the rows as one array
    (the same numbers as ``to_bucket`` + ``summarize_many``); None when the general path is needed."""
    if len(rows.parts) != 1:
        return None
    shape, rws, tss = rows.parts[0]
    cols = shape.cols
    if cols is None or len(cols) < 4:  # summarize_many sums fewer than 4 series of a length with fsum
        return None
    kept = shape.kept
    try:
        metas = [meta[k] for k in kept]
    except KeyError:  # a series evicted since: the general path leaves it out
        return None
    data = np.frombuffer(b"".join(rws), dtype=np.float64).reshape(len(rws), len(shape.keys))
    newest = max(range(len(tss)), key=tss.__getitem__)
    if len(cols) == len(shape.keys):
        arr = data.T.copy()
        lasts = rws[newest].tolist()
    else:
        arr = np.ascontiguousarray(data.T[cols])
        row = rws[newest]
        lasts = [row[i] for i in cols]
    return summarize_array(arr, metas, lasts)


@dataclass(slots=True)
class _Node:
    max_ts: float = 0.0
    next_due: float = math.inf  # earliest window end among open windows: below it closing has nothing to do
    last_arrival: float = 0.0
    late_pending: int = 0
    shape: _Shape | None = None
    open: dict[float, _Rows] = field(default_factory=dict)  # base start -> raw rows
    acc: dict[float, dict[float, _Rows]] = field(default_factory=dict)  # size -> start -> rows of its closed base windows
    closed: dict[float, float] = field(default_factory=dict)  # size -> end of the last closed window
    meta: dict[str, tuple[str, dict[str, str] | None, str | None]] = field(default_factory=dict)


class TumblingWindows(Operator):
    """Event-time tumbling windows over every series of every node.

    ``windows_s``: sizes in seconds; each must be a multiple of the smallest.
    Emits WindowAggregate on ``sw.agg.<size>.<cluster>.<node>`` with msg id
    ``agg:<size>:<cluster>:<node>:<start>``.
    """

    name = "windows"
    wants_metrics = True
    event_kinds = ()
    tick_interval_s = 1.0

    def __init__(
        self,
        windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
        allowed_lateness_s: float = DEFAULT_ALLOWED_LATENESS_S,
        max_nodes: int = DEFAULT_MAX_NODES,
        max_series_per_node: int = DEFAULT_MAX_SERIES_PER_NODE,
        closes_per_tick: int | None = None,
        max_series_per_cluster: int = DEFAULT_MAX_SERIES_PER_CLUSTER,
    ) -> None:
        super().__init__()
        if closes_per_tick is not None and closes_per_tick < 1:
            raise ValueError(f"closes_per_tick must be >= 1, got {closes_per_tick}")
        # Deferred closing: when every node's windows end at the same instant, closing them all
        # inline would stall the stream (and alerts behind it); on_tick closes a slice at a time.
        self.closes_per_tick = closes_per_tick
        if closes_per_tick is not None:
            self.tick_interval_s = DEFERRED_TICK_S
        self._due: dict[tuple[str, str], None] = {}
        self._next_quiet_scan = 0.0
        sizes = sorted(float(w) for w in windows_s)
        if not sizes or sizes[0] <= 0:
            raise ValueError(f"windows_s must be positive seconds, got {list(windows_s)}")
        base = sizes[0]
        for w in sizes:
            subjects.window_token(w)
            if w % base:
                raise ValueError(f"window {w:g}s is not a multiple of the smallest window {base:g}s")
        if allowed_lateness_s < 0:
            raise ValueError(f"allowed_lateness_s must be >= 0, got {allowed_lateness_s}")
        self.sizes = sizes
        self.base = base
        self.larger = sizes[1:]
        self.lateness = float(allowed_lateness_s)
        self.max_nodes = max_nodes
        self.max_series = max_series_per_node
        # series per node and cluster; least recently seen idle ones give way, else new ones are refused and alerted
        self.limiter = CardinalityLimiter(self.name, max_series_per_node, max_series_per_cluster)
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._tokens = {w: subjects.window_token(w) for w in sizes}

    # ------------------------------------------------------------ input

    def on_metrics(self, batch: MetricBatch, now: float) -> Iterable[Emit]:
        key = (batch.cluster, batch.node)
        nd = self._nodes.get(key)
        st = self.stats
        if nd is None:
            if len(self._nodes) >= self.max_nodes:
                st.dropped += len(batch.samples)
                st.inc("refused_nodes")
                return ()
            nd = self._nodes[key] = _Node()
        st.inputs += 1
        nd.last_arrival = now
        ts = batch.ts
        base = self.base
        start = ts - (ts % base)
        closed_base = nd.closed.get(base, 0.0)
        if start < closed_base:
            if self.replaying:
                if start + base <= min(nd.closed.get(w, 0.0) for w in self.sizes):
                    return ()  # every window this sample belongs to was emitted before the restart
            else:
                st.late += len(batch.samples)
                nd.late_pending += len(batch.samples)
                return ()
        samples = batch.samples
        names, labels = layout(batch)
        shape = nd.shape
        if shape is None or shape.names != names or shape.labels != labels:
            shape = nd.shape = self._shape(key, nd, samples, names, labels, now)
        rows = nd.open.get(start)
        if rows is None:
            rows = nd.open[start] = _Rows()
            if start + base < nd.next_due:
                nd.next_due = start + base
        elif rows.rows >= DEFAULT_MAX_ROWS_PER_WINDOW:
            st.dropped += len(samples)
            st.inc("window_full")
            return ()
        rows.add(shape, array("d", [x.value for x in samples]), ts)  # arrays are invisible to the GC
        if shape.refused:
            st.dropped += shape.refused
        if ts > nd.max_ts:
            nd.max_ts = ts
            if ts - self.lateness >= nd.next_due:
                if self.closes_per_tick is not None and not self.replaying:
                    self._due[key] = None
                    return ()
                return self._close(key, nd, ts - self.lateness, "watermark")
        return ()

    def _shape(
        self, key: tuple[str, str], nd: _Node, samples: list[Sample], names: list[str], labels: list[dict[str, str] | None], now: float
    ) -> _Shape:
        keys: list[str | None] = []
        meta = nd.meta
        cluster, node = key
        limiter = self.limiter
        for smp, name, lab in zip(samples, names, labels):
            sk = name if lab is None else series_key(name, lab)
            if sk not in meta:
                if not limiter.seen(cluster, node, sk, now):
                    self.stats.inc("refused_series")
                    keys.append(None)
                    continue
                if limiter.evicted:
                    self._drop_evicted()
                meta[sk] = (name, lab, smp.unit)
            keys.append(sk)
        return _Shape(names, labels, keys)

    def _drop_evicted(self) -> None:
        """Forget series the limiter evicted (idle ones that gave way to new series)."""
        for c, n, sk in self.limiter.pop_evicted():
            nd = self._nodes.get((c, n))
            if nd is not None and nd.meta.pop(sk, None) is not None:  # type: ignore[call-overload]
                nd.shape = None  # its layout named the evicted series
                self.stats.inc("evicted_series")

    def on_tick(self, now: float) -> Iterable[Emit]:
        """Close a slice of the windows due (deferred mode), and every open window of nodes
        that have been quiet for a base window plus the lateness (once a second)."""
        out: list[Emit] = self.limiter.alerts(now)
        budget = self.closes_per_tick or 0
        while self._due and budget > 0:
            key = next(iter(self._due))
            del self._due[key]
            nd = self._nodes.get(key)
            if nd is not None:
                out.extend(self._close(key, nd, nd.max_ts - self.lateness, "watermark"))
            budget -= 1
        if now >= self._next_quiet_scan:
            self._next_quiet_scan = now + QUIET_SCAN_S
            quiet = self.base + self.lateness
            for key, nd in self._nodes.items():
                if nd.open and now - nd.last_arrival >= quiet:
                    self._due.pop(key, None)
                    out.extend(self._close(key, nd, math.inf, "timer"))
        return out

    def flush(self, now: float) -> Iterable[Emit]:
        """Close everything (end of a backtest)."""
        self._due.clear()
        out: list[Emit] = []
        for key, nd in self._nodes.items():
            out.extend(self._close(key, nd, math.inf, "flush", include_partial_large=True))
        return out

    # ------------------------------------------------------------ closing

    def _close(self, key: tuple[str, str], nd: _Node, watermark: float, why: str, include_partial_large: bool = False) -> list[Emit]:
        base = self.base
        due = sorted(s for s in nd.open if s + base <= watermark)
        out: list[Emit] = []
        for start in due:
            rows = nd.open.pop(start)
            end = start + base
            if start >= nd.closed.get(base, 0.0):
                out.append(self._emit(key, nd, base, start, rows, why))
                nd.closed[base] = end
            for w in self.larger:  # larger windows keep the raw rows of their base windows
                wstart = start - (start % w)
                if wstart + w <= nd.closed.get(w, 0.0):
                    continue
                accs = nd.acc.setdefault(w, {})
                acc = accs.get(wstart)
                if acc is None:
                    acc = accs[wstart] = _Rows()
                acc.merge(rows)
        # a larger window closes once the watermark passes its end
        for w in self.larger:
            accs = nd.acc.get(w)
            if not accs:
                continue
            for wstart in sorted(accs):
                if wstart + w <= watermark and not any(wstart <= s < wstart + w for s in nd.open):
                    out.append(self._emit(key, nd, w, wstart, accs.pop(wstart), why))
                    nd.closed[w] = max(nd.closed.get(w, 0.0), wstart + w)
                elif include_partial_large:
                    out.append(self._emit(key, nd, w, wstart, accs.pop(wstart), why))
        ends = [s + base for s in nd.open]
        for w, accs in nd.acc.items():
            ends.extend(ws + w for ws in accs)
        nd.next_due = min(ends, default=math.inf)
        return out

    def _emit(self, key: tuple[str, str], nd: _Node, w: float, start: float, rows: _Rows, why: str) -> Emit:
        cluster, node = key
        meta = nd.meta
        series = _summarize_one_shape(rows, meta)
        if series is not None:
            if w == self.base:
                self.limiter.touch(cluster, node, rows.parts[0][0].kept, nd.last_arrival)
        else:
            bucket = rows.to_bucket()
            if w == self.base:
                self.limiter.touch(cluster, node, bucket.values.keys(), nd.last_arrival)
            series = summarize_many(
                [(meta[sk], vals, bucket.last.get(sk, vals[-1])) for sk, vals in bucket.values.items() if sk in meta]
            )
        late = 0
        if w == self.base:
            late, nd.late_pending = nd.late_pending, 0
        agg = WindowAggregate(
            cluster=cluster, node=node, window_s=w, start=start, end=start + w, series=series, late=late, closed_by=why
        )
        self.stats.outputs += 1
        tok = self._tokens[w]
        return Emit(f"sw.agg.{tok}.{cluster}.{node}", agg, f"agg:{tok}:{cluster}:{node}:{start:.3f}")

    # ------------------------------------------------------------ state

    def snapshot(self) -> Any:
        """Per node: newest event time and how far each size has closed (open windows are rebuilt by
        replay), and the firing ``cardinality_limit`` alerts."""
        return {
            "nodes": [[c, n, nd.max_ts, [[w, e] for w, e in nd.closed.items()]] for (c, n), nd in self._nodes.items()],
            "cardinality": self.limiter.snapshot(),
        }

    def restore(self, state: Any) -> None:
        self._nodes = {}
        self._due = {}
        lim = self.limiter
        self.limiter = CardinalityLimiter(self.name, lim.max_per_node, lim.max_per_cluster, idle_s=lim.idle_s, quiet_s=lim.quiet_s)
        if isinstance(state, dict):
            self.limiter.restore(state.get("cardinality"))
            state = state.get("nodes")
        for c, n, max_ts, closed in state or []:  # a list: a checkpoint from before the cardinality state
            self._nodes[(c, n)] = _Node(max_ts=max_ts, closed={float(w): e for w, e in closed})

    def replay_from(self) -> float | None:
        """Start of the oldest open window (base or larger), the point a restart must replay from."""
        starts: list[float] = []
        for nd in self._nodes.values():
            if nd.open:
                starts.append(min(nd.open))
            for accs in nd.acc.values():
                if accs:
                    starts.append(min(accs))
        return min(starts) if starts else None

    def open_windows(self) -> int:
        return sum(len(nd.open) + sum(len(a) for a in nd.acc.values()) for nd in self._nodes.values())
