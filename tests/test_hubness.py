import random
import statistics

import numpy as np
import pytest
import torch

from reasonedit_plugin.hubness import EPS, HubnessGraph
from reasonedit_plugin.keystore import KeyStore


def brute_sigma(keys: dict[int, np.ndarray], k: int) -> dict[int, float]:
    out = {}
    for i, ki in keys.items():
        pairs = sorted((float(np.linalg.norm(ki.astype(np.float64) - kj)), j) for j, kj in keys.items() if j != i)
        out[i] = statistics.median(d for d, _ in pairs[:k]) if pairs else 1.0
    return out


def graph(dim, k, exact_below=16, dtype="float16", seed=0):
    return HubnessGraph(KeyStore(dim, dtype, exact_below=exact_below, seed=seed), k)


def make_keys(kind: str, n: int, dim: int, g: torch.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.randn(n, dim, generator=g)
    if kind == "clustered":
        centres = torch.randn(8, dim, generator=g) * 4
        return centres[torch.randint(0, 8, (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)
    # duplicate-heavy: a coarse grid, many exact duplicates and ties
    return torch.randint(0, 3, (n, dim), generator=g).float()


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("k", [1, 3, 30])
def test_incremental_equals_brute_force(kind, k):
    rng = random.Random(k)
    g = torch.Generator().manual_seed(k)
    table, keys, next_id = graph(4, k), {}, 0
    pool = make_keys(kind, 400, 4, g)
    for step in range(220):
        if keys and rng.random() < 0.35:
            victim = rng.choice(sorted(keys))
            table.remove(victim)
            del keys[victim]
        else:
            table.add(next_id, pool[next_id])
            keys[next_id] = table.store.round(pool[next_id])
            next_id += 1
        if step % 20 == 0 or step == 219:
            got, want = table.sigma_table(), brute_sigma(keys, k)
            assert got.keys() == want.keys()
            for i in want:
                assert got[i] == pytest.approx(want[i], rel=1e-5, abs=1e-6), (step, i)
    assert table.store.trained  # the IVF path was exercised


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
def test_pruned_search_equals_scan(kind):
    g = torch.Generator().manual_seed(3)
    keys = make_keys(kind, 600, 6, g)
    table = graph(6, 5, exact_below=32)
    for i, key in enumerate(keys):
        table.add(i, key)
    queries = torch.cat([keys[:20], make_keys(kind, 20, 6, g), 50 * torch.randn(5, 6, generator=g)])
    for q in queries:
        for k in (1, 5, 40):
            fast = table.scaled_topk(q, k)
            scan = table.scaled_topk(q, k, exact_scan=True)
            assert fast == scan
    hits = table.store.search(table.store.round(keys[0]), 5, scaled=True)
    assert hits.scored < len(table.store) or kind == "random"


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
def test_build_equals_incremental(kind):
    g = torch.Generator().manual_seed(5)
    keys = make_keys(kind, 300, 5, g)
    inc = graph(5, 7)
    for i, key in enumerate(keys):
        inc.add(i, key)
    bulk = graph(5, 7)
    bulk.build(np.arange(300), keys.numpy())
    assert bulk.sigma_table() == inc.sigma_table()
    assert bulk.neighbours(17) == inc.neighbours(17)
    assert bulk.store.trained


def test_a_capped_build_gives_every_row_k_real_neighbours():
    """``max_lists`` (the approximate bulk graph) with lists smaller than k: no row is left with an empty
    neighbour slot (a list of 3 rows cannot supply 7 neighbours by itself)."""
    g = torch.Generator().manual_seed(6)
    keys = make_keys("clustered", 300, 5, g)
    keys[:3] += 100.0  # a far-off cluster of three rows: its own IVF list
    bulk = graph(5, 7)
    bulk.build(np.arange(300), keys.numpy(), max_lists=1)
    ids, dist = bulk.store.knn_all(7, max_lists=1)
    assert (ids >= 0).all() and np.isfinite(dist).all()
    exact = graph(5, 7)
    exact.build(np.arange(300), keys.numpy())
    assert bulk.neighbours(0) == exact.neighbours(0)  # the short rows fell back to an exact search


def test_exact_duplicates_are_at_distance_zero():
    table = graph(3, 1)
    key = torch.tensor([0.1234, -5.5, 3.3])
    table.add(4, key)
    table.add(2, key.clone())
    table.add(9, key + 1)
    best = table.scaled_topk(key, 2)
    assert [b[1] for b in best] == [0.0, 0.0] and [b[2] for b in best] == [2, 4]  # ties by id
    assert table.sigma([2, 4]).tolist() == [0.0, 0.0]


def test_lone_key_and_keys_roundtrip():
    table = graph(2, 2)
    for i in range(5):
        table.add(i, torch.tensor([float(i), 0.0]))
    table.remove(1)
    assert table.keys([4, 0]).tolist() == [[4.0, 0.0], [0.0, 0.0]]
    with pytest.raises(KeyError):
        table.add(0, torch.zeros(2))
    lone = graph(2, 3)
    lone.add(0, torch.ones(2))
    assert lone.sigma([0]).tolist() == [1.0]
    assert lone.scaled_topk(torch.zeros(2), 1)[0][0] == pytest.approx(2 ** 0.5 / (1 + EPS))


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
def test_an_added_key_joins_its_nearest_list(kind):
    """A key added after training goes to the list of its nearest centroid (bounds, then exact differences
    on the candidates), as comparing it with every centroid would say."""
    g = torch.Generator().manual_seed(5)
    keys = make_keys(kind, 150, 6, g)
    table = graph(6, 5, exact_below=32)
    for i, key in enumerate(keys):
        table.add(i, key)
    s = table.store
    assert s.trained
    for i in range(40, 150, 3):
        row = s.row(i)
        x = s.vectors(np.array([row]))[0]
        d = ((s.centroids - x) ** 2).sum(1)
        assert d[s._assign[row]] == d.min()


def test_training_clusters_rows_by_list_and_keeps_every_id():
    """(Re)training reorders the store so each IVF list is one stretch of rows (searches read lists
    without gathering); ids, keys, σ and neighbour lists follow their rows, and a key added after the
    training is appended to its list."""
    g = torch.Generator().manual_seed(11)
    keys = make_keys("clustered", 200, 6, g)
    table = graph(6, 5, exact_below=32)
    for i, key in enumerate(keys[:150]):
        table.add(i, key)
    s = table.store
    trained = s._trained_at  # the last (re)training saw this many keys; later ones were appended
    assert s.trained and 32 < trained < 150
    a = s._assign[:trained]
    assert (a[1:] >= a[:-1]).all()
    for c in range(len(s._ivf)):
        lst = s._ivf.rows_of(c)
        rows = np.sort(lst)
        old = rows[rows < trained]
        assert (np.diff(old) == 1).all()  # one stretch per list
        _, rad, _ = s._ivf.gather(np.array([c]))
        assert np.allclose(rad, s._rad[lst])
    for i in (0, 77, 149):
        assert np.array_equal(s.vectors(np.array([s.row(i)]))[0], table.store.round(keys[i]))
    sigma_before = table.sigma_table()
    table.add(150, keys[150])
    want = brute_sigma({i: table.store.round(keys[i]) for i in range(151)}, 5)
    got = table.sigma_table()
    assert got.keys() == want.keys() and all(got[i] == pytest.approx(want[i], rel=1e-5) for i in want)
    assert set(sigma_before) < set(got)
