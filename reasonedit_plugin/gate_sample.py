"""The rejection gate's key sample (METHOD.md §4.3), maintained under edits.

tau is a percentile of d_ij / (sigma_j + 1e-6) over pairs of up to ``size`` stored keys. With that many
keys or fewer the sample is all of them (exactly the reference). Above, it is the ``size`` entries of lowest
seeded pseudo-random priority — a uniform sample without replacement that an add or a removal changes by
at most one entry — with its pairwise distances kept, so tau is recomputed from cached pairs (one
partition) only when a sampled key or its sigma changed, instead of a 2,000 x 2,000 distance matrix per
edit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .hubness import EPS, HubnessGraph
from .keystore import KeyStore


def priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random priority in [0, 1) per entry id (splitmix64): the gate sample is the entries
    of lowest priority, a uniform sample that edits change by at most one member."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2 ** 64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


def _percentile_inplace(values: np.ndarray, percentile: float) -> float:
    """``np.percentile(values, percentile)`` (linear interpolation) by one partition of ``values`` in place."""
    h = (len(values) - 1) * percentile / 100.0
    lo = int(np.floor(h))
    hi = min(lo + 1, len(values) - 1)
    values.partition([lo, hi] if hi != lo else [lo])
    a, b = float(values[lo]), float(values[hi])
    t = h - lo
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


class GateSample:
    """Up to ``size`` entries (lowest priority) and their pairwise key distances, kept under edits."""

    def __init__(self, store: KeyStore, graph: HubnessGraph, size: int, seed: int):
        self.store, self.graph, self.size, self.seed = store, graph, size, seed
        ids = store.ids.copy()
        prio = priority(ids, seed)
        take = np.argsort(prio, kind="stable")[:size]
        self.ids = ids[take]
        self.prio = prio[take]
        x = torch.from_numpy(store.vectors(store.rows(self.ids))).double()
        sq = (x * x).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_(min=0.0)
        near = d2 <= 1e-9 * (sq[:, None] + sq[None, :])  # (near-)duplicates: exact differences instead
        if near.any():
            i, j = torch.nonzero(near, as_tuple=True)
            d2[i, j] = ((x[i] - x[j]) ** 2).sum(1)
        self.dist = d2.sqrt_().float().numpy()
        self._cache: tuple[Any, float] | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def added(self, entry_id: int) -> None:
        p = float(priority(np.array([entry_id]), self.seed)[0])
        if len(self.ids) >= self.size and p >= self.prio.max():
            return
        store = self.store
        row = store.distances(store.rows(self.ids), store.vectors(np.array([store.row(entry_id)]))[0])
        n = len(self.ids)
        dist = np.zeros((n + 1, n + 1), np.float32)
        dist[:n, :n], dist[n, :n], dist[:n, n] = self.dist, row, row
        self.ids, self.prio, self.dist = np.append(self.ids, entry_id), np.append(self.prio, p), dist
        if len(self.ids) > self.size:
            self._drop(int(np.argmax(self.prio)))

    def removed(self, entry_id: int) -> None:
        where = np.flatnonzero(self.ids == entry_id)
        if not len(where):
            return
        self._drop(int(where[0]))
        store = self.store
        others = store.ids[~np.isin(store.ids, self.ids)]
        others = others[others != entry_id]
        if len(others) and len(self.ids) < self.size:
            nxt = int(others[np.argmin(priority(others, self.seed))])
            self.added(nxt)

    def _drop(self, pos: int) -> None:
        keep = np.arange(len(self.ids)) != pos
        self.ids, self.prio = self.ids[keep], self.prio[keep]
        self.dist = self.dist[np.ix_(keep, keep)]

    def threshold(self, percentile: float) -> float:
        sigma = self.graph.sigma(self.ids)
        fingerprint = (self.ids.tobytes(), sigma.tobytes(), percentile)
        if self._cache is not None and self._cache[0] == fingerprint:
            return self._cache[1]
        if self._pairs is None or self._pairs[0] is not self.dist:
            iu = np.triu_indices(len(self.ids), k=1)
            order = np.argsort(self.ids, kind="stable")  # pairs i < j by entry id
            i, j = order[iu[0]], order[iu[1]]
            self._pairs = (self.dist, self.dist[i, j].astype(np.float64), j.astype(np.int32))
        _, d, j = self._pairs
        values = d / (sigma + EPS)[j]  # d_ij / (sigma_j + eps): sigma of the later entry
        tau = _percentile_inplace(values, percentile)
        self._cache = (fingerprint, tau)
        return tau
