import numpy as np
import pytest
import torch

from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.retriever import EPS, Retriever, gate_percentile, gate_threshold


def book(points, backend="torch", **retrieval):
    dim = len(points[0])
    cb = Codebook(dim, CodebookConfig(merge=False), RetrievalConfig(backend=backend, **retrieval))
    for i, p in enumerate(points):
        cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"fact {i}", torch.tensor(p, dtype=torch.float32), 0.1)])
    return cb


def test_gate_threshold_hand_computed():
    # keys 0, 1, 2, 10 -> sigma 2, 1, 2, 9 (see test_codebook). Upper triangle d_ij / sigma_j:
    # (0,1) 1/1, (0,2) 2/2, (0,3) 10/9, (1,2) 1/2, (1,3) 9/9, (2,3) 8/9
    keys = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    sigma = torch.tensor([2.0, 1.0, 2.0, 9.0])
    values = np.array([1 / (1 + EPS), 2 / (2 + EPS), 10 / (9 + EPS), 1 / (2 + EPS), 9 / (9 + EPS), 8 / (9 + EPS)])
    assert gate_threshold(keys, sigma, 25.0) == pytest.approx(np.percentile(values, 25.0))
    assert gate_threshold(keys, sigma, 100.0) == pytest.approx(10 / 9, rel=1e-5)


def test_gate_percentile_rule():
    cfg = RetrievalConfig()
    assert gate_percentile(1, cfg) == 100.0
    assert gate_percentile(4, cfg) == 25.0
    assert gate_percentile(500, cfg) == 1.0


def test_gate_rejects_far_query_and_accepts_near():
    cb = book([[0.0], [1.0], [2.0], [10.0]], gate="percentile")
    r = Retriever(cb)
    tau = r.threshold()          # 4 edits -> 25th percentile
    near = r.search(torch.tensor([1.0625]))  # a float16 value: keys and queries compare at key precision
    assert near.accepted and near.entry_ids[0] == 1 and near.facts[0] == "fact 1"
    assert near.scores[0] == pytest.approx(0.0625 / (1 + EPS), rel=1e-6) and near.threshold == tau
    far = r.search(torch.tensor([40.0]))
    assert not far.accepted and far.facts == []


def test_a_percentile_changed_in_place_is_seen_by_the_next_search():
    cb = book([[0.0], [1.0], [2.0], [10.0]], gate="percentile")
    r = Retriever(cb)
    assert r.threshold() == pytest.approx(Retriever(book([[0.0], [1.0], [2.0], [10.0]], gate="percentile")).threshold())
    cb.retrieval.gate_percentile = 100.0  # the same config object, mutated: no codebook change
    assert r.threshold() == pytest.approx(10 / 9, rel=1e-5)  # the largest scaled pair, as from a fresh retriever


def test_hubness_demotes_hub():
    # key 0 is near everything ("hub"), key 1 is in a tight pair with key 2
    cb = book([[0.0, 0.0], [3.0, 0.0], [3.05, 0.0], [-3.0, 0.0], [0.0, 3.0]], gate=False)
    q = torch.tensor([1.45, 0.0])     # raw distance: hub 1.45 < key 1 1.55; scaled: key 1 wins
    raw = Retriever(book([[0.0, 0.0], [3.0, 0.0], [3.05, 0.0], [-3.0, 0.0], [0.0, 3.0]],
                         hubness=False, gate=False)).search(q, 1)
    scaled = Retriever(cb).search(q, 1)
    assert raw.entry_ids == [0] and scaled.entry_ids == [1]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_scaled_topk_is_exact(backend):
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(300, 8, generator=g)
    pts[:20] *= 0.1                    # a dense core of hubs
    cb = book(pts.tolist(), backend=backend, gate=False, cap_keys=5)
    r = Retriever(cb)
    sig = cb.sigma(cb.entry_ids())
    for q in torch.randn(10, 8, generator=g).half().float():  # queries compare at key precision (float16)
        got = r.search(q)
        d = torch.cdist(q[None].double(), cb.keys().double())[0]
        scores = (d / (sig + EPS)).tolist()
        ids = cb.entry_ids()
        want = sorted(range(len(ids)), key=lambda j: (scores[j], ids[j]))[:5]
        assert got.entry_ids == [ids[j] for j in want]
        assert got.scores == pytest.approx([scores[j] for j in want], rel=1e-4)


def test_facts_dedupe_and_order():
    cb = Codebook(1, CodebookConfig(merge=False), RetrievalConfig(gate=False))
    cb.add_edit("a", [PendingEntry("reasoning", "same", torch.tensor([0.0]), 0.1),
                      PendingEntry("reasoning", "other", torch.tensor([0.5]), 0.1)])
    cb.add_edit("b", [PendingEntry("reasoning", "same", torch.tensor([0.2]), 0.1)])
    res = Retriever(cb).search(torch.tensor([0.0]))
    assert res.facts == ["same", "other"]          # deduplicated, ordered by score


def test_single_key_gate_uses_radius():
    cb = Codebook(1, CodebookConfig(), RetrievalConfig(gate="percentile"))
    cb.add_edit("a", [PendingEntry("answer", "fact", torch.tensor([0.0]), 0.5)])
    r = Retriever(cb)
    assert r.search(torch.tensor([0.4])).accepted
    assert not r.search(torch.tensor([0.6])).accepted


def test_empty_codebook():
    assert not Retriever(Codebook(3)).search(torch.zeros(3)).accepted
