"""The rejection gate's key sample (METHOD.md §4.3), maintained under edits.

tau is a percentile of d_ij / (sigma_j + 1e-6) over pairs of up to ``size`` stored keys. With that many
keys or fewer the sample is all of them (exactly the reference). Above, it is the ``size`` entries of lowest
seeded pseudo-random priority — a uniform sample without replacement that an add or a removal changes by
at most one entry — with its pairwise distances kept.

tau itself is read from a *pool*: the sorted scaled pair values up to a cut-off T, a few times more than
the percentile's rank needs (p = 1 % of 2,000 keys: ~20k of the 2M pair values). An edit changes the
values of the pairs of at most a few sample members (one joins or leaves; the sigma of a few changes);
those pairs are taken out of the pool with the values they went in with and put back with the new ones
(a few thousand values, sorted insertions), so tau after an edit costs O(changed pairs + pool), not a
partition of every pair. When the pool no longer reaches the rank it is rebuilt from all pairs. The
answer is the same number a full recomputation gives (same float64 arithmetic per value, same
interpolation as ``np.percentile``; tested).
"""

from __future__ import annotations

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


def _interpolate(a: float, b: float, h: float) -> float:
    """``np.percentile``'s linear interpolation between the values at ranks floor(h) and floor(h) + 1."""
    t = h - np.floor(h)
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)


def _percentile_inplace(values: np.ndarray, percentile: float) -> float:
    """``np.percentile(values, percentile)`` (linear interpolation) by one partition of ``values`` in place."""
    h = (len(values) - 1) * percentile / 100.0
    lo = int(np.floor(h))
    hi = min(lo + 1, len(values) - 1)
    values.partition([lo, hi] if hi != lo else [lo])
    return _interpolate(float(values[lo]), float(values[hi]), h)


class LowPool:
    """The sorted values of a multiset up to a cut-off (all of them while the cut-off is infinite), kept under
    insertions and removals of values, so that a low percentile is read without partitioning every value.
    Used for the gate sample's scaled pair values and the null-set gate's image distances."""

    def __init__(self) -> None:
        self.values: np.ndarray | None = None
        """Sorted values <= ``cut`` (None: to be rebuilt)."""
        self.cut = np.inf

    def insert(self, vals: np.ndarray) -> None:
        if self.values is None:
            return
        vals = np.sort(vals)
        vals = vals[vals <= self.cut]
        if len(vals):
            self.values = np.insert(self.values, np.searchsorted(self.values, vals), vals)

    def remove(self, vals: np.ndarray) -> None:
        """Take ``vals`` (each went in with ``insert`` or ``rebuild``, with the same value) out."""
        if self.values is None:
            return
        vals = np.sort(vals)
        vals = vals[vals <= self.cut]
        if not len(vals):
            return
        pool = self.values
        idx = np.searchsorted(pool, vals, "left") + (np.arange(len(vals)) - np.searchsorted(vals, vals, "left"))
        if idx[-1] >= len(pool) or not np.array_equal(pool[idx], vals):
            self.values = None  # cannot happen with identical arithmetic; rebuild rather than guess
            return
        self.values = np.delete(pool, idx)

    def rebuild(self, values: np.ndarray, need: int) -> None:
        """From every value (``values`` is overwritten): the lowest, up to a cut-off a few times beyond rank
        ``need``."""
        keep = max(2 * need, need + 4096)
        if keep >= len(values):
            self.values, self.cut = np.sort(values), np.inf
            return
        values.partition(keep)
        self.cut = float(values[keep])
        rest = values[keep + 1:]
        self.values = np.sort(np.concatenate([values[: keep + 1], rest[rest <= self.cut]]))

    def percentile(self, count: int, percentile: float) -> float | None:
        """``np.percentile`` of the ``count`` values at ``percentile``; None when the pool must be rebuilt
        first (it no longer reaches the rank)."""
        h = (count - 1) * percentile / 100.0
        lo = int(np.floor(h))
        hi = min(lo + 1, count - 1)
        if self.values is None or (len(self.values) <= hi and self.cut < np.inf):
            return None
        return _interpolate(float(self.values[lo]), float(self.values[hi]), h)


class GateSample:
    """Up to ``size`` entries (lowest priority), their pairwise key distances and the pool of their lowest
    scaled pair values, kept under edits."""

    def __init__(self, store: KeyStore, graph: HubnessGraph, size: int, seed: int):
        self.store, self.graph, self.size, self.seed = store, graph, size, seed
        ids = store.ids.copy()
        prio = priority(ids, seed)
        take = np.argsort(prio, kind="stable")[:size]
        m = len(take)
        cap = min(size, max(64, 2 * m)) if m < size else size
        self._ids = np.full(cap, -1, np.int64)
        self._prio = np.full(cap, np.inf)
        self._den = np.ones(cap)  # sigma + eps of each member as its pairs' values went into the pool
        self._dist = np.zeros((cap, cap), np.float32)
        self.n = m
        self._ids[:m], self._prio[:m] = ids[take], prio[take]
        x = torch.from_numpy(store.vectors(store.rows(self._ids[:m]))).double()
        sq = (x * x).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_(min=0.0)
        near = d2 <= 1e-9 * (sq[:, None] + sq[None, :])  # (near-)duplicates: exact differences instead
        if near.any():
            i, j = torch.nonzero(near, as_tuple=True)
            d2[i, j] = ((x[i] - x[j]) ** 2).sum(1)
        self._dist[:m, :m] = d2.sqrt_().float().numpy()
        self._pool = LowPool()  # the lowest scaled pair values

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.n]

    @property
    def prio(self) -> np.ndarray:
        return self._prio[: self.n]

    @property
    def dist(self) -> np.ndarray:
        return self._dist[: self.n, : self.n]

    # ------------------------------------------------------------------ membership
    def added(self, entry_id: int) -> None:
        p = float(priority(np.array([entry_id]), self.seed)[0])
        if self.n >= self.size and p >= self.prio.max():
            return
        if self.n >= self.size:  # the member of highest priority leaves; the new one takes its place
            pos = int(np.argmax(self.prio))
            self._retire(np.array([pos]))
        else:
            pos = self.n
            self._reserve(pos + 1)
            self.n += 1
        self._place(pos, entry_id, p)

    def removed(self, entry_id: int) -> None:
        where = np.flatnonzero(self.ids == entry_id)
        if not len(where):
            return
        pos = int(where[0])
        self._retire(np.array([pos]))
        store = self.store
        others = store.ids[~np.isin(store.ids, self.ids)]
        others = others[others != entry_id]
        if len(others):  # the next entry by priority takes the place
            nxt = int(others[np.argmin(priority(others, self.seed))])
            self._place(pos, nxt, float(priority(np.array([nxt]), self.seed)[0]))
            return
        last = self.n - 1  # fewer entries than the sample size: the last member moves into the hole
        if pos != last:
            self._dist[pos, :] = self._dist[last, :]
            self._dist[:, pos] = self._dist[:, last]
            self._dist[pos, pos] = 0.0
            self._ids[pos], self._prio[pos], self._den[pos] = self._ids[last], self._prio[last], self._den[last]
        self._ids[last], self._prio[last] = -1, np.inf
        self.n = last

    def _reserve(self, n: int) -> None:
        cap = len(self._ids)
        if n <= cap:
            return
        new = min(self.size, max(n, 2 * cap))
        dist = np.zeros((new, new), np.float32)
        dist[:cap, :cap] = self._dist
        self._dist = dist
        self._ids = np.concatenate([self._ids, np.full(new - cap, -1, np.int64)])
        self._prio = np.concatenate([self._prio, np.full(new - cap, np.inf)])
        self._den = np.concatenate([self._den, np.ones(new - cap)])

    def _place(self, pos: int, entry_id: int, p: float) -> None:
        """Put entry ``entry_id`` at sample position ``pos`` (free) and its pairs into the pool."""
        store = self.store
        self._ids[pos], self._prio[pos] = entry_id, p
        row = store.distances(store.rows(self.ids), store.vectors(np.array([store.row(entry_id)]))[0])
        row[pos] = 0.0
        self._dist[pos, : self.n] = row
        self._dist[: self.n, pos] = row
        self._den[pos] = float(self.graph.sigma([entry_id])[0]) + EPS
        self._admit(np.array([pos]))

    # ------------------------------------------------------------------ the pool of low pair values
    def _values(self, positions: np.ndarray) -> np.ndarray:
        """The scaled values d_ij / den_j (j: the later entry id of the pair) of every pair with at least
        one member in ``positions``, each pair once, with the dens the pool holds (``_den``)."""
        n = self.n
        ids, den = self._ids[:n], self._den[:n]
        inside = np.zeros(n, bool)
        inside[positions] = True
        out = []
        for s in np.sort(positions).tolist():
            partner = ~inside
            partner[s + 1:] |= inside[s + 1:]  # pairs inside the set: once, from their first member
            partner[s] = False
            j = np.flatnonzero(partner)
            later = np.where(ids[j] > ids[s], den[j], den[s])
            out.append(self._dist[s, j].astype(np.float64) / later)
        return np.concatenate(out) if out else np.zeros(0)

    def _retire(self, positions: np.ndarray) -> None:
        if self._pool.values is not None:
            self._pool.remove(self._values(positions))

    def _admit(self, positions: np.ndarray) -> None:
        if self._pool.values is not None:
            self._pool.insert(self._values(positions))

    def _all_values(self) -> np.ndarray:
        n = self.n
        ids = self._ids[:n]
        iu, ju = np.triu_indices(n, k=1)
        later = np.where(ids[iu] > ids[ju], iu, ju)
        return self._dist[iu, ju].astype(np.float64) / self._den[later]

    def threshold(self, percentile: float) -> float:
        n = self.n
        den = self.graph.sigma(self.ids) + EPS
        changed = np.flatnonzero(den != self._den[:n])
        if len(changed):  # members whose sigma moved: their pairs leave the pool at the old value
            self._retire(changed)
            self._den[changed] = den[changed]
            self._admit(changed)
        pairs = n * (n - 1) // 2
        tau = self._pool.percentile(pairs, percentile)
        if tau is None:
            self._pool.rebuild(self._all_values(), int((pairs - 1) * percentile / 100.0) + 2)
            tau = self._pool.percentile(pairs, percentile)
        return tau
