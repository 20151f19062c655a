"""Robust, scale-free statistics across a round's nodes (median, MAD, robust z)."""
from __future__ import annotations

import numpy as np

MAD_TO_SD = 1.4826  # MAD of a normal distribution times this is its standard deviation


def robust_center_scale(x: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and MAD-based standard deviation of the finite values of ``x`` (at least ``floor``)."""
    v = x[np.isfinite(x)]
    if v.size == 0:
        return 0.0, floor
    med = float(np.median(v))
    sd = float(np.median(np.abs(v - med))) * MAD_TO_SD
    return med, max(sd, floor)


def half_spread(x: np.ndarray, side: str, floor: float) -> float:
    """Robust sd from one half of the finite values of ``x``: ``"lower"`` (median - q25) or
    ``"upper"`` (q75 - median), scaled to a normal sd. Outliers on the other side cannot inflate it."""
    v = x[np.isfinite(x)]
    if v.size < 2:
        return floor
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    d = (med - q25) if side == "lower" else (q75 - med)
    return max(float(d) / 0.6745, floor)


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit length (zero rows stay zero) and the row norms."""
    n = np.linalg.norm(x, axis=1)
    return x / np.maximum(n, eps)[:, None], n


def max_offdiag_cos(u: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows ``u``: each row's largest cosine with any other row and which row that is
    (blockwise, bounded memory)."""
    n = u.shape[0]
    out = np.full(n, -1.0)
    arg = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return out, arg
    u = u.astype(np.float32)  # cosines need no more; halves the n x n work
    for s in range(0, n, block):
        g = u[s : s + block] @ u.T
        rows = np.arange(g.shape[0])
        g[rows, rows + s] = -np.inf
        arg[s : s + block] = g.argmax(axis=1)
        out[s : s + block] = g[rows, arg[s : s + block]]
    return out, arg


def partners_above(
    u: np.ndarray, tau: float, among: np.ndarray | None = None, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows ``u``: how many other rows (of those in mask ``among``) have cosine > ``tau``
    with each row, and the largest such cosine (blockwise, bounded memory)."""
    n = u.shape[0]
    cols = np.arange(n) if among is None else np.nonzero(among)[0]
    count = np.zeros(n, dtype=np.int64)
    best = np.full(n, -1.0)
    if n < 2 or cols.size == 0:
        return count, best
    pos = np.full(n, -1, dtype=np.int64)
    pos[cols] = np.arange(cols.size)
    u = u.astype(np.float32)
    ref = u[cols]
    for s in range(0, n, block):
        g = u[s : s + block] @ ref.T
        rows = np.arange(g.shape[0])
        own = pos[s + rows]
        has = own >= 0
        g[rows[has], own[has]] = -np.inf
        count[s : s + block] = (g > tau).sum(axis=1)
        best[s : s + block] = g.max(axis=1)
    return count, best


def pair_cos_spread(u: np.ndarray, sample: int = 256) -> tuple[float, float]:
    """Median and robust sd of the off-diagonal cosines among (at most ``sample``) unit rows.

    Rows whose closest match is in the top quarter are left out first, so a colluding group
    (up to a quarter of the rows) cannot inflate the spread that should expose it.
    """
    m = min(sample, u.shape[0])
    if m < 4:
        return 0.0, 1.0
    g = u[:m] @ u[:m].T
    np.fill_diagonal(g, -np.inf)
    best = g.max(axis=1)
    keep = best <= np.percentile(best, 75)
    if keep.sum() >= 3:
        g = g[np.ix_(keep, keep)]
    v = g[np.triu_indices(g.shape[0], 1)]
    return robust_center_scale(v, 1e-6)
