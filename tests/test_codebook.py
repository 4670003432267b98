import pytest
import torch

from reasonedit_plugin.codebook import Codebook, PendingEntry, should_merge
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.errors import ReasonEditError


def entry(x, r=0.01, value=None, kind="reasoning"):
    key = torch.tensor(x, dtype=torch.float32).reshape(-1)
    return PendingEntry(kind, value or f"v{x}", key, r)


def line_book(points, k=30, merge=False):
    cb = Codebook(1, CodebookConfig(merge=merge), RetrievalConfig(hubness_k=k))
    for i, p in enumerate(points):
        cb.add_edit(f"e{i}", [entry([p])])
    return cb


def test_hubness_sigma_hand_computed():
    # keys 0, 1, 2, 10 on a line; k=30 > N-1 so each key uses its 3 others.
    cb = line_book([0, 1, 2, 10])
    assert cb.sigma(cb.entry_ids()).tolist() == [2.0, 1.0, 2.0, 9.0]
    # k = 2: medians of the two nearest (even count: mean of the two).
    cb2 = line_book([0, 1, 2, 10], k=2)
    assert cb2.sigma(cb2.entry_ids()).tolist() == [1.5, 1.0, 1.5, 8.5]


def test_lone_key_sigma_is_one():
    cb = line_book([3.0])
    assert cb.sigma(cb.entry_ids()).tolist() == [1.0]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_incremental_sigma_matches_rebuild(backend):
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig(backend=backend, hubness_k=4))
    g = torch.Generator().manual_seed(0)
    for i in range(40):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", torch.randn(5, generator=g), 0.1)])
        if i % 7 == 6:
            cb.remove_edit(f"e{i - 3}")
    incremental = cb.sigma_table()
    ids = cb.entry_ids()
    cb.rebuild()
    rebuilt = cb.sigma_table()
    assert ids == cb.entry_ids()
    for i in ids:
        assert incremental[i] == pytest.approx(rebuilt[i], rel=1e-5)


def test_merge_rule_cases():
    cfg = CodebookConfig()
    assert should_merge(0.05, 1.0, 1.0, cfg)          # both centres deep inside (d < 0.1 r)
    assert not should_merge(0.5, 1.0, 1.0, cfg)       # overlap 1.5 / 2 = 0.75 of each ball
    assert should_merge(0.15, 1.0, 1.0, cfg)          # overlap 1.85 / 2 = 0.925 > 0.9 of both
    assert not should_merge(0.15, 1.0, 10.0, cfg)     # covers 92.5% of the small ball, 9% of the big
    assert not should_merge(2.5, 1.0, 1.0, cfg)       # balls do not intersect


def test_merge_then_remove_splits_back():
    cb = Codebook(2, CodebookConfig(), RetrievalConfig())
    (a, merged_a), = cb.add_edit("A", [entry([0.0, 0.0], r=1.0, value="fact A")])
    (b, merged_b), = cb.add_edit("B", [entry([0.05, 0.0], r=1.0, value="fact B")])
    assert merged_b and a == b and len(cb) == 1
    e = cb.entries[a]
    assert e.values == ["fact A", "fact B"] and e.edit_ids == ["A", "B"]
    assert e.radius == pytest.approx(1.05, rel=1e-3)  # max(r_old, d + r_new), d between float16 keys
    cb.remove_edit("A")                                # the merged entry falls back to B's own key
    (e,) = cb.entries.values()
    assert e.values == ["fact B"] and e.radius == pytest.approx(1.0)
    assert torch.equal(e.key, torch.tensor([0.05, 0.0]).half().float())  # B's key, at key precision
    cb.remove_edit("B")
    assert len(cb) == 0 and cb.index.count == 0


def test_add_edit_is_all_or_nothing():
    cb = Codebook(2)
    good = entry([0.0, 1.0])
    bad = PendingEntry("reasoning", "x", torch.tensor([float("nan"), 0.0]), 0.1)
    with pytest.raises(ReasonEditError, match="NaN"):
        cb.add_edit("e", [good, bad])
    assert len(cb) == 0 and cb.edit_ids() == []
    with pytest.raises(ReasonEditError, match="expects"):
        cb.add_edit("e", [entry([1.0, 2.0, 3.0])])
    cb.add_edit("e", [good])
    with pytest.raises(ReasonEditError, match="already in the codebook"):
        cb.add_edit("e", [good])
    with pytest.raises(ReasonEditError, match="no edit 'zz'"):
        cb.remove_edit("zz")


def test_provenance_kept():
    cb = Codebook(1)
    cb.add_edit("e1", [entry([1.0], kind="answer", value="The answer to 'q' is a.")], {"author": "ann"})
    (e,) = cb.entries.values()
    assert e.contributions[0].meta == {"author": "ann"} and e.kinds == ["answer"]


# ---------------------------------------------------------------------------------------------- at scale
import numpy as np  # noqa: E402

from reasonedit_plugin.gate_sample import priority as _priority  # noqa: E402
from reasonedit_plugin.retriever import EPS, Retriever, gate_percentile, gate_threshold  # noqa: E402


def _keys(kind: str, n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, dim, generator=g)
    if kind == "clustered":
        centres = torch.randn(6, dim, generator=g) * 5
        return centres[torch.randint(0, 6, (n,), generator=g)] + 0.4 * torch.randn(n, dim, generator=g)
    return torch.randint(0, 3, (n, dim), generator=g).float()  # duplicate-heavy


@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
def test_ivf_search_equals_exact_scan_through_edits(kind):
    """Retrieved ids, order, scores and the gate decision equal the full scan, while edits come and go."""
    cfg = CodebookConfig(merge=False, exact_search_below=64)
    cb = Codebook(6, cfg, RetrievalConfig(hubness_k=5, gate_sample=50, cap_keys=5, gate="percentile"))
    keys = _keys(kind, 700, 6, 1)
    for i in range(400):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
    for i in range(0, 400, 7):
        cb.remove_edit(f"e{i}")
    assert cb.store.trained
    r = Retriever(cb)
    queries = torch.cat([keys[:30], keys[400:430], 3 * _keys(kind, 20, 6, 2)])
    for step, q in enumerate(queries):
        if step % 10 == 0:  # edits between queries
            cb.add_edit(f"new{step}", [PendingEntry("reasoning", "x", keys[450 + step], 0.1)])
        got = r.search(q)
        exact = cb.scaled_topk(q, 5, exact_scan=True)
        assert got.entry_ids == [e for _, _, e in exact]
        assert got.scores == [s for s, _, _ in exact] and got.distances == [d for _, d, _ in exact]
        assert got.accepted == (exact[0][0] <= r.threshold())
    stats = cb.store.search(cb.store.round(keys[1]), 5)
    assert stats.scored < len(cb) or kind == "random"


def test_exact_match_is_never_rejected():
    # many exact duplicates: sigma 0 for them, tau 0; a query equal to a stored key scores exactly 0
    cb = Codebook(3, CodebookConfig(merge=False), RetrievalConfig(hubness_k=2, cap_keys=3, gate="percentile"))
    key = torch.tensor([0.3, -1.7, 2.2])
    for i in range(6):
        cb.add_edit(f"d{i}", [PendingEntry("reasoning", f"dup {i}", key, 0.1)])
    cb.add_edit("far", [PendingEntry("reasoning", "far", key + 5, 0.1)])
    res = Retriever(cb).search(key)
    assert res.accepted and res.distances == [0.0, 0.0, 0.0] and res.entry_ids == [0, 1, 2]  # ties by id
    assert res.threshold == 0.0 and res.scores[0] == 0.0


def test_gate_threshold_small_equals_reference_and_sample_is_maintained():
    cb = Codebook(4, CodebookConfig(merge=False), RetrievalConfig(hubness_k=3))
    keys = _keys("clustered", 120, 4, 3)
    for i in range(40):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
    ids = sorted(cb.entry_ids())
    p = gate_percentile(cb.num_edits, RetrievalConfig())
    want = gate_threshold(cb.keys(ids), cb.sigma(ids), p)
    assert cb.gate_threshold(p, 2000) == pytest.approx(want, rel=1e-6)
    # above the sample size: the sample is the entries of lowest seeded priority, kept under edits
    cb.gate_threshold(p, 25, seed=4)
    for i in range(40, 120):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
        if i % 5 == 0:
            cb.remove_edit(f"e{i - 30}")
    live = np.array(cb.entry_ids())
    expect = np.sort(live[np.argsort(_priority(live, 4), kind="stable")[:25]])
    assert np.array_equal(np.sort(cb._gate.ids), expect)
    sample = sorted(expect.tolist())
    want = gate_threshold(cb.keys(sample), cb.sigma(sample), 7.0)
    assert cb.gate_threshold(7.0, 25, seed=4) == pytest.approx(want, rel=1e-5)


def test_edit_lookups_and_entries_view():
    cb = Codebook(2, CodebookConfig(merge=False))
    cb.add_edit("a", [entry([0.0, 0.0]), entry([1.0, 0.0])])
    cb.add_edit("b", [entry([5.0, 5.0])])
    assert cb.edit_ids() == ["a", "b"] and cb.num_edits == 2 and cb.has_edit("a")
    assert cb.entries_of("a") == [0, 1] and list(cb.entries) == [0, 1, 2] and 2 in cb.entries
    cb.remove_edit("a")
    assert cb.edit_ids() == ["b"] and list(cb.entries) == [2] and len(cb.entries) == 1
    assert cb.index.search(np.array([[5.0, 5.0]], np.float32), 1).ids.tolist() == [[2]]
    with pytest.raises(ReasonEditError, match="read-only"):
        cb.index.add(np.array([9]), np.zeros((1, 2), np.float32))


def test_bulk_equals_incremental():
    keys = _keys("clustered", 300, 5, 6)
    cfg = CodebookConfig(merge=False, exact_search_below=32)
    bulk = Codebook.bulk(keys, [f"v{i}" for i in range(300)], [f"e{i}" for i in range(300)], 0.2, config=cfg)
    inc = Codebook(5, cfg)
    for i in range(300):
        inc.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.2)])
    assert bulk.sigma_table() == inc.sigma_table() and bulk.edit_ids() == inc.edit_ids()
    assert bulk.scaled_topk(keys[3], 5) == inc.scaled_topk(keys[3], 5)


def test_approximate_graph_upkeep_keeps_search_exact():
    """graph_probe bounds an edit's neighbour searches; sigma is then approximate, the search stays exact."""
    keys = _keys("clustered", 500, 6, 8)
    cfg = CodebookConfig(merge=False, exact_search_below=64, graph_probe=2)
    cb = Codebook(6, cfg, RetrievalConfig(hubness_k=5, gate=False))
    exact = Codebook(6, CodebookConfig(merge=False, exact_search_below=64), RetrievalConfig(hubness_k=5, gate=False))
    for i in range(300):
        for book in (cb, exact):
            book.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
    for victim in ("e3", *(f"e{i}" for i in range(100, 300, 3))):  # many removals: no list keeps a removed id
        cb.remove_edit(victim)
        exact.remove_edit(victim)
    nbr, nlen = cb.store.column("nbr"), cb.store.column("nlen")
    listed = {int(i) for row in range(len(cb.store)) for i in nbr[row, : nlen[row]]}
    assert listed <= set(cb.store.ids.tolist())
    cb.add_edit("again", [PendingEntry("reasoning", "again", keys[450], 0.1)])  # lists are offered the new key
    exact.add_edit("again", [PendingEntry("reasoning", "again", keys[450], 0.1)])
    got, want = cb.sigma_table(), exact.sigma_table()
    close = np.mean([abs(got[i] - want[i]) <= 1e-6 * want[i] for i in want])
    assert 0.5 < close and all(got[i] >= want[i] - 1e-6 for i in want)  # near-nearest: never smaller
    for q in keys[300:340]:
        assert cb.scaled_topk(q, 5) == cb.scaled_topk(q, 5, exact_scan=True)


@pytest.mark.parametrize("size", [25, 400])
def test_gate_pool_equals_a_fresh_recomputation_through_edits(size):
    """tau from the maintained pool (pairs retired and re-admitted as members and sigma change) is the very
    number a rebuild of the pool from every pair gives, at several percentiles, full sample or not; and a
    sample built from scratch agrees (its distances come from a float64 matrix product, an edit's from
    float32 differences: equal to rounding)."""

    def check(p):
        got = cb.gate_threshold(p, size, seed=2)
        cb._gate._pool.values = None  # forces a rebuild from every pair
        assert got == cb.gate_threshold(p, size, seed=2)
        assert got == pytest.approx(GateSample(cb.store, cb._graph, size, 2).threshold(p), rel=1e-6)

    from reasonedit_plugin.gate_sample import GateSample

    cb = Codebook(5, CodebookConfig(merge=False, exact_search_below=64), RetrievalConfig(hubness_k=4))
    keys = _keys("clustered", 400, 5, 7)
    for i in range(150):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
    cb.gate_threshold(1.0, size, seed=2)
    for i in range(150, 260):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
        if i % 3 == 0:
            cb.remove_edit(f"e{i - 120}")
        if i % 10 == 0:
            for p in (1.0, 2.5, 30.0):
                check(p)
    for i in range(150, 260, 2):  # shrink below the sample size: the last member fills each hole
        if cb.has_edit(f"e{i}"):
            cb.remove_edit(f"e{i}")
    for p in (1.0, 50.0):
        check(p)
