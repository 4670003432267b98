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
