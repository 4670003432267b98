"""The contribution table (contributions.py): rows for single-contribution entries, record lists for the
rest, each value string and edit id kept once."""

import numpy as np
import pytest
import torch

from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig
from reasonedit_plugin.contributions import NO_META, Part, PartTable
from reasonedit_plugin.storage import load_codebook, save_codebook


def part(edit, value="v", radius=0.5, meta=NO_META, key=None, kind="reasoning"):
    return Part(edit, kind, value, radius, 123.0, meta, key)


def fields(p):
    return (p.edit_id, p.kind, p.value, p.radius, p.created, dict(p.meta), p.key is None)


def test_a_single_record_is_a_row_and_reads_back_equal():
    t = PartTable()
    t.set(4, [part("a", "x", 0.25, {"author": "ann"})], 0.25)
    t.note_edit("a", 4)
    assert 4 in t and 3 not in t and len(t) == 1 and t.ids() == [4] and not list(t.record_entries())
    assert [fields(p) for p in t.parts(4)] == [("a", "reasoning", "x", 0.25, 123.0, {"author": "ann"}, True)]
    assert t.radius(4) == 0.25 and t.edit_entries("a") == [4]
    t.delete(4)
    assert 4 not in t and len(t) == 0
    with pytest.raises(KeyError):
        t.parts(4)


def test_value_strings_are_kept_once_and_freed_with_their_last_entry():
    t = PartTable()
    t.set(0, [part("a", "same")], 0.5)
    t.set(1, [part("b", "same")], 0.5)
    assert t._values.count("same") == 1
    t.delete(0)
    assert t.parts(1)[0].value == "same"
    t.delete(1)
    assert "same" not in t._value_code
    t.set(2, [part("c", "other")], 0.5)              # the freed code is used again
    assert t.parts(2)[0].value == "other" and len(t._values) == 1


def test_what_cannot_be_a_row_is_kept_as_records():
    t = PartTable()
    merged = [part("a", "x"), part("b", "y", key=np.ones(3, np.float16))]
    t.set(0, merged, 0.9)
    assert list(t.record_entries()) == [0] and t.parts(0) is t._records[0][0] and t.radius(0) == 0.9
    t.set(1, [part("c", "z", meta={"who": "1"})], 0.5)
    t.note_edit("c", 1)
    t.set(2, [part("c", "w", meta={"who": "2"})], 0.5)   # provenance other than its edit's rows
    assert sorted(t.record_entries()) == [0, 2] and dict(t.parts(2)[0].meta) == {"who": "2"}
    t.set(3, [part("c", "u", meta={"who": "1"})], 0.5)   # the edit's own provenance: a row
    assert 3 not in t.record_entries() and dict(t.parts(3)[0].meta) == {"who": "1"}


def test_edits_keep_their_order_and_entries():
    t = PartTable()
    for eid, edit in [(0, "b"), (1, "a"), (2, "b"), (3, "c")]:
        t.set(eid, [part(edit)], 0.5)
        t.note_edit(edit, eid)
    t.note_edit("b", 2)                                  # noted once
    assert t.edit_ids() == ["b", "a", "c"] and t.edit_entries("b") == [0, 2] and t.num_edits() == 3
    t.delete(0)
    t.delete(2)
    t.drop_edit("b")
    assert t.edit_ids() == ["a", "c"] and not t.has_edit("b") and t.edit_entries("b") == []
    t.set(4, [part("b")], 0.5)                           # the id again: a new edit, at the end
    t.note_edit("b", 4)
    assert t.edit_ids() == ["a", "c", "b"] and t.edit_entries("b") == [4]


def test_a_bulk_fill_equals_one_record_at_a_time():
    ids, edits = np.array([0, 1, 2, 5]), ["e0", "e1"]
    codes, values = np.array([0, 1, 0, 1]), ["p", "q"]
    bulk = PartTable()
    bulk.fill_rows(ids, edits, codes, np.array([0, 1, 1, 1]), values, np.array([1, 0, 1, 1]),
                   np.array([0.1, 0.2, 0.3, 0.4]), np.full(4, 123.0), {1: {"k": "v"}})
    one = PartTable()
    for i, eid in enumerate(ids.tolist()):
        kind = ("answer", "reasoning")[[0, 1, 1, 1][i]]
        meta = {"k": "v"} if codes[i] == 1 else NO_META
        one.set(eid, [Part(edits[codes[i]], kind, values[[1, 0, 1, 1][i]], [0.1, 0.2, 0.3, 0.4][i], 123.0,
                           meta, None)], 0.0)
        one.note_edit(edits[codes[i]], eid)
    for eid in ids.tolist():
        assert [fields(p) for p in bulk.parts(eid)] == [fields(p) for p in one.parts(eid)]
    assert bulk.edit_ids() == one.edit_ids() and bulk.edit_entries("e1") == one.edit_entries("e1") == [1, 5]
    with pytest.raises(ValueError):
        bulk.fill_rows(ids, edits, codes, np.zeros(4), values, np.zeros(4), np.zeros(4), np.zeros(4))


def test_a_codebook_holds_unmerged_entries_as_rows_and_saves_merged_ones(tmp_path):
    torch.manual_seed(0)
    book = Codebook(8, CodebookConfig(merge=True))
    key = torch.randn(8)
    book.add_edit("a", [PendingEntry("reasoning", "fact a", key, 1.0),
                        PendingEntry("answer", "answer a", torch.randn(8) * 10, 0.1)], {"author": "ann"})
    assert not list(book._table.record_entries())                 # no Python record per unmerged entry
    book.add_edit("b", [PendingEntry("reasoning", "fact b", key + 0.01, 1.0)])   # merges into a's entry
    assert len(list(book._table.record_entries())) == 1
    before = {i: (e.radius, [(c.edit_id, c.kind, c.value, c.radius, c.meta) for c in e.contributions])
              for i, e in book.entries.items()}
    setup = {"model_type": "fake", "model_fingerprint": "t", "vision_module": "v", "scale": 1.0,
             "text_encoder": "none:0", "vision_dim": 4, "text_dim": 4}
    save_codebook(tmp_path / "cb", book, setup)
    loaded = load_codebook(tmp_path / "cb", codebook_config=CodebookConfig(merge=True)).codebook
    after = {i: (e.radius, [(c.edit_id, c.kind, c.value, c.radius, c.meta) for c in e.contributions])
             for i, e in loaded.entries.items()}
    assert after == before and loaded.edit_ids() == ["a", "b"]
    assert loaded.edit_parts("a")[0][1].meta == {"author": "ann"}
    loaded.remove_edit("a")                              # the merged entry splits back into b's row
    assert [(e.edit_ids, e.values) for e in loaded.entries.values()] == [(["b"], ["fact b"])]
    assert not list(loaded._table.record_entries())
