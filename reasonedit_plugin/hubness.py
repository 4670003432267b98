"""Hubness sigma from an incrementally maintained k-nearest-neighbour graph (METHOD.md §4.2).

sigma_x = the median of the L2 distances from key x to its min(K, N-1) nearest other keys (1.0 for a lone
key). The reference recomputes it from an N x N distance matrix after every edit. Here every key's
neighbour list (ids, sorted by (distance, id)) lives as columns of the :class:`~.keystore.KeyStore`, next to
its K-th distance (the store's ``reach``) and sigma, and

* adding key x costs one exact K-NN search for x's own list plus one exact reverse search — the keys y
  with d(x, y) <= reach_y, found through the store's IVF bounds — whose lists x enters;
* removing key x recomputes only the lists that held x (found the same way).

Neighbour distances are not stored (they are recomputed from the keys for the <= K lists an edit touches),
so the graph costs 4 bytes per neighbour. The lists equal a from-scratch build exactly (tested), and they
are saved with the codebook, so loading reads them instead of recomputing anything.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from .keystore import KeyStore, trim_heap

logger = logging.getLogger(__name__)

EPS = 1e-6
"""The score's denominator is sigma + EPS (METHOD.md §4.2)."""
_MAX_ID = 2 ** 31 - 1
_RESTORE_CHUNK = 65536  # keys added per step of a load (each step gathers its keys in IVF-list order)


def _median(d: np.ndarray) -> float:
    """Median of distances sorted ascending (mean of the middle two for an even count); 1.0 if none."""
    n = len(d)
    if n == 0:
        return 1.0
    return float(d[n // 2]) if n % 2 else (float(d[n // 2 - 1]) + float(d[n // 2])) / 2.0


def _medians(d: np.ndarray) -> np.ndarray:
    """Row medians of a [m, n] array sorted along rows (n >= 1)."""
    n = d.shape[1]
    d = d.astype(np.float64)
    return d[:, n // 2] if n % 2 else (d[:, n // 2 - 1] + d[:, n // 2]) / 2.0


class HubnessGraph:
    """K-NN lists and sigma of every key in a :class:`KeyStore`, kept exact under adds and removals."""

    def __init__(self, store: KeyStore, k: int, eps: float = EPS, probe: int | None = None):
        self.store = store
        self.k = int(k)
        self.probe = probe
        """None: exact upkeep. An int: an add's (or a repair's) K-NN and reverse searches look only at that
        many IVF lists, nearest first (approximate sigma, constant work per edit at any size); a removal
        still finds every list that holds the removed key."""
        store.add_column("nbr", (self.k,), np.int32, -1)
        store.add_column("nlen", (), np.int16, 0)
        store.set_eps(eps)  # the store keeps sigma and eps; a score's denominator is sigma + eps

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.store

    # ------------------------------------------------------------------ reads
    def neighbours(self, key_id: int) -> list[tuple[float, int]]:
        """(distance, id) of a key's neighbours, nearest first."""
        s = self.store
        row = s.row(key_id)
        ids = s.column("nbr")[row, : s.column("nlen")[row]].astype(np.int64)
        d = s.distances(s.rows(ids), s.vectors(np.array([row]))[0])
        return list(zip(d.astype(np.float64).tolist(), ids.tolist()))

    def sigma(self, ids: Sequence[int]) -> np.ndarray:
        return self.store.column("sigma")[self.store.rows(ids)]

    def sigma_table(self) -> dict[int, float]:
        return dict(zip(self.store.ids.tolist(), self.store.column("sigma").tolist()))

    def keys(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self.store.vectors(self.store.rows(ids)))

    def scaled_topk(self, vec: Any, k: int, eps: float = EPS, exact_scan: bool = False
                    ) -> list[tuple[float, float, int]]:
        """The k keys of lowest d / (sigma + eps) as (score, distance, id), ties by id; exact.
        ``exact_scan`` scores every key (the reference path the pruned search must equal)."""
        self.set_eps(eps)
        hits = self.store.search(self.store.round(vec), k, scaled=True, force_scan=exact_scan)
        return list(zip(hits.scores.tolist(), hits.distances.astype(np.float64).tolist(), hits.ids.tolist()))

    @property
    def eps(self) -> float:
        """The eps of the score's denominator sigma + eps (the key store's, which computes it)."""
        return self.store.eps

    def set_eps(self, eps: float) -> None:
        """Use ``eps`` in the score's denominator sigma + eps from now on."""
        if eps != self.store.eps:
            self.store.set_eps(eps)

    # ------------------------------------------------------------------ changes
    def add(self, key_id: int, key: Any) -> None:
        """Store ``key`` under ``key_id`` and update every list it enters."""
        s = self.store
        if key_id in s:
            raise KeyError(f"key {key_id} is already in the hubness table")
        if not 0 <= key_id <= _MAX_ID:
            raise ValueError(f"key id {key_id} is outside [0, 2**31).")
        q = s.round(key)
        own = s.search(q, self.k, scaled=False, max_lists=self.probe)
        others, d_others = s.within_reach(q, max_lists=self.probe)
        others = s.ids[others].copy()  # by id: the add may retrain the partition, which moves rows
        n = len(own.ids)
        sigma = _median(own.distances)
        row = s.add(key_id, q, sigma=sigma, reach=own.distances[-1] if n >= self.k else np.inf)
        self._set_list(row, own.ids, own.distances)
        self._offer(s.rows(others), key_id, d_others)

    def remove(self, key_id: int) -> None:
        """Remove a key; the lists that held it are recomputed (by the add's search: exact unless ``probe``).
        The lists that hold it are found exactly whatever ``probe`` says: a list that held it lists it
        within its reach, and one missed would keep the removed id for good."""
        s = self.store
        row = s.row(key_id)
        q = s.vectors(np.array([row]))[0]
        near, _ = s.within_reach(q, exclude=row)
        nbr = s.column("nbr")
        held = near[(nbr[near] == key_id).any(axis=1)] if len(near) else near
        stale = s.ids[held].tolist()
        s.remove(key_id)
        for j in stale:
            self._recompute(s.row(j))

    def build(self, ids: np.ndarray, keys: np.ndarray, progress: Any = None, max_lists: int | None = None) -> None:
        """Add many keys at once (an empty graph): store them, then one block-wise exact K-NN pass
        (``max_lists``: an approximate one, see :meth:`KeyStore.knn_all`)."""
        s = self.store
        if len(s):
            raise ValueError("HubnessGraph.build needs an empty store; use add() for single keys.")
        ids = np.asarray(ids, np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() > _MAX_ID):
            raise ValueError("key ids must lie in [0, 2**31).")
        s.add_many(ids, keys)
        nbr_ids, dist = s.knn_all(self.k, progress, max_lists)
        n = nbr_ids.shape[1]
        s.column("nbr")[:, :n] = nbr_ids
        s.column("nlen")[:] = n
        sigma = _medians(dist) if n else np.ones(len(s))
        s.column("sigma")[:] = sigma
        s.column("reach")[:] = dist[:, -1] if n >= self.k else np.inf
        if s.trained:  # list bounds from the final columns
            part = s.partition_state()
            s.set_partition(s.centroids, part["assign"], part["rad"])
        trim_heap()

    def restore(self, ids: np.ndarray, keys: np.ndarray, nbr: np.ndarray, nlen: np.ndarray,
                sigma: np.ndarray, reach: np.ndarray, partition: dict[str, np.ndarray] | None) -> None:
        """Install a saved graph (an empty store): O(N) copying, no distance computed."""
        s = self.store
        if len(s):
            raise ValueError("HubnessGraph.restore needs an empty store.")
        # rows go in already grouped by IVF list (the order the partition would move them to), a chunk at a
        # time into room reserved once: no reordering of every key after they are in (a million keys: one
        # 900 MB gathered temporary and a copy less)
        order = np.argsort(partition["assign"], kind="stable") if partition else slice(None)  # (no copy)
        exact_below, s.exact_below = s.exact_below, 1 << 62  # no training while rows go in
        try:
            s.reserve(len(ids))
            for start in range(0, len(ids), _RESTORE_CHUNK):
                rows = order[start:start + _RESTORE_CHUNK] if partition else slice(start, start + _RESTORE_CHUNK)
                s.add_many(ids[rows], keys[rows])
        finally:
            s.exact_below = exact_below
        s.column("nbr")[:] = nbr[order]
        s.column("nlen")[:] = nlen[order]
        s.column("sigma")[:] = sigma[order]
        s.column("reach")[:] = reach[order]
        if partition:
            s.set_partition(partition["centroids"], partition["assign"][order], partition["rad"][order])
        elif len(s) >= s.exact_below:
            s.train()

    # ------------------------------------------------------------------ internals
    def _set_list(self, row: int, ids: np.ndarray, d: np.ndarray) -> None:
        s = self.store
        n = len(ids)
        s.column("nbr")[row, :n] = ids
        s.column("nbr")[row, n:] = -1
        s.column("nlen")[row] = n
        sigma = _median(d)
        rows = np.array([row])
        s.set_sigma(rows, np.array([sigma]))
        s.set_reach(rows, np.array([d[-1] if n >= self.k else np.inf], np.float32))

    def _recompute(self, row: int, refresh_bounds: bool = True) -> None:
        s = self.store
        q = s.vectors(np.array([row]))[0]
        hits = s.search(q, self.k, scaled=False, exclude=row, max_lists=self.probe)
        if refresh_bounds:
            self._set_list(row, hits.ids, hits.distances)
        else:  # bulk build: list bounds are recomputed once at the end
            n = len(hits.ids)
            s.column("nbr")[row, :n] = hits.ids
            s.column("nlen")[row] = n
            sigma = _median(hits.distances)
            s.column("sigma")[row] = sigma
            s.column("reach")[row] = hits.distances[-1] if n >= self.k else np.inf

    def _offer(self, rows: np.ndarray, key_id: int, d: np.ndarray) -> None:
        """Key ``key_id`` lies at distances ``d`` from the keys of ``rows``: it enters the lists it belongs
        to (sorted by (distance, id), truncated to K)."""
        s = self.store
        nbr, nlen, reach = s.column("nbr"), s.column("nlen"), s.column("reach")
        last = nbr[rows, self.k - 1].astype(np.int64)
        enter = (nlen[rows] < self.k) | (d < reach[rows]) | ((d == reach[rows]) & (key_id < last))
        rows, d = rows[enter], d[enter]
        if not len(rows):
            return
        full = nlen[rows] >= self.k
        for y, dy in zip(rows[~full].tolist(), d[~full].tolist()):  # lists still short (N <= K)
            n = int(nlen[y])
            ids = nbr[y, :n].astype(np.int64)
            dist = s.distances(s.rows(ids), s.vectors(np.array([y]))[0])
            all_ids, all_d = np.append(ids, key_id), np.append(dist, np.float32(dy))
            order = np.lexsort((all_ids, all_d))[: self.k]
            self._set_list(y, all_ids[order], all_d[order])
        rows, d = rows[full], d[full]
        if not len(rows):
            return
        m, k = len(rows), self.k
        ids = nbr[rows].astype(np.int64)  # [m, k]
        own = s._fp32(rows)  # [m, D]
        # exactly as KeyStore.distances does (differences, per pair) so ties stay consistent
        diff = s._fp32(s.rows(ids.reshape(-1))).reshape(m, k, -1) - own[:, None, :]
        dist = diff.mul_(diff).sum(dim=2).sqrt_().numpy()
        all_ids = np.concatenate([ids, np.full((m, 1), key_id, np.int64)], axis=1)
        all_d = np.concatenate([dist, d.astype(np.float32)[:, None]], axis=1)
        order = np.lexsort((all_ids, all_d), axis=-1)
        new_ids = np.take_along_axis(all_ids, order, 1)[:, :k]
        new_d = np.take_along_axis(all_d, order, 1)[:, :k]
        nbr[rows] = new_ids
        sigma = _medians(new_d)
        s.set_sigma(rows, sigma)
        s.set_reach(rows, new_d[:, -1])
