"""The projected lower bound of the key store (``key_projection.py``): never above the true distance, and
with it the store's pruned search still equals a full scan at a dimension where the projection is lossy."""

import numpy as np
import pytest
import torch

from reasonedit_plugin.hubness import HubnessGraph
from reasonedit_plugin.key_projection import HEAD_DIM, PROJ_DIM, KeyProjection
from reasonedit_plugin.keystore import KeyStore


def clustered_table(seed: int, n: int, n_centres: int, spread: float,
                    dim: int = 48) -> tuple[HubnessGraph, torch.Tensor]:
    """A hubness graph over ``n`` float16 keys around ``n_centres`` centres (trained: 64 keys suffice)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, dim, generator=g) * 2
    keys = centres[torch.randint(0, n_centres, (n,), generator=g)] + spread * torch.randn(n, dim, generator=g)
    table = HubnessGraph(KeyStore(dim, "float16", exact_below=64, seed=0), 8)
    table.build(np.arange(len(keys)), keys.numpy())
    return table, keys


@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_lower_bound_never_exceeds_the_distance(scale):
    rng = np.random.default_rng(0)
    dim = 96
    centroids = rng.standard_normal((80, dim)) * scale
    proj = KeyProjection.from_centroids(centroids, dim)
    basis = proj.basis.astype(np.float64)
    assert np.allclose(basis.T @ basis, np.eye(PROJ_DIM), atol=1e-6)
    x = (centroids[rng.integers(0, 80, 500)] + rng.standard_normal((500, dim)) * scale * 0.1).astype(np.float32)
    x[:50] = x[50:100]  # exact duplicates: the bound must be 0 there
    q = x[7] + np.float32(scale * 1e-4) * rng.standard_normal(dim).astype(np.float32)
    true = np.linalg.norm(x.astype(np.float64) - q.astype(np.float64), axis=1)
    norms = np.linalg.norm(x.astype(np.float64), axis=1) * (1 + 1e-6)
    proj.fit(proj.project(x))
    codes, is_open = proj.encode(proj.project(x))  # as the key store keeps them
    assert codes.dtype == np.int8 and not is_open.any()
    qc = proj.query(proj.project(q[None])[0], float(np.linalg.norm(q)) * (1 + 1e-6), float(norms.max()))
    lb = proj.lower_bounds(qc, codes)
    assert (lb <= true).all()
    assert (lb[:50] == 0).all() or (true[:50] > 0).all()
    assert np.median(lb / np.maximum(true, 1e-30)) > 0.5  # and it is a useful bound on clustered keys
    head = proj.lower_bounds(qc, codes[:, :HEAD_DIM])  # the first coordinates alone: a weaker bound
    assert (head <= lb * (1 + 1e-9)).all() and (head < lb).mean() > 0.5
    # the hot path's float32 sums: head and tail partials add up to the whole
    whole = proj.partial(qc, codes)
    split = proj.partial(qc, codes[:, :HEAD_DIM]) + proj.partial(qc, codes[:, HEAD_DIM:], HEAD_DIM)
    assert np.allclose(split, whole, rtol=1e-5, atol=1e-30)
    # the search's test keeps every row within the limit, and drops what the float64 bound drops (up to rounding)
    for limit in np.quantile(true, [0.01, 0.2, 0.6]):
        limits = np.full(len(x), limit) * rng.uniform(0.5, 1.5, len(x))
        keep = proj.partial(qc, codes) <= proj.reach2(qc, limits, PROJ_DIM)  # as the key store tests them
        assert keep[true <= limits].all() and keep.any() and not keep.all()
        assert keep[lb <= limits].all() and not keep[lb > limits * (1 + 1e-4)].any()


def test_a_code_box_bounds_every_key_inside_it():
    """The IVF lists' bound: the box of a group's codes bounds the distance to each of its keys."""
    rng = np.random.default_rng(4)
    dim = 64
    centroids = rng.standard_normal((30, dim)) * 2
    proj = KeyProjection.from_centroids(centroids, dim)
    group = rng.integers(0, 30, 900)
    x = (centroids[group] + rng.standard_normal((900, dim)) * 0.3).astype(np.float32)
    proj.fit(proj.project(x))
    codes, _ = proj.encode(proj.project(x))
    r = HEAD_DIM
    lo = np.stack([codes[group == g, :r].min(axis=0) for g in range(30)]).astype(np.float64)
    hi = np.stack([codes[group == g, :r].max(axis=0) for g in range(30)]).astype(np.float64)
    for q in [x[3], x[500] + 0.01, centroids[7].astype(np.float32), rng.standard_normal(dim).astype(np.float32) * 4]:
        true = np.linalg.norm(x.astype(np.float64) - q.astype(np.float64), axis=1)
        norm_x = float(np.linalg.norm(x.astype(np.float64), axis=1).max()) * (1 + 1e-6)
        qc = proj.query(proj.project(q[None])[0], float(np.linalg.norm(q)) * (1 + 1e-6), norm_x)
        lb = proj.box_bounds(qc, lo, hi)
        nearest = np.array([true[group == g].min() for g in range(30)])
        assert (lb <= nearest).all() and (lb > 0).sum() >= 10  # a bound, and one that rules groups out
        row_lb = proj.lower_bounds(qc, codes[:, :r])  # the box is the weaker bound of its rows' own
        assert (lb <= np.array([row_lb[group == g].min() for g in range(30)]) + 1e-9).all()
    empty = proj.box_bounds(qc, np.full((1, r), np.inf), np.full((1, r), -np.inf))
    assert np.isinf(empty).all()


def test_a_coordinate_outside_the_fitted_range_marks_the_key_open():
    """Codes are clipped to their range; a key beyond it must not be bounded by them (``open``)."""
    rng = np.random.default_rng(1)
    dim = 40
    x = rng.standard_normal((300, dim)).astype(np.float32)
    proj = KeyProjection.from_centroids(x[:60], dim)
    proj.fit(proj.project(x))
    far = (x[:5] * 40).astype(np.float32)
    codes, is_open = proj.encode(proj.project(np.concatenate([x, far])))
    assert not is_open[:300].any() and is_open[300:].all()
    assert np.abs(codes.astype(int)).max() <= 127


def test_keys_added_beyond_the_code_ranges_are_still_found():
    """Keys added after training far outside the fitted code ranges: the search stays exact (they are open)."""
    table, keys = clustered_table(seed=11, n=800, n_centres=8, spread=0.3)
    store = table.store
    assert store.trained and not store._open
    far = keys[:6] * 30
    for i, key in enumerate(far):
        table.add(5000 + i, key)
    rows = store.rows(range(5000, 5006))
    assert store._open and store.column("pz_open")[rows].all()
    assert store._list_open[store._assign[rows]].all()  # their lists are not bounded by their code boxes
    q = store.round((far[0] + 0.05).numpy())
    qc = store._projected(q, float(np.dot(q.astype(np.float64), q)))
    d = store.distances(rows, q).astype(np.float64)
    assert store._proj_keep(rows, qc, d * (1 + 1e-6)).all()  # their clipped codes would rule some out
    for q in torch.cat([far + 0.1, keys[:10], far[:3] * 0.5]):
        for k in (1, 5):
            assert table.scaled_topk(q, k) == table.scaled_topk(q, k, exact_scan=True)
            plain = store.search(store.round(q.numpy()), k, scaled=False)
            ref = store.search(store.round(q.numpy()), k, scaled=False, force_scan=True)
            assert plain.ids.tolist() == ref.ids.tolist() and np.array_equal(plain.distances, ref.distances)


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
    table, _ = clustered_table(seed=9, n=1500, n_centres=6, spread=0.5)
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


def test_list_boxes_bound_their_rows_through_adds_and_removals():
    """Each IVF list's code box (its lower bound in a search) stays below the distance to every row of the
    list as rows are added (boxes grow) and removed (boxes stay wide)."""
    rng = np.random.default_rng(8)
    dim = 32
    centres = rng.standard_normal((10, dim)) * 3
    keys = centres[rng.integers(0, 10, 1200)] + rng.standard_normal((1200, dim)) * 0.5
    store = KeyStore(dim, "float16", exact_below=256, seed=0)
    store.add_many(np.arange(1200), keys)
    assert store.trained
    between = (centres[rng.integers(0, 10, 100)] + centres[rng.integers(0, 10, 100)]) / 2  # outside the lists'
    store.add_many(np.arange(1200, 1300), between + rng.standard_normal((100, dim)) * 0.3)  # boxes, inside the ranges
    assert not store._open
    for key_id in range(0, 1200, 7):
        store.remove(key_id)
    for q in [store.vectors(np.array([5]))[0], store.vectors(store.rows([1250]))[0], store.round(centres[2] + 0.2),
              store.round(between[0] + 0.1)]:
        qc = store._projected(q, float(np.dot(q.astype(np.float64), q)))
        lb = store._box_bounds(qc)
        d = store.distances(np.arange(store.n), q).astype(np.float64)
        assign = store._assign[: store.n]
        for c in np.unique(assign):
            assert lb[c] <= d[assign == c].min()
        assert (lb > 0).any()


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


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_all_finite_finds_nan_and_inf_by_the_dtype(dtype):
    """The load's and the store's key check (float16 by its exponent bits)."""
    from reasonedit_plugin.keystore import all_finite

    ok = np.array([[0.0, -0.0, 1.5], [65504.0, -65504.0, 6e-8]], dtype)  # largest and subnormal float16
    assert all_finite(ok)
    for bad in (np.inf, -np.inf, np.nan):
        x = ok.copy()
        x[1, 2] = bad
        assert not all_finite(x)


def test_no_key_is_open_after_training_even_beyond_the_sampled_ranges():
    """The code ranges are fitted on a sample of the rows (32k of them); keys outside it widen the ranges, so
    after a training no row is left unbounded by its codes, and the search stays exact."""
    rng = np.random.default_rng(12)
    n, dim = 40_000, 8
    keys = rng.standard_normal((n, dim)).astype(np.float32)
    far = rng.choice(n, 60, replace=False)
    keys[far] *= 25  # far outside the bulk: the rows of them the sample misses would be open
    store = KeyStore(dim, "float16", exact_below=n, seed=0)
    store.add_many(np.arange(n), keys)
    assert store.trained and not store._open and not store.column("pz_open").any()
    for q in keys[far[:5]] * 1.01:
        q = store.round(q)
        got, ref = store.search(q, 5, scaled=False), store.search(q, 5, scaled=False, force_scan=True)
        assert got.ids.tolist() == ref.ids.tolist() and np.array_equal(got.distances, ref.distances)
