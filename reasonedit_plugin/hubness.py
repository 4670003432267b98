"""Hubness sigma, maintained incrementally (METHOD.md §4.2).

sigma_k = the median of the L2 distances from key k to its min(K, N-1) nearest other keys. The reference
recomputes all of it from an N x N distance matrix after every edit; this table keeps every key's sorted
neighbour list, its K-th distance and a reverse map, so that

* adding a key costs one distance row (O(N·D)) plus work only for the keys whose lists it enters;
* removing a key recomputes only the lists that contained it.

Ties are broken by id, so the table equals a from-scratch build exactly (tested).
"""

from __future__ import annotations

import bisect
import statistics
from typing import Sequence

import torch


class HubnessTable:
    """Keys (float64 rows), their K-nearest-neighbour lists and sigma."""

    def __init__(self, dim: int, k: int):
        self.dim = dim
        self.k = k
        self._mat = torch.zeros(16, dim, dtype=torch.float64)
        self._kth = torch.full((16,), float("inf"), dtype=torch.float64)
        self._sqnorm = torch.zeros(16, dtype=torch.float64)
        self._rows: list[int] = []
        self._pos: dict[int, int] = {}
        self._lists: dict[int, list[tuple[float, int]]] = {}
        self._reverse: dict[int, set[int]] = {}
        self._sigma: dict[int, float] | None = None
        self._sigma_rows = torch.zeros(0, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._pos

    def keys(self, ids: Sequence[int]) -> torch.Tensor:
        rows = [self._pos[i] for i in ids]
        return self._mat[rows].float()

    def neighbours(self, key_id: int) -> list[tuple[float, int]]:
        return list(self._lists[key_id])

    def sigma_table(self) -> dict[int, float]:
        if self._sigma is None:
            self._sigma = {i: statistics.median(d for d, _ in lst) if lst else 1.0
                           for i, lst in self._lists.items()}
            self._sigma_rows = torch.tensor([self._sigma[i] for i in self._rows], dtype=torch.float64)
        return self._sigma

    def distances(self, vec: torch.Tensor) -> torch.Tensor:
        """float64 L2 distances from ``vec`` to every stored key, in row order, as
        sqrt(|k|^2 + |v|^2 - 2 k.v) with cached |k|^2: one BLAS matrix-vector product (error ~1e-7 at
        worst for near-identical keys, far below any radius)."""
        n = len(self._rows)
        v = vec.reshape(-1).to(torch.float64)
        sq = self._sqnorm[:n] + v.dot(v) - 2.0 * (self._mat[:n] @ v)
        return sq.clamp_(min=0.0).sqrt_()

    def scaled_topk(self, vec: torch.Tensor, k: int, eps: float) -> list[tuple[float, float, int]]:
        """The k keys of lowest d / (sigma + eps) as (score, distance, id), ties by id; exact."""
        self.sigma_table()
        d = self.distances(vec)
        scores = d / (self._sigma_rows + eps)
        take = min(k, len(d))
        if take == 0:
            return []
        cutoff = torch.kthvalue(scores, take).values
        rows = torch.nonzero(scores <= cutoff).flatten().tolist()
        return sorted((float(scores[r]), float(d[r]), self._rows[r]) for r in rows)[:take]

    # ------------------------------------------------------------------ changes
    def add(self, key_id: int, key: torch.Tensor) -> None:
        if key_id in self._pos:
            raise KeyError(f"key {key_id} is already in the hubness table")
        self._sigma = None
        vec = key.detach().reshape(-1).to(torch.float64)
        n = len(self._rows)
        mine: list[tuple[float, int]] = []
        if n:
            d = self.distances(vec)
            mine = self._nearest(d)
            for row in torch.nonzero(d <= self._kth[:n]).flatten().tolist():
                self._offer(self._rows[row], (float(d[row]), key_id))
        self._ensure_capacity(n + 1)
        self._mat[n] = vec
        self._sqnorm[n] = vec.dot(vec)
        self._rows.append(key_id)
        self._pos[key_id] = n
        self._reverse.setdefault(key_id, set())
        self._set_list(key_id, mine)

    def remove(self, key_id: int) -> None:
        self._sigma = None
        row = self._pos.pop(key_id)
        last = len(self._rows) - 1
        if row != last:  # swap-remove keeps rows contiguous
            moved = self._rows[last]
            self._mat[row] = self._mat[last]
            self._sqnorm[row] = self._sqnorm[last]
            self._kth[row] = self._kth[last]
            self._rows[row] = moved
            self._pos[moved] = row
        self._rows.pop()
        self._kth[last] = float("inf")
        for _, m in self._lists.pop(key_id):
            self._reverse[m].discard(key_id)
        stale = sorted(self._reverse.pop(key_id))
        if stale:
            n = len(self._rows)
            for j in stale:
                row_d = self.distances(self._mat[self._pos[j]])
                self._set_list(j, self._nearest(row_d, exclude=self._pos[j]))

    # ------------------------------------------------------------------ internals
    def _nearest(self, d: torch.Tensor, exclude: int | None = None) -> list[tuple[float, int]]:
        """The k nearest rows of the distance row ``d`` by (distance, id), leaving out row ``exclude``."""
        available = len(d) - (exclude is not None)
        take = min(available, self.k)
        if take <= 0:
            return []
        if exclude is not None:
            d = d.clone()
            d[exclude] = float("inf")
        cutoff = torch.kthvalue(d, take).values
        rows = torch.nonzero(d <= cutoff).flatten().tolist()
        return sorted((float(d[r]), self._rows[r]) for r in rows)[:take]

    def _offer(self, owner: int, pair: tuple[float, int]) -> None:
        lst = self._lists[owner]
        if len(lst) >= self.k and pair >= lst[-1]:
            return
        bisect.insort(lst, pair)
        self._reverse.setdefault(pair[1], set()).add(owner)
        if len(lst) > self.k:
            _, dropped = lst.pop()
            self._reverse[dropped].discard(owner)
        self._kth[self._pos[owner]] = lst[-1][0] if len(lst) >= self.k else float("inf")

    def _set_list(self, owner: int, pairs: list[tuple[float, int]]) -> None:
        for _, m in self._lists.get(owner, []):
            if m in self._reverse:  # a key being removed has no reverse set any more
                self._reverse[m].discard(owner)
        self._lists[owner] = pairs
        for _, m in pairs:
            self._reverse.setdefault(m, set()).add(owner)
        self._kth[self._pos[owner]] = pairs[-1][0] if len(pairs) >= self.k else float("inf")

    def _ensure_capacity(self, n: int) -> None:
        if n <= len(self._mat):
            return
        cap = max(n, 2 * len(self._mat))
        mat = torch.zeros(cap, self.dim, dtype=torch.float64)
        mat[: len(self._rows)] = self._mat[: len(self._rows)]
        kth = torch.full((cap,), float("inf"), dtype=torch.float64)
        kth[: len(self._rows)] = self._kth[: len(self._rows)]
        sqnorm = torch.zeros(cap, dtype=torch.float64)
        sqnorm[: len(self._rows)] = self._sqnorm[: len(self._rows)]
        self._mat, self._kth, self._sqnorm = mat, kth, sqnorm
