"""Contract tests for reasonedit_plugin.index: one suite run against every registered backend (Milvus
through milvus-lite when it is installed), plus cross-backend agreement (tie-tolerant, as in faiss
contrib/evaluation.py)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from reasonedit_plugin import index as index_mod
from reasonedit_plugin.errors import ConfigError, ReasonEditError
from reasonedit_plugin import faiss_index
from reasonedit_plugin.faiss_index import FaissIndex
from reasonedit_plugin.index import (
    IndexInputError,
    MissingDependencyError,
    SearchResult,
    TorchIndex,
    VectorIndex,
    available_index_backends,
    make_index,
    register_index_backend,
)


def _backend_available(name: str) -> bool:
    if name == "milvus":  # needs a server or milvus-lite; only the client libraries are checked here
        return all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
    try:
        make_index(name, 2)
    except MissingDependencyError:
        return False
    return True


def _marks(name: str) -> list:
    marks = [pytest.mark.skipif(not _backend_available(name), reason=f"{name} not installed")]
    return marks + [pytest.mark.milvus] if name == "milvus" else marks


BACKENDS = [pytest.param(name, marks=_marks(name)) for name in ("torch", "faiss", "milvus")]
IndexFactory = Callable[[int], VectorIndex]
_collections = itertools.count()


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One milvus-lite file per module; every index gets a collection of its own."""
    return str(tmp_path_factory.mktemp("milvus") / "index.db")


def build_index(name: str, dim: int, milvus_uri: Path | str) -> VectorIndex:
    if name == "milvus":
        return make_index(name, dim, uri=str(milvus_uri), collection=f"contract_{next(_collections)}")
    return make_index(name, dim)


@pytest.fixture(params=BACKENDS)
def new_index(request: pytest.FixtureRequest) -> IndexFactory:
    """Builds an empty index of one backend: ``new_index(dim)``."""
    name = request.param
    uri = request.getfixturevalue("milvus_uri") if name == "milvus" else ""
    return lambda dim: build_index(name, dim, uri)


def brute_force(keys: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float64 L2 distances [m, n] (the ground truth)."""
    diff = queries.astype(np.float64)[:, None, :] - keys.astype(np.float64)[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def exact_knn(keys: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact answer under the contract: float32 distances, rows sorted by (distance, id)."""
    d = brute_force(keys, ids, queries).astype(np.float32)
    idm = np.broadcast_to(ids, d.shape)
    order = np.lexsort((idm, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(idm, order, 1)


def check_knn_tie_tolerant(truth: np.ndarray, all_ids: np.ndarray, result: SearchResult,
                           k: int, atol: float) -> None:
    """A result is right if its distances match the truth of the ids it returns, are sorted, and
    every key strictly closer (by more than ``atol``) than its last neighbour is among them; ids
    inside a group of (near-)equal distances may differ between backends."""
    column = {int(i): c for c, i in enumerate(all_ids)}
    assert result.ids.shape == (truth.shape[0], min(k, all_ids.size))
    for r in range(truth.shape[0]):
        got = result.ids[r]
        assert len(set(got.tolist())) == got.size, f"row {r}: duplicate ids {got}"
        true_d = truth[r, [column[int(i)] for i in got]]
        np.testing.assert_allclose(result.distances[r], true_d, rtol=1e-5, atol=atol)
        assert np.all(np.diff(result.distances[r]) >= 0), f"row {r} not sorted"
        must = set(all_ids[truth[r] < result.distances[r, -1] - atol].tolist())
        assert must <= set(got.tolist()), f"row {r}: missing closer ids {must - set(got.tolist())}"


# ------------------------------------------------------------------------------------------
# the contract, every backend


def test_empty_index_search_returns_empty_rows(new_index: IndexFactory) -> None:
    ix = new_index(4)
    res = ix.search(np.zeros((3, 4), np.float32), 5)
    assert res.distances.shape == (3, 0) and res.ids.shape == (3, 0)
    assert ix.count == 0 and len(ix) == 0 and ix.dim == 4
    assert ix.all_ids().dtype == np.int64 and ix.all_ids().size == 0


def test_distances_are_l2_not_squared(new_index: IndexFactory) -> None:
    ix = new_index(2)
    ix.add(np.array([10, 11]), np.array([[0.0, 0.0], [3.0, 4.0]], np.float32))
    res = ix.search(np.array([[0.0, 0.0]], np.float32), 2)
    assert res.ids.tolist() == [[10, 11]]
    np.testing.assert_allclose(res.distances, [[0.0, 5.0]], atol=1e-6)
    assert res.distances.dtype == np.float32 and res.ids.dtype == np.int64


def test_k_is_capped_by_count(new_index: IndexFactory) -> None:
    ix = new_index(3)
    ix.add([1, 2], np.eye(3, dtype=np.float32)[:2])
    res = ix.search(np.eye(3, dtype=np.float32), 10)
    assert res.ids.shape == (3, 2) and res.k == 2 and len(res) == 3


def test_ties_ordered_by_id_including_at_the_kth_place(new_index: IndexFactory) -> None:
    ix = new_index(3)
    v = np.array([1.0, 2.0, 3.0], np.float32)
    ix.add([7, 3, 5, 9], np.stack([v, v, v, v + 10]))
    q = v[None, :] + 0.5
    assert ix.search(q, 4).ids.tolist() == [[3, 5, 7, 9]]
    assert ix.search(q, 2).ids.tolist() == [[3, 5]]
    assert ix.search(q, 1).ids.tolist() == [[3]]


def test_many_ties_at_the_boundary(new_index: IndexFactory) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal(16).astype(np.float32)
    vecs = np.concatenate([np.repeat(base[None], 40, 0), rng.standard_normal((20, 16)).astype(np.float32) + 5])
    ids = rng.permutation(1000)[:60]
    ix = new_index(16)
    ix.add(ids, vecs)
    res = ix.search(base[None], 5)
    assert res.ids.tolist() == [sorted(ids[:40].tolist())[:5]]


def test_remove_then_search(new_index: IndexFactory) -> None:
    ix = new_index(2)
    ix.add([1, 2, 3], np.array([[0, 0], [1, 0], [2, 0]], np.float32))
    ix.remove([1])
    assert ix.count == 2 and 1 not in ix and 2 in ix
    assert ix.search(np.array([[0, 0]], np.float32), 3).ids.tolist() == [[2, 3]]
    ix.add([1], np.array([[5, 0]], np.float32))  # an id can be reused after removal
    assert ix.search(np.array([[0, 0]], np.float32), 3).ids.tolist() == [[2, 3, 1]]
    assert ix.all_ids().tolist() == [1, 2, 3]


def test_vectors_roundtrip_in_the_order_given(new_index: IndexFactory) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((6, 5)).astype(np.float32)
    ix = new_index(5)
    ix.add(np.arange(6) * 10, vecs)
    ix.remove([0, 20])
    np.testing.assert_array_equal(ix.vectors([50, 10]), vecs[[5, 1]])
    assert ix.vectors(np.array([], np.int64)).shape == (0, 5)
    assert ix.all_ids().tolist() == [10, 30, 40, 50]


def test_reset_keeps_dim(new_index: IndexFactory) -> None:
    ix = new_index(3)
    ix.add([1], np.ones((1, 3), np.float32))
    ix.reset()
    assert ix.count == 0 and ix.dim == 3
    ix.add([1], np.ones((1, 3), np.float32))
    assert ix.search(np.ones((1, 3), np.float32), 1).ids.tolist() == [[1]]


def test_accepts_torch_tensors_and_float64(new_index: IndexFactory) -> None:
    ix = new_index(2)
    ix.add(torch.tensor([4, 2]), torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    res = ix.search(torch.tensor([[0.9, 0.0]]), 1)
    assert res.ids.tolist() == [[4]]


@pytest.mark.parametrize(
    "ids, vectors, message",
    [
        ([1, 2], np.zeros((2, 5), np.float32), "dimension 5"),
        ([1, 2], np.zeros(3, np.float32), "reshape(1, -1)"),
        ([1, 1], np.zeros((2, 3), np.float32), "duplicates"),
        ([1], np.array([[0.0, np.nan, 0.0]], np.float32), "NaN or inf"),
        ([1], np.array([[0.0, np.inf, 0.0]], np.float32), "NaN or inf"),
        ([1.5], np.zeros((1, 3), np.float32), "integers"),
        ([-1], np.zeros((1, 3), np.float32), ">= 0"),
        ([1, 2, 3], np.zeros((2, 3), np.float32), "one id per vector"),
        ([1], np.array([["a", "b", "c"]]), "real numbers"),
    ],
)
def test_add_rejects_bad_input(new_index: IndexFactory, ids: list, vectors: np.ndarray, message: str) -> None:
    ix = new_index(3)
    with pytest.raises(IndexInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ix.add(ids, vectors)
    assert ix.count == 0


def test_add_rejects_ids_already_present_atomically(new_index: IndexFactory) -> None:
    ix = new_index(3)
    ix.add([1, 2], np.zeros((2, 3), np.float32))
    with pytest.raises(IndexInputError, match=r"already in the index: \[2\]"):
        ix.add([3, 2], np.ones((2, 3), np.float32))
    assert ix.all_ids().tolist() == [1, 2]


def test_remove_and_vectors_reject_unknown_ids(new_index: IndexFactory) -> None:
    ix = new_index(3)
    ix.add([1, 2], np.zeros((2, 3), np.float32))
    with pytest.raises(IndexInputError, match=r"unknown ids \[9\]"):
        ix.remove([1, 9])
    assert ix.count == 2  # nothing removed
    with pytest.raises(IndexInputError, match="unknown ids"):
        ix.vectors([7])
    with pytest.raises(IndexInputError, match="duplicates"):
        ix.remove([1, 1])


def test_search_rejects_bad_queries_and_k(new_index: IndexFactory) -> None:
    ix = new_index(3)
    ix.add([1], np.zeros((1, 3), np.float32))
    with pytest.raises(IndexInputError, match="dimension 4"):
        ix.search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(IndexInputError, match="NaN or inf"):
        ix.search(np.full((1, 3), np.nan, np.float32), 1)
    for bad_k in (0, -1, 1.5, True):
        with pytest.raises(IndexInputError, match="k must be a positive integer"):
            ix.search(np.zeros((1, 3), np.float32), bad_k)  # type: ignore[arg-type]


def test_errors_are_reasonedit_errors(new_index: IndexFactory) -> None:
    ix = new_index(3)
    with pytest.raises(ReasonEditError):
        ix.remove([1])
    with pytest.raises(ValueError):
        ix.remove([1])


def test_matches_exact_brute_force(new_index: IndexFactory) -> None:
    rng = np.random.default_rng(1)
    keys = rng.standard_normal((300, 24)).astype(np.float32)
    ids = rng.permutation(10_000)[:300].astype(np.int64)
    queries = rng.standard_normal((17, 24)).astype(np.float32)
    ix = new_index(24)
    ix.add(ids, keys)
    res = ix.search(queries, 8)
    check_knn_tie_tolerant(brute_force(keys, ids, queries), ids, res, 8, atol=1e-4)


# ------------------------------------------------------------------------------------------
# torch reference: exact, even where a float32 matrix product would cancel badly


def test_torch_index_is_exact_with_a_large_common_offset() -> None:
    rng = np.random.default_rng(2)
    keys = (1000.0 + 1e-2 * rng.standard_normal((400, 64))).astype(np.float32)
    ids = np.arange(400, dtype=np.int64)[::-1].copy()
    queries = (1000.0 + 1e-2 * rng.standard_normal((9, 64))).astype(np.float32)
    queries[0] = keys[17]
    ix = TorchIndex(64)
    ix.add(ids, keys)
    res = ix.search(queries, 6)
    d_ref, i_ref = exact_knn(keys, ids, queries, 6)
    np.testing.assert_array_equal(res.ids, i_ref)
    np.testing.assert_array_equal(res.distances, d_ref)
    assert res.distances[0, 0] == 0.0 and res.ids[0, 0] == ids[17]


def test_torch_index_exact_on_many_queries_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TorchIndex, "_BLOCK_ELEMENTS", 1000)  # force query and candidate chunking
    rng = np.random.default_rng(5)
    keys = rng.standard_normal((120, 8)).astype(np.float32)
    keys[60:70] = keys[0]
    ids = np.arange(120, dtype=np.int64) * 7
    queries = np.concatenate([keys[:30], rng.standard_normal((40, 8)).astype(np.float32)])
    ix = TorchIndex(8)
    ix.add(ids, keys)
    res = ix.search(queries, 12)
    d_ref, i_ref = exact_knn(keys, ids, queries, 12)
    np.testing.assert_array_equal(res.ids, i_ref)
    np.testing.assert_array_equal(res.distances, d_ref)


# ------------------------------------------------------------------------------------------
# cross-backend agreement (tie-tolerant, faiss contrib style)


AGREEING = [name for name in ("torch", "faiss", "milvus") if _backend_available(name)]


@pytest.mark.skipif(not _backend_available("faiss"), reason="faiss not installed")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_agree_on_random_data_including_after_removals(seed: int, milvus_uri: str) -> None:
    rng = np.random.default_rng(seed)
    dim, n = 48, 600
    keys = rng.standard_normal((n, dim)).astype(np.float32)
    keys[100:130] = keys[5]  # a group of exact duplicates -> ties
    keys[200:205] = keys[300]
    ids = rng.permutation(100_000)[:n].astype(np.int64)
    queries = np.concatenate([keys[[5, 300, 7]], rng.standard_normal((30, dim)).astype(np.float32)])
    # >= 20 queries take faiss's BLAS path, fewer its direct path: exercise both
    batches = [queries, queries[:4]]

    indexes = {name: build_index(name, dim, milvus_uri) for name in AGREEING}
    for ix in indexes.values():
        ix.add(ids, keys)

    def compare(live: np.ndarray) -> None:
        truth = brute_force(keys[live], ids[live], queries)
        for k in (1, 10, 40):
            results = {name: [ix.search(q, k) for q in batches] for name, ix in indexes.items()}
            for name, (full, small) in results.items():
                check_knn_tie_tolerant(truth, ids[live], full, k, atol=2e-4)
                check_knn_tie_tolerant(truth[:4], ids[live], small, k, atol=2e-4)
            # torch is exact: its distances equal float32(float64 truth)
            d_ref, i_ref = exact_knn(keys[live], ids[live], queries, k)
            np.testing.assert_array_equal(results["torch"][0].ids, i_ref)
            for name in AGREEING[1:]:  # float32 backends: faiss, milvus
                np.testing.assert_allclose(results[name][0].distances, d_ref, rtol=1e-5, atol=2e-4)

    live = np.ones(n, bool)
    compare(np.flatnonzero(live))
    drop = np.concatenate([[5, 300], np.arange(100, 115), rng.choice(np.arange(400, 600), 50, replace=False)])
    for ix in indexes.values():
        ix.remove(ids[drop])
    live[drop] = False
    compare(np.flatnonzero(live))
    for ix in indexes.values():
        assert ix.all_ids().tolist() == sorted(ids[live].tolist())
        np.testing.assert_array_equal(ix.vectors(ids[live][:7]), keys[live][:7])


# ------------------------------------------------------------------------------------------
# registry and optional dependency


def test_registry_lists_builtin_backends() -> None:
    assert {"torch", "faiss", "milvus"} <= set(available_index_backends())


def test_missing_pymilvus_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'reasonedit-plugin\[milvus\]'"):
        make_index("milvus", 4, uri=str(tmp_path / "x.db"))
    with pytest.raises(ConfigError, match="needs uri="):  # no milvus-lite file appears in the working folder
        make_index("milvus", 4)


def test_unknown_backend_has_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'faiss'.*Available"):
        make_index("fiass", 8)


def test_make_index_rejects_bad_dim() -> None:
    for dim in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="dim must be a positive integer"):
            make_index("torch", dim)  # type: ignore[arg-type]


def test_register_rejects_duplicates_and_non_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "_BACKENDS", dict(index_mod._BACKENDS))
    with pytest.raises(ConfigError, match="already registered"):
        register_index_backend("torch", TorchIndex)
    with pytest.raises(ConfigError, match="not a subclass of VectorIndex"):
        register_index_backend("mine", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="identifier"):
        register_index_backend("my backend", TorchIndex)

    class Doubling(TorchIndex):
        pass

    register_index_backend("doubling", Doubling)
    assert isinstance(make_index("doubling", 3), VectorIndex)


def test_missing_faiss_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(MissingDependencyError, match="pip install faiss-cpu") as info:
        make_index("faiss", 4)
    assert isinstance(info.value, ImportError) and isinstance(info.value, ReasonEditError)


@pytest.mark.skipif(not _backend_available("faiss"), reason="faiss not installed")
def test_faiss_use_gpu_without_gpu_is_a_clear_error() -> None:
    if faiss_index._faiss_gpu_usable(faiss_index._import_faiss()):
        pytest.skip("a faiss GPU is available here")
    with pytest.raises(ConfigError, match="faiss-gpu"):
        FaissIndex(4, use_gpu=True)
    assert not FaissIndex(4).uses_gpu
