"""The null-set gate's tables follow the codebook's change journal: after random sequences of adds, removals
and re-edits the incrementally kept state equals a from-scratch build and a brute-force reference."""

import itertools
import random

import numpy as np
import pytest
import torch

from reasonedit_plugin import codebook as codebook_module
from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.gate import NullSetGate
from reasonedit_plugin.gate_tables import edit_priority
from reasonedit_plugin.retriever import Retriever

IMAGES = [[0.0, 0.0], [0.3, 0.0], [4.0, 0.0], [0.0, 9.0], [2.0, 2.0], [4.0, 0.0]]   # one repeated: ties
TEXTS = [[1.0, 0.0, 0.0], [0.95, 0.312, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.2]]
ANSWERS = ["Vol", "Kem", "nine"]
TEMPLATE = "The answer to '{question}' is {answer}."


def key(image, text):
    return torch.tensor(image + text, dtype=torch.float32)


def random_edit(rng: random.Random) -> list[PendingEntry]:
    image, text = rng.choice(IMAGES), rng.choice(TEXTS)
    out = []
    if rng.random() < 0.8:
        out.append(PendingEntry("answer", TEMPLATE.format(question="Q", answer=rng.choice(ANSWERS)),
                                key(image, text), rng.choice([0.5, 1.0, 3.0])))
    if rng.random() < 0.6 or not out:
        out.append(PendingEntry(rng.choice(["reasoning", "patch"]), f"sentence {rng.random():.6f}",
                                key(image, rng.choice(TEXTS)), 0.5))
    return out


def brute_conflicts(cb: Codebook, vision_dim: int, same_cos: float) -> dict[str, tuple[float, str]]:
    """Every pair of answer contributions of different edits, from the entries (no tables)."""
    rows = []
    for eid in cb.entry_ids():
        for c in cb.entries[eid].contributions:
            if c.kind == "answer":
                v, t = c.key[:vision_dim].double().numpy(), c.key[vision_dim:].double().numpy()
                rows.append((c.edit_id, v, t, c.value.split(" is ")[-1].rstrip(".").lower()))
    out: dict[str, tuple[float, str]] = {}
    for a, b in itertools.permutations(rows, 2):
        if a[0] == b[0] or a[3] == b[3]:
            continue
        if float(a[2] @ b[2] / (np.linalg.norm(a[2]) * np.linalg.norm(b[2]))) < same_cos:
            continue
        cand = (float(np.linalg.norm(a[1] - b[1])), b[0])
        if a[0] not in out or cand < out[a[0]]:
            out[a[0]] = cand
    return out


def brute_null(cb: Codebook, vision_dim: int, size: int, percentile: float, seed: int):
    """The lowest-priority ``size`` edits with an image, and the percentile of their image distances."""
    images = {}
    for eid in cb.entry_ids():
        for c in cb.entries[eid].contributions:
            if c.kind != "patch" and c.edit_id not in images:
                images[c.edit_id] = c.key[:vision_dim].double().numpy()
    edits = list(images)
    prio = edit_priority(edits, seed)
    members = [e for _, e in sorted(zip(prio.tolist(), edits))][:size]
    values = [float(np.linalg.norm(images[a] - images[b])) for a, b in itertools.combinations(members, 2)]
    values = [v for v in values if v > 1e-9]
    return sorted(members), (float(np.percentile(values, percentile)) if values else None), len(values)


def same_conflicts(got: dict[str, tuple[float, str]], want: dict[str, tuple[float, str]]) -> None:
    assert {k: v[1] for k, v in got.items()} == {k: v[1] for k, v in want.items()}
    assert {k: v[0] for k, v in got.items()} == pytest.approx({k: v[0] for k, v in want.items()}, abs=1e-12)


def assert_same_state(live: NullSetGate, cb: Codebook, queries: list[torch.Tensor], null_sample: int) -> None:
    fresh = NullSetGate(cb, live.config, vision_dim=2, seed=live.seed)
    assert live.conflicts() == fresh.conflicts()
    same_conflicts(live.conflicts(), brute_conflicts(cb, 2, live.config.same_question_cos))
    assert (live.null_threshold, live.null_pairs) == (fresh.null_threshold, fresh.null_pairs)
    assert sorted(live._sample.members) == sorted(fresh._sample.members)
    slots = list(live._sample._slot.values())
    assert np.isfinite(live._sample._images[slots]).all()     # no removed edit was ever a member on the way
    members, threshold, pairs = brute_null(cb, 2, null_sample, live.config.null_percentile, live.seed)
    assert sorted(live._sample.members) == members and live.null_pairs == pairs
    assert live.null_threshold == (None if threshold is None else pytest.approx(threshold, rel=1e-12, abs=1e-12))
    ids = cb.entry_ids()
    for q in queries:
        a, b = live.decide(q, ids), fresh.decide(q, ids)
        assert (a.accepted, a.winner, a.dropped_edits, a.kept_edits, a.reason) == \
            (b.accepted, b.winner, b.dropped_edits, b.kept_edits, b.reason)
        assert [t.__dict__ for t in a.tests] == [t.__dict__ for t in b.tests]


@pytest.mark.parametrize("merge,null_sample,seed", [(False, 2000, 0), (True, 2000, 1), (False, 3, 2), (True, 4, 3)])
def test_incremental_tables_equal_a_rebuild(merge, null_sample, seed):
    rng = random.Random(seed)
    cb = Codebook(5, CodebookConfig(merge=merge, answer_template=TEMPLATE),
                  RetrievalConfig(nullset={"null_sample": null_sample}))
    retriever = Retriever(cb, vision_dim=2, seed=seed)
    gate = retriever.nullset
    queries = [key(rng.choice(IMAGES), rng.choice(TEXTS)) for _ in range(4)]
    names = [f"e{i}" for i in range(14)]
    for step in range(70):
        present = cb.edit_ids()
        roll = rng.random()
        if present and roll < 0.3:
            cb.remove_edit(rng.choice(present))
        elif present and roll < 0.45:  # a re-edit: the same id, new content
            edit = rng.choice(present)
            cb.remove_edit(edit)
            cb.add_edit(edit, random_edit(rng))
        else:
            free = [n for n in names if not cb.has_edit(n)]
            if free:
                cb.add_edit(rng.choice(free), random_edit(rng))
        if step % 3 == 0 or step > 60:  # sometimes several changes between two looks
            assert_same_state(gate, cb, queries, null_sample)
            retriever.search(queries[step % len(queries)])


def test_journal_reaches_back_only_so_far(monkeypatch):
    monkeypatch.setattr(codebook_module, "JOURNAL_LENGTH", 3)
    cb = Codebook(5, CodebookConfig(merge=False))
    v0 = cb.version
    for i in range(2):
        cb.add_edit(f"e{i}", [PendingEntry("answer", f"a{i}", key(IMAGES[i], TEXTS[0]), 0.5)])
    changes = cb.changes_since(v0)
    assert [(c.edit_id, c.removed, c.entry_ids) for c in changes] == [("e0", False, (0,)), ("e1", False, (1,))]
    cb.remove_edit("e0")
    assert [(c.edit_id, c.removed) for c in cb.changes_since(v0 + 1)] == [("e1", False), ("e0", True)]
    assert cb.changes_since(cb.version) == []
    cb.add_edit("e2", [PendingEntry("answer", "a2", key(IMAGES[2], TEXTS[0]), 0.5)])
    assert cb.changes_since(v0) is None                       # forgotten: a cache that far behind rebuilds
    assert len(cb.changes_since(v0 + 1)) == 3
    cb.rebuild()
    assert cb.changes_since(cb.version - 1) is None


def test_gate_rebuilds_when_the_journal_is_gone(monkeypatch):
    monkeypatch.setattr(codebook_module, "JOURNAL_LENGTH", 2)
    cb = Codebook(5, CodebookConfig(merge=False, answer_template=TEMPLATE))
    gate = Retriever(cb, vision_dim=2).nullset
    red = PendingEntry("answer", TEMPLATE.format(question="Q", answer="Vol"), key(IMAGES[0], TEXTS[0]), 0.5)
    cb.add_edit("red", [red])
    assert gate.conflicts() == {}
    for i, (image, answer) in enumerate([(IMAGES[2], "Kem"), (IMAGES[3], "nine"), (IMAGES[4], "Vol")]):
        cb.add_edit(f"x{i}", [PendingEntry("answer", TEMPLATE.format(question="Q", answer=answer),
                                           key(image, TEXTS[0]), 0.5)])
    same_conflicts(gate.conflicts(), brute_conflicts(cb, 2, gate.config.same_question_cos))
    assert gate.conflicts()["red"] == (pytest.approx(4.0), "x0")
