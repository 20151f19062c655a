"""Byzantine-node detector for one training cluster: per-round statistics, evidence across rounds.

Each closed round gives, for every node that reported, scale-free statistics
measured against the round's *robust consensus* (coordinate-wise median of the
sketches of nodes that are neither flagged nor near-copies of another) and the
fleet's median/MAD:

* ``alignment``  cosine with the consensus, against a fraction of the typical
  node's: updates that point away (sign flip, inner-product manipulation) or
  nowhere (noise, free-riding) align far less than honest ones, however noisy.
* ``norm_high`` / ``norm_low``  update norm over the round's median.
* ``similarity`` largest cosine with another sketch of this round or the
  previous one, as a robust z (collusion, replayed work). A copied victim is
  not blamed: the hit goes to the end of the pair that copies habitually.
* ``loss``       reported loss over the round's median (not learning, lying).
* ``norm_consistency``  reported norm over sketch norm, against the fleet.
* ``too_close``  distance to the consensus far below the fleet's (sending the
  aggregate back, ALIE with few colluders).
* ``stale``      fits an earlier round's consensus better than this round's.

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

FEATURES: tuple[str, ...] = ("alignment", "norm", "similarity", "loss", "norm_consistency", "distance", "staleness")
_ALIGN, _NORM, _SIM, _LOSS, _FIT, _DIST, _STALE = range(len(FEATURES))
STATISTICS: tuple[str, ...] = (
    "alignment",
    "norm_high",
    "norm_low",
    "similarity",
    "loss",
    "norm_consistency",
    "too_close",
    "stale",
    "drift",
    "collusion",
)
_NW = 8  # statistics tested over windows (the first eight of STATISTICS)
_STAT_FEATURE = (_ALIGN, _NORM, _NORM, _SIM, _LOSS, _FIT, _DIST, _STALE)
_STALE_LAGS = 4  # past consensus directions kept to recognise stale updates
_S_DRIFT, _S_COLLUSION = _NW, _NW + 1
_EPS = 1e-12
_MAX_COS = 1.0 - 1e-9


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
    drift_half_life_rounds: float = 4.0  # memory of the persistent-deviation average
    drift_ratio: float = 2.5  # persistent deviation this many times the fleet median
    cluster_sd: float = 5.0  # pairwise cosine of persistent deviations, in sd of independent vectors
    min_hit_rounds: int = 4  # rounds past the confidence level (within window_rounds) that flag alone
    persist_rounds: int = 2  # consecutive rounds a drift/collusion finding must hold
    warmup_rounds: int = 3  # rounds a node needs before its persistent deviation is judged
    resolve_after_rounds: int = 10  # clean rounds before an alert resolves
    trust_recovery_per_round: float = 0.05  # how fast trust may climb back
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
class RoundResult:
    """What closing one round produced."""

    round: int
    ts: float  # newest report time of the round (event time, UNIX s)
    nodes: int
    judged: bool
    verdicts: list[NodeVerdict]
    evicted: list[str]


def _shared_direction(
    V: np.ndarray, ref: np.ndarray, K: int, k_sd: float, among: np.ndarray
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
    total = V[ref].sum(axis=0)  # the direction the group pushes a mean aggregate
    others, _ = unit_rows(total[None, :] - np.where(ref[:, None], V, 0.0))
    gc = (U * others).sum(axis=1)
    med_g, sd_g = robust_center_scale(gc[ref], 1.0 / math.sqrt(K))
    gz = (gc - med_g) / sd_g
    ev = np.maximum(np.maximum(best, 0.0) / tau, gz / k_sd)
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
        self._col_round = np.full(W, -1, dtype=np.int64)
        self._prev_units: np.ndarray | None = None
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
        self._vals = grow(g("_vals"), (cap, W, F), np.nan, np.float32)
        self._scores = grow(g("_scores"), (cap, W, _NW), np.nan, np.float32)
        self._dev_sum = grow(g("_dev_sum"), (cap, K), 0.0, np.float64)
        self._dev_w = grow(g("_dev_w"), (cap,), 0.0, np.float64)
        self._slow_sum = grow(g("_slow_sum"), (cap, K), 0.0, np.float64)
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
        self._reason = grow(g("_reason"), (cap,), -1, np.int64)
        self._names.extend([None] * (cap - old))
        self._free.extend(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _clear_slot(self, s: int) -> None:
        self._vals[s] = np.nan
        self._scores[s] = np.nan
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
            self._dev_sum = np.zeros((self._cap, self.dim))
            self._slow_sum = np.zeros((self._cap, self.dim))
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
            self._scores[:] = np.nan
            self._scale[:] = np.nan
            self._col_round[:] = -1
        else:
            for rr in range(prev + 1, rnd + 1):
                c = rr % W
                self._vals[:, c, :] = np.nan
                self._scores[:, c, :] = np.nan
                self._scale[c] = np.nan
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
        cfg = self.config
        W, K = cfg.window_rounds, X.shape[1]
        col = rnd % W
        n = len(idx)
        firing = self._firing[idx]
        trusted = ~firing
        if trusted.sum() < max(cfg.min_nodes, (n + 1) // 2):
            trusted = np.ones(n, dtype=bool)

        units, sk_norm = unit_rows(X)
        feats = np.full((n, len(FEATURES)), np.nan)

        # similarity first: near-copies of each other (or of last round) are not independent
        # opinions, so they are left out of the consensus
        sim_now, partner = max_offdiag_cos(units)
        sim = sim_now
        if self._prev_units is not None and self._prev_units.shape[1] == K:
            prev = self._prev_units.astype(np.float32)
            sim = np.maximum(sim, (units.astype(np.float32) @ prev.T).max(axis=1).astype(np.float64))
        sim_t = np.arctanh(np.clip(sim, -_MAX_COS, _MAX_COS))
        med_s, sd_s = robust_center_scale(sim_t[trusted], 0.02)
        feats[:, _SIM] = (sim_t - med_s) / sd_s
        # a copy has two ends: when a node's closest match this round is a node that has been
        # a near-copy more habitually, the hit is that node's, not this one's (the copied victim)
        dup = feats[:, _SIM] > cfg.similarity_sd
        rate = self._dup_rate[idx]
        victim = dup & (sim_now >= sim) & (partner >= 0) & (rate[np.maximum(partner, 0)] > rate + 0.25)
        a_dup = 1.0 - 0.5 ** (1.0 / cfg.drift_half_life_rounds)
        self._dup_rate[idx] = (1 - a_dup) * rate + a_dup * dup
        voters = trusted & (feats[:, _SIM] <= cfg.similarity_sd)
        if voters.sum() < max(cfg.min_nodes, (int(trusted.sum()) + 1) // 2):
            voters = trusted

        m = np.median(X[voters], axis=0)
        m_unit = m / max(float(np.linalg.norm(m)), _EPS)
        cos_m = units @ m_unit
        feats[:, _ALIGN] = cos_m
        # spread from the upper half only: nodes that point away crowd the lower half
        med_a, q75_a = np.percentile(cos_m[voters], [50, 75])
        sd_align = max(float(q75_a - med_a) / 0.6745, 1e-3)
        # staleness: how much better an earlier round's consensus fits than this round's,
        # in robust sd of that gap across the round (honest updates fit the current one best)
        past = [u for r, u in self._past_consensus if r >= rnd - _STALE_LAGS and u.shape[0] == K]
        if past:
            gap = (units @ np.stack(past).T).max(axis=1) - cos_m
            _, sd_gap = robust_center_scale(gap[voters], 1e-3)
            feats[:, _STALE] = gap / sd_gap

        lognorm = np.log(np.maximum(norms, _EPS))
        med, _ = robust_center_scale(lognorm[trusted], 0.01)
        # each one-sided test takes its spread from the other half, which its outliers cannot reach
        sd_norm_hi = half_spread(lognorm[trusted], "lower", 0.01)
        sd_norm_lo = half_spread(lognorm[trusted], "upper", 0.01)
        sd_norm = max(sd_norm_hi, sd_norm_lo)
        feats[:, _NORM] = lognorm - med

        logloss = np.log(losses)  # NaN where missing
        med_l, _ = robust_center_scale(logloss[trusted], 0.01)
        sd_loss = half_spread(logloss[trusted], "lower", 0.01)
        feats[:, _LOSS] = logloss - med_l

        fit = lognorm - np.log(np.maximum(sk_norm, _EPS))
        med_f, sd_fit = robust_center_scale(fit[trusted], 0.05)
        feats[:, _FIT] = fit - med_f

        dist = np.linalg.norm(X - m, axis=1)
        logdist = np.log(np.maximum(dist, _EPS))
        med_d, _ = robust_center_scale(logdist[trusted], 0.01)
        sd_dist = half_spread(logdist[trusted], "upper", 0.01)
        feats[:, _DIST] = logdist - med_d

        # per-round scores: standard deviations beyond each test's margin, clipped so one
        # extreme round cannot carry a window alone
        M = float(np.median(cos_m[voters]))
        sc = np.full((n, _NW), np.nan)
        # judge alignment only when the round has a clear consensus direction
        if M > cfg.confidence_z * sd_align / math.sqrt(max(1, int(voters.sum()))):
            sc[:, 0] = (cfg.align_fraction * M - cos_m) / sd_align - 0.25  # and by a quarter sd a round
        logR, logL, logC = math.log(cfg.norm_ratio), math.log(cfg.loss_ratio), math.log(cfg.norm_consistency_ratio)
        sc[:, 1] = (feats[:, _NORM] - logR) / sd_norm_hi
        sc[:, 2] = (-feats[:, _NORM] - logR) / sd_norm_lo
        sc[:, 3] = np.where(victim, 0.0, feats[:, _SIM]) - cfg.similarity_sd
        sc[:, 4] = (feats[:, _LOSS] - logL) / sd_loss
        sc[:, 5] = (np.abs(feats[:, _FIT]) - logC) / sd_fit
        sc[:, 6] = (-feats[:, _DIST] - logR) / sd_dist
        sc[:, 7] = feats[:, _STALE] - 1.0
        # clip: one extreme round cannot carry a window alone; a similarity hit counts little
        # per round, so the victim of an occasional copier is not mistaken for the copier
        clip = cfg.confidence_z * 1.5
        np.clip(sc, -clip, clip, out=sc)
        np.minimum(sc[:, 3], 0.5 * cfg.confidence_z, out=sc[:, 3])
        self._vals[idx, col, :] = feats.astype(np.float32)
        self._scores[idx, col, :] = sc.astype(np.float32)
        self._scale[col] = (sd_align, sd_norm, 1.0, sd_loss, sd_fit, sd_dist, 1.0)
        self._prev_units = np.vstack([units, m_unit[None, :]])
        self._past_consensus = [(r, u) for r, u in self._past_consensus if r >= rnd - _STALE_LAGS + 1]
        self._past_consensus.append((rnd, m_unit))

        # --- window tests over several horizons: sum of scores / sqrt(rounds) > confidence_z
        ev = np.zeros((n, len(STATISTICS)))
        order = (rnd - np.arange(W)) % W
        col_ok = self._col_round[order] == (rnd - np.arange(W))
        U = self._scores[idx][:, order, :].astype(np.float64)
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
        # intermittent attackers: rounds far past the margin counted over the whole buffer, so
        # good rounds in between cannot cancel them (similarity excepted: copied victims)
        hits = (np.where(fin, U, -np.inf) > z).sum(axis=1).astype(np.float64)
        hits[:, 3] = 0.0
        by_count = hits / cfg.min_hit_rounds
        better = by_count > ev[:, :_NW]
        ev[:, :_NW] = np.where(better, by_count, ev[:, :_NW])
        best_h[:, :_NW] = np.where(better, W, best_h[:, :_NW])

        # --- persistent deviation: drift and collusion
        dev_scale = float(np.median(dist[trusted]))
        dev = (X - m) / max(dev_scale, _EPS)
        a_fast = 1.0 - 0.5 ** (1.0 / cfg.drift_half_life_rounds)
        a_slow = 1.0 - 0.5 ** (1.0 / (4.0 * cfg.drift_half_life_rounds))
        self._dev_sum[idx] = (1 - a_fast) * self._dev_sum[idx] + a_fast * dev
        self._dev_w[idx] = (1 - a_fast) * self._dev_w[idx] + a_fast
        self._slow_sum[idx] = (1 - a_slow) * self._slow_sum[idx] + a_slow * dev
        self._slow_w[idx] = (1 - a_slow) * self._slow_w[idx] + a_slow
        self._dev_n[idx] += 1
        elig = self._dev_n[idx] >= cfg.warmup_rounds
        drift_ratio = np.zeros(n)
        e_clu = np.zeros(n)
        clu_info: dict[str, np.ndarray] = {}
        if elig.sum() >= cfg.min_nodes:
            ie = idx[elig]
            ref = trusted[elig] if trusted[elig].sum() >= cfg.min_nodes else np.ones(int(elig.sum()), dtype=bool)
            D = self._dev_sum[ie] / self._dev_w[ie][:, None]
            Dc = D - np.median(D[ref], axis=0)
            Dn = np.linalg.norm(Dc, axis=1)
            # a newcomer's average still carries much of its noise: judge its size only once
            # the average has settled (three half-lives)
            settled = self._dev_n[ie] >= 3 * cfg.drift_half_life_rounds
            ref_s = ref & settled if (ref & settled).sum() >= cfg.min_nodes else ref
            drift_ratio[elig] = np.where(settled, Dn / max(float(np.median(Dn[ref_s])), _EPS), 0.0)
            # the same tests on the trend (fast minus slow average): a node's own steady bias cancels
            Tr = D - self._slow_sum[ie] / self._slow_w[ie][:, None]
            Tr = Tr - np.median(Tr[ref], axis=0)
            among = ~firing[elig] | (self._reason[ie] == _S_COLLUSION)
            for label, V in (("level", Dc), ("trend", Tr)):
                ev_v, info_v = _shared_direction(V, ref, K, cfg.cluster_sd, among)
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
        self._drift_run[idx] = np.where(drift_ratio > cfg.drift_ratio, self._drift_run[idx] + 1, 0)
        self._clu_run[idx] = np.where(e_clu >= 1.0, self._clu_run[idx] + 1, 0)
        e_drift = np.log(np.maximum(drift_ratio, 1.0)) / math.log(cfg.drift_ratio)
        persist = cfg.persist_rounds
        ev[:, _S_DRIFT] = np.where(self._drift_run[idx] >= persist, e_drift, np.minimum(e_drift, 0.99))
        ev[:, _S_COLLUSION] = np.where(self._clu_run[idx] >= persist, e_clu, np.minimum(e_clu, 0.99))

        # --- verdicts, alert state, trust
        suspicious = (ev >= 1.0).any(axis=1)
        suspicion = ev.max(axis=1)
        top = ev.argmax(axis=1)
        out: list[NodeVerdict] = []
        explain_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, float, float]] = {}
        for i in range(n):
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
                details = self._explain(int(top[i]), i, best_h=best_h, trusted=trusted,
                                        drift_ratio=drift_ratio, clu_info=clu_info, idx=idx, cache=explain_cache)
            out.append(
                NodeVerdict(
                    node=names[i],
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
        """State as msgspec/JSON-encodable builtins (arrays as raw bytes)."""
        live = [s for s in range(self._cap) if self._names[s] is not None]
        li = np.asarray(live, dtype=np.int64)
        return {
            "dim": self.dim,
            "last_closed": self.last_closed,
            "counts": dict(self.counts),
            "nodes": [self._names[s] for s in live],
            "vals": _enc(self._vals[li]),
            "scores": _enc(self._scores[li]),
            "dev_sum": _enc(self._dev_sum[li].astype(np.float32)),
            "dev_w": _enc(self._dev_w[li]),
            "slow_sum": _enc(self._slow_sum[li].astype(np.float32)),
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
            "scale": _enc(self._scale),
            "col_round": _enc(self._col_round),
            "prev_units": None if self._prev_units is None else _enc(self._prev_units),
            "past_consensus": [[r, _enc(u)] for r, u in self._past_consensus],
            "pending": {
                str(r): {nd: [v[0], v[1] if math.isfinite(v[1]) else None, _enc(v[2]), v[3]] for nd, v in b.items()}
                for r, b in self.pending.items()
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load what ``snapshot`` produced (into a detector with the same config)."""
        self.__init__(self.config)  # type: ignore[misc]
        self.dim = state["dim"]
        self.last_closed = state["last_closed"]
        self.counts = dict(state.get("counts", {}))
        names = list(state["nodes"])
        cap = 0 if not names else min(self.config.max_nodes, max(64, len(names)))
        self._alloc(cap)
        self._dev_sum = np.zeros((cap, self.dim or 1))
        self._slow_sum = np.zeros((cap, self.dim or 1))
        self._free = list(range(cap - 1, len(names) - 1, -1))
        for s, name in enumerate(names):
            self._slot[name] = s
            self._names[s] = name
        k = len(names)
        for key in ("vals", "scores", "dev_sum", "dev_w", "slow_sum", "slow_w", "dev_n", "last_round", "firing", "since", "clean", "trust", "drift_run", "clu_run", "reason", "dup_rate"):
            getattr(self, "_" + key)[:k] = _dec(state[key])
        self._scale = _dec(state["scale"])
        self._col_round = _dec(state["col_round"])
        self._prev_units = None if state.get("prev_units") is None else _dec(state["prev_units"])
        self._past_consensus = [(int(r), _dec(u)) for r, u in state.get("past_consensus", [])]
        self.pending = {
            int(r): {nd: (float(v[0]), math.nan if v[1] is None else float(v[1]), _dec(v[2]), float(v[3])) for nd, v in b.items()}
            for r, b in state.get("pending", {}).items()
        }
