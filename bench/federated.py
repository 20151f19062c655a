"""Real federated training for the Byzantine detector: FedAvg on a dataset that ships with scikit-learn.

A small numpy model (softmax regression or a one-hidden-layer MLP) is trained
by federated averaging over clients whose training data come from a Dirichlet
label split (``alpha`` 0.1 = nearly one class per client, 1.0 = mildly
non-IID). Each round a random fraction of clients takes part, each runs its own
number of local SGD steps (minibatches, a learning rate that decays per round)
and returns its model update. Byzantine clients replace their update from
``attack_start`` on (label flipping, ALIE, IPM, min-max, min-sum, sign flip,
scaling, free-riding with stale or zero updates, copying).

The aggregator publishes, per client and round, the ``training.update`` report
docs/byzantine.md prescribes (``producers.training.training_update_event`` with
the real update, so norm and sketch are those of ``update_sketch``), and
aggregates with one of: plain FedAvg, coordinate-wise median, trimmed mean,
Krum, or FedAvg gated by swarmwatch trust (``producers.training.TrustGate``
fed with the operator's TrustScores, one round behind, as it would be live).

    from bench.federated import FedConfig, run_federated
    res = run_federated(FedConfig(dataset="digits", clients=50, alpha=0.3, attack="min_max", attackers=0.2))
    res.accuracy, res.detection

Data come from ``sklearn.datasets.load_digits`` / ``load_breast_cancer`` /
``load_wine`` (bundled in the wheel, nothing is downloaded).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from processors.byzantine import ByzantineOperator, DetectorConfig, RoundResult
from producers.training import TrustGate, training_update_event
from schemas import TrustScore

ATTACKS: tuple[str, ...] = (
    "none",
    "label_flip",
    "alie",
    "ipm",
    "min_max",
    "min_sum",
    "sign_flip",
    "scaling",
    "freeride_stale",
    "freeride_zero",
    "copy",
)
DEFENCES: tuple[str, ...] = ("fedavg", "median", "trimmed_mean", "krum", "swarmwatch")
DATASETS: tuple[str, ...] = ("digits", "cancer", "wine")
MODELS: tuple[str, ...] = ("softmax", "mlp")
T0 = 1_763_800_000.0  # event time of round 0 (UNIX s); rounds are 30 s apart


@dataclass(frozen=True, slots=True)
class FedConfig:
    """One federated run. Sizes in clients and rounds; ``lr`` per local SGD step."""

    dataset: str = "digits"
    model: str = "mlp"
    hidden: int = 32  # MLP hidden units
    clients: int = 50
    alpha: float = 0.5  # Dirichlet concentration of the label split (smaller = more non-IID)
    rounds: int = 60
    participation: float = 0.95  # fraction of clients taking part in a round
    local_steps: tuple[int, int] = (1, 10)  # each client's local SGD steps, drawn once per client in [lo, hi]
    batch: int = 16
    lr: float = 0.1
    lr_decay: float = 0.99  # per round
    attack: str = "none"
    attackers: float = 0.0  # fraction of clients that are Byzantine
    attack_start: int = 10
    ipm_eps: float = 4.0  # inner-product manipulation sends -ipm_eps x the benign mean
    defence: str = "fedavg"
    seed: int = 0
    sketch_dim: int = 64
    detector: DetectorConfig | None = None
    detect: bool = True  # run the detector alongside (always on for the swarmwatch defence)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r} unknown; expected one of {DATASETS}")
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} unknown; expected one of {MODELS}")
        if self.attack not in ATTACKS:
            raise ValueError(f"attack {self.attack!r} unknown; expected one of {ATTACKS}")
        if self.defence not in DEFENCES:
            raise ValueError(f"defence {self.defence!r} unknown; expected one of {DEFENCES}")
        if not 0.0 <= self.attackers < 0.5:
            raise ValueError(f"attackers must be a fraction in [0, 0.5), got {self.attackers}")
        if self.clients < 5 or self.rounds < 1 or not 0.0 < self.participation <= 1.0 or self.alpha <= 0:
            raise ValueError("need clients >= 5, rounds >= 1, participation in (0, 1] and alpha > 0")


# ---------------------------------------------------------------------------- data


def load_dataset(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised train/test split (80/20, stratified by a fixed shuffle): Xtr, ytr, Xte, yte."""
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
    X, y = loader(return_X_y=True)
    rng = np.random.default_rng(1000 + seed)
    te = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        ids = rng.permutation(np.nonzero(y == c)[0])
        te[ids[: max(1, len(ids) // 5)]] = True
    mu, sd = X[~te].mean(0), X[~te].std(0) + 1e-6
    Xs = (X - mu) / sd
    return Xs[~te], y[~te].astype(np.int64), Xs[te], y[te].astype(np.int64)


def dirichlet_split(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int = 4) -> list[np.ndarray]:
    """Indices per client: each class spread over clients by Dirichlet(alpha) proportions; clients
    left with fewer than ``min_size`` examples take some from the largest ones."""
    parts: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(y):
        ids = rng.permutation(np.nonzero(y == c)[0])
        p = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(p)[:-1] * len(ids)).astype(int)
        for k, chunk in enumerate(np.split(ids, cuts)):
            parts[k].extend(int(i) for i in chunk)
    for k in range(clients):
        while len(parts[k]) < min_size:
            donor = max(range(clients), key=lambda j: len(parts[j]))
            parts[k].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


# ---------------------------------------------------------------------------- models


class Model:
    """A flat parameter vector with loss/gradient for softmax regression or a tanh MLP."""

    def __init__(self, kind: str, d: int, classes: int, hidden: int, rng: np.random.Generator) -> None:
        self.kind, self.d, self.c, self.h = kind, d, classes, hidden
        if kind == "softmax":
            self.shapes = [(d, classes), (classes,)]
        else:
            self.shapes = [(d, hidden), (hidden,), (hidden, classes), (classes,)]
        self.size = sum(int(np.prod(s)) for s in self.shapes)
        w = []
        for s in self.shapes:
            scale = 0.0 if len(s) == 1 else 1.0 / math.sqrt(s[0])
            w.append(rng.normal(0.0, scale, s).ravel() if scale else np.zeros(int(np.prod(s))))
        self.init = np.concatenate(w)

    def _unpack(self, w: np.ndarray) -> list[np.ndarray]:
        out, o = [], 0
        for s in self.shapes:
            k = int(np.prod(s))
            out.append(w[o : o + k].reshape(s))
            o += k
        return out

    def logits(self, w: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        p = self._unpack(w)
        if self.kind == "softmax":
            return X @ p[0] + p[1], None
        H = np.tanh(X @ p[0] + p[1])
        return H @ p[2] + p[3], H

    def loss_grad(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean cross-entropy and its gradient."""
        Z, H = self.logits(w, X)
        Z = Z - Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        n = len(y)
        loss = float(-np.log(np.maximum(P[np.arange(n), y], 1e-12)).mean())
        G = P
        G[np.arange(n), y] -= 1.0
        G /= n
        p = self._unpack(w)
        if self.kind == "softmax":
            return loss, np.concatenate([(X.T @ G).ravel(), G.sum(0)])
        dH = (G @ p[2].T) * (1.0 - H * H)  # type: ignore[operator]
        return loss, np.concatenate([(X.T @ dH).ravel(), dH.sum(0), (H.T @ G).ravel(), G.sum(0)])  # type: ignore[union-attr]

    def accuracy(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        Z, _ = self.logits(w, X)
        return float((Z.argmax(axis=1) == y).mean())


# ---------------------------------------------------------------------------- aggregation rules


def aggregate(defence: str, U: np.ndarray, weights: np.ndarray, f: int) -> np.ndarray:
    """The global update from client updates ``U`` (rows); ``weights`` (samples x trust) for the
    averages, ``f`` the number of Byzantine rows the robust rules must tolerate."""
    if defence in ("fedavg", "swarmwatch"):
        w = np.maximum(weights, 0.0)
        if w.sum() <= 0:
            return np.zeros(U.shape[1])
        return (w[:, None] * U).sum(0) / w.sum()
    if defence == "median":
        return np.median(U, axis=0)
    if defence == "trimmed_mean":
        n = U.shape[0]
        b = min(max(f, 1), (n - 1) // 2)
        S = np.sort(U, axis=0)
        return S[b : n - b].mean(0)
    if defence == "krum":
        n = U.shape[0]
        k = max(1, n - f - 2)
        sq = (U * U).sum(1)
        D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * U @ U.T, 0.0)
        np.fill_diagonal(D, np.inf)
        scores = np.sort(D, axis=1)[:, :k].sum(1)
        return U[int(np.argmin(scores))]
    raise ValueError(f"unknown defence {defence!r}")


# ---------------------------------------------------------------------------- attacks


def _alie(H: np.ndarray, n: int, f: int) -> np.ndarray:
    """'A little is enough' (Baruch et al. 2019): mean - z * std of the benign updates."""
    s = math.floor(n / 2 + 1) - f
    z = NormalDist().inv_cdf(min(max((n - s) / n, 0.5001), 0.999))
    return H.mean(0) - z * H.std(0)


def _agr_agnostic(H: np.ndarray, kind: str) -> np.ndarray:
    """Min-max / min-sum (Shejwalkar & Houmansadr, NDSS 2021, AGR-agnostic): mean + gamma * p with
    p = -mean/|mean| of the benign updates (inverse unit vector), gamma the largest (binary search) for which the malicious
    update's largest (min-max) or summed squared (min-sum) distance to the benign ones stays within
    that of a benign update."""
    mu = H.mean(0)
    p = -mu / max(float(np.linalg.norm(mu)), 1e-12)  # "inverse unit vector" perturbation
    sq = (H * H).sum(1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * H @ H.T, 0.0)
    bound = math.sqrt(D.max()) if kind == "min_max" else D.sum(1).max()

    def ok(g: float) -> bool:
        d2 = ((H - (mu + g * p)) ** 2).sum(1)
        return bool(math.sqrt(d2.max()) <= bound) if kind == "min_max" else bool(d2.sum() <= bound)

    lam, step, good = 10.0, 5.0, 0.0
    while abs(good - lam) > 1e-5 and step > 1e-6:
        if ok(lam):
            good = lam
            lam += step
        else:
            lam -= step
        step /= 2.0
    return mu + good * p


# ---------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Detection:
    """How the detector did on one run (flags from the operator's verdicts)."""

    attackers: list[str]
    first_flag: dict[str, int] = field(default_factory=dict)  # node -> first round flagged
    reasons: dict[str, str] = field(default_factory=dict)  # node -> statistic that began its first detection
    judge_ms: list[float] = field(default_factory=list)

    def summary(self, nodes: list[str], attack_start: int) -> dict[str, Any]:
        byz = set(self.attackers)
        honest = [n for n in nodes if n not in byz]
        caught = {n: r for n, r in self.first_flag.items() if n in byz and r >= attack_start}
        early = [n for n, r in self.first_flag.items() if n in byz and r < attack_start]
        accused = [n for n in self.first_flag if n not in byz]
        lat = [r - attack_start for r in caught.values()]
        reasons: dict[str, int] = {}
        for n in accused:
            reasons[self.reasons[n]] = reasons.get(self.reasons[n], 0) + 1
        return {
            "recall": round(len(caught) / len(byz), 4) if byz else None,
            "median_latency_rounds": statistics.median(lat) if lat else None,
            "honest_accused": len(accused),
            "honest_accused_fraction": round(len(accused) / max(1, len(honest)), 4),
            "accused_reasons": reasons,
            "early_flags": len(early),
        }


@dataclass(slots=True)
class FedResult:
    config: FedConfig
    accuracy: float  # final test accuracy
    accuracy_curve: list[float]
    nodes: list[str]
    attackers: list[str]
    detection: dict[str, Any] | None
    excluded_rounds: int  # client-rounds the gate left out (swarmwatch defence)
    reports: list[dict[str, Any]] | None = None


def client_names(n: int) -> list[str]:
    return [f"client-{i:04d}" for i in range(n)]


def run_federated(
    cfg: FedConfig,
    *,
    keep_reports: bool = False,
    on_round: Callable[[int, list[Any]], None] | None = None,
) -> FedResult:
    """Train, attack, publish the reports to an in-process ByzantineOperator, defend, evaluate.

    With ``keep_reports`` the result holds every report in the simulator's flat format
    (``swarmwatch backtest byzantine`` and shared/evals/byzantine/score.py read it).
    """
    rng = np.random.default_rng(cfg.seed)
    Xtr, ytr, Xte, yte = load_dataset(cfg.dataset, cfg.seed)
    C = int(max(ytr.max(), yte.max()) + 1)
    shards = dirichlet_split(ytr, cfg.clients, cfg.alpha, rng)
    model = Model(cfg.model, Xtr.shape[1], C, cfg.hidden, rng)
    names = client_names(cfg.clients)
    f_total = int(round(cfg.attackers * cfg.clients)) if cfg.attack != "none" else 0
    byz_idx = set(int(i) for i in rng.permutation(cfg.clients)[:f_total])
    attackers = [names[i] for i in sorted(byz_idx)]
    lo, hi = cfg.local_steps
    steps = rng.integers(lo, hi + 1, cfg.clients)
    w = model.init.copy()
    detect = cfg.detect or cfg.defence == "swarmwatch"
    detection = Detection(attackers)
    gate = TrustGate("fl")

    def observe(cluster: str, res: RoundResult) -> None:
        for v in res.verdicts:
            if v.flagged and v.node not in detection.first_flag:
                detection.first_flag[v.node] = v.round
                detection.reasons[v.node] = str(v.details.get("statistic", v.reason))

    op = ByzantineOperator(cfg.detector, observer=observe) if detect else None
    stale: dict[int, np.ndarray] = {}  # a free-rider's last honest update
    curve: list[float] = []
    reports: list[dict[str, Any]] | None = [] if keep_reports else None
    excluded = 0

    def local_update(i: int, lr: float, flip: bool) -> tuple[np.ndarray, float]:
        ids = shards[i]
        y = ytr[ids]
        if flip:
            y = C - 1 - y
        wl = w.copy()
        first_loss = math.nan
        b = min(cfg.batch, len(ids))
        for t in range(int(steps[i])):
            pick = rng.choice(len(ids), size=b, replace=False)
            loss, g = model.loss_grad(wl, Xtr[ids[pick]], y[pick])
            if t == 0:
                first_loss = loss
            wl -= lr * g
        return wl - w, first_loss

    for r in range(cfg.rounds):
        lr = cfg.lr * cfg.lr_decay**r
        part = np.nonzero(rng.random(cfg.clients) < cfg.participation)[0]
        if part.size < 3:
            part = rng.permutation(cfg.clients)[:3]
        attacking = r >= cfg.attack_start and f_total > 0
        upd: dict[int, np.ndarray] = {}
        loss: dict[int, float] = {}
        for i in part:
            i = int(i)
            u, l_ = local_update(i, lr, flip=attacking and i in byz_idx and cfg.attack == "label_flip")
            upd[i], loss[i] = u, l_
            if i in byz_idx and not attacking:
                stale[i] = u
        bad = [i for i in upd if i in byz_idx] if attacking else []
        if bad:
            good = [i for i in upd if i not in byz_idx]
            H = np.stack([upd[i] for i in good]) if good else np.zeros((1, model.size))
            n_part = len(upd)
            shared: np.ndarray | None = None
            if cfg.attack == "alie":
                shared = _alie(H, n_part, len(bad))
            elif cfg.attack == "ipm":
                shared = -cfg.ipm_eps * H.mean(0)
            elif cfg.attack in ("min_max", "min_sum"):
                shared = _agr_agnostic(H, cfg.attack)
            for i in bad:
                if shared is not None:
                    upd[i] = shared.copy()
                elif cfg.attack == "sign_flip":
                    upd[i] = -upd[i]
                elif cfg.attack == "scaling":
                    upd[i] = 10.0 * upd[i]
                elif cfg.attack == "freeride_stale":
                    upd[i] = stale.get(i, upd[i]).copy()
                elif cfg.attack == "freeride_zero":
                    upd[i] = np.zeros(model.size)
                elif cfg.attack == "copy" and good:
                    upd[i] = upd[good[int(rng.integers(len(good)))]].copy()
        # the aggregator publishes one report per client (here: to the in-process operator)
        ts = T0 + 30.0 * r
        order = sorted(upd)
        samples = {i: len(shards[i]) for i in order}
        if op is not None or reports is not None:
            for i in order:
                ev = training_update_event("fl", names[i], r, loss=loss[i], update=upd[i], samples=samples[i], ts=ts, sketch_dim=cfg.sketch_dim)
                if reports is not None:
                    reports.append({"kind": ev.kind, "ts": ev.ts, "cluster": ev.cluster, "node_id": ev.node, **ev.payload})
                if op is not None:
                    for em in op.on_event(ev, ts):  # the first report of round r closes round r - 1
                        if isinstance(em.message, TrustScore):
                            gate.observe(em.message)
        U = np.stack([upd[i] for i in order])
        wts = np.array([samples[i] for i in order], dtype=np.float64)
        if cfg.defence == "swarmwatch":
            gw = gate.weights([names[i] for i in order])
            wts = wts * np.array([gw[names[i]] for i in order])
            excluded += int(sum(1 for i in order if gw[names[i]] == 0.0))
        f_round = sum(1 for i in order if i in byz_idx)
        w = w + aggregate(cfg.defence, U, wts, max(f_round, int(round(cfg.attackers * len(order)))))
        curve.append(model.accuracy(w, Xte, yte))
        if on_round is not None:
            on_round(r, order)
    if op is not None:
        for em in op.flush(T0 + 30.0 * cfg.rounds):
            if isinstance(em.message, TrustScore):
                gate.observe(em.message)
    det = detection.summary(names, cfg.attack_start) if detect else None
    final = float(np.mean(curve[-3:]))  # mean of the last three rounds: less jitter from one round
    return FedResult(cfg, round(final, 4), curve, names, attackers, det, excluded, reports)


def iter_reports(res: FedResult) -> Iterator[dict[str, Any]]:
    """Reports of a run kept with ``keep_reports``, in time order."""
    yield from res.reports or []
