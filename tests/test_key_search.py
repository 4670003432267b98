"""retrieval.backend selects where a codebook's queries run; every backend returns the exact answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reasonedit_plugin.codebook import Codebook
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.index import TorchIndex
from reasonedit_plugin.key_search import IvfKeySearch, ScanKeySearch, rerank_candidates


def _keys(n: int = 600, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Tight clusters (small sigma) next to scattered keys (large sigma), plus exact duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim)) * 6
    tight = centres[rng.integers(0, 8, n // 2)] + 0.02 * rng.standard_normal((n // 2, dim))
    loose = rng.standard_normal((n - n // 2, dim)) * 8
    keys = np.concatenate([tight, loose]).astype(np.float32)
    keys[10:30] = keys[3]
    return keys


def _book(keys: np.ndarray, backend: str) -> Codebook:
    n = len(keys)
    return Codebook.bulk(keys, [f"v{i}" for i in range(n)], [f"e{i}" for i in range(n)], 0.1,
                         config=CodebookConfig(exact_search_below=128),
                         retrieval=RetrievalConfig(backend=backend, hubness_k=5))


def _queries(keys: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(9)
    near = keys[rng.choice(len(keys), 10)] + 0.01 * rng.standard_normal((10, keys.shape[1]))
    return np.concatenate([keys[[3, 500]], near, rng.standard_normal((10, keys.shape[1])) * 10]).astype(np.float32)


def test_backend_config_selects_the_search_and_all_agree() -> None:
    keys = _keys()
    ivf, scan = _book(keys, "faiss"), _book(keys, "torch")
    assert type(ivf.search_backend) is IvfKeySearch and type(scan.search_backend) is ScanKeySearch
    assert RetrievalConfig().backend == "faiss"  # in-process default
    pruned = 0
    for q in _queries(keys):
        qt = torch.from_numpy(q)
        ref = ivf.scaled_topk(qt, 10, exact_scan=True)
        assert ivf.scaled_topk(qt, 10) == ref and scan.scaled_topk(qt, 10) == ref
        assert ivf.nearest(qt, 6) == scan.nearest(qt, 6)
        rq = ivf.store.round(q)
        assert scan.search_backend.search(scan, rq, 10, True).scored == len(keys)  # every key scored
        pruned += ivf.search_backend.search(ivf, rq, 10, True).scored < len(keys)
    assert pruned > 0  # the IVF bounds skipped keys for some queries


def test_rerank_of_l2_candidates_is_exact_with_uneven_sigma() -> None:
    keys = _keys(seed=1)
    book = _book(keys, "faiss")
    store = book.store
    ix = TorchIndex(keys.shape[1])
    ix.add(store.ids, store.vectors(np.arange(len(store))))
    widened = 0
    for q in _queries(keys):
        rq = store.round(q)
        asked: list[int] = []

        def candidates(m: int) -> tuple[np.ndarray, np.ndarray]:
            asked.append(m)
            res = ix.search(rq[None], m)
            return res.ids[0], res.distances[0].astype(np.float64) ** 2

        for scaled in (True, False):
            ref = store.search(rq, 10, scaled=scaled, force_scan=True)
            for limit in (10 ** 6, 100):  # past the limit the store answers in-process
                got = rerank_candidates(store, rq, 10, scaled, candidates, max_candidates=limit)
                np.testing.assert_array_equal(got.ids, ref.ids)
                np.testing.assert_array_equal(got.distances, ref.distances)
                np.testing.assert_array_equal(got.scores, ref.scores)
        widened += len(set(asked)) > 1
    assert widened > 0  # some query needed more than the first batch of candidates


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="retrieval.backend='fiass'.*Did you mean 'faiss'"):
        RetrievalConfig(backend="fiass")
