"""The faiss backend of the index contract (:mod:`.index`): ``faiss.IndexIDMap2(IndexFlatL2)`` on the CPU,
searched on a GPU mirror when faiss has GPU support and CUDA is available. Registered as ``"faiss"`` when
:func:`~reasonedit_plugin.index.make_index` is first asked for it."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import numpy as np
import torch

from .errors import ConfigError
from .index import MissingDependencyError, VectorIndex, register_index_backend, search_resolving_ties

__all__ = ["FaissIndex"]


def _import_faiss() -> Any:
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        raise MissingDependencyError(
            "the 'faiss' index backend needs faiss: `pip install faiss-cpu` (or faiss-gpu with CUDA), "
            "or use retrieval.backend: torch."
        ) from exc


def _faiss_gpu_usable(faiss: Any) -> bool:
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return torch.cuda.is_available() and faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA install should not break the CPU path
        return False


class FaissIndex(VectorIndex):
    """``faiss.IndexIDMap2(IndexFlatL2)`` with L2 (square-rooted) distances.

    The CPU index is the store (it supports removal and reconstruction). When faiss has GPU support
    and CUDA is available (or ``use_gpu=True``), searches run on a ``GpuIndexFlatL2`` mirror that is
    rebuilt lazily after a removal. Distances are faiss's float32 values; ties and the k-th place are
    resolved by id, widening the search while the boundary is tied.
    """

    def __init__(self, dim: int, use_gpu: Optional[bool] = None, gpu_device: int = 0):
        super().__init__(dim)
        self._faiss = _import_faiss()
        gpu_ok = _faiss_gpu_usable(self._faiss)
        if use_gpu and not gpu_ok:
            raise ConfigError(
                "FaissIndex(use_gpu=True) but faiss has no GPU support or CUDA is unavailable; "
                "install faiss-gpu on a CUDA machine, or leave use_gpu unset."
            )
        self._use_gpu = gpu_ok if use_gpu is None else bool(use_gpu)
        self._gpu_device = gpu_device
        self._gpu_resources: Any = None
        self._gpu_mirror: Any = None
        self._gpu_row_ids: Optional[np.ndarray] = None
        self._index = self._new_cpu_index()

    @property
    def uses_gpu(self) -> bool:
        return self._use_gpu

    def _new_cpu_index(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatL2(self._dim))

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)
        if self._gpu_mirror is not None:  # rows are appended in the same order on both
            self._gpu_mirror.add(vectors)
            self._gpu_row_ids = np.concatenate([self._gpu_row_ids, ids])

    def _remove(self, ids: np.ndarray) -> None:
        removed = self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        if removed != ids.size:  # the id set said they exist; faiss disagreeing is a bug, not user error
            raise RuntimeError(f"faiss removed {removed} of {ids.size} ids; index out of sync.")
        self._gpu_mirror = None

    def _reset(self) -> None:
        self._index = self._new_cpu_index()
        self._gpu_mirror = None

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((ids.size, self._dim), np.float32)
        for row, key in enumerate(ids.tolist()):
            out[row] = self._index.reconstruct(key)
        return out

    def _raw_search(self) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
        if not self._use_gpu:
            return self._index.search
        if self._gpu_mirror is None:
            faiss = self._faiss
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            cfg = faiss.GpuIndexFlatConfig()
            cfg.device = self._gpu_device
            mirror = faiss.GpuIndexFlatL2(self._gpu_resources, self._dim, cfg)
            n = self._index.ntotal
            if n:
                mirror.add(self._index.index.reconstruct_n(0, n))
            self._gpu_mirror = mirror
            self._gpu_row_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        mirror, row_ids = self._gpu_mirror, self._gpu_row_ids

        def search(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            d, rows = mirror.search(q, k)
            return d, row_ids[rows]

        return search

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search_resolving_ties(self._raw_search(), queries, k, self.count)


register_index_backend("faiss", FaissIndex)
