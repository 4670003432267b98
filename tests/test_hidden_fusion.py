"""Hidden-state fusion (fusion.kind hidden_bias / gated) on the shipped tiny model and tiny configs of other
families: the hook changes only what it should, is always removed, and the base model stays bit-identical."""

from __future__ import annotations

import pytest
import torch

from fakes import pattern
from reasonedit_plugin.config import FusionConfig, ReasonEditConfig
from reasonedit_plugin.data.split_files import load_split
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.hidden_fusion import HiddenFusion
from reasonedit_plugin.hooks import edit_hidden_states, hook_count
from reasonedit_plugin.hparams import resolve_model_name
from reasonedit_plugin.records import make_records
from reasonedit_plugin.vlm import VLM
from tiny_models import build_or_skip

QUESTION = "How many points does this circle score?"


@pytest.fixture(scope="module")
def vlm():
    return VLM.from_pretrained(resolve_model_name("package://tiny-qwen2-vl-shapes"))


@pytest.fixture(scope="module")
def records():
    return make_records(load_split("small")[:6])


def _logits(vlm, image, question):
    inputs = vlm.build_inputs([image], [question])
    with torch.inference_mode():
        return vlm.model(**inputs).logits


def _config(**fusion):
    return ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, retrieval={"cap_keys": 7},
                            embedding={"scale": 3.0}, fusion={"kind": "hidden_bias", "layer": 0, "scale": 3.0,
                                                              **fusion})


def test_zero_bias_gives_identical_logits_and_remove_restores_the_model(vlm, records):
    image = records[0].image
    before = _logits(vlm, image, QUESTION)
    fusion = HiddenFusion(vlm, FusionConfig(kind="hidden_bias", layer=0, scale=5.0))
    fusion.store.put("a zero fact", torch.zeros(vlm.model.config.text_config.hidden_size))
    with fusion.apply(QUESTION, ["a zero fact"]):
        assert hook_count(vlm.model) == 2
        zero = _logits(vlm, image, QUESTION)
    assert torch.equal(zero, before)
    with fusion.apply(QUESTION, ["Each brown circle scores nine points."]):
        biased = _logits(vlm, image, QUESTION)
    assert biased.shape == before.shape  # the sequence length never changes
    assert not torch.equal(biased, before)
    assert hook_count(vlm.model) == 0
    assert torch.equal(_logits(vlm, image, QUESTION), before)


def test_hooks_are_removed_when_an_exception_passes_through(vlm, records):
    fusion = HiddenFusion(vlm, FusionConfig(kind="hidden_bias", layer=1, scale=1.0))
    with pytest.raises(RuntimeError):
        with fusion.apply(QUESTION, ["Each brown circle scores nine points."]):
            raise RuntimeError("boom")
    assert hook_count(vlm.model) == 0


def test_bias_lands_only_on_the_chosen_positions(vlm, records):
    """With positions=question only the question's token rows of the block output change."""
    inputs = vlm.build_inputs([records[0].image], [QUESTION])
    fusion = HiddenFusion(vlm, FusionConfig(kind="hidden_bias", layer=0, scale=2.0, positions="question"))
    fusion.store.put("f", torch.ones(vlm.model.config.text_config.hidden_size))
    seen = {}

    def record(hidden, ids):
        seen.setdefault("h", []).append(hidden.clone())
        return hidden

    with torch.inference_mode():
        with fusion.apply(QUESTION, ["f"]), edit_hidden_states(vlm.model, fusion.block, record):
            vlm.model(**inputs)
        with edit_hidden_states(vlm.model, fusion.block, record):
            vlm.model(**inputs)
    biased, plain = seen["h"]
    changed = (biased - plain).abs().sum(-1)[0] > 0
    mask = fusion.question_mask(inputs["input_ids"], QUESTION)[0]
    assert int(mask.sum()) == len(vlm.tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    assert torch.equal(changed, mask)
    assert torch.allclose((biased - plain)[0, mask], torch.full_like(biased[0, mask], 2.0))


def test_engine_answers_with_the_bare_question_and_facts_as_a_bias(vlm, records, text_encoder):
    editor = ReasonEditor(vlm, _config(), text_encoder=text_encoder)
    r = records[0]
    editor.edit([r])
    assert all(v in editor.hidden.store for e in editor.codebook.entries.values() for v in e.values)
    answer = editor.answer(r.image, r.prompt, r.choices)
    assert answer.retrieval.accepted
    assert answer.question == r.prompt  # nothing in the prompt: the facts went in as a bias
    assert answer.prompt == vlm.prompt_text(r.prompt)
    biased = answer.option_nll
    plain = dict(zip(r.choices, vlm.option_nll(r.image, r.prompt, list(r.choices))))
    assert biased != plain
    assert hook_count(vlm.model) == 0


def test_layer_out_of_range_names_the_valid_ones(vlm):
    blocks = vlm.spec.num_lm_blocks(vlm.model.config)  # (the shipped model's decoder depth)
    with pytest.raises(ConfigError, match=rf"has {blocks} blocks \(0\.\.{blocks - 1}\)"):
        HiddenFusion(vlm, FusionConfig(kind="hidden_bias", layer=blocks + 4))
    with pytest.raises(ConfigError, match="positions"):
        FusionConfig(positions="everywhere")


def test_gate_is_deterministic_trained_and_saved_with_the_codebook(vlm, records, text_encoder, tmp_path):
    cfg = _config(gate_steps=60).replace(fusion={"kind": "gated"})
    a = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    b = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    for editor in (a, b):
        editor.edit(records[:3])
    ga, gb = a.hidden.gate, b.hidden.gate
    assert ga.rounds == 1 and len(a.learning_seconds) == 1 and a.learning_seconds[0] > 0
    for (name, p), (_, q) in zip(ga.gate.state_dict().items(), gb.gate.state_dict().items()):
        assert torch.equal(p, q), name
    # trained: the gate opens more for the edits' own questions than for their null probes
    h, v, y = ga._dataset()
    g = torch.stack([ga.gates(h[i:i + 1], v[i:i + 1])[0, 0] for i in range(len(y))])
    assert g[y > 0.5].mean() > g[y < 0.5].mean() + 0.2

    path = a.save(tmp_path / "cb")
    meta_files = (path / "meta.json").read_text()
    for name in ("fusion_vectors.safetensors", "fusion_gate.safetensors", "fusion_gate.json"):
        assert name in meta_files  # covered by the snapshot's checksums
    loaded = ReasonEditor.load(tmp_path / "cb", vlm, text_encoder=text_encoder)
    assert loaded.config.fusion.kind == "gated"
    for (name, p), (_, q) in zip(ga.gate.state_dict().items(), loaded.hidden.gate.gate.state_dict().items()):
        assert torch.equal(p, q), name
    assert loaded.hidden.store.vectors.keys() == a.hidden.store.vectors.keys()
    r = records[0]
    assert loaded.answer(r.image, r.prompt, r.choices).option_nll == a.answer(r.image, r.prompt, r.choices).option_nll


def test_a_prompt_fusion_codebook_loads_into_hidden_fusion(vlm, records, text_encoder, tmp_path):
    base = ReasonEditor(vlm, _config().replace(fusion={"kind": "prompt"}), text_encoder=text_encoder)
    base.edit(records[:2])
    base.save(tmp_path / "old")
    editor = ReasonEditor.load(tmp_path / "old", vlm, config=_config(), text_encoder=text_encoder)
    assert not editor.hidden.store.vectors  # nothing saved: facts are encoded on use
    r = records[0]
    answer = editor.answer(r.image, r.prompt, r.choices)
    assert answer.retrieval.accepted and answer.question == r.prompt
    assert editor.hidden.store.vectors


def test_remove_forgets_the_edit(vlm, records, text_encoder):
    editor = ReasonEditor(vlm, _config(gate_steps=20).replace(fusion={"kind": "gated"}), text_encoder=text_encoder)
    editor.edit(records[:2])
    editor.remove(records[0].id)
    assert records[0].id not in editor.hidden.gate.examples
    remaining = {v for e in editor.codebook.entries.values() for v in e.values}
    assert all(v in editor.hidden.store for v in remaining)
    assert len(editor.hidden.store.vectors) == len(remaining)


@pytest.mark.parametrize("family", ["llava", "idefics3", "instructblip", "gemma3"])
def test_other_families_bias_their_language_model_and_restore_it(family, text_encoder):
    model, processor = build_or_skip(family)
    vlm = VLM(model, processor)
    cfg = ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, max_new_tokens=2,
                           fusion={"kind": "hidden_bias", "layer": -1, "scale": 4.0})
    editor = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    image = pattern(1, size=64)
    question = "Which tribe owns the shape in this image?"
    editor.edit([{"id": "e1", "image": image, "prompt": question, "target": "Vol", "choices": ["Vol", "Kem"],
                  "rationale": "The shape is a red circle. Red circles belong to the Vol tribe."}])
    assert editor.hidden.block == vlm.spec.lm_block_path(vlm.spec.num_lm_blocks(model.config) - 1)
    plain = vlm.option_nll(image, question, ["Vol", "Kem"])
    answer = editor.answer(image, question, ["Vol", "Kem"])
    assert answer.retrieval.accepted and answer.prompt == vlm.prompt_text(question)
    assert list(answer.option_nll.values()) != plain
    assert hook_count(model) == 0
    assert vlm.option_nll(image, question, ["Vol", "Kem"]) == plain
