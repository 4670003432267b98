"""The projected lower bound of the key store (``key_projection.py``): never above the true distance, and
with it the store's pruned search still equals a full scan at a dimension where the projection is lossy."""

import numpy as np
import pytest
import torch

from reasonedit_plugin.hubness import HubnessGraph
from reasonedit_plugin.key_projection import PROJ_DIM, KeyProjection
from reasonedit_plugin.keystore import KeyStore


@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_lower_bound_never_exceeds_the_distance(scale):
    rng = np.random.default_rng(0)
    dim = 96
    centroids = rng.standard_normal((40, dim)) * scale
    proj = KeyProjection.from_centroids(centroids, dim)
    basis = proj.basis.astype(np.float64)
    assert np.allclose(basis.T @ basis, np.eye(PROJ_DIM), atol=1e-6)
    x = (centroids[rng.integers(0, 40, 500)] + rng.standard_normal((500, dim)) * scale * 0.1).astype(np.float32)
    x[:50] = x[50:100]  # exact duplicates: the bound must be 0 there
    q = x[7] + np.float32(scale * 1e-4) * rng.standard_normal(dim).astype(np.float32)
    true = np.linalg.norm(x.astype(np.float64) - q.astype(np.float64), axis=1)
    norms = np.linalg.norm(x.astype(np.float64), axis=1) * (1 + 1e-6)
    stored = proj.project(x).astype(np.float16)  # as the key store keeps them
    lb = proj.lower_bounds(proj.project(q[None])[0], stored, float(np.linalg.norm(q)) * (1 + 1e-6), norms)
    assert (lb <= true).all()
    assert (lb[:50] == 0).all() or (true[:50] > 0).all()
    assert np.median(lb / np.maximum(true, 1e-30)) > 0.5  # and it is a useful bound on clustered keys
    # the search's fused test keeps exactly the rows whose bound is within the limit (up to float64 rounding)
    for limit in (np.quantile(true, [0.01, 0.2, 0.6]) if scale else []):
        limits = np.full(len(x), limit) * rng.uniform(0.5, 1.5, len(x))
        keep = proj.within(proj.project(q[None])[0], torch.from_numpy(stored.astype(np.float32)),
                           float(np.linalg.norm(q)) * (1 + 1e-6), float(norms.max()), limits)
        lb_max = proj.lower_bounds(proj.project(q[None])[0], stored, float(np.linalg.norm(q)) * (1 + 1e-6),
                                   float(norms.max()))
        assert (keep == (lb_max <= limits * (1 + 1e-9))).all() and keep.any() and not keep.all()
        assert keep[true <= limits].all()  # never a row that is within the limit


@pytest.mark.parametrize("kind", ["clustered", "duplicates"])
def test_pruned_search_equals_scan_in_high_dimension(kind):
    g = torch.Generator().manual_seed(5)
    dim = 64
    if kind == "clustered":
        centres = torch.randn(12, dim, generator=g) * 3
        keys = centres[torch.randint(0, 12, (900,), generator=g)] + 0.4 * torch.randn(900, dim, generator=g)
    else:
        keys = torch.randint(0, 2, (900, dim), generator=g).float()
    table = HubnessGraph(KeyStore(dim, "float16", exact_below=64, seed=0), 10)
    table.build(np.arange(len(keys)), keys.numpy())
    store = table.store
    assert store.trained and store._proj is not None
    for i, key in enumerate(keys[:40]):  # adds after training get their projections too
        table.add(1000 + i, key + 0.01 * torch.randn(dim, generator=g))
    queries = torch.cat([keys[:15], keys[:15] + 0.05 * torch.randn(15, dim, generator=g),
                         torch.randn(10, dim, generator=g) * 3])
    scored = []
    for q in queries:
        for k in (1, 5, 30):
            assert table.scaled_topk(q, k) == table.scaled_topk(q, k, exact_scan=True)
        scored.append(store.search(store.round(q.numpy()), 5).scored)
    if kind == "clustered":
        assert np.median(scored) < len(store) / 4
    table.remove(3)
    table.remove(1005)
    for q in queries[:10]:
        assert table.scaled_topk(q, 5) == table.scaled_topk(q, 5, exact_scan=True)


@pytest.mark.parametrize("scaled", [True, False])
def test_search_with_a_row_left_out_equals_a_scan(scaled):
    """The hubness graph asks for a key's own neighbours with its row left out: the pruned search with
    ``exclude`` equals a full scan with it, for small and larger k."""
    g = torch.Generator().manual_seed(9)
    dim = 48
    centres = torch.randn(6, dim, generator=g) * 2
    keys = centres[torch.randint(0, 6, (1500,), generator=g)] + 0.5 * torch.randn(1500, dim, generator=g)
    table = HubnessGraph(KeyStore(dim, "float16", exact_below=64, seed=0), 8)
    table.build(np.arange(len(keys)), keys.numpy())
    store = table.store
    assert store.trained
    for row in range(0, 1500, 37):
        q = store.vectors(np.array([row]))[0]
        for k in (1, 3, 9):
            got = store.search(q, k, scaled=scaled, exclude=row)
            ref = store.search(q, k, scaled=scaled, exclude=row, force_scan=True)
            assert got.ids.tolist() == ref.ids.tolist() and row not in got.rows.tolist()
            assert np.array_equal(got.distances, ref.distances) and np.array_equal(got.scores, ref.scores)
            assert got.scored < len(store) / 2


def test_store_wide_bounds_hold_through_adds_removals_and_sigma_changes():
    """The search's O(1) bounds (largest key norm, largest denominator) never fall below a row's value."""
    rng = np.random.default_rng(3)
    store = KeyStore(16, "float16", exact_below=32, seed=0)
    store.add_many(np.arange(200), rng.standard_normal((200, 16)) * rng.uniform(0.1, 5, (200, 1)))
    assert store.trained

    def check() -> None:
        x = store.matrix.astype(np.float64)
        assert store.norm_max >= np.linalg.norm(x, axis=1).max()
        assert store.den_max() >= store.den(slice(0, store.n)).max()

    check()
    store.add_many(np.arange(200, 210), rng.standard_normal((10, 16)) * 9.0)  # larger keys after training
    check()
    store.set_sigma(np.arange(5), np.full(5, 50.0))
    store.set_eps(0.5)
    check()
    for key_id in range(200, 210):
        store.remove(key_id)
    check()
