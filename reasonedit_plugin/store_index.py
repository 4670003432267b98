"""The key store as a :class:`~.index.VectorIndex`: a read-only view with exact L2 search (the index
contract's (distance, id) order); keys enter and leave through the codebook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import ReasonEditError
from .index import IndexInputError, VectorIndex

if TYPE_CHECKING:
    from .keystore import Hits, KeyStore


class StoreIndex(VectorIndex):
    """A read-only :class:`~.index.VectorIndex` view of a key store (exact L2 search, the index contract's
    (distance, id) order). Keys enter and leave through the codebook, never through this view."""

    def __init__(self, store: "KeyStore", search: "Callable[[np.ndarray, int], Hits] | None" = None):
        super().__init__(store.dim)
        self._store = store
        self._search_fn = search
        """``(query [D], k) -> Hits`` by plain L2 (the codebook's backend); None: the store's own search."""

    @property
    def count(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def all_ids(self) -> np.ndarray:
        return np.sort(self._store.ids)

    def _require_known(self, ids: np.ndarray) -> None:
        unknown = [int(i) for i in ids if int(i) not in self._store]
        if unknown:
            raise IndexInputError(f"unknown ids {unknown[:10]}: they are not in the codebook's key store.")

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise ReasonEditError("the codebook's index is read-only; add keys with codebook.add_edit().")

    def _remove(self, ids: np.ndarray) -> None:
        raise ReasonEditError("the codebook's index is read-only; remove keys with codebook.remove_edit().")

    def add(self, ids: Any, vectors: Any) -> None:  # no id bookkeeping in the base class: refuse first
        self._add(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32))

    def remove(self, ids: Any) -> None:
        self._remove(np.zeros(0, np.int64))

    def _reset(self) -> None:
        raise ReasonEditError("the codebook's index is read-only.")

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._store.vectors(self._store.rows(ids))

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_d = np.empty((len(queries), k), np.float32)
        out_i = np.empty((len(queries), k), np.int64)
        for r, q in enumerate(queries):
            hits = (self._store.search(self._store.round(q), k, scaled=False) if self._search_fn is None
                    else self._search_fn(q, k))
            out_d[r], out_i[r] = hits.distances, hits.ids
        return out_d, out_i
