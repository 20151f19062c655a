"""Byzantine-node detector for one training cluster: per-round statistics, evidence across rounds.

Each closed round gives, for every node that reported, scale-free statistics
measured against the round's *robust consensus* (coordinate-wise median of the
sketches of nodes that are neither flagged nor near-copies of another) and the
fleet's median/MAD:

* ``alignment``  cosine with the consensus, against a fraction of the typical
  node's: updates that point away (sign flip, inner-product manipulation) or
  nowhere (noise, free-riding) align far less than honest ones, however noisy.
* ``norm_high`` / ``norm_low``  update norm over the round's median.
* ``direction``  cosine with the node's own usual direction: an update that
  turns against the node's own past (sign or label flipping of a non-IID client).
* ``similarity`` closeness (-log distance of unit directions) to another sketch
  of this round or the previous one, as a robust z, or an exact copy (collusion,
  replayed work, copying). A copied victim is not blamed: the hit goes to the
  end of the pair that copies habitually.
* ``loss``       reported loss over the round's median (not learning, lying).
* ``norm_consistency``  reported norm over sketch norm, against the fleet.
* ``too_close``  distance to the consensus far below the fleet's (sending the
  aggregate back, ALIE with few colluders).
* ``stale``      fits an earlier round's consensus better than this round's.

Honest fleets are heterogeneous (non-IID clients point their own way, clients
with fewer local steps send smaller updates, converging updates resemble earlier
rounds), so norm, loss, distance, alignment, staleness and direction are judged
against each node's own usual level as well as the fleet's: what counts is a
departure from what the node usually does.

Per-round scores (standard deviations past each test's margin, clipped) go into
a ring buffer of ``window_rounds`` rounds per node and are tested over several
horizons: blunt attacks are caught in two or three rounds, small consistent
ones cumulatively, and one odd round of an honest node never suffices.

Two more tests work on each node's exponentially weighted mean deviation from
the consensus (the part of its updates that persists across rounds) and on its
trend (fast minus slow average, where a node's steady non-IID bias cancels):

* ``drift``      that persistent deviation is several times the fleet's typical one.
* ``collusion``  it points the same way as another node's, or as the sum of
  all others', far beyond independent nodes (ALIE with jitter, coordinated
  drift, replay rings).

A node is flagged when any test passes its threshold; its alert resolves after
``resolve_after_rounds`` clean rounds. Trust falls at once with suspicion and
recovers slowly.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from processors.byzantine.robust import (
    max_offdiag_cos,
    pair_cos_spread,
    partners_above,
    half_spread,
    robust_center_scale,
    unit_rows,
)

FEATURES: tuple[str, ...] = (
    "alignment", "norm", "similarity", "loss", "norm_consistency", "distance", "staleness", "self_alignment",
    "norm_drop",
)
STATISTICS: tuple[str, ...] = (
    "alignment",
    "norm_high",
    "norm_low",
    "similarity",
    "loss",
    "norm_consistency",
    "too_close",
    "stale",
    "direction",
    "drift",
    "collusion",
)
_NW = 9  # statistics tested over windows (the first nine of STATISTICS)
_F = {name: j for j, name in enumerate(FEATURES)}  # feature column by name
_S = {name: j for j, name in enumerate(STATISTICS)}  # score / evidence column by name
_STAT_FEATURE = tuple(
    _F[f]
    for f in ("alignment", "norm", "norm_drop", "similarity", "loss", "norm_consistency", "distance", "staleness", "self_alignment")
)
# statistics judged against each node's own usual level as well as the fleet's (honest heterogeneity)
_OWN_STATS = ("alignment", "stale", "direction")  # in score units (sd past the margin)
_LEVELS = ("norm", "loss", "distance", "norm_per_loss")  # log-ratio features with a per-node usual level
_OWN_COLS = np.array([_S[name] for name in _OWN_STATS], dtype=np.intp)
# per-round spreads that are pooled with the recent rounds' (a spread from few nodes is noisy)
_SPREADS = ("alignment", "norm_high", "norm_low", "loss", "norm_consistency", "distance", "direction")
_Q_STEP = 0.05  # per-round scores are kept as int8 multiples of this (sd); -128 = no score
_Q_NONE = -128
_DEV_DTYPE = np.float16  # persistent-deviation averages: 3 significant digits are plenty
_STALE_LAGS = 4  # past consensus directions kept to recognise stale updates
_S_DRIFT, _S_COLLUSION = _NW, _NW + 1
_EPS = 1e-12
_MIN_DIST = 1e-6  # distances between unit directions below this are copies (float32 resolution)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds are ratios or standard-error multiples, never absolute update sizes."""

    max_nodes: int = 10_000  # nodes tracked per cluster; more are refused and counted
    window_rounds: int = 32  # rounds of per-node history kept
    horizons: tuple[int, ...] = (3, 4, 8, 16, 32)  # window lengths tested, in rounds
    confidence_z: float = 3.5  # standard errors a window mean must clear its margin by
    align_fraction: float = 0.4  # honest nodes align with the consensus at least this fraction of the typical node
    norm_ratio: float = 2.5  # update norms persistently beyond x3 (or below /3) the median are suspect
    loss_ratio: float = 3.0  # losses persistently x3 the fleet median are suspect
    norm_consistency_ratio: float = 2.0  # reported norm vs sketch norm off by this factor against the fleet
    similarity_sd: float = 6.0  # robust sd above the fleet's nearest-neighbour similarity
    copy_distance: float = 1e-4  # unit directions closer than this are copies (replay, copying another node)
    near_copy_ratio: float = 10.0  # a near-copy is at least this many times closer to another sketch than the typical node
    drift_half_life_rounds: float = 4.0  # memory of the persistent-deviation average
    drift_ratio: float = 2.5  # persistent deviation this many times the fleet median
    drift_sd: float = 6.0  # ... and this many robust sd above the fleet's (log) persistent deviations
    cluster_sd: float = 6.0  # pairwise cosine of persistent deviations, in sd of independent vectors
    direction_fraction: float = 0.5  # updates agreeing with the node's own past less than this x the typical node's
    stale_sd: float = 3.0  # robust sd past the round's typical fit to an earlier consensus
    min_hit_rounds: int = 4  # rounds past the confidence level (within hit_horizon_rounds) that flag alone
    hit_horizon_rounds: int = 16  # how long a round far past the confidence level counts (evidence expires)
    own_half_life_rounds: float = 4.0  # memory of each node's own usual score level
    own_rate: float = 0.25  # most a node's own baseline may move per round (sd of score)
    own_cap: float = 3.0  # largest own baseline (sd of score): beyond, a node is judged against the fleet
    own_cap_steady: float = 6.0  # ... for alignment, while the node points its own usual way (non-IID)
    own_half_life_steady: float = 1.0  # ... and followed this fast (rounds), without the own_rate limit
    spread_pool_rounds: int = 8  # a round's spread is at least the median of this many recent rounds'
    steady_sd: float = 2.0  # a node agreeing with its own past within this many sd of the typical node's is steady
    own_ratio_cap: float = 10.0  # a node's usual norm, loss or distance may differ from the fleet's by this factor
    own_log_rate: float = 0.1  # most a node's usual (log) norm, loss or distance may move per round
    persist_rounds: int = 2  # consecutive rounds a drift/collusion finding must hold
    warmup_rounds: int = 3  # rounds a node needs before its persistent deviation is judged
    resolve_after_rounds: int = 10  # clean rounds before an alert resolves
    trust_recovery_per_round: float = 0.05  # how fast trust may climb back
    # most a node's usual collusion evidence moves a round after its warm-up; chosen on the small
    # binary tuning fleets (bench/federated.py SMALL_BINARY) by leave-one-dataset-out: the
    # slowest rate (the synthetic drift scenario's latency grows with it) that leaves no honest
    # kinship accused on the other datasets (0.0104 = own_rate / cluster_sd / 4)
    kin_rate: float = 0.01
    loss_floor_fraction: float = 0.1  # losses are compared as log(loss + this x the first judged round's median loss)
    min_nodes: int = 5  # rounds with fewer reports are recorded but not judged
    evict_after_rounds: int = 64  # nodes silent this long are forgotten

    def __post_init__(self) -> None:
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")
        if self.window_rounds < 2:
            raise ValueError(f"window_rounds must be >= 2, got {self.window_rounds}")
        if not self.horizons or min(self.horizons) < 1 or max(self.horizons) > self.window_rounds:
            raise ValueError(f"horizons {self.horizons!r} must lie in 1..window_rounds={self.window_rounds}")
        for name in ("norm_ratio", "loss_ratio", "norm_consistency_ratio", "drift_ratio"):
            if getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be > 1, got {getattr(self, name)!r}")
        if not 0.0 < self.align_fraction < 1.0:
            raise ValueError(f"align_fraction must be in (0, 1), got {self.align_fraction!r}")
        if self.min_hit_rounds < 2:
            raise ValueError(f"min_hit_rounds must be >= 2, got {self.min_hit_rounds}")
        if not (self.own_rate > 0 and self.own_cap >= 0 and self.own_half_life_rounds > 0):
            raise ValueError("own_rate and own_half_life_rounds must be > 0 and own_cap >= 0")
        if self.own_cap_steady < self.own_cap:
            raise ValueError(f"own_cap_steady must be >= own_cap, got {self.own_cap_steady!r}")
        if self.hit_horizon_rounds < 1:
            raise ValueError(f"hit_horizon_rounds must be >= 1, got {self.hit_horizon_rounds}")
        if self.kin_rate < 0:
            raise ValueError(f"kin_rate must be >= 0, got {self.kin_rate!r}")
        if self.min_nodes < 3:
            raise ValueError(f"min_nodes must be >= 3, got {self.min_nodes}")


@dataclass(slots=True)
class NodeVerdict:
    """One node after one round: trust in [0, 1], whether it is flagged, and why."""

    node: str
    round: int
    trust: float
    suspicion: float  # largest evidence; 1.0 is a test's threshold
    flagged: bool  # the node's alert is active after this round
    newly_flagged: bool
    resolved: bool
    detected_round: int | None  # round at which the current detection began
    reason: str  # the statistic with the most evidence ("" if none)
    evidence: dict[str, float]  # statistic -> evidence (>= 1: over threshold)
    details: dict[str, Any] = field(default_factory=dict)  # how far, for how many rounds


@dataclass(slots=True)
class _RoundWork:
    """What the phases of judging one round share."""

    rnd: int
    names: list[str]
    idx: np.ndarray  # state slot per report
    X: np.ndarray  # sketches, one row per report
    norms: np.ndarray
    losses: np.ndarray
    n: int
    K: int  # sketch length
    firing: np.ndarray  # alert active before this round
    trusted: np.ndarray  # counted for the fleet's medians and spreads
    units: np.ndarray  # sketches scaled to unit length
    sk_norm: np.ndarray
    feats: np.ndarray  # n x FEATURES
    voters: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # vote for the consensus
    victim: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # copied, not copying
    steady: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # points its own usual way
    settled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # own direction known long enough to judge
    turned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # turned away from its own past
    own_unit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # usual direction before this round (0: none)
    m: np.ndarray = field(default_factory=lambda: np.zeros(0))  # consensus
    m_unit: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cos_m: np.ndarray = field(default_factory=lambda: np.zeros(0))
    M: float = 0.0  # the voters' median alignment
    dist: np.ndarray = field(default_factory=lambda: np.zeros(0))  # distance to the consensus
    sd: dict[str, float] = field(default_factory=dict)  # the round's spread per feature or test


def _quantize(sc: np.ndarray) -> np.ndarray:
    """Scores (sd) as int8 multiples of _Q_STEP; NaN as _Q_NONE."""
    q = np.clip(np.rint(np.where(np.isfinite(sc), sc, 0.0) / _Q_STEP), -127, 127).astype(np.int8)
    q[~np.isfinite(sc)] = _Q_NONE
    return q


def _dequantize(q: np.ndarray) -> np.ndarray:
    return np.where(q == _Q_NONE, np.nan, q.astype(np.float64) * _Q_STEP)


@dataclass(slots=True)
class RoundResult:
    """What closing one round produced."""

    round: int
    ts: float  # newest report time of the round (event time, UNIX s)
    nodes: int
    judged: bool
    verdicts: list[NodeVerdict]
    evicted: list[str]


def _shared_direction(
    V: np.ndarray, ref: np.ndarray, K: int, k_sd: float, among: np.ndarray, near_copy_ratio: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Evidence (1 = threshold) that each row of V points the same way as other rows.

    Two views: the closest other row (pairwise cosine over a threshold ``k_sd``
    robust sd above the reference pairs, at least ``k_sd / sqrt(K)``, the sd of
    independent directions) and the cosine with the sum of all other reference
    rows (independent rows cancel there, a group's shared part adds up), as a
    robust z over the reference rows. Partners are sought only ``among`` the
    rows not already flagged for another reason (a node copied by flagged
    replayers is their victim, not their accomplice).
    """
    U, _ = unit_rows(V)
    med_p, sd_p = pair_cos_spread(U[ref])
    tau = min(0.95, max(med_p + k_sd * sd_p, k_sd / math.sqrt(K)))
    partners, best = partners_above(U, tau, among)
    pair = np.maximum(best, 0.0) / tau
    # the cosine threshold is calibrated on independent directions; in a low-rank fleet (a
    # two-class task learnt at once: every client's persistent deviation lies along the class
    # direction) it caps at 0.95 or the typical node's nearest partner already passes it, and
    # honest kin then look like a plot. The fleet's own nearest-neighbour distance is then the
    # yardstick: a pair counts as far as it is a near-copy, near_copy_ratio times closer than
    # the typical reference node's nearest partner (as in the per-round similarity test)
    nn_typ = float(np.median(best[ref]))
    if med_p + k_sd * sd_p > 0.95 or nn_typ >= tau:
        d_typ = math.sqrt(max(2.0 - 2.0 * nn_typ, 0.0))
        d = np.sqrt(np.maximum(2.0 - 2.0 * best, _MIN_DIST**2))
        pair = np.minimum(pair, np.log(np.maximum(d_typ / d, 1.0)) / math.log(near_copy_ratio))
    total = V[ref].sum(axis=0)  # the direction the group pushes a mean aggregate
    others, _ = unit_rows(total[None, :] - np.where(ref[:, None], V, 0.0))
    gc = (U * others).sum(axis=1)
    med_g, sd_g = robust_center_scale(gc[ref], 1.0 / math.sqrt(K))
    gz = (gc - med_g) / sd_g
    ev = np.maximum(pair, gz / k_sd)
    n = V.shape[0]
    return ev, {
        "best_cos": best,
        "tau": np.full(n, tau),
        "partners": partners.astype(np.float64),
        "group_cos": gc,
        "group_z": gz,
        "pair_z": (best - med_p) / max((tau - med_p) / k_sd, 1e-9),
    }


def _enc(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.tobytes()}


def _dec(d: dict[str, Any]) -> np.ndarray:
    raw = d["data"]
    if isinstance(raw, str):  # JSON round trip gives base64 text
        raw = base64.b64decode(raw)
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


class ClusterDetector:
    """Detector state for one cluster: reports are added per round, judged when the round closes."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.dim: int | None = None  # sketch length, fixed by the first report
        self.last_closed: int | None = None
        self.pending: dict[int, dict[str, tuple[float, float, np.ndarray, float]]] = {}
        self.counts: dict[str, int] = {}
        self._slot: dict[str, int] = {}
        self._names: list[str | None] = []
        self._free: list[int] = []
        self._cap = 0
        W, F = self.config.window_rounds, len(FEATURES)
        self._scale = np.full((W, F), np.nan)
        self._spread_hist = np.full((W, len(_SPREADS)), np.nan, dtype=np.float32)  # each round's own spreads
        self._col_round = np.full(W, -1, dtype=np.int64)
        self._prev_units: np.ndarray | None = None
        self._loss_scale: float | None = None  # median loss of the first judged round
        self._prev_slots = np.zeros(0, dtype=np.int32)  # whose sketch each row of _prev_units is (-1: consensus)
        self._past_consensus: list[tuple[int, np.ndarray]] = []  # (round, unit direction), newest last
        self._alloc(0)
        del W, F

    # ------------------------------------------------------------------ state arrays

    def _alloc(self, cap: int) -> None:
        W, F = self.config.window_rounds, len(FEATURES)
        K = self.dim or 1
        old = self._cap

        def grow(a: np.ndarray | None, shape: tuple[int, ...], fill: Any, dtype: Any) -> np.ndarray:
            new = np.full(shape, fill, dtype=dtype)
            if a is not None and old:
                new[:old] = a[:old]
            return new

        g = lambda name: getattr(self, name, None)  # noqa: E731
        self._vals = grow(g("_vals"), (cap, W, F), np.nan, np.float16)
        self._scores = grow(g("_scores"), (cap, W, _NW), _Q_NONE, np.int8)
        self._base = grow(g("_base"), (cap, _NW), np.nan, np.float16)
        self._level = grow(g("_level"), (cap, len(_LEVELS)), np.nan, np.float16)
        self._own_dir = grow(g("_own_dir"), (cap, K), 0, np.int8)
        self._dev_sum = grow(g("_dev_sum"), (cap, K), 0.0, _DEV_DTYPE)
        self._dev_w = grow(g("_dev_w"), (cap,), 0.0, np.float64)
        self._slow_sum = grow(g("_slow_sum"), (cap, K), 0.0, _DEV_DTYPE)
        self._slow_w = grow(g("_slow_w"), (cap,), 0.0, np.float64)
        self._dev_n = grow(g("_dev_n"), (cap,), 0, np.int64)
        self._last_round = grow(g("_last_round"), (cap,), -1, np.int64)
        self._firing = grow(g("_firing"), (cap,), False, bool)
        self._since = grow(g("_since"), (cap,), -1, np.int64)
        self._clean = grow(g("_clean"), (cap,), 0, np.int64)
        self._trust = grow(g("_trust"), (cap,), 1.0, np.float64)
        self._drift_run = grow(g("_drift_run"), (cap,), 0, np.int64)
        self._clu_run = grow(g("_clu_run"), (cap,), 0, np.int64)
        self._dup_rate = grow(g("_dup_rate"), (cap,), 0.0, np.float64)
        self._clu_base = grow(g("_clu_base"), (cap,), np.nan, np.float16)
        self._reason = grow(g("_reason"), (cap,), -1, np.int64)
        self._names.extend([None] * (cap - old))
        self._free.extend(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _clear_slot(self, s: int) -> None:
        self._vals[s] = np.nan
        self._scores[s] = _Q_NONE
        self._base[s] = np.nan
        self._level[s] = np.nan
        self._own_dir[s] = 0
        self._dev_sum[s] = 0.0
        self._dev_w[s] = 0.0
        self._slow_sum[s] = 0.0
        self._slow_w[s] = 0.0
        self._dev_n[s] = 0
        self._last_round[s] = -1
        self._firing[s] = False
        self._since[s] = -1
        self._clean[s] = 0
        self._trust[s] = 1.0
        self._drift_run[s] = 0
        self._clu_run[s] = 0
        self._dup_rate[s] = 0.0
        self._clu_base[s] = np.nan
        self._reason[s] = -1

    def _slot_for(self, node: str) -> int | None:
        s = self._slot.get(node)
        if s is not None:
            return s
        if not self._free:
            if self._cap >= self.config.max_nodes:
                return None
            self._alloc(min(self.config.max_nodes, max(64, 2 * self._cap)))
        s = self._free.pop()
        self._clear_slot(s)
        self._slot[node] = s
        self._names[s] = node
        return s

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def nodes(self) -> int:
        """Nodes currently tracked."""
        return len(self._slot)

    def trust_of(self, node: str) -> float | None:
        s = self._slot.get(node)
        return None if s is None else float(self._trust[s])

    def is_flagged(self, node: str) -> bool:
        s = self._slot.get(node)
        return bool(s is not None and self._firing[s])

    # ------------------------------------------------------------------ input

    def add(self, node: str, rnd: int, update_norm: float, loss: float, sketch: np.ndarray, ts: float) -> str:
        """Buffer one report. Returns ``ok``, ``late``, ``duplicate``, ``invalid`` or ``full``.

        A round far older than the last judged one (more than ``evict_after_rounds``)
        means the training run restarted its numbering: the cluster's state is reset.
        """
        if self.last_closed is not None and rnd <= self.last_closed:
            if rnd + self.config.evict_after_rounds < self.last_closed:
                # far behind what was judged: the training run restarted its round numbers
                counts = dict(self.counts)
                self.__init__(self.config)  # type: ignore[misc]
                self.counts = counts
                self._count("restarts")
            else:
                self._count("late")
                return "late"
        x = np.asarray(sketch, dtype=np.float64).ravel()
        if x.size == 0 or not np.all(np.isfinite(x)) or not math.isfinite(update_norm) or update_norm < 0:
            self._count("invalid")
            return "invalid"
        if self.dim is None:
            self.dim = int(x.size)
            self._dev_sum = np.zeros((self._cap, self.dim), dtype=_DEV_DTYPE)
            self._slow_sum = np.zeros((self._cap, self.dim), dtype=_DEV_DTYPE)
            self._own_dir = np.zeros((self._cap, self.dim), dtype=np.int8)
        elif x.size != self.dim:
            self._count("invalid")
            return "invalid"
        bucket = self.pending.setdefault(rnd, {})
        if node in bucket:
            self._count("duplicate")
            return "duplicate"
        if len(bucket) >= self.config.max_nodes:
            self._count("refused")
            return "full"
        bucket[node] = (float(update_norm), float(loss) if math.isfinite(loss) and loss > 0 else math.nan, x, float(ts))
        return "ok"

    # ------------------------------------------------------------------ judging a round

    def close(self, rnd: int) -> RoundResult | None:
        """Judge round ``rnd`` (and forget any older open round). None if it had no reports."""
        for old in [r for r in self.pending if r < rnd]:
            del self.pending[old]
            self._count("rounds_skipped")
        bucket = self.pending.pop(rnd, None)
        if self.last_closed is not None and rnd <= self.last_closed:
            return None
        if not bucket:
            return None
        cfg = self.config
        W = cfg.window_rounds
        prev = self.last_closed
        if prev is None or rnd - prev >= W:
            self._vals[:] = np.nan
            self._scores[:] = _Q_NONE
            self._scale[:] = np.nan
            self._spread_hist[:] = np.nan
            self._col_round[:] = -1
        else:
            for rr in range(prev + 1, rnd + 1):
                c = rr % W
                self._vals[:, c, :] = np.nan
                self._scores[:, c, :] = _Q_NONE
                self._scale[c] = np.nan
                self._spread_hist[c] = np.nan
        col = rnd % W
        self._col_round[col] = rnd
        if prev is not None and rnd - prev > 1:
            self._prev_units = None
        self.last_closed = rnd

        names, slots, norms, losses, rows, tss = [], [], [], [], [], []
        for node, (un, loss, x, ts) in bucket.items():
            s = self._slot_for(node)
            if s is None:
                self._count("refused_nodes")
                continue
            names.append(node)
            slots.append(s)
            norms.append(un)
            losses.append(loss)
            rows.append(x)
            tss.append(ts)
        if not slots:
            return None
        idx = np.asarray(slots, dtype=np.int64)
        self._last_round[idx] = rnd
        X = np.vstack(rows)
        ts_round = max(tss)
        n = len(idx)
        judged = n >= cfg.min_nodes
        verdicts: list[NodeVerdict] = []
        if judged:
            verdicts = self._judge(rnd, names, idx, X, np.asarray(norms), np.asarray(losses))
        else:
            self._count("rounds_unjudged")
        evicted = self._evict(rnd)
        return RoundResult(rnd, ts_round, n, judged, verdicts, evicted)

    def _judge(
        self, rnd: int, names: list[str], idx: np.ndarray, X: np.ndarray, norms: np.ndarray, losses: np.ndarray
    ) -> list[NodeVerdict]:
        """Judge one round in named phases: who votes, the round's statistics against the consensus,
        per-round scores against each node's own history, window evidence, persistent deviation,
        verdicts."""
        rd = self._start_round(rnd, names, idx, X, norms, losses)
        self._self_alignment_phase(rd)
        self._similarity_phase(rd)
        self._consensus_phase(rd)
        self._scale_phase(rd)
        sc = self._round_scores(rd)
        sc = self._against_own_history(rd, sc)
        self._store_round(rd, sc)
        ev, best_h = self._window_evidence(rd)
        drift_ratio, clu_info = self._persistent_deviation(rd, ev)
        return self._verdicts(rd, ev, best_h, drift_ratio, clu_info)

    # --- phases of _judge ------------------------------------------------------------

    def _start_round(
        self, rnd: int, names: list[str], idx: np.ndarray, X: np.ndarray, norms: np.ndarray, losses: np.ndarray
    ) -> _RoundWork:
        cfg = self.config
        n = len(idx)
        firing = self._firing[idx].copy()
        trusted = ~firing
        if trusted.sum() < max(cfg.min_nodes, (n + 1) // 2):
            trusted = np.ones(n, dtype=bool)
        units, sk_norm = unit_rows(X)
        return _RoundWork(
            rnd=rnd, names=names, idx=idx, X=X, norms=norms, losses=losses, n=n, K=X.shape[1],
            firing=firing, trusted=trusted, units=units, sk_norm=sk_norm,
            feats=np.full((n, len(FEATURES)), np.nan),
        )

    def _similarity_phase(self, rd: _RoundWork) -> None:
        """Closeness to another sketch of this round or the previous one (robust z of -log distance).

        Near-copies of each other (or of last round) are not independent opinions, so they do
        not vote for the consensus. A copy has two ends, and the hit is the copier's, not the
        victim's (``_copy_victims``).
        """
        cfg, K = self.config, rd.K
        u32 = rd.units.astype(np.float32)
        _, partner = max_offdiag_cos(rd.units)
        # closeness: -log of the distance between unit directions (a log scale on which an exact
        # copy, distance 0, stands far from an honest update that merely resembles its last one,
        # as converging clients with few local steps do)
        close_now = np.full(rd.n, -np.inf)
        has = partner >= 0
        close_now[has] = -np.log(np.maximum(np.linalg.norm(u32[has] - u32[partner[has]], axis=1), _MIN_DIST))
        close = close_now
        close_prev = np.full(rd.n, -np.inf)
        if self._prev_units is not None and self._prev_units.shape[1] == K:
            close_prev = self._closeness_to_last_round(rd, u32)
            close = np.maximum(close_now, close_prev)
        # spread from the lower half: copies and their victims crowd the upper one
        # spread at least such that a hit is near_copy_ratio times closer than the typical node:
        # where every node's nearest sketch is about as far, 1.5 times closer is no copy
        floor = math.log(cfg.near_copy_ratio) / cfg.similarity_sd
        med_s, _ = robust_center_scale(close[rd.trusted], floor)
        sd_s = half_spread(close[rd.trusted], "lower", floor)
        z = (close - med_s) / sd_s
        # honest fleets can be bimodal (clients whose update barely changes between rounds next to
        # clients whose does), which widens the spread: a near-exact copy counts as a hit anyway
        z = np.where(close >= -math.log(cfg.copy_distance), np.maximum(z, cfg.similarity_sd + 2.0), z)
        rd.feats[:, _F["similarity"]] = z
        dup = z > cfg.similarity_sd
        rate = self._dup_rate[rd.idx]
        line = min(med_s + cfg.similarity_sd * sd_s, -math.log(cfg.copy_distance))  # a duplicate's closeness
        replay = close_prev >= -math.log(cfg.copy_distance)  # an exact resend of last round's work
        rd.victim = self._copy_victims(rd, dup & (close_now >= close) & has & ~replay, u32, line, rate, partner)
        a_dup = 1.0 - 0.5 ** (1.0 / cfg.drift_half_life_rounds)
        self._dup_rate[rd.idx] = (1 - a_dup) * rate + a_dup * dup
        # copies are not independent opinions: of a copied pair only the victim's votes
        voters = rd.trusted & ((z <= cfg.similarity_sd) | rd.victim)
        if voters.sum() < max(cfg.min_nodes, (int(rd.trusted.sum()) + 1) // 2):
            voters = rd.trusted
        rd.voters = voters

    def _closeness_to_last_round(self, rd: _RoundWork, u32: np.ndarray) -> np.ndarray:
        """-log distance to the closest sketch of the previous round (or its consensus). A node's
        own last sketch counts only when resent exactly (distance < ``copy_distance``): an honest
        client whose data and step count barely change sends nearly the same update every round,
        which is its usual behaviour, not copying; a stale free-rider resends it unchanged."""
        prev = self._prev_units.astype(np.float32)  # type: ignore[union-attr]
        G = u32 @ prev.T
        row_of = np.full(self._cap, -1, dtype=np.int64)  # slot -> its row of last round
        if self._prev_slots.shape[0] == prev.shape[0]:
            mine = self._prev_slots >= 0
            row_of[self._prev_slots[mine]] = np.nonzero(mine)[0]
        jo = row_of[rd.idx]
        has_own = jo >= 0
        G[np.nonzero(has_own)[0], jo[has_own]] = -np.inf  # the closest *other* sketch
        jp = G.argmax(axis=1)
        close = -np.log(np.maximum(np.linalg.norm(u32 - prev[jp], axis=1), _MIN_DIST))
        if has_own.any():
            d_own = np.linalg.norm(u32 - prev[np.maximum(jo, 0)], axis=1)
            exact = has_own & (d_own < self.config.copy_distance)
            close = np.where(exact, -np.log(np.maximum(d_own, _MIN_DIST)), close)
        return close

    def _copy_victims(
        self, rd: _RoundWork, cand: np.ndarray, u32: np.ndarray, line: float, rate: np.ndarray, partner: np.ndarray
    ) -> np.ndarray:
        """Which duplicates of this round are the copied end of a copy (``cand``: same-round
        duplicates, not resends of last round's work). A group of near-identical sketches holds at
        most one original. Its victim is (a) the member whose closest match has been a duplicate
        far more habitually (``_dup_rate``: a copier is one in every round it reports, a victim only
        when picked), or (b) the one member whose own past the sketch agrees with, by ``steady_sd``
        sd more than with any other member's, while every other member has turned away from its own
        past (``turned``): copiers pass off another node's work, which agrees with their own past no
        better than a stranger's. Colluders that all send one vector (ALIE, min-max) agree with
        their own past alike, so none of them is a victim; nor is anyone where honest nodes agree
        with their own past only loosely (no one has turned)."""
        p = np.maximum(partner, 0)
        victim = cand & (rate[p] > rate + 0.25)  # (a)
        ci = np.nonzero(cand)[0]
        if ci.size < 2:
            return victim
        Uc = u32[ci]
        G = np.einsum("ik,jk->ij", Uc, Uc)  # small: a BLAS call would cost more in thread wake-ups
        dist = np.sqrt(np.maximum(2.0 - 2.0 * G, 0.0))
        same = -np.log(np.maximum(dist, _MIN_DIST)) >= line  # same group: as close as a duplicate
        np.fill_diagonal(same, False)
        others = same.sum(axis=1)
        others_turned = (same & rd.turned[ci][None, :]).sum(axis=1)
        c = rd.feats[ci, _F["self_alignment"]]
        c_others = np.where(same, np.nan_to_num(c, nan=np.inf)[None, :], -np.inf).max(axis=1)
        with np.errstate(invalid="ignore"):
            clear = c >= c_others + self.config.steady_sd * rd.sd.get("self_alignment", 1.0)
        victim[ci] |= clear & (others > 0) & (others_turned == others)  # (b)
        return victim

    def _consensus_phase(self, rd: _RoundWork) -> None:
        """Robust consensus (coordinate-wise median of the voters), alignment with it, staleness."""
        K, voters = rd.K, rd.voters
        rd.m = m = np.median(rd.X[voters], axis=0)
        rd.m_unit = m / max(float(np.linalg.norm(m)), _EPS)
        rd.cos_m = cos_m = rd.units @ rd.m_unit
        rd.feats[:, _F["alignment"]] = cos_m
        # spread from the upper half only: nodes that point away crowd the lower half
        med_a, q75_a = np.percentile(cos_m[voters], [50, 75])
        rd.sd["alignment"] = max(float(q75_a - med_a) / 0.6745, 1e-3)
        rd.M = float(np.median(cos_m[voters]))
        # staleness: how much better an earlier round's consensus fits than this round's,
        # in robust sd of that gap across the round (honest updates fit the current one best)
        past = [u for r, u in self._past_consensus if r >= rd.rnd - _STALE_LAGS and u.shape[0] == K]
        if past:
            # centred on the round's typical gap: as a model converges, successive consensus
            # directions resemble each other and every honest update fits an earlier one about
            # as well as the current one; only a node far past that is stale
            P = np.stack(past)
            fit = rd.units @ P.T
            best = fit.argmax(axis=1)
            gap = fit[np.arange(rd.n), best] - cos_m
            # where the node's usual direction fits that earlier consensus better by as much, the
            # consensus moved away from where the node usually points (the median of a two-sided
            # fleet changing sides as participation varies), not the node back in time; unless
            # the node has turned away from its own past (label flipping), when its usual
            # direction says nothing about this update
            own = rd.own_unit
            gap_own = (own * P[best]).sum(axis=1) - own @ rd.m_unit
            gap = gap - np.where(rd.turned, 0.0, np.maximum(gap_own, 0.0))
            # spread at least the resolution of the gap: it is a cosine with the consensus's
            # displacement times the displacement's length, and sketch cosines resolve ~1/sqrt(K)
            # (where most nodes' gap is explained by their usual direction, the voters' spread
            # would otherwise collapse and any residual turn into many sd)
            shift = float(np.median(np.linalg.norm(P[best[voters]] - rd.m_unit, axis=1)))
            med_gap, sd_gap = robust_center_scale(gap[voters], max(1e-3, shift / math.sqrt(K)))
            rd.feats[:, _F["staleness"]] = (gap - max(med_gap, 0.0)) / sd_gap
        rd.dist = np.linalg.norm(rd.X - m, axis=1)

    def _self_alignment_phase(self, rd: _RoundWork) -> None:
        """Agreement of a node's update with its own usual direction (an average of its earlier
        unit updates, kept as int8). A non-IID client keeps pointing its own way, honestly,
        however far that is from the consensus; a client that turns against its own past (sign
        flipping, label flipping) does not, even where its updates are nearly orthogonal to the
        consensus. Scored like alignment: below a fraction of the typical node's agreement."""
        cfg, idx = self.config, rd.idx
        own = self._own_dir[idx].astype(np.float64) / 127.0
        has = np.abs(own).sum(axis=1) > 0
        # judged once the average has settled (two half-lives of the node's own rounds)
        settled = has & (self._dev_n[idx] >= 2 * cfg.drift_half_life_rounds)
        # steadiness is told from three rounds of history on (judging direction waits longer)
        known = has & (self._dev_n[idx] >= cfg.warmup_rounds)
        c_all = np.where(known, (rd.units * own).sum(axis=1) / np.maximum(np.linalg.norm(own, axis=1), _EPS), np.nan)
        c = np.where(settled, c_all, np.nan)
        rd.feats[:, _F["self_alignment"]] = c
        rd.own_unit = np.where(known[:, None], unit_rows(own)[0], 0.0)
        rd.settled = settled
        # steady: agrees with its own past about as well as the typical node (a non-IID client
        # pointing its own way); turned: far below (past the direction test's margin and
        # confidence_z sd: where honest nodes agree with their own past only loosely, none is)
        ref = rd.trusted & known
        rd.steady = np.zeros(rd.n, dtype=bool)
        rd.turned = np.zeros(rd.n, dtype=bool)
        if ref.sum() >= cfg.min_nodes:
            med_c, sd_c = robust_center_scale(c_all[ref], 1.0 / math.sqrt(rd.K))
            rd.sd["self_alignment"] = sd_c
            with np.errstate(invalid="ignore"):
                rd.steady = known & (c_all >= med_c - cfg.steady_sd * sd_c)
                rd.turned = settled & (c < min(cfg.direction_fraction * med_c, med_c - cfg.confidence_z * sd_c))
        # the average moves on (never while the node is flagged); the first update starts it
        a = 1.0 - 0.5 ** (1.0 / cfg.drift_half_life_rounds)
        upd = np.where(has[:, None], (1 - a) * own + a * rd.units, rd.units)
        upd, _ = unit_rows(upd)
        keep = rd.firing & has
        q = np.clip(np.rint(upd * 127.0), -127, 127).astype(np.int8)
        self._own_dir[idx] = np.where(keep[:, None], self._own_dir[idx], q)

    def _scale_phase(self, rd: _RoundWork) -> None:
        """Update norm, loss, norm consistency and distance to the consensus, on log scales,
        against the round's median and each node's own usual level (``_own_levels``); each
        one-sided test takes its spread from the other half, which its outliers cannot reach."""
        cfg, tr = self.config, rd.trusted
        lognorm = np.log(np.maximum(rd.norms, _EPS))
        med, _ = robust_center_scale(lognorm[tr], 0.01)
        # near zero, log losses of a converged model swing by orders of magnitude between rounds;
        # once far below where training started (a fraction of the first round's loss), the
        # ratio carries no information
        if self._loss_scale is None and np.isfinite(rd.losses[tr]).any():
            self._loss_scale = float(np.nanmedian(rd.losses[tr]))
        floor = cfg.loss_floor_fraction * (self._loss_scale or 0.0)
        logloss = np.log(rd.losses + floor)  # NaN where missing
        med_l, _ = robust_center_scale(logloss[tr], 0.01)
        logdist = np.log(np.maximum(rd.dist, _EPS))
        med_d, _ = robust_center_scale(logdist[tr], 0.01)
        # norm per unit of (unfloored) loss: the size of a cross-entropy gradient scales with the
        # loss once examples are fitted, so an honest client whose local data become fitted sends
        # ever smaller updates *and* reports an ever smaller loss; a free-rider's update shrinks
        # while the loss of the model it was sent does not
        lograw = np.log(np.where(rd.losses > 0, rd.losses, np.nan))
        med_r = float(np.median(lograw[tr & np.isfinite(lograw)])) if (tr & np.isfinite(lograw)).any() else math.nan
        rel = np.stack([lognorm - med, logloss - med_l, logdist - med_d, (lognorm - med) - (lograw - med_r)], axis=1)
        res = self._own_levels(rd, rel)

        rd.feats[:, _F["norm"]] = res[:, 0]
        # a drop in size counts only as far as the loss does not explain it: the smaller of the
        # departures of the norm and of the norm per unit of loss from the node's usual levels
        # (the norm alone where no loss is reported)
        drop = np.where(np.isfinite(res[:, 3]), np.maximum(res[:, 0], res[:, 3]), res[:, 0])
        rd.feats[:, _F["norm_drop"]] = drop
        rd.sd["norm_high"] = half_spread(res[tr, 0], "lower", 0.01)
        rd.sd["norm_low"] = half_spread(drop[tr], "upper", 0.01)
        rd.sd["norm"] = max(rd.sd["norm_high"], rd.sd["norm_low"])
        rd.feats[:, _F["loss"]] = res[:, 1]
        rd.sd["loss"] = half_spread(res[tr, 1], "lower", 0.01)
        rd.feats[:, _F["distance"]] = res[:, 2]
        rd.sd["distance"] = half_spread(res[tr, 2], "upper", 0.01)

        fit = lognorm - np.log(np.maximum(rd.sk_norm, _EPS))
        med_f, rd.sd["norm_consistency"] = robust_center_scale(fit[tr], 0.05)
        rd.feats[:, _F["norm_consistency"]] = fit - med_f

    def _own_levels(self, rd: _RoundWork, rel: np.ndarray) -> np.ndarray:
        """Honest heterogeneity in size: a client with few local steps sends steadily smaller
        updates, one with a hard label mix reports a higher loss, a near-IID client sits close to
        the consensus. Each node keeps its usual log ratio to the fleet for norm, loss and distance
        (first value, then an average that moves at most ``own_log_rate`` a round and never while
        the node is flagged), within ``own_ratio_cap`` of the fleet; what is judged is the
        departure from that level, so a node that suddenly changes size is caught at once."""
        cfg = self.config
        lim = math.log(cfg.own_ratio_cap)
        lvl = self._level[rd.idx].astype(np.float64)
        fin = np.isfinite(rel)
        have = np.isfinite(lvl)
        lvl = np.where(have, lvl, np.where(fin, np.clip(rel, -lim, lim), np.nan))
        res = np.where(np.isfinite(lvl), rel - lvl, rel)
        a = 1.0 - 0.5 ** (1.0 / cfg.own_half_life_rounds)
        r = cfg.own_log_rate
        gap = np.where(fin, rel, 0.0) - np.nan_to_num(lvl)
        a_w, warm = self._warmup_rate(rd, a)
        step = np.where(warm[:, None], a_w[:, None] * gap, np.clip(a * gap, -r, r))
        new = np.clip(lvl + step, -lim, lim)
        keep = rd.firing[:, None] | ~fin
        self._level[rd.idx] = np.where(keep & have, self._level[rd.idx], np.where(keep, lvl, new)).astype(np.float16)
        return res

    def _round_scores(self, rd: _RoundWork) -> np.ndarray:
        """Per-round scores against the fleet: standard deviations beyond each test's margin."""
        cfg, f = self.config, rd.feats
        sd = self._pool_spreads(rd)
        sc = np.full((rd.n, _NW), np.nan)
        col = lambda name: sc[:, _S[name]]  # noqa: E731  (a view: writes go into sc)
        # judge alignment only when the round has a clear consensus direction, and by a quarter sd a round
        if rd.M > cfg.confidence_z * sd["alignment"] / math.sqrt(max(1, int(rd.voters.sum()))):
            col("alignment")[:] = (cfg.align_fraction * rd.M - rd.cos_m) / sd["alignment"] - 0.25
        logR, logL, logC = math.log(cfg.norm_ratio), math.log(cfg.loss_ratio), math.log(cfg.norm_consistency_ratio)
        col("norm_high")[:] = (f[:, _F["norm"]] - logR) / sd["norm_high"]
        col("norm_low")[:] = (-f[:, _F["norm_drop"]] - logR) / sd["norm_low"]
        col("similarity")[:] = np.where(rd.victim, 0.0, f[:, _F["similarity"]]) - cfg.similarity_sd
        col("loss")[:] = (f[:, _F["loss"]] - logL) / sd["loss"]
        col("norm_consistency")[:] = (np.abs(f[:, _F["norm_consistency"]]) - logC) / sd["norm_consistency"]
        col("too_close")[:] = (-f[:, _F["distance"]] - logR) / sd["distance"]
        col("stale")[:] = f[:, _F["staleness"]] - cfg.stale_sd
        # an update that aligns with this round's consensus at least as well as the typical voter
        # carries this round's information, whatever earlier consensus it fits better still
        # (in a converged fleet successive consensus directions differ by noise): not stale
        col("stale")[:] = np.where(rd.cos_m >= rd.M, np.minimum(col("stale"), 0.0), col("stale"))
        ref = rd.voters & np.isfinite(f[:, _F["self_alignment"]])
        if ref.sum() >= cfg.min_nodes:
            # noisy honest nodes agree with their own past less, and less steadily, than the
            # typical node: the test is whether an update points *against* the node's own past
            c = f[:, _F["self_alignment"]]
            # spread at least 1/sqrt(K), the resolution of sketch cosines: clients whose updates
            # barely change between rounds would otherwise make every other client's dip an outlier
            med_c, sd_c = robust_center_scale(c[ref], 1.0 / math.sqrt(rd.K))
            rd.sd["direction"] = sd_c
            sd_c = self._pool_spreads(rd, ("direction",))["direction"]
            if med_c > cfg.confidence_z * sd_c / math.sqrt(int(ref.sum())):
                col("direction")[:] = (cfg.direction_fraction * med_c - c) / sd_c - 0.25
                # a client whose own data are fitted stops pointing its own way and follows the
                # fleet's gradient: its update turns *away* from its own past (cosine near 0) and
                # *towards* the consensus (aligning with it as well as the typical voter, and
                # better than its own usual direction does): no evidence. Sign and label
                # flipping turn an update *against* its past (cosine below 0, beyond the
                # 1/sqrt(K) resolution of sketch cosines) or against the fleet
                with_fleet = (rd.cos_m >= max(rd.M, 0.0)) & (rd.cos_m >= rd.own_unit @ rd.m_unit) & (c >= -1.0 / math.sqrt(rd.K))
                col("direction")[:] = np.where(with_fleet, np.minimum(col("direction"), 0.0), col("direction"))
        # clip: one extreme round cannot carry a window alone; a similarity hit counts little
        # per round, so the victim of an occasional copier is not mistaken for the copier
        clip = cfg.confidence_z * 1.5
        np.clip(sc, -clip, clip, out=sc)
        np.minimum(col("similarity"), 0.5 * cfg.confidence_z, out=col("similarity"))
        return sc

    def _pool_spreads(self, rd: _RoundWork, keys: tuple[str, ...] = _SPREADS[:-1]) -> dict[str, float]:
        """The round's spreads, each at least the median of the recent rounds' own spreads
        (``spread_pool_rounds``). A spread from a round's few dozen nodes is noisy; a round whose
        honest nodes happen to bunch up would otherwise turn every steady outsider into an outlier
        (small fleets, or fewer voters while colluders are left out). The round's own spread is
        what is remembered, so pooling never ratchets up."""
        cfg, W, rnd = self.config, self.config.window_rounds, rd.rnd
        P = min(cfg.spread_pool_rounds, W - 1)
        past = [(rnd - k) % W for k in range(1, P + 1) if self._col_round[(rnd - k) % W] == rnd - k]
        out = dict(rd.sd)
        for key in keys:
            j = _SPREADS.index(key)
            self._spread_hist[rnd % W, j] = rd.sd[key]
            h = self._spread_hist[past, j]
            h = h[np.isfinite(h)]
            if h.size >= 3:
                out[key] = max(rd.sd[key], float(np.median(h)))
        return out

    def _warmup_rate(self, rd: _RoundWork, a: float) -> tuple[np.ndarray, np.ndarray]:
        """While a node is new its usual level is the plain mean of its rounds so far (weight
        1/k, not rate-limited) until that is slower than the running average's ``a``: a level
        set by one or two early rounds, when the model and the fleet move fastest, would make a
        young node's ordinary later rounds look like a change of behaviour."""
        k = self._dev_n[rd.idx].astype(np.float64) + 1.0  # rounds of this node, this one included
        a_w = 1.0 / k
        return a_w, a_w > a

    def _against_own_history(self, rd: _RoundWork, sc: np.ndarray) -> np.ndarray:
        """Honest heterogeneity: a node whose score sits steadily above the fleet's (a non-IID
        client pointing its own way, fewer local steps, a converged update that resembles earlier
        rounds) is judged against its own usual level. Each node keeps a baseline per statistic
        (first score, then an average that moves at most ``own_rate`` a round and never while the
        node is flagged), at most ``own_cap``; the score that counts is the round's score less
        that baseline. A sudden change of behaviour still scores in full."""
        cfg = self.config
        cols = _OWN_COLS
        idx = rd.idx
        base = self._base[idx][:, cols].astype(np.float64)
        s = sc[:, cols]
        fin = np.isfinite(s)
        have = np.isfinite(base)
        eff = sc.copy()
        # a node's first score sets its level (within own_cap) and counts only beyond it, as
        # its first norm, loss and distance do (``_own_levels``)
        first = np.clip(np.where(fin, s, 0.0), 0.0, cfg.own_cap)
        eff[:, cols] = np.where(fin, s - np.where(have, base, first), s)
        # update: first finite score sets the baseline, then rate-limited tracking
        a = 1.0 - 0.5 ** (1.0 / cfg.own_half_life_rounds)
        gap = np.where(fin, s, 0.0) - np.where(have, base, 0.0)
        step = np.clip(gap, -cfg.own_rate / a, cfg.own_rate / a) * a
        a_w, warm = self._warmup_rate(rd, a)
        step = np.where(warm[:, None], a_w[:, None] * gap, step)
        ja = _OWN_STATS.index("alignment")
        a_st = 1.0 - 0.5 ** (1.0 / cfg.own_half_life_steady)
        step[:, ja] = np.where(rd.steady, a_st * (np.where(fin[:, ja], s[:, ja], 0.0) - np.where(have[:, ja], base[:, ja], 0.0)), step[:, ja])
        new = np.where(have, base + step, np.where(fin, s, np.nan))
        # a steady node's usual misalignment is its data: followed up to own_cap_steady (a node
        # that is not steady this round keeps, but does not raise, a baseline above own_cap)
        cap = np.full(new.shape, cfg.own_cap)
        b_a = np.where(have[:, ja], base[:, ja], 0.0)
        cap[:, ja] = np.where(rd.steady & rd.settled, cfg.own_cap_steady, np.clip(b_a, cfg.own_cap, cfg.own_cap_steady))
        new = np.where(fin, np.clip(new, 0.0, cap), base)
        frozen = rd.firing[:, None] | ~fin
        upd = np.where(frozen & have, base, np.where(frozen, np.nan, new))
        b = self._base[idx]
        b[:, cols] = upd.astype(self._base.dtype)
        self._base[idx] = b
        clip = cfg.confidence_z * 1.5
        return np.clip(eff, -clip, clip)

    def _store_round(self, rd: _RoundWork, sc: np.ndarray) -> None:
        cfg = self.config
        col = rd.rnd % cfg.window_rounds
        self._vals[rd.idx, col, :] = rd.feats.astype(np.float16)
        self._scores[rd.idx, col, :] = _quantize(sc)
        sd = rd.sd
        self._scale[col] = [
            sd["alignment"], sd["norm"], 1.0, sd["loss"], sd["norm_consistency"], sd["distance"], 1.0,
            sd.get("direction", 1.0), sd["norm_low"],
        ]
        self._prev_units = np.vstack([rd.units, rd.m_unit[None, :]]).astype(np.float32)  # compared in float32 anyway
        self._prev_slots = np.append(rd.idx, -1).astype(np.int32)
        self._past_consensus = [(r, u) for r, u in self._past_consensus if r >= rd.rnd - _STALE_LAGS + 1]
        self._past_consensus.append((rd.rnd, rd.m_unit))

    def _window_evidence(self, rd: _RoundWork) -> tuple[np.ndarray, np.ndarray]:
        """Window tests over several horizons (sum of scores / sqrt(rounds) > confidence_z), and a
        count of rounds far past the margin for intermittent attackers."""
        cfg = self.config
        W, n, rnd = cfg.window_rounds, rd.n, rd.rnd
        ev = np.zeros((n, len(STATISTICS)))
        order = (rnd - np.arange(W)) % W
        col_ok = self._col_round[order] == (rnd - np.arange(W))
        U = _dequantize(self._scores[rd.idx][:, order, :])
        U[:, ~col_ok, :] = np.nan
        fin = np.isfinite(U)
        cnt = np.cumsum(fin, axis=1)
        tot = np.cumsum(np.where(fin, U, 0.0), axis=1)
        best_h = np.zeros((n, len(STATISTICS)), dtype=np.int64)
        z = cfg.confidence_z
        for w in cfg.horizons:
            c = cnt[:, w - 1, :]
            T = np.where(c >= max(2, (w + 1) // 2), tot[:, w - 1, :] / np.sqrt(np.maximum(c, 1)) / z, -np.inf)
            better = T > ev[:, :_NW]
            ev[:, :_NW] = np.where(better, T, ev[:, :_NW])
            best_h[:, :_NW] = np.where(better, w, best_h[:, :_NW])
        ev[~np.isfinite(ev)] = 0.0
        # intermittent attackers: rounds far past the margin counted over the hit horizon, so
        # good rounds in between cannot cancel them (similarity excepted: copied victims; loss
        # excepted: a loss measured on one minibatch swings, only a persistent excess counts)
        H = min(W, cfg.hit_horizon_rounds)
        hits = (np.where(fin[:, :H], U[:, :H], -np.inf) > z).sum(axis=1).astype(np.float64)
        hits[:, _S["similarity"]] = 0.0
        hits[:, _S["loss"]] = 0.0
        by_count = hits / cfg.min_hit_rounds
        better = by_count > ev[:, :_NW]
        ev[:, :_NW] = np.where(better, by_count, ev[:, :_NW])
        best_h[:, :_NW] = np.where(better, H, best_h[:, :_NW])
        return ev, best_h

    def _persistent_deviation(self, rd: _RoundWork, ev: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Drift and collusion, from each node's exponentially weighted deviation from the consensus
        (level) and its fast-minus-slow trend (where a node's steady non-IID bias cancels)."""
        cfg, idx, n, K = self.config, rd.idx, rd.n, rd.K
        trusted = rd.trusted
        dev_scale = float(np.median(rd.dist[trusted]))
        dev = (rd.X - rd.m) / max(dev_scale, _EPS)
        a_fast = 1.0 - 0.5 ** (1.0 / cfg.drift_half_life_rounds)
        a_slow = 1.0 - 0.5 ** (1.0 / (4.0 * cfg.drift_half_life_rounds))
        self._dev_sum[idx] = ((1 - a_fast) * self._dev_sum[idx] + a_fast * dev).astype(_DEV_DTYPE)
        self._dev_w[idx] = (1 - a_fast) * self._dev_w[idx] + a_fast
        self._slow_sum[idx] = ((1 - a_slow) * self._slow_sum[idx] + a_slow * dev).astype(_DEV_DTYPE)
        self._slow_w[idx] = (1 - a_slow) * self._slow_w[idx] + a_slow
        self._dev_n[idx] += 1
        elig = self._dev_n[idx] >= cfg.warmup_rounds
        drift_ratio = np.zeros(n)
        e_clu = np.zeros(n)
        clu_info: dict[str, np.ndarray] = {}
        if elig.sum() >= cfg.min_nodes:
            ie = idx[elig]
            ref = trusted[elig] if trusted[elig].sum() >= cfg.min_nodes else np.ones(int(elig.sum()), dtype=bool)
            D = self._dev_sum[ie].astype(np.float64) / self._dev_w[ie][:, None]
            Dc = D - np.median(D[ref], axis=0)
            Dn = np.linalg.norm(Dc, axis=1)
            # a newcomer's average still carries much of its noise: judge its size only once
            # the average has settled (three half-lives)
            settled = self._dev_n[ie] >= 3 * cfg.drift_half_life_rounds
            ref_s = ref & settled if (ref & settled).sum() >= cfg.min_nodes else ref
            ratio = Dn / max(float(np.median(Dn[ref_s])), _EPS)
            # honest non-IID fleets have a wide spread of persistent biases: a drift must also stand
            # out from that spread (robust z of the log ratio), not only from its median
            logr = np.log(np.maximum(ratio, _EPS))
            med_r, sd_r = robust_center_scale(logr[ref_s], 0.05)
            outlier = (logr - med_r) / sd_r >= cfg.drift_sd
            drift_ratio[elig] = np.where(settled & outlier, ratio, np.where(settled, np.minimum(ratio, cfg.drift_ratio), 0.0))
            # the same tests on the trend (fast minus slow average): a node's own steady bias cancels
            Tr = D - self._slow_sum[ie].astype(np.float64) / self._slow_w[ie][:, None]
            Tr = Tr - np.median(Tr[ref], axis=0)
            among = ~rd.firing[elig] | (self._reason[ie] == _S_COLLUSION)
            for label, V in (("level", Dc), ("trend", Tr)):
                ev_v, info_v = _shared_direction(V, ref, K, cfg.cluster_sd, among, cfg.near_copy_ratio)
                better = ev_v > e_clu[elig]
                e_clu[elig] = np.maximum(e_clu[elig], ev_v)
                for key, val in info_v.items():
                    arr = clu_info.setdefault(key, np.full(n, np.nan))
                    cur = arr[elig]
                    cur[better] = val[better]
                    arr[elig] = cur
                src = clu_info.setdefault("source", np.full(n, np.nan))
                cur = src[elig]
                cur[better] = 0.0 if label == "level" else 1.0
                src[elig] = cur
        e_clu = self._against_own_kinship(rd, e_clu, elig)
        self._drift_run[idx] = np.where(drift_ratio > cfg.drift_ratio, self._drift_run[idx] + 1, 0)
        self._clu_run[idx] = np.where(e_clu >= 1.0, self._clu_run[idx] + 1, 0)
        e_drift = np.log(np.maximum(drift_ratio, 1.0)) / math.log(cfg.drift_ratio)
        persist = cfg.persist_rounds
        ev[:, _S_DRIFT] = np.where(self._drift_run[idx] >= persist, e_drift, np.minimum(e_drift, 0.99))
        ev[:, _S_COLLUSION] = np.where(self._clu_run[idx] >= persist, e_clu, np.minimum(e_clu, 0.99))
        return drift_ratio, clu_info

    def _against_own_kinship(self, rd: _RoundWork, e_clu: np.ndarray, elig: np.ndarray) -> np.ndarray:
        """Honest clients with much the same data (two clients of one dominant class in a small
        fleet) share a persistent deviation from their first rounds on: a data cluster, not a
        plot. Each node's usual collusion evidence is the mean over its first judged rounds (a
        warm-up as long as the own-history half-life), then fixed, at most the threshold; what
        counts is the excess of this round's evidence over that level beyond the fleet's typical
        one. Colluders who start at some round depart from their level at once; a large group
        colluding from its first round still stands out (group evidence far past 1)."""
        cfg, idx = self.config, rd.idx
        ref = elig & rd.trusted
        if ref.sum() < cfg.min_nodes:
            return e_clu
        typical = float(np.median(e_clu[ref]))
        base = self._clu_base[idx].astype(np.float64)
        k = (self._dev_n[idx] - cfg.warmup_rounds + 1).astype(np.float64)  # judged rounds, this one included
        warm = elig & ~rd.firing & (k >= 1) & (k <= 1.0 / (1.0 - 0.5 ** (1.0 / cfg.own_half_life_rounds)))
        new = np.where(np.isfinite(base), base + (e_clu - np.nan_to_num(base)) / np.maximum(k, 1.0), e_clu)
        # after the warm-up the level follows slowly (``kin_rate`` a round, never while flagged):
        # honest kinship grows as a two-class fleet converges and its clients' persistent
        # deviations line up with the one class direction, by about a hundredth a round; a plot
        # starting at some round departs by tenths a round
        r = cfg.kin_rate
        later = elig & ~rd.firing & ~warm & np.isfinite(base)
        new = np.where(later, base + np.clip(e_clu - np.nan_to_num(base), -r, r), new)
        self._clu_base[idx] = np.where(warm | later, new, base).astype(self._clu_base.dtype)
        b = np.minimum(np.nan_to_num(self._clu_base[idx].astype(np.float64)), 1.0)
        return np.where(elig, e_clu - np.maximum(b - typical, 0.0), e_clu)

    def _verdicts(
        self, rd: _RoundWork, ev: np.ndarray, best_h: np.ndarray, drift_ratio: np.ndarray, clu_info: dict[str, np.ndarray]
    ) -> list[NodeVerdict]:
        """Alert state and trust per node: trust falls at once with suspicion, recovers slowly."""
        cfg, rnd, idx = self.config, rd.rnd, rd.idx
        suspicious = (ev >= 1.0).any(axis=1)
        suspicion = ev.max(axis=1)
        top = ev.argmax(axis=1)
        out: list[NodeVerdict] = []
        explain_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, float, float]] = {}
        for i in range(rd.n):
            s = int(idx[i])
            newly = resolved = False
            if suspicious[i]:
                self._clean[s] = 0
                if not self._firing[s]:
                    self._reason[s] = int(top[i])  # what the detection began with
                    self._firing[s] = True
                    self._since[s] = rnd
                    newly = True
            elif self._firing[s]:
                self._clean[s] += 1
                if self._clean[s] >= cfg.resolve_after_rounds:
                    self._firing[s] = False
                    self._reason[s] = -1
                    resolved = True
            susp = max(0.0, float(suspicion[i]))
            target = 1.0 / (1.0 + susp**4)  # ~1 while evidence is well under threshold, 0.5 at it
            if self._firing[s]:
                target = min(target, 0.4)
            old = float(self._trust[s])
            trust = target if target <= old else min(target, old + cfg.trust_recovery_per_round)
            self._trust[s] = trust
            flagged = bool(self._firing[s])
            reason = STATISTICS[int(top[i])] if susp > 0 else ""
            evidence = {STATISTICS[j]: round(float(ev[i, j]), 4) for j in range(len(STATISTICS)) if ev[i, j] > 0.05}
            details: dict[str, Any] = {}
            if flagged or suspicious[i]:
                details = self._explain(int(top[i]), i, best_h=best_h, trusted=rd.trusted,
                                        drift_ratio=drift_ratio, clu_info=clu_info, idx=idx, cache=explain_cache)
            out.append(
                NodeVerdict(
                    node=rd.names[i],
                    round=rnd,
                    trust=round(trust, 4),
                    suspicion=round(susp, 4),
                    flagged=flagged,
                    newly_flagged=newly,
                    resolved=resolved,
                    detected_round=int(self._since[s]) if flagged or resolved else None,
                    reason=reason,
                    evidence=evidence,
                    details=details,
                )
            )
            if resolved:
                self._since[s] = -1
        return out

    def _explain(
        self,
        j: int,
        i: int,
        *,
        best_h: np.ndarray,
        trusted: np.ndarray,
        drift_ratio: np.ndarray,
        clu_info: dict[str, np.ndarray],
        idx: np.ndarray,
        cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, float, float]],
    ) -> dict[str, Any]:
        """Which statistic, how far from the honest majority, over how many rounds."""
        stat = STATISTICS[j]
        s = int(idx[i])
        if stat == "drift":
            return {
                "statistic": stat,
                "value": round(float(drift_ratio[i]), 4),
                "fleet_median": 1.0,
                "threshold": self.config.drift_ratio,
                "rounds": int(self._drift_run[s]),
                "meaning": "persistent deviation from the consensus, as a multiple of the fleet median",
            }
        if stat == "collusion":
            get = lambda k: float(clu_info[k][i]) if k in clu_info else math.nan  # noqa: E731
            return {
                "statistic": stat,
                "value": round(get("best_cos"), 4),
                "threshold": round(get("tau"), 4),
                "partners": int(get("partners")) if math.isfinite(get("partners")) else 0,
                "group_cos": round(get("group_cos"), 4),
                "distance_sd": round(max(get("pair_z"), get("group_z")), 2),
                "of": "trend" if get("source") == 1.0 else "level",
                "rounds": int(self._clu_run[s]),
                "meaning": "persistent deviation shared with other nodes, far beyond independent nodes",
            }
        f = _STAT_FEATURE[j]
        w = int(best_h[i, j]) or self.config.horizons[0]
        key = (f, w)
        if key not in cache:
            W = self.config.window_rounds
            rnd = int(self._last_round[s])
            cols = [(rnd - k) % W for k in range(w) if self._col_round[(rnd - k) % W] == rnd - k]
            vals = self._vals[idx][:, cols, f].astype(np.float64)
            cnt = np.isfinite(vals).sum(axis=1)
            mu = np.where(np.isfinite(vals), vals, 0.0).sum(axis=1) / np.maximum(cnt, 1)
            ok = trusted & (cnt > 0)
            fleet = float(np.median(mu[ok])) if ok.any() else 0.0
            sd = float(np.nanmean(self._scale[cols, f])) if cols else 1.0
            cache[key] = (mu, cnt, fleet, sd or 1.0)
        mu, cnt, fleet, sd = cache[key]
        return {
            "statistic": stat,
            "value": round(float(mu[i]), 4),
            "fleet_median": round(fleet, 4),
            "distance_sd": round((float(mu[i]) - fleet) / sd, 2),
            "rounds": int(cnt[i]),
            "horizon_rounds": w,
        }

    def _evict(self, rnd: int) -> list[str]:
        old = np.nonzero((self._last_round >= 0) & (self._last_round < rnd - self.config.evict_after_rounds))[0]
        out = []
        for s in old:
            name = self._names[int(s)]
            if name is None:
                continue
            del self._slot[name]
            self._names[int(s)] = None
            self._clear_slot(int(s))
            self._free.append(int(s))
            out.append(name)
        if out:
            self._count("evicted", len(out))
        return out

    # ------------------------------------------------------------------ checkpoints

    def snapshot(self) -> dict[str, Any]:
        """State as msgspec/JSON-encodable builtins (arrays as raw bytes), about 0.65 KB a node.

        The raw per-round statistics behind alert explanations are not kept: after a restore,
        an alert's ``value`` and ``fleet_median`` cover the rounds judged since.
        """
        live = [s for s in range(self._cap) if self._names[s] is not None]
        li = np.asarray(live, dtype=np.int64)
        return {
            "dim": self.dim,
            "loss_scale": self._loss_scale,
            "last_closed": self.last_closed,
            "counts": dict(self.counts),
            "nodes": [self._names[s] for s in live],
            "scores": _enc(self._scores[li]),
            "base": _enc(self._base[li]),
            "level": _enc(self._level[li]),
            "own_dir": _enc(self._own_dir[li]),
            "dev_sum": _enc(self._dev_sum[li]),
            "dev_w": _enc(self._dev_w[li]),
            "slow_sum": _enc(self._slow_sum[li]),
            "slow_w": _enc(self._slow_w[li]),
            "dev_n": _enc(self._dev_n[li]),
            "last_round": _enc(self._last_round[li]),
            "firing": _enc(self._firing[li]),
            "since": _enc(self._since[li]),
            "clean": _enc(self._clean[li]),
            "trust": _enc(self._trust[li]),
            "drift_run": _enc(self._drift_run[li]),
            "clu_run": _enc(self._clu_run[li]),
            "reason": _enc(self._reason[li]),
            "dup_rate": _enc(self._dup_rate[li]),
            "clu_base": _enc(self._clu_base[li]),
            "scale": _enc(self._scale),
            "spread_hist": _enc(self._spread_hist),
            "col_round": _enc(self._col_round),
            "prev_units": None if self._prev_units is None else _enc(self._prev_units),
            "prev_nodes": _enc(self._prev_positions(live)),
            "past_consensus": [[r, _enc(u)] for r, u in self._past_consensus],
            "pending": {
                str(r): {nd: [v[0], v[1] if math.isfinite(v[1]) else None, _enc(v[2]), v[3]] for nd, v in b.items()}
                for r, b in self.pending.items()
            },
        }

    def _prev_positions(self, live: list[int]) -> np.ndarray:
        """Owners of the previous round's sketches as positions in the snapshot's node list (-1: none)."""
        pos = {s: k for k, s in enumerate(live)}
        return np.asarray([pos.get(int(s), -1) for s in self._prev_slots], dtype=np.int32)

    def restore(self, state: dict[str, Any]) -> None:
        """Load what ``snapshot`` produced (into a detector with the same config)."""
        self.__init__(self.config)  # type: ignore[misc]
        self.dim = state["dim"]
        self._loss_scale = state.get("loss_scale")
        self.last_closed = state["last_closed"]
        self.counts = dict(state.get("counts", {}))
        names = list(state["nodes"])
        cap = 0 if not names else min(self.config.max_nodes, max(64, len(names)))
        self._alloc(cap)
        self._dev_sum = np.zeros((cap, self.dim or 1), dtype=_DEV_DTYPE)
        self._own_dir = np.zeros((cap, self.dim or 1), dtype=np.int8)
        self._slow_sum = np.zeros((cap, self.dim or 1), dtype=_DEV_DTYPE)
        self._free = list(range(cap - 1, len(names) - 1, -1))
        for s, name in enumerate(names):
            self._slot[name] = s
            self._names[s] = name
        k = len(names)
        if state.get("vals") is not None:  # older checkpoints carried the raw statistics too
            self._vals[:k] = _dec(state["vals"])
        for key in ("scores", "base", "level", "own_dir", "dev_sum", "dev_w", "slow_sum", "slow_w", "dev_n", "last_round", "firing", "since", "clean", "trust", "drift_run", "clu_run", "reason", "dup_rate", "clu_base"):
            if key not in state:  # a checkpoint from before own-history baselines: they start afresh
                continue
            arr = _dec(state[key])
            if key == "scores" and arr.dtype.kind == "f":  # older checkpoints kept float scores
                arr = _quantize(arr)
            if key == "level" and arr.shape[1] < len(_LEVELS):  # older checkpoints kept fewer levels
                self._level[:k, : arr.shape[1]] = arr
                continue
            getattr(self, "_" + key)[:k] = arr
        scale = _dec(state["scale"])
        self._scale[:, : scale.shape[1]] = scale  # older checkpoints kept fewer features
        if state.get("spread_hist") is not None:
            self._spread_hist = _dec(state["spread_hist"])
        self._col_round = _dec(state["col_round"])
        self._prev_units = None if state.get("prev_units") is None else _dec(state["prev_units"])
        # rows of the previous round by position in "nodes" (restored slots are those positions)
        self._prev_slots = _dec(state["prev_nodes"]).astype(np.int32) if state.get("prev_nodes") is not None else np.zeros(0, dtype=np.int32)
        self._past_consensus = [(int(r), _dec(u)) for r, u in state.get("past_consensus", [])]
        self.pending = {
            int(r): {nd: (float(v[0]), math.nan if v[1] is None else float(v[1]), _dec(v[2]), float(v[3])) for nd, v in b.items()}
            for r, b in state.get("pending", {}).items()
        }
