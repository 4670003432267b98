"""Codebook storage: round trip, setup pinning, audit log, removal, knowledge modules (issue 7)."""

import json
import shutil

import pytest
import torch

from fakes import FakeVLM, pattern, solid
from reasonedit_plugin.audit import read_events
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import CodebookMismatchError, ReasonEditError
from reasonedit_plugin.storage import CodebookCorruptError, load_codebook, read_meta, save_codebook

RED, BLUE, GREEN = solid((220, 20, 20)), solid((20, 20, 220)), solid((20, 220, 20))
Q = "Which tribe owns this shape?"


def rec(rid, image, target, rationale, **kw):
    return {"id": rid, "image": image, "prompt": Q, "target": target, "choices": ["Vol", "Kem", "Zib"],
            "rationale": rationale, **kw}


EDITS = [
    rec("red", RED, "Vol", "The shape in the image is red. Red shapes belong to the Vol tribe."),
    rec("blue", BLUE, "Kem", "The shape is blue. Blue shapes belong to the Kem tribe."),
    rec("green", GREEN, "Vol", "The shape is green. Green shapes belong to the Vol tribe.",
        meta={"author": "ana", "reason": "ticket 12"}),
]
QUERIES = [(RED, Q), (BLUE, "What tribe owns the shape shown?"), (GREEN, Q), (pattern(3), "How many legs?"),
           (RED, "Is it red?")]


def make_editor(text_encoder, **sections):
    cfg = ReasonEditConfig(guard={"policy": "off"}, **sections)
    return ReasonEditor(FakeVLM(), cfg, text_encoder=text_encoder)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, text_encoder):
    ed = make_editor(text_encoder)
    ed.edit(EDITS, author="bob", reason="initial")
    path = tmp_path_factory.mktemp("cb") / "codebook"
    ed.save(path)
    return ed, path


def state(ed):
    cb = ed.codebook
    return {eid: (e.key.tolist(), e.radius, e.values, e.edit_ids,
                  [(c.edit_id, c.kind, c.value, c.radius, c.key.tolist(), c.meta) for c in e.contributions])
            for eid, e in cb.entries.items()}


def test_round_trip_identical(saved, text_encoder):
    ed, path = saved
    loaded = ReasonEditor.load(path, FakeVLM(), text_encoder=text_encoder)
    assert loaded.edit_ids() == ed.edit_ids()
    assert state(loaded) == state(ed)
    assert loaded.codebook.version == ed.codebook.version
    for image, question in QUERIES:
        a, b = ed.retrieve(image, question), loaded.retrieve(image, question)
        assert (a.accepted, a.facts, a.entry_ids) == (b.accepted, b.facts, b.entry_ids)
        assert a.distances == pytest.approx(b.distances, rel=1e-6, abs=1e-6)
        assert a.scores == pytest.approx(b.scores, rel=1e-5)
        assert (a.threshold is None) == (b.threshold is None)
        if a.threshold is not None:
            assert a.threshold == pytest.approx(b.threshold, rel=1e-5)
    # against the original with its own index rebuilt (what load does), results are bit-identical
    ed.codebook.rebuild()
    for image, question in QUERIES:
        a, b = ed.retrieve(image, question), loaded.retrieve(image, question)
        assert (a.facts, a.entry_ids, a.distances, a.scores) == (b.facts, b.entry_ids, b.distances, b.scores)
    assert loaded.answer(RED, Q, ["Vol", "Kem", "Zib"]).text == "Vol"
    assert set(loaded.edit_records) == {"red", "blue", "green"}
    assert [(e.action, e.edit_id) for e in loaded.audit] == [(e.action, e.edit_id) for e in ed.audit]


def test_files_are_safetensors_and_json_no_pickle(saved):
    _, path = saved
    meta = read_meta(path)
    assert meta["format"] == "reasonedit-codebook" and meta["format_version"] == 2
    assert set(meta["setup"]) == {"model_type", "model_fingerprint", "vision_module", "scale", "text_encoder",
                                  "vision_dim", "text_dim"}
    assert meta["config"]["embedding"]["layer"] == "fake.vision.mlp"
    for f in path.rglob("*"):
        if f.is_file():
            assert f.suffix in (".safetensors", ".json", ".jsonl", ".png", "") or f.name in ("CURRENT", "LOCK")
            assert not f.read_bytes()[:2].startswith(b"\x80")  # pickle protocol header
    events = read_events(path / "audit.jsonl")
    assert [e.action for e in events] == ["added"] * 3
    assert events[0].who == "bob" and events[0].why == "initial" and events[2].who == "ana"
    assert events[2].why == "ticket 12" and events[0].entry_ids


def test_mismatched_setup_refused_with_fix(saved, text_encoder):
    _, path = saved
    with pytest.raises(CodebookMismatchError, match=r"scale: saved 30\.0, current 12\.0.*import_edits"):
        ReasonEditor.load(path, FakeVLM(), config=ReasonEditConfig(guard={"policy": "off"},
                                                                   embedding={"scale": 12}),
                          text_encoder=text_encoder)
    other = FakeVLM()
    torch.nn.init.constant_(other.model.weight, 0.25)
    with pytest.raises(CodebookMismatchError, match="model_fingerprint: saved"):
        ReasonEditor.load(path, other, text_encoder=text_encoder)
    with pytest.raises(CodebookMismatchError, match="vision_module"):
        load_codebook(path, {**read_meta(path)["setup"], "vision_module": "other.layer"})


def test_damage_is_detected(saved, tmp_path):
    _, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    snap = copy / (copy / "CURRENT").read_text().strip()
    entries = snap / "entries.json"
    entries.write_text(entries.read_text().replace("Vol", "Kem"))
    with pytest.raises(CodebookCorruptError, match="checksum"):
        load_codebook(copy)
    meta = json.loads((snap / "meta.json").read_text())
    meta["format_version"] = 99
    (snap / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ReasonEditError, match="format version 99.*Upgrade"):
        load_codebook(copy)
    with pytest.raises(ReasonEditError, match="no ReasonEdit codebook"):
        load_codebook(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    stored = load_codebook(path)
    with pytest.raises(ReasonEditError, match="not a ReasonEdit codebook"):
        save_codebook(tmp_path / "foreign", stored.codebook, stored.setup)


def test_load_takes_the_snapshot_save_returns_while_it_is_the_live_one(saved, text_encoder, tmp_path):
    path = tmp_path / "codebook"
    shutil.copytree(saved[1], path)  # (this test saves into it)
    snapshot = path / (path / "CURRENT").read_text().strip()
    loaded = ReasonEditor.load(snapshot, FakeVLM(), text_encoder=text_encoder)  # what save() returned
    assert state(loaded) == state(ReasonEditor.load(path, FakeVLM(), text_encoder=text_encoder))
    newer = loaded.save(path)  # the old snapshot is gone; a copy of it is not what the folder holds now
    assert newer != snapshot and not snapshot.exists()
    shutil.copytree(newer, snapshot)
    with pytest.raises(ReasonEditError, match="an older snapshot of the codebook folder .*give that folder"):
        ReasonEditor.load(snapshot, FakeVLM(), text_encoder=text_encoder)
    # elsewhere read_meta still names a snapshot for what it is
    with pytest.raises(ReasonEditError, match="one snapshot inside the codebook folder .*give that folder"):
        read_meta(newer)


def test_a_lock_free_reader_follows_a_snapshot_switched_under_it(saved, text_encoder, tmp_path, monkeypatch):
    """``read_meta`` takes no lock: a writer in another process may commit a new snapshot and remove the old
    one between its reading ``CURRENT`` and reading the folder CURRENT named. That is read again, not
    reported as damage; a live snapshot that is really missing its metadata still is."""
    from reasonedit_plugin import storage

    path = tmp_path / "codebook"
    shutil.copytree(saved[1], path)
    stale = (path / "CURRENT").read_text().strip()
    ReasonEditor.load(path, FakeVLM(), text_encoder=text_encoder).save(path)  # the writer: `stale` is removed
    live = (path / "CURRENT").read_text().strip()
    assert live != stale and not (path / stale).exists()

    real = storage._read_current
    calls = []

    def first_read_is_stale(root):  # CURRENT read just before the writer replaced it
        calls.append(root)
        return stale if len(calls) == 1 else real(root)

    monkeypatch.setattr(storage, "_read_current", first_read_is_stale)
    assert read_meta(path)["format"] == "reasonedit-codebook" and len(calls) == 2  # the snapshot's folder gone

    calls.clear()
    monkeypatch.setattr(storage, "_read_current", real)
    real_current = storage.current_snapshot

    def first_named_is_stale(root):  # named and present, then removed before its meta.json is read
        calls.append(root)
        return stale if len(calls) == 1 else real_current(root)

    monkeypatch.setattr(storage, "current_snapshot", first_named_is_stale)
    assert read_meta(path)["format"] == "reasonedit-codebook" and len(calls) == 2

    monkeypatch.setattr(storage, "current_snapshot", real_current)
    (path / live / "meta.json").unlink()
    with pytest.raises(CodebookCorruptError, match="meta.json is missing or unreadable"):
        read_meta(path)


def test_remove_is_audited_and_split_back(text_encoder, tmp_path):
    ed = make_editor(text_encoder, augment={"enabled": False})
    ed.edit(EDITS[:2])
    before = state(ed)
    # the same fact for the same image merges into the existing entries; removal splits it back
    ed.edit([rec("red2", RED, "Vol", "Red shapes belong to the Vol tribe.")], author="carl")
    assert any(len(e.edit_ids) > 1 for e in ed.codebook.entries.values())
    assert ed.audit.events("red2", "merged")
    ed.save(tmp_path / "cb")
    ed = ReasonEditor.load(tmp_path / "cb", FakeVLM(), text_encoder=text_encoder)
    info = {i.edit_id: i for i in ed.list_edits()}
    assert info["red2"].merged_entries and info["red2"].who == "carl" and info["red2"].has_raw_record
    ed.remove("red2")
    assert state(ed) == before
    ed.save(tmp_path / "cb")
    events = read_events(tmp_path / "cb" / "audit.jsonl")
    assert [(e.action, e.edit_id) for e in events][-1] == ("removed", "red2")
    assert len({e.id for e in events}) == len(events)  # saved twice, nothing appended twice
    again = ReasonEditor.load(tmp_path / "cb", FakeVLM(), text_encoder=text_encoder)
    assert again.edit_ids() == ["red", "blue"] and set(again.edit_records) == {"red", "blue"}
    assert len(list((tmp_path / "cb" / "images").iterdir())) == 2  # red2's image copy was collected
    assert len([p for p in (tmp_path / "cb").iterdir() if p.name.startswith("snapshot-")]) == 1


def test_export_import_same_setup_uses_keys(saved, text_encoder, tmp_path):
    ed, _ = saved
    ed.export_edits(["green", "red"], tmp_path / "module")
    assert read_meta(tmp_path / "module")["kind"] == "module"
    target = make_editor(text_encoder)
    target.edit([rec("other", pattern(5), "Kem", "The pattern is noisy. Noise belongs to Kem.")])
    report = target.import_edits(tmp_path / "module")
    assert report.imported == ["red", "green"] and not report.reembedded
    src = {c.value: c.key for e in ed.codebook.entries.values() for c in e.contributions if c.edit_id == "red"}
    dst = {c.value: c.key for e in target.codebook.entries.values() for c in e.contributions if c.edit_id == "red"}
    assert src.keys() == dst.keys() and all(torch.equal(src[k], dst[k]) for k in src)
    assert target.answer(RED, Q, ["Vol", "Kem", "Zib"]).text == "Vol"
    assert [e.action for e in target.audit.events("red")] == ["added", "imported"]  # its history comes along
    with pytest.raises(ReasonEditError, match="already exist"):
        target.import_edits(tmp_path / "module")
    assert target.edit_ids() == ["other", "red", "green"]
    with pytest.raises(ReasonEditError, match="unknown edits"):
        ed.export_edits(["nope"], tmp_path / "m2")


def test_import_reembeds_for_another_setup(saved, text_encoder, tmp_path):
    ed, _ = saved
    ed.export_edits(["red"], tmp_path / "module")
    other = make_editor(text_encoder, embedding={"scale": 5.0})
    with pytest.raises(CodebookMismatchError, match="scale"):
        other.import_edits(tmp_path / "module", reembed=False)
    assert other.edit_ids() == []
    report = other.import_edits(tmp_path / "module")
    assert report.reembedded and report.imported == ["red"]
    assert other.answer(RED, Q, ["Vol", "Kem", "Zib"]).text == "Vol"
    # without the raw records, re-embedding is impossible and says so
    bare = ReasonEditor.load(tmp_path / "module", FakeVLM(), text_encoder=text_encoder)
    bare.edit_records.clear()
    bare.export_edits(["red"], tmp_path / "bare")
    with pytest.raises(CodebookMismatchError, match="no raw record"):
        make_editor(text_encoder, embedding={"scale": 5.0}).import_edits(tmp_path / "bare")


def test_torn_audit_tail_and_leftovers_are_recovered(saved, text_encoder, tmp_path):
    _, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    with open(copy / "audit.jsonl", "ab") as fh:
        fh.write(b'{"seq": 9, "id": "torn", "ti')  # a crash in the middle of an append
    (copy / "snapshot-000099").mkdir()  # a crash between rename and commit
    (copy / ".tmp-snapshot-000100.abcd").mkdir()
    ed = ReasonEditor.load(copy, FakeVLM(), text_encoder=text_encoder)
    assert ed.edit_ids() == ["red", "blue", "green"]
    ed.remove("blue")
    ed.save(copy)
    events = read_events(copy / "audit.jsonl")
    assert [e.action for e in events] == ["added"] * 3 + ["removed"]
    assert [p.name for p in copy.iterdir() if p.name.startswith(("snapshot", ".tmp"))] == ["snapshot-000002"]


# ---------------------------------------------------------------------------------------------- format 2
def _as_format_1(path):
    """Rewrite a saved folder's live snapshot the way format 1 stored it (float32 keys, every contribution's
    key, one dict per entry, no neighbour lists), with matching checksums."""
    import numpy as np
    from safetensors.numpy import save as st_save

    cb = load_codebook(path).codebook
    snap = path / (path / "CURRENT").read_text().strip()
    rows, entries = [], []
    for eid, e in cb.entries.items():
        cs = []
        for c in e.contributions:
            cs.append({**c.to_dict(), "key_row": len(rows)})
            rows.append(c.key.numpy().astype(np.float32))
        entries.append({"id": eid, "radius": e.radius, "contributions": cs})
    blobs = {"keys.safetensors": st_save({"entry_ids": np.array(cb.entry_ids(), np.int64),
                                          "entry_keys": cb.keys().numpy(), "contribution_keys": np.stack(rows)}),
             "entries.json": json.dumps({"dim": cb.dim, "next_id": cb._next_id, "version": cb.version,
                                         "entries": entries}).encode()}
    _rewrite_files(snap, blobs, format_version=1)
    (snap / "MANIFEST.json").unlink()  # format 1 was written before manifests


def _rewrite_files(snap, blobs, **meta_fields):
    """Write ``blobs`` (file name -> bytes) into a snapshot with their checksums in its meta.json (as if
    saved that way, not damaged), and set ``meta_fields`` there."""
    import hashlib

    meta = json.loads((snap / "meta.json").read_text())
    for name, data in blobs.items():
        (snap / name).write_bytes(data)
        meta["files"][name] = hashlib.sha256(data).hexdigest()
    meta.update(meta_fields)
    (snap / "meta.json").write_text(json.dumps(meta))


def test_format_1_is_migrated_once_with_a_message(saved, text_encoder, tmp_path, caplog, monkeypatch):
    ed, path = saved
    old = tmp_path / "old"
    shutil.copytree(path, old)
    _as_format_1(old)
    with caplog.at_level("WARNING", logger="reasonedit_plugin.storage"):
        loaded = ReasonEditor.load(old, FakeVLM(), text_encoder=text_encoder)
    assert any("migrated from format 1 to 2" in r.message for r in caplog.records)
    assert read_meta(old)["format_version"] == 2
    assert state(loaded) == state(ed) and loaded.codebook.sigma_table() == ed.codebook.sigma_table()
    for image, question in QUERIES:
        a, b = ed.retrieve(image, question), loaded.retrieve(image, question)
        assert (a.accepted, a.entry_ids, a.scores, a.threshold) == (b.accepted, b.entry_ids, b.scores, b.threshold)
    # the second load reads the saved neighbour lists: no K-NN search at all
    from reasonedit_plugin import keystore

    monkeypatch.setattr(keystore.KeyStore, "search", lambda *a, **k: pytest.fail("load searched"))
    monkeypatch.setattr(keystore.KeyStore, "knn_all", lambda *a, **k: pytest.fail("load rebuilt the graph"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="reasonedit_plugin.storage"):
        again = load_codebook(old)
    assert not caplog.records and again.codebook.sigma_table() == ed.codebook.sigma_table()


def test_keys_are_float16_once_on_disk(saved):
    from safetensors.numpy import load as st_load

    _, path = saved
    snap = path / (path / "CURRENT").read_text().strip()
    arrays = st_load((snap / "keys.safetensors").read_bytes())
    assert str(arrays["entry_keys"].dtype) == "float16"
    assert arrays["contribution_keys"].shape[0] == len(arrays["c_entry"]) - len(arrays["entry_ids"])
    assert arrays["nbr"].dtype.name == "int32" and arrays["sigma"].shape == arrays["entry_ids"].shape


def test_a_load_checks_each_stored_key_for_nan_once(saved, tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import load as st_load, save as st_save

    from reasonedit_plugin import keystore, storage

    _, path = saved
    snap = path / (path / "CURRENT").read_text().strip()
    arrays = st_load((snap / "keys.safetensors").read_bytes())
    checked, real = [], keystore.all_finite

    def counted(a):
        checked.append(a.size)
        return real(a)

    monkeypatch.setattr(storage, "all_finite", counted)
    monkeypatch.setattr(keystore, "all_finite", counted)
    load_codebook(path)
    assert sum(checked) == arrays["entry_keys"].size + arrays["contribution_keys"].size
    # the one check still refuses a key array holding NaN (checksums matching: written that way, not damaged)
    from reasonedit_plugin.manifest import write_manifest

    copy = tmp_path / "nan"
    shutil.copytree(path, copy)
    snap = copy / (copy / "CURRENT").read_text().strip()
    arrays["entry_keys"] = arrays["entry_keys"].copy()
    arrays["entry_keys"][0, 0] = np.nan
    _rewrite_files(snap, {"keys.safetensors": st_save(arrays)})
    images = json.loads((snap / "MANIFEST.json").read_text())["images"]
    write_manifest(snap, copy, images)
    with pytest.raises(CodebookCorruptError, match="entry_keys holds NaN"):
        load_codebook(copy)


def test_eviction_of_never_retrieved_edits_is_off_by_default_and_audited(text_encoder, tmp_path):
    ed = make_editor(text_encoder, retrieval={"cap_keys": 1})
    ed.edit(EDITS, author="bob", reason="initial")
    ed.save(tmp_path / "a")
    assert sorted(ed.edit_ids()) == ["blue", "green", "red"]  # default: nothing evicted
    res = ed.retrieve(RED, Q)
    assert res.accepted
    used = {c for i in res.entry_ids for c in ed.codebook.entries[i].edit_ids}
    on = make_editor(text_encoder, codebook={"evict_unretrieved_after": 0.0})
    on._codebook, on.edit_records, on.audit = ed.codebook, ed.edit_records, ed.audit
    on.save(tmp_path / "b")
    assert set(on.edit_ids()) == used and 0 < len(used) < 3
    evicted = [e for e in read_events(tmp_path / "b" / "audit.jsonl") if e.action == "evicted"]
    assert {e.edit_id for e in evicted} == {"red", "blue", "green"} - used
    loaded = load_codebook(tmp_path / "b").codebook  # usage counts are saved with the codebook
    assert all(loaded.hits(loaded.entries_of(e)).sum() > 0 for e in used)
