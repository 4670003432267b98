"""Contrastive key tuning (retrieval.tuning: contrastive): identity start, InfoNCE that separates edits,
stored keys re-projected consistently through the codebook's public methods, versioned, saved, and old
codebooks still load."""

from __future__ import annotations

import pytest
import torch

from reasonedit_plugin.codebook import Codebook
from reasonedit_plugin.config import KeyTuningConfig, ReasonEditConfig
from reasonedit_plugin.data.split_files import load_split
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.hparams import resolve_model_name
from reasonedit_plugin.key_tuning import KeyTuner, ProjectedKeys, RawKeys
from reasonedit_plugin.records import make_records
from reasonedit_plugin.vlm import VLM


@pytest.fixture(scope="module")
def vlm():
    return VLM.from_pretrained(resolve_model_name("package://tiny-qwen2-vl-shapes"))


@pytest.fixture(scope="module")
def records():
    return make_records(load_split("small")[:5])


def _config(**tuning):
    return ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, embedding={"scale": 3.0},
                            retrieval={"tuning": "contrastive", "cap_keys": 7},
                            key_tuning={"steps": 30, "lr": 0.01, **tuning})


def _clusters(seed=0, n=6, d=8):
    """n edits whose augmented copies are noisy, and whose keys differ only in a few dimensions."""
    g = torch.Generator().manual_seed(seed)
    tuner = KeyTuner(d, KeyTuningConfig(steps=150, lr=0.02, identity_weight=0.01), seed=0)
    for i in range(n):
        centre = torch.zeros(d)
        centre[i % 3] = 1.0 + i // 3
        keys = centre + 0.05 * torch.randn(2, d, generator=g)
        keys[:, 3:] = 2.0 * torch.randn(2, d - 3, generator=g)  # nuisance dimensions
        aug = keys.clone()
        aug[:, 3:] = 2.0 * torch.randn(2, d - 3, generator=g)
        tuner.stage(f"e{i}", RawKeys(keys, aug, torch.zeros(0, d), 1.0, ["answer", "reasoning"], [f"a{i}", f"r{i}"]))
        tuner.commit([f"e{i}"])
    return tuner


def _margin(tuner):
    """Mean (nearest other-edit distance - positive distance) over anchors, projected keys."""
    margins = []
    ids = sorted(tuner.raw)
    for e in ids:
        r = tuner.raw[e]
        others = torch.cat([tuner.project(tuner.raw[o].keys) for o in ids if o != e])
        a, p = tuner.project(r.keys), tuner.project(r.aug)
        margins.append((torch.cdist(a, others).min(1).values - (a - p).norm(dim=1)).mean())
    return float(torch.stack(margins).mean())


def test_infonce_pulls_augmented_copies_in_and_pushes_other_edits_out():
    tuner = _clusters()
    assert torch.equal(tuner.projection, torch.eye(8))
    before = _margin(tuner)
    tuner.train()
    assert tuner.version == 1
    assert _margin(tuner) > before + 0.5
    again = _clusters()
    again.train()
    assert torch.equal(again.projection, tuner.projection)  # deterministic with the seed


def test_identity_start_stores_the_raw_keys(vlm, records, text_encoder):
    plain = ReasonEditor(vlm, _config().replace(retrieval={"tuning": "off"}), text_encoder=text_encoder)
    tuned = ReasonEditor(vlm, _config(), text_encoder=text_encoder)
    assert isinstance(tuned.keys, ProjectedKeys)
    plain.edit(records[:1])
    tuned.edit(records[:1])  # one edit: nothing to contrast yet, P stays I
    assert tuned.keys.tuner.version == 0
    assert torch.allclose(plain.codebook.keys(), tuned.codebook.keys())


def test_stored_keys_are_reprojected_consistently(vlm, records, text_encoder):
    editor = ReasonEditor(vlm, _config(), text_encoder=text_encoder)
    editor.edit(records[:4])
    tuner = editor.keys.tuner
    assert tuner.version >= 1 and not torch.equal(tuner.projection, torch.eye(tuner.dim))
    cb = editor.codebook
    for entry in cb.entries.values():
        for c in entry.contributions:
            raw = tuner.raw[c.edit_id]
            row = raw.values.index(c.value)
            assert raw.kinds[row] == c.kind
            assert torch.equal(c.key, tuner.project(raw.keys)[row].half().float())  # keys are stored in float16
            assert abs(c.radius - tuner.radii(raw)[row]) < 1e-4
    # the hubness table and index follow the projected keys: equal to a fresh rebuild
    fresh = Codebook(cb.dim, cb.config, cb.retrieval)
    for e in cb.edit_ids():
        contribs = [x for i in sorted(cb.entries) for x in cb.entries[i].contributions if x.edit_id == e]
        from reasonedit_plugin.codebook import PendingEntry

        fresh.add_edit(e, [PendingEntry(x.kind, x.value, x.key, x.radius) for x in contribs])
    assert len(fresh.sigma_table()) == len(cb.sigma_table())
    assert sorted(round(v, 4) for v in fresh.sigma_table().values()) == \
        sorted(round(v, 4) for v in cb.sigma_table().values())
    # queries are projected too: the edited question retrieves its own answer entry
    r = records[0]
    retrieval = editor.retrieve(r.image, r.prompt)
    assert retrieval.accepted and any(r.target in f for f in retrieval.facts)


def test_tuning_is_saved_and_old_codebooks_still_load(vlm, records, text_encoder, tmp_path):
    editor = ReasonEditor(vlm, _config(), text_encoder=text_encoder)
    editor.edit(records[:3])
    editor.save(tmp_path / "tuned")
    loaded = ReasonEditor.load(tmp_path / "tuned", vlm, text_encoder=text_encoder)
    assert loaded.keys.tuner.version == editor.keys.tuner.version
    assert torch.equal(loaded.keys.tuner.projection, editor.keys.tuner.projection)
    r = records[1]
    assert loaded.retrieve(r.image, r.prompt).facts == editor.retrieve(r.image, r.prompt).facts

    old = ReasonEditor(vlm, _config().replace(retrieval={"tuning": "off"}), text_encoder=text_encoder)
    old.edit(records[:2])
    old.save(tmp_path / "old")
    upgraded = ReasonEditor.load(tmp_path / "old", vlm, config=_config(), text_encoder=text_encoder)
    assert upgraded.keys.tuner.version == 0 and torch.equal(upgraded.keys.tuner.projection,
                                                            torch.eye(upgraded.keys.tuner.dim))
    assert upgraded.retrieve(r.image, r.prompt).facts == old.retrieve(r.image, r.prompt).facts
    upgraded.edit(records[2:4])  # new edits are tuned; the old ones keep their keys (no raw keys saved)
    assert set(upgraded.codebook.edit_ids()) == {x.id for x in records[:4]}


def test_remove_forgets_raw_keys(vlm, records, text_encoder):
    editor = ReasonEditor(vlm, _config(), text_encoder=text_encoder)
    editor.edit(records[:3])
    editor.remove(records[1].id)
    assert records[1].id not in editor.keys.tuner.raw
    assert records[1].id not in editor.codebook.edit_ids()


def test_rekey_pairs_keys_with_their_values_when_an_entry_merged_into_an_older_one():
    """An edit whose second entry merged into an older edit's entry: re-keying must still give every
    value its own key (entry-id order differs from the edit's own order here)."""
    from reasonedit_plugin.codebook import PendingEntry

    a, b = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 5.0, 0, 0])
    cb = Codebook(4)
    tuner = KeyTuner(4, KeyTuningConfig())
    edits = {"e0": (["answer"], ["x"], torch.stack([a])),
             "e1": (["answer", "reasoning"], ["y", "x2"], torch.stack([b, a + 0.001]))}
    for e, (kinds, values, keys) in edits.items():
        raw = RawKeys(keys, keys + 0.5, torch.zeros(0, 4), 1.0, kinds, values)
        tuner.stage(e, raw)
        tuner.commit([e])
        cb.add_edit(e, [PendingEntry(k, v, key, r) for k, v, key, r in zip(kinds, values, keys, tuner.radii(raw))])
    assert len(cb) == 2  # "x2" merged into the entry of "x"
    tuner.projection = torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0]))
    tuner.rekey(cb)
    for entry in cb.entries.values():
        for c in entry.contributions:
            raw = tuner.raw[c.edit_id]
            assert torch.equal(c.key, tuner.project(raw.keys)[raw.values.index(c.value)].half().float())  # float16 store
