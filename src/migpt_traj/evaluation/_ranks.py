"""Weighted rank counting for concordance-type metrics, vectorised in O(n log² n).

Concordance needs, for each case ``i``, the (weighted) number of comparable subjects ``j`` whose risk is below
``r_i``, where "comparable" is a range of positions in time order. That is two-dimensional dominance counting;
here it is done with aligned dyadic blocks: a prefix ``[0, s)`` is the union of at most ``log2 n`` blocks of size
``2^L``, and within each level the points are sorted by (block, value) so one ``searchsorted`` answers every query.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["prefix_weight_below", "risk_ranks"]


def risk_ranks(
    points: NDArray[np.float64], queries: NDArray[np.float64], tol: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Integer ranks of ``points`` and, for each query ``x``, rank thresholds for ``< x - tol`` and ``<= x + tol``.

    A point ``p`` satisfies ``p < x - tol`` iff ``rank(p) < lower``, and ``p <= x + tol`` iff ``rank(p) < upper``.
    """
    uniq = np.unique(points)
    ranks = np.searchsorted(uniq, points, side="left").astype(np.int64)
    lower = np.searchsorted(uniq, queries - tol, side="left").astype(np.int64)
    upper = np.searchsorted(uniq, queries + tol, side="right").astype(np.int64)
    return ranks, lower, upper


def prefix_weight_below(
    ranks: NDArray[np.int64],
    weights: NDArray[np.float64],
    end: NDArray[np.int64],
    threshold: NDArray[np.int64],
) -> NDArray[np.float64]:
    """For each query ``q``: the sum of ``weights[j]`` over ``j < end[q]`` with ``ranks[j] < threshold[q]``.

    Args:
        ranks: Integer ranks of the points, in a fixed order (e.g. by time), shape (n,).
        weights: Weights of the points, shape (n,).
        end: Exclusive end of each query's prefix, in ``[0, n]``, shape (q,).
        threshold: Rank bound of each query (strict), shape (q,).
    """
    n = ranks.shape[0]
    out = np.zeros(end.shape[0], dtype=np.float64)
    if n == 0 or end.shape[0] == 0:
        return out
    span = np.int64(max(int(ranks.max()), int(threshold.max())) + 2)
    position = np.arange(n, dtype=np.int64)
    level = 0
    while (1 << level) <= n:
        size = np.int64(1 << level)
        block = position // size
        order = np.lexsort((ranks, block))
        keys = block[order] * span + ranks[order]
        cum = np.concatenate(([0.0], np.cumsum(weights[order])))
        use = ((end >> level) & 1).astype(bool)
        if use.any():
            b = (end[use] >> level) - 1
            pos = np.searchsorted(keys, b * span + threshold[use], side="left")
            out[use] += cum[pos] - cum[b * size]
        level += 1
    return out
