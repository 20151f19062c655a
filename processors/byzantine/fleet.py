"""A synthetic training fleet for tests, benchmarks and demos of the Byzantine detector.

Honest nodes send ``lr(r) * (g_r + b_i + noise)``: a shared true gradient, a
fixed per-node bias (non-IID data) and noise, some nodes noisier than others,
some rounds missed. Attackers replace their update from ``start`` on.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

ATTACKS: tuple[str, ...] = ("sign_flip", "scale", "noise", "freeride", "ipm", "alie", "replay", "copy", "drift")


@dataclass(slots=True)
class Report:
    """One node's training.update report for one round."""

    node: str
    round: int
    update_norm: float
    loss: float
    sketch: np.ndarray


class SyntheticFleet:
    """``nodes`` nodes, of which ``attackers`` (the first ones) run ``attack`` from round ``start``."""

    def __init__(
        self,
        nodes: int = 40,
        attackers: int = 0,
        attack: str = "sign_flip",
        start: int = 10,
        dim: int = 64,
        seed: int = 0,
        noisy_fraction: float = 0.15,
        bias: float = 0.35,
        dropout: float = 0.03,
    ) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"attack {attack!r} is unknown; expected one of {ATTACKS}")
        if not 0 <= attackers < nodes:
            raise ValueError(f"attackers must be in 0..{nodes - 1}, got {attackers}")
        self.rng = np.random.default_rng(seed)
        self.names = [f"node-{i:04d}" for i in range(nodes)]
        self.attackers = set(self.names[:attackers])
        self.attack = attack
        self.start = start
        self.dim = dim
        self.dropout = dropout
        self.biases = self.rng.normal(0.0, bias, (nodes, dim))
        noisy = self.rng.permutation(np.arange(attackers, nodes))[: int(noisy_fraction * nodes)]
        self.sigma = np.ones(nodes)
        self.sigma[noisy] = 1.8
        self._prev: dict[str, np.ndarray] = {}
        self._current: dict[str, np.ndarray] = {}
        self._round = 0
        d = self.rng.normal(0.0, 1.0, dim)
        self._drift_dir = d / np.linalg.norm(d)

    def honest(self) -> list[str]:
        return [n for n in self.names if n not in self.attackers]

    def round(self, r: int) -> list[Report]:
        """The reports of round ``r`` (nodes that missed the round are absent)."""
        self._round = r
        lr = 1.0 / math.sqrt(1.0 + r / 10.0)
        g = self.rng.normal(0.0, 0.6, self.dim) + 0.4
        ups = {
            name: lr * (g + self.biases[i] + self.rng.normal(0.0, self.sigma[i], self.dim))
            for i, name in enumerate(self.names)
        }
        honest = np.stack([u for n, u in ups.items() if n not in self.attackers])
        self._current = ups
        loss = 2.3 * math.exp(-r / 60.0) + 0.2
        out = []
        for name, u in ups.items():
            if self.rng.random() < self.dropout:
                continue
            if name in self.attackers and r >= self.start:
                u = self._attack(name, u, honest, lr)
            out.append(Report(name, r, float(np.linalg.norm(u)), loss * (1 + self.rng.normal(0, 0.04)), u))
        self._prev = {rep.node: rep.sketch for rep in out}
        return out

    def rounds(self, n: int) -> Iterator[list[Report]]:
        for r in range(n):
            yield self.round(r)

    def _attack(self, name: str, u: np.ndarray, honest: np.ndarray, lr: float) -> np.ndarray:
        a = self.attack
        if a == "sign_flip":
            return -u
        if a == "scale":
            return 8.0 * u
        if a == "noise":
            return self.rng.normal(0.0, 5.0 * lr, self.dim)
        if a == "freeride":
            return self.rng.normal(0.0, 0.05 * lr, self.dim)
        if a == "ipm":
            return -0.5 * honest.mean(axis=0)
        if a == "alie":
            return honest.mean(axis=0) - 0.5 * honest.std(axis=0)
        if a == "drift":  # a bias growing over 50 rounds along one direction shared by the attackers
            grow = min(1.0, (self._round - self.start) / 50.0)
            return u + grow * 3.0 * lr * math.sqrt(self.dim) * self._drift_dir
        if a == "copy":  # pass off a random honest node's update of this round as its own
            victims = self.honest()
            return self._current[victims[int(self.rng.integers(len(victims)))]].copy()
        # replay: resend another (honest) node's update from the previous round
        src = self._prev.get(self.names[-1])
        return src.copy() if src is not None else u
