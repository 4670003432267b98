"""The key store's exact bounded searches (``KeyStore.search``, ``KeyStore.within_reach``).

Both visit the IVF lists by the triangle bound, then screen the rows left with the projected bounds
(``key_projection.py``: the first 16 coded coordinates, then all 64) and a float32 matrix product with a proven
rounding margin, and compute exact distances (by differences) only for what survives; the keystore module
docstring gives the bounds. Exact: the same ids, order and distances as a full scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .keystore import KeyStore

_TOL = 1e-5  # relative margin on every bound (float32 rounding of distances is ~1e-6 relative)
_CHUNK = 4096  # rows scored per vectorised step
_WALK = 16384  # rows of IVF lists bounded per step of a search once a k-th score is known (fewer, larger
#                steps: the k-th score barely moves after the first, and each step's fixed cost is ~0.1 ms)


@dataclass(frozen=True)
class Hits:
    """Exact k best rows of one search, sorted by (score, id)."""

    ids: np.ndarray
    """int64 [k']"""
    distances: np.ndarray
    """float32 [k'] L2 distances."""
    scores: np.ndarray
    """float64 [k'] distance / den."""
    rows: np.ndarray
    """int64 [k'] store rows (valid until the next change)."""
    scored: int = 0
    """How many rows had their distance computed (work done; n for a scan)."""


def _merge(best: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...], k: int) -> tuple[np.ndarray, ...]:
    """Keep the k best of two (scores, ids, dists, rows) tuples by (score, id)."""
    s = np.concatenate([best[0], new[0]])
    ids = np.concatenate([best[1], new[1]])
    order = np.lexsort((ids, s))[:k]
    return s[order], ids[order], np.concatenate([best[2], new[2]])[order], np.concatenate([best[3], new[3]])[order]


def search(store: "KeyStore", q: np.ndarray, k: int, scaled: bool = True, exclude: int = -1,
           force_scan: bool = False, max_lists: int | None = None) -> Hits:
    """The k rows of lowest d(q, x) / den_x (``scaled``) or d(q, x), ties by id; exact.

    ``q`` is float32 at key precision (see :meth:`round`); ``exclude`` leaves one row out;
    ``force_scan`` computes every distance exactly (the reference the pruned path must equal);
    ``max_lists`` (approximate) stops after that many IVF lists, nearest bound first."""
    n = store.n
    k = min(k, n - (0 <= exclude < n))
    best = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if k <= 0:
        return Hits(best[1], best[2], best[0], best[3])
    den = store.den  # the score's denominator sigma + eps of rows
    if force_scan:
        rows = np.arange(n)
        rows = rows[rows != exclude]
        d = store.distances(rows, q)
        best = _merge(best, (d / den(rows) if scaled else d.astype(np.float64), store._ids[rows], d, rows), k)
        return Hits(best[1], best[2], best[0], best[3], len(rows))
    qsq = float(np.dot(q.astype(np.float64), q))
    if store.centroids is None or n <= store.exact_below:
        groups: list[np.ndarray] = [np.arange(s, min(n, s + _CHUNK)) for s in range(0, n, _CHUNK)]
        dqc = lb_list = order = None
    else:
        dqc, dqc_hi = store._centroid_bounds(q, qsq)
        qc = store._projected(q, qsq)
        lb_list = np.maximum(dqc - store._list_rmax - _TOL * (dqc_hi + store._list_rmax), 0.0).astype(np.float64)
        lb_list = np.maximum(lb_list, store._box_bounds(qc))  # the lists' triangle and code-box bounds
        with np.errstate(divide="ignore", invalid="ignore"):
            lb_list = lb_list / store._list_den_max if scaled else lb_list
        lb_list = np.where(store._list_len > 0, lb_list, np.inf)
        order = np.argsort(lb_list, kind="stable")
        lb_sorted, cum = lb_list[order], np.cumsum(store._list_len[order])
        limit = len(order) if max_lists is None else min(len(order), max_lists)
        groups = []
    kth = np.inf
    scored = 0
    i = 0
    while True:
        if dqc is None:
            if not groups:
                break
            rows = groups.pop(0)
        else:
            stop = min(limit, int(np.searchsorted(lb_sorted, kth, "right")))  # lists the bound admits
            if i >= stop:
                break
            target = _WALK if kth < np.inf else max(8 * k, 256)  # first: just enough for a k-th score
            j = min(stop, int(np.searchsorted(cum, (cum[i - 1] if i else 0) + target, "left")) + 1)
            lists = order[i:j]
            rows, gap = _list_rows(store, lists, dqc, dqc_hi)
            i = j
            if kth < np.inf:  # the triangle bound, then the projected one: most rows of the lists end here
                if scaled:  # each row's own denominator
                    within = kth * den(rows)
                else:
                    within = np.full(len(rows), kth)
                near = gap <= within
                rows, within = rows[near], within[near]
                if len(rows):
                    rows = rows[store._proj_keep(rows, qc, within)]
        if exclude >= 0:
            rows = rows[rows != exclude]
        if len(rows):
            best, kth, n = _score(store, rows, q, qsq, scaled, k, best, kth)
            scored += n
    return Hits(best[1], best[2], best[0], best[3], scored)


def _score(store: "KeyStore", rows: np.ndarray, q: np.ndarray, qsq: float, scaled: bool, k: int,
           best: tuple[np.ndarray, ...], kth: float) -> tuple[tuple[np.ndarray, ...], float, int]:
    """Merge ``rows`` into the k best: screened by one float32 matrix product against the k-th best score
    so far (or the k-th smallest of the screen's upper bounds), then exact distances for the rows left.
    Returns the new best, its k-th score with the search's margin (inf while fewer than k) and how many
    distances were computed."""
    lo, hi = store._screen(rows, q, qsq)
    dr = store.den(rows) if scaled else None
    if dr is not None:
        lo, hi = lo / dr, hi / dr
    # an upper bound of the k-th best score so far: the k-th smallest of (exact best, chunk upper bounds)
    ub = np.concatenate([best[0], hi])
    bound = min(kth, float(np.partition(ub, k - 1)[k - 1]) * (1 + _TOL)) if len(ub) >= k else kth
    keep = lo <= bound
    rows = rows[keep]
    d = store.distances(rows, q)
    sc = d / dr[keep] if dr is not None else d.astype(np.float64)
    best = _merge(best, (sc, store._ids[rows], d, rows), k)
    return best, (float(best[0][-1]) * (1 + _TOL) if len(best[0]) == k else kth), len(rows)


def within_reach(store: "KeyStore", q: np.ndarray, exclude: int = -1, max_lists: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Rows x with d(q, x) <= reach_x (exact; ``max_lists``: only in that many lists, nearest first),
    and those distances."""
    n = store.n
    reach = store._columns["reach"]
    qsq = float(np.dot(q.astype(np.float64), q))
    if store.centroids is None or n <= store.exact_below:
        rows = np.arange(n)
    else:
        dqc, dqc_hi = store._centroid_bounds(q, qsq)
        qc = store._projected(q, qsq)
        near = ((dqc - store._list_rmax - _TOL * (dqc_hi + store._list_rmax) <= store._list_reach_max)
                & (store._box_bounds(qc) <= store._list_reach_max))
        lists = np.flatnonzero(near & (store._list_len > 0))
        if max_lists is not None and len(lists) > max_lists:
            lists = lists[np.argsort(dqc[lists] - store._list_rmax[lists], kind="stable")[:max_lists]]
        if not len(lists):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows, gap = _list_rows(store, lists, dqc, dqc_hi)
        rows = rows[gap <= reach[rows]]
        if len(rows):
            rows = rows[store._proj_keep(rows, qc, reach[rows].astype(np.float64))]
    if exclude >= 0:
        rows = rows[rows != exclude]
    if len(rows):
        lo, _ = store._screen(rows, q, qsq)
        rows = rows[lo <= reach[rows] * (1 + _TOL)]
    d = store.distances(rows, q)
    keep = d <= reach[rows]
    return rows[keep], d[keep]


def _list_rows(store: "KeyStore", lists: np.ndarray, dqc: np.ndarray, dqc_hi: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``lists`` (each list's rows in list order) and, per row, the triangle bound's gap
    |d(q, c) - rad| less its rounding margin, from the radii the store keeps in list order."""
    rows, rad, lens = store._ivf.gather(lists)
    lo_c, hi_c = np.repeat(dqc[lists], lens), np.repeat(dqc_hi[lists], lens)
    return rows, np.maximum(lo_c - rad, rad - hi_c) - _TOL * (hi_c + rad)
