"""Nearest-neighbour index over codebook keys (METHOD.md §4): one interface, several backends.

The interface is deliberately tiny (in the spirit of txtai's ``ann`` package)::

    index = make_index("torch", dim=1024)      # or "faiss"
    index.add(ids, vectors)                     # int64 [n], float32 [n, dim]
    index.remove(ids)
    result = index.search(queries, k)           # SearchResult(distances [m, k'], ids [m, k'])
    index.count, index.dim, index.vectors(ids), index.all_ids(), index.reset()

Contract every backend honours (checked by one shared test suite):

* distances are Euclidean L2, **not squared**, as ``float32``; ``k' = min(k, count)``;
* rows are ordered by ``(distance, id)``: equal distances come back in increasing id order, and a
  tie that straddles the k-th place is resolved the same way, so results are deterministic;
* inputs are validated at this boundary: wrong dimension, NaN/inf values, duplicate ids (within a
  call or against the index), negative ids and unknown ids to remove are errors that say what to do.

Results are NumPy arrays; inputs may be NumPy arrays, torch tensors or nested lists.

``TorchIndex`` is the exact reference: a float32 matrix product selects candidates with a
provable rounding margin and the candidates' distances are recomputed exactly in float64, so it is
as fast as a BLAS product yet exact. ``FaissIndex`` (:mod:`.faiss_index`) wraps
``faiss.IndexIDMap2(IndexFlatL2)``; the Milvus backend lives in :mod:`.milvus_backend`. Both register
themselves when first asked for; other backends are added with :func:`register_index_backend`.
"""

from __future__ import annotations

import abc
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from .errors import ConfigError, ReasonEditError, did_you_mean

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor, list, tuple]

__all__ = [
    "SearchResult",
    "VectorIndex",
    "TorchIndex",
    "IndexInputError",
    "MissingDependencyError",
    "register_index_backend",
    "make_index",
    "search_resolving_ties",
    "available_index_backends",
]


class IndexInputError(ReasonEditError):
    """Bad vectors or ids were given to an index (wrong shape, NaN, duplicate or unknown id)."""


class MissingDependencyError(ReasonEditError, ImportError):
    """An optional dependency of a backend is not installed."""


@dataclass(frozen=True)
class SearchResult:
    """Nearest neighbours of ``m`` queries.

    ``distances[r, j]`` is the L2 (not squared) distance from query ``r`` to key ``ids[r, j]``;
    each row is sorted by ``(distance, id)``. Shape ``[m, k']`` with ``k' = min(k, count)``.
    """

    distances: np.ndarray
    """float32 ``[m, k']``."""
    ids: np.ndarray
    """int64 ``[m, k']``."""

    def __post_init__(self) -> None:
        if self.distances.shape != self.ids.shape or self.distances.ndim != 2:
            raise ValueError(
                f"SearchResult: distances {self.distances.shape} and ids {self.ids.shape} "
                "must be 2-D arrays of the same shape."
            )

    @property
    def k(self) -> int:
        """Neighbours per query (``k'``)."""
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])


# --------------------------------------------------------------------------------------------
# input validation (shared by every backend)


def _to_numpy(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_ids(ids: ArrayLike, what: str = "ids") -> np.ndarray:
    arr = _to_numpy(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise IndexInputError(f"{what} must be a 1-D array of integers, got shape {tuple(arr.shape)}.")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise IndexInputError(
            f"{what} must be integers (int64), got dtype {arr.dtype}; convert them with "
            "np.asarray(ids, dtype=np.int64)."
        )
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if (arr < 0).any():
        raise IndexInputError(
            f"{what} must be >= 0 (faiss reserves -1 for 'no result'); got {int(arr.min())}."
        )
    return arr


def _as_matrix(values: ArrayLike, dim: int, what: str) -> np.ndarray:
    arr = _to_numpy(values)
    if arr.ndim != 2:
        hint = " Use vectors.reshape(1, -1) for a single vector." if arr.ndim == 1 else ""
        raise IndexInputError(f"{what} must be a 2-D array [n, {dim}], got shape {tuple(arr.shape)}.{hint}")
    if arr.shape[1] != dim:
        raise IndexInputError(
            f"{what} have dimension {arr.shape[1]} but this index holds dimension {dim}; "
            "were they embedded with a different layer, text encoder or model?"
        )
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise IndexInputError(f"{what} must be real numbers (float32), got dtype {arr.dtype}.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise IndexInputError(
            f"{what} contain NaN or inf in row(s) {bad[:10].tolist()}"
            f"{' …' if bad.size > 10 else ''}; check the embedding (e.g. a fp16 overflow)."
        )
    return arr


def _check_unique(ids: np.ndarray, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise IndexInputError(f"{what} contain duplicates: {dup[:10].tolist()}; every id must be unique.")


def _sort_rows(distances: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (distance, id) and keep the first ``k`` columns."""
    order = np.lexsort((ids, distances), axis=-1)[:, :k]
    return (
        np.take_along_axis(distances, order, axis=1).astype(np.float32, copy=False),
        np.take_along_axis(ids, order, axis=1).astype(np.int64, copy=False),
    )


# --------------------------------------------------------------------------------------------
# the interface


class VectorIndex(abc.ABC):
    """A mutable set of ``(id, vector)`` pairs searchable by L2 distance.

    Public methods validate their inputs and then call the backend's ``_add``, ``_remove``,
    ``_search``, ``_vectors``, ``_reset``; a backend never sees invalid input. The id set is kept
    here (one source of truth for duplicate / unknown-id checks and for :meth:`all_ids`).
    """

    _track_ids = True
    """False for a backend whose server holds the id set (it overrides ``count``, ``all_ids``,
    ``__contains__``, ``_present`` and ``_require_known``)."""

    def __init__(self, dim: int):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ConfigError(f"index dim must be a positive integer, got {dim!r}.")
        self._dim = int(dim)
        self._id_set: set[int] = set()

    # -- properties ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension of every stored vector."""
        return self._dim

    @property
    def count(self) -> int:
        """Number of stored vectors."""
        return len(self._id_set)

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: object) -> bool:
        try:
            return int(key) in self._id_set  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, count={self.count})"

    # -- public API ------------------------------------------------------------------------
    def add(self, ids: ArrayLike, vectors: ArrayLike) -> None:
        """Add vectors under new ids (int64 ``[n]``, float32 ``[n, dim]``)."""
        ids_arr = _as_ids(ids)
        vecs = _as_matrix(vectors, self._dim, "vectors")
        if vecs.shape[0] != ids_arr.shape[0]:
            raise IndexInputError(f"got {ids_arr.shape[0]} ids for {vecs.shape[0]} vectors; give one id per vector.")
        if ids_arr.size == 0:
            return
        _check_unique(ids_arr, "ids")
        present = self._present(ids_arr)
        if present:
            raise IndexInputError(
                f"ids already in the index: {present[:10]}; remove them first or use new ids."
            )
        self._add(ids_arr, vecs)
        if self._track_ids:
            self._id_set.update(int(i) for i in ids_arr)

    def remove(self, ids: ArrayLike) -> None:
        """Remove stored ids; every id must be present."""
        ids_arr = _as_ids(ids)
        if ids_arr.size == 0:
            return
        _check_unique(ids_arr, "ids to remove")
        self._require_known(ids_arr)
        self._remove(ids_arr)
        if self._track_ids:
            self._id_set.difference_update(int(i) for i in ids_arr)

    def search(self, queries: ArrayLike, k: int) -> SearchResult:
        """The ``min(k, count)`` nearest stored vectors of each query row, by L2 distance."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise IndexInputError(f"k must be a positive integer, got {k!r}.")
        q = _as_matrix(queries, self._dim, "queries")
        kk = min(int(k), self.count)
        if kk == 0 or q.shape[0] == 0:
            return SearchResult(np.zeros((q.shape[0], kk), np.float32), np.zeros((q.shape[0], kk), np.int64))
        distances, ids = self._search(q, kk)
        return SearchResult(distances, ids)

    def vectors(self, ids: ArrayLike) -> np.ndarray:
        """The stored vectors of ``ids`` (float32 ``[len(ids), dim]``, in the order given)."""
        ids_arr = _as_ids(ids)
        if ids_arr.size == 0:
            return np.zeros((0, self._dim), np.float32)
        self._require_known(ids_arr)
        return self._vectors(ids_arr)

    def all_ids(self) -> np.ndarray:
        """Every stored id, ascending (int64)."""
        return np.array(sorted(self._id_set), dtype=np.int64)

    def reset(self) -> None:
        """Remove everything (the dimension is kept)."""
        self._reset()
        self._id_set.clear()

    # -- backend hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _remove(self, ids: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances, ids) ``[m, k]`` sorted by (distance, id); ``1 <= k <= count``."""

    @abc.abstractmethod
    def _vectors(self, ids: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _reset(self) -> None: ...

    # -- helpers ---------------------------------------------------------------------------
    def _present(self, ids: np.ndarray) -> list[int]:
        """Which of ``ids`` are stored already (a shared backend asks its server)."""
        return [int(i) for i in ids if int(i) in self._id_set]

    def _require_known(self, ids: np.ndarray) -> None:
        unknown = [int(i) for i in ids if int(i) not in self._id_set]
        if unknown:
            raise IndexInputError(
                f"unknown ids {unknown[:10]}{' …' if len(unknown) > 10 else ''}: they are not in the "
                f"index ({self.count} stored); check all_ids()."
            )


# --------------------------------------------------------------------------------------------
# exact torch reference


# Worst-case relative rounding of a float32 dot product of length d is gamma_d = d*u / (1 - d*u)
# with u = 2**-24 (Higham, Accuracy and Stability of Numerical Algorithms, §3.1). With the norms and
# the product all in float32, fl(||x||^2) + fl(||y||^2) - 2 fl(x.y) is off by at most
# gamma_d (||x|| + ||y||)^2 + 3u (...) <= 2 (gamma_d + 3u) (||x||^2 + ||y||^2).
_U32 = 2.0 ** -24


def _float32_margin(dim: int) -> float:
    du = dim * _U32
    gamma = du / (1.0 - du) if du < 0.5 else 1.0
    return 2.0 * (gamma + 3.0 * _U32) * 1.01


class TorchIndex(VectorIndex):
    """Exact brute-force L2 index in torch (the reference every other backend must agree with).

    Search is two-stage: a float32 matrix product gives approximate squared distances, every key
    within the float32 rounding bound of the k-th candidate is kept, and those candidates'
    distances are recomputed exactly in float64 from the stored vectors. The result equals a
    float64 brute force (rounded to float32), at the speed of a BLAS product.

    ``device``: where the vectors live and the products run (``"cpu"``, ``"cuda"``, …).
    """

    _BLOCK_ELEMENTS = 1 << 25  # queries are processed in blocks of ~32M distance entries

    def __init__(self, dim: int, device: Union[str, torch.device] = "cpu"):
        super().__init__(dim)
        self._device = torch.device(device)
        self._data = torch.zeros((0, self._dim), dtype=torch.float32, device=self._device)
        self._sqnorm = torch.zeros(0, dtype=torch.float32, device=self._device)
        self._ids = torch.zeros(0, dtype=torch.int64)  # row -> id (cpu)
        self._n = 0
        self._row: dict[int, int] = {}  # id -> row

    @property
    def device(self) -> torch.device:
        return self._device

    def _grow(self, needed: int) -> None:
        capacity = self._data.shape[0]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, 64)
        data = torch.empty((new_capacity, self._dim), dtype=torch.float32, device=self._device)
        data[: self._n] = self._data[: self._n]
        sqnorm = torch.zeros(new_capacity, dtype=torch.float32, device=self._device)
        sqnorm[: self._n] = self._sqnorm[: self._n]
        ids = torch.zeros(new_capacity, dtype=torch.int64)
        ids[: self._n] = self._ids[: self._n]
        self._data, self._sqnorm, self._ids = data, sqnorm, ids

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        n = ids.shape[0]
        self._grow(self._n + n)
        block = torch.from_numpy(vectors).to(self._device)
        self._data[self._n : self._n + n] = block
        self._sqnorm[self._n : self._n + n] = torch.linalg.vector_norm(block, dim=1).pow_(2)
        self._ids[self._n : self._n + n] = torch.from_numpy(ids)
        for offset, key in enumerate(ids.tolist()):
            self._row[key] = self._n + offset
        self._n += n

    def _remove(self, ids: np.ndarray) -> None:
        for key in ids.tolist():  # swap-with-last keeps rows contiguous; order never matters
            row = self._row.pop(key)
            last = self._n - 1
            if row != last:
                moved = int(self._ids[last])
                self._data[row] = self._data[last]
                self._sqnorm[row] = self._sqnorm[last]
                self._ids[row] = moved
                self._row[moved] = row
            self._n = last

    def _reset(self) -> None:
        self._data = self._data[:0].clone()
        self._sqnorm = self._sqnorm[:0].clone()
        self._ids = self._ids[:0].clone()
        self._n = 0
        self._row = {}

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        rows = torch.tensor([self._row[int(i)] for i in ids], dtype=torch.int64, device=self._device)
        return self._data[rows].cpu().numpy().copy()

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._n
        block = max(1, self._BLOCK_ELEMENTS // max(n, 1))
        out_d, out_i = [], []
        for start in range(0, queries.shape[0], block):
            d, i = self._search_block(torch.from_numpy(queries[start : start + block]).to(self._device), k)
            out_d.append(d)
            out_i.append(i)
        return np.concatenate(out_d), np.concatenate(out_i)

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._n
        data, sqnorm = self._data[:n], self._sqnorm[:n]
        q_sq = torch.linalg.vector_norm(q, dim=1).pow_(2)
        approx = (q_sq[:, None] + sqnorm[None, :]).addmm_(q, data.T, alpha=-2.0)
        kth = torch.topk(approx, k, dim=1, largest=False).values[:, -1]
        margin = _float32_margin(self._dim) * (q_sq + sqnorm.max())
        # every key whose exact distance could be <= the exact k-th distance (ties included)
        n_cand = int((approx <= (kth + 2.0 * margin)[:, None]).sum(1).max())
        if n_cand >= n // 2:
            cand = torch.arange(n, device=self._device).expand(q.shape[0], n)
        else:
            cand = torch.topk(approx, n_cand, dim=1, largest=False).indices
        exact = self._exact_distances(q.double(), cand)
        ids = self._ids[:n][cand.cpu()].numpy()
        return _sort_rows(exact.float().cpu().numpy(), ids, k)

    def _exact_distances(self, q64: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """float64 L2 distances from each query row to its candidate rows ``cand [m, c]``."""
        m, c = cand.shape
        exact = torch.empty((m, c), dtype=torch.float64, device=self._device)
        cols = max(1, min(c, self._BLOCK_ELEMENTS // (8 * self._dim)))
        rows = max(1, self._BLOCK_ELEMENTS // (8 * self._dim * cols))
        for r in range(0, m, rows):
            for j in range(0, c, cols):
                diff = self._data[cand[r : r + rows, j : j + cols]].double() - q64[r : r + rows, None, :]
                exact[r : r + rows, j : j + cols] = diff.pow_(2).sum(-1).sqrt_()
        return exact


def search_resolving_ties(raw: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
                          k: int, n: int, max_width: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The contract's (distance, id) order from a backend whose ``raw(queries, width)`` returns squared L2
    distances and ids ``[m, width]`` sorted by distance but with ties in any order: the search is widened
    while a row's k-th distance is tied with the last one returned (ties at the k-th place go by id).
    ``max_width``: the backend's largest ``width`` (a row still tied there is taken as it is)."""
    m = queries.shape[0]
    out_d = np.empty((m, k), np.float32)
    out_i = np.empty((m, k), np.int64)
    pending = np.arange(m)
    cap = n if max_width is None else min(n, max_width)
    width = min(k + 1, cap)
    while pending.size:
        d2, ids = raw(queries[pending], width)
        # a row is settled when everything beyond `width` is strictly farther than its k-th
        if width > k:
            settled = (d2[:, k - 1] < d2[:, width - 1]) | (width >= cap)
        else:
            settled = np.full(pending.size, True)
        if settled.any():
            dist = np.sqrt(np.maximum(d2[settled], 0.0))
            out_d[pending[settled]], out_i[pending[settled]] = _sort_rows(dist, ids[settled], k)
        pending = pending[~settled]
        width = min(2 * width, cap)
    return out_d, out_i


# --------------------------------------------------------------------------------------------
# registry


_BACKENDS: dict[str, type[VectorIndex]] = {}
_OPTIONAL_BACKENDS = {"faiss": "reasonedit_plugin.faiss_index", "milvus": "reasonedit_plugin.milvus_backend"}
"""Backends in modules of their own, registered when first asked for (their client library is imported
only when an index is built)."""


def register_index_backend(name: str, cls: type[VectorIndex]) -> None:
    """Make ``cls`` available to :func:`make_index` (and ``retrieval.backend``) as ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"index backend name must be a Python identifier, got {name!r}.")
    if not (isinstance(cls, type) and issubclass(cls, VectorIndex)):
        raise ConfigError(f"index backend {name!r}: {cls!r} is not a subclass of VectorIndex.")
    if name in _BACKENDS:
        raise ConfigError(f"index backend {name!r} is already registered ({_BACKENDS[name].__name__}); "
                          "pick another name.")
    _BACKENDS[name] = cls


def available_index_backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(_OPTIONAL_BACKENDS))


def make_index(backend: str, dim: int, **options: Any) -> VectorIndex:
    """Build an empty index of a registered backend (``"torch"``, ``"faiss"``, …)."""
    if backend not in _BACKENDS and backend in _OPTIONAL_BACKENDS:
        importlib.import_module(_OPTIONAL_BACKENDS[backend])
    cls = _BACKENDS.get(backend)
    if cls is None:
        raise ConfigError(f"unknown index backend {backend!r}.{did_you_mean(str(backend), _BACKENDS)} "
                          f"Available: {available_index_backends()}; add one with register_index_backend().")
    return cls(dim, **options)


register_index_backend("torch", TorchIndex)
