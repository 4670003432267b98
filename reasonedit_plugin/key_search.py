"""Where the codebook's queries are answered: ``retrieval.backend`` (METHOD.md §4).

A :class:`KeySearch` answers a codebook query with the exact k best entries by hubness-scaled distance
d / (sigma + eps) (``scaled``) or plain L2, ties by id — the same :class:`~.keystore.Hits` whatever the
backend. The key store, the hubness graph (sigma) and the gate stay in ReasonEdit; a backend only decides
where the search runs and, for a shared one, keeps a copy of the keys up to date:

* ``faiss`` (default) — in-process: the key store's IVF lists (k-means trained with faiss) searched with
  exact triangle-inequality bounds (:meth:`KeyStore.search`);
* ``torch`` — in-process, every key scored (the exact reference; slower past a few thousand keys);
* ``milvus`` — a Milvus collection shared by replicas (optional extra, :mod:`.milvus_backend`): L2
  candidates from Milvus, re-ranked here by :func:`rerank_candidates`.

:func:`rerank_candidates` turns any exact L2 candidate source into the exact scaled top-k: a key outside
the ``m`` nearest by L2 is at least as far as the m-th (less the float32 rounding bound), so its score is at
least that distance / max(sigma + eps); when the k-th best score among the candidates is below that, no
other key can enter, else ``m`` grows.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np

from .config import KEY_SEARCHES
from .errors import ConfigError
from .keystore import _TOL, Hits, KeyStore

if TYPE_CHECKING:
    from .codebook import Codebook
    from .config import RetrievalConfig

logger = logging.getLogger(__name__)

__all__ = ["KeySearch", "IvfKeySearch", "ScanKeySearch", "rerank_candidates", "make_key_search", "KEY_SEARCHES"]

class KeySearch(abc.ABC):
    """Answers a codebook's queries; told when the codebook's entries change."""

    name: ClassVar[str]

    def attach(self, book: "Codebook") -> None:
        """The codebook now holds a whole new set of keys (built, loaded, bulk-imported or rebuilt)."""

    def prepare(self, book: "Codebook") -> None:
        """An edit is about to change the codebook (a shared backend checks it may, before anything changes)."""

    def changed(self, book: "Codebook", entry_ids: Sequence[int]) -> None:
        """An edit added, changed or removed these entries (sigma of others may have changed too)."""

    @abc.abstractmethod
    def search(self, book: "Codebook", q: np.ndarray, k: int, scaled: bool) -> Hits:
        """The exact ``min(k, N)`` best entries for ``q`` (float32 [D] at key precision), by (score, id)."""

    def close(self) -> None:
        """Release connections (nothing for the in-process backends)."""


class IvfKeySearch(KeySearch):
    """In-process (default): the key store's IVF lists with exact bounds."""

    name = "faiss"

    def search(self, book: "Codebook", q: np.ndarray, k: int, scaled: bool) -> Hits:
        return book.store.search(q, k, scaled=scaled)


class ScanKeySearch(KeySearch):
    """In-process: every key scored exactly (the reference)."""

    name = "torch"

    def search(self, book: "Codebook", q: np.ndarray, k: int, scaled: bool) -> Hits:
        return book.store.search(q, k, scaled=scaled, force_scan=True)


def rerank_candidates(store: KeyStore, q: np.ndarray, k: int, scaled: bool,
                      candidates: Callable[[int], tuple[np.ndarray, np.ndarray]],
                      max_candidates: int) -> Hits:
    """The exact k best rows of ``store`` for ``q`` from an L2 candidate source.

    ``candidates(m)`` returns the ids of the ``m`` keys nearest to ``q`` by L2 (exactly, up to float32
    rounding; e.g. a FLAT index) and their squared distances, nearest first. Distances and scores are then
    computed here from the stored keys, exactly as :meth:`KeyStore.search` computes them, so the answer is
    the same (ids, order, distances, scores). Past ``max_candidates`` the store is searched in-process."""
    n = len(store)
    kk = min(k, n)
    if kk <= 0:
        return store.search(q, k, scaled=scaled)
    den_max = store.den_max() if scaled else 1.0
    qsq = float(np.dot(q.astype(np.float64), q))
    # worst-case error of a float32 squared distance, even by the expanded |x|^2 + |q|^2 - 2 x.q formula
    err = store._margin * (qsq + store.norm_max ** 2)
    m = min(n, max(4 * kk, 64))
    while True:
        if m > max_candidates:
            logger.debug("key search: %d candidates exceed the backend's limit %d; searching in-process",
                         m, max_candidates)
            return store.search(q, k, scaled=scaled)
        ids, d2 = candidates(m)
        ids = np.asarray(ids, np.int64)
        rows = store.rows(ids)
        d = store.distances(rows, q)
        sc = d / store.den(rows) if scaled else d.astype(np.float64)
        order = np.lexsort((ids, sc))[:kk]
        if m >= n:
            break
        # every key not returned is at least this far from q, so scores at least this much
        floor = math.sqrt(max(float(d2[-1]) - err, 0.0)) * (1 - _TOL) / den_max
        if float(sc[order[-1]]) * (1 + _TOL) < floor:
            break
        m = min(n, 4 * m)
    return Hits(ids[order], d[order], sc[order], rows[order], len(ids))


def make_key_search(retrieval: "RetrievalConfig", dim: int) -> KeySearch:
    """The backend ``retrieval.backend`` names (``milvus`` connects to ``retrieval.milvus.uri``)."""
    backend = retrieval.backend
    if backend == "faiss":
        return IvfKeySearch()
    if backend == "torch":
        return ScanKeySearch()
    if backend == "milvus":
        from .milvus_backend import MilvusKeySearch  # optional extra: pymilvus is imported there, lazily

        return MilvusKeySearch(retrieval.milvus, dim)
    raise ConfigError(f"retrieval.backend={backend!r} is not one of {list(KEY_SEARCHES)}.")
