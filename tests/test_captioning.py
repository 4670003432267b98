"""Caption edits (captioning.py): E-IC records, fusion into the captioning prompt, EasyEdit's caption
token accuracy and the paper's metrics, through the engine and the command line, on tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fakes import pattern
from reasonedit_plugin import captioning
from reasonedit_plugin.captioning import (CAPTION_PROMPT, CaptionProbe, CaptionResult, caption_records,
                                          caption_split, evaluate_captions, load_caption_records)
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import RecordError
from reasonedit_plugin.evaluation import token_accuracy, vlm_teacher_forced
from reasonedit_plugin.scoring import TokenScores
from reasonedit_plugin.vlm import VLM
from tiny_models import build_or_skip

RATIONALE = "The shape in the picture is a red circle. Red circles belong to the Vol tribe."
TARGET = "A red circle of the Vol tribe."


def eic_row(**over):
    row = {"id": "c1", "image": pattern(1, size=64), "src": "Describe this image.", "alt": TARGET,
           "pred": "A red circle.", "rephrase": "What does this image show?", "image_rephrase": pattern(1, size=64),
           "loc": "What is the capital of France?", "loc_ans": "Paris", "m_loc": pattern(7, size=64),
           "m_loc_q": "Describe this image.", "m_loc_a": "A blue square.", "rationale": RATIONALE}
    row.update(over)
    return row


def test_eic_fields_map_onto_edit_records(tmp_path: Path) -> None:
    (r,) = caption_records([eic_row()])
    assert (r.prompt, r.target, r.rephrase_prompt) == ("Describe this image.", TARGET, "What does this image show?")
    assert (r.locality_prompt, r.locality_ground_truth) == ("What is the capital of France?", "Paris")
    assert (r.multimodal_locality_prompt, r.multimodal_locality_ground_truth) == (CAPTION_PROMPT, "A blue square.")
    assert r.meta == {"pred": "A red circle."}
    assert r.rationale == ["The shape in the picture is a red circle.", "Red circles belong to the Vol tribe."]
    assert caption_records([eic_row(alt="")]) == []  # EasyEdit skips empty targets
    (plain,) = caption_records([{"id": "p", "image": pattern(1, size=64), "target": "A red circle."}])
    assert plain.prompt == CAPTION_PROMPT
    with pytest.raises(RecordError, match="both 'alt'"):
        caption_records([eic_row(target="x")])
    # paths as EasyEdit's CaptionDataset: image / m_loc under coco_image, image_rephrase under rephrase_image
    for name, seed in (("a.png", 1), ("b.png", 2), ("rephrased/c.png", 3)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        pattern(seed, size=32).save(tmp_path / name)
    path = tmp_path / "caps.json"
    path.write_text(json.dumps([{"image": "a.png", "alt": "A red circle.", "image_rephrase": "c.png",
                                 "m_loc": "b.png", "m_loc_a": "A blue square.", "rationale": "It is red."}]))
    (r,) = load_caption_records(path, rephrase_root=tmp_path / "rephrased")
    assert Path(r.image) == tmp_path / "a.png" and Path(r.image_rephrase) == tmp_path / "rephrased" / "c.png"
    assert Path(r.multimodal_locality_image) == tmp_path / "b.png" and r.multimodal_locality_prompt == CAPTION_PROMPT


@pytest.fixture(scope="module")
def vlm() -> VLM:
    model, processor = build_or_skip("qwen2_vl")
    return VLM(model, processor)


def test_caption_token_accuracy_is_easyedits(vlm: VLM) -> None:
    """TokenScores.accuracy == EasyEdit's teacher-forced token accuracy (evaluation.token_accuracy) on the
    same prompt and caption; the top-10 ids are those of the same logits."""
    image = pattern(3, size=64)
    (scores,) = vlm.token_scores(image, CAPTION_PROMPT, [TARGET])
    tf = vlm_teacher_forced(vlm, image, CAPTION_PROMPT, TARGET)
    assert scores.accuracy == pytest.approx(token_accuracy(tf.logits, tf.labels))
    n = len(scores.targets)
    expected_top = torch.topk(tf.logits[-n - 1:-1], k=10, dim=-1).indices
    assert torch.equal(scores.top_ids, expected_top)
    assert torch.equal(scores.targets, tf.labels[-n:])


def test_caption_edit_through_the_engine(vlm: VLM, text_encoder) -> None:
    cfg = ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, max_new_tokens=3)
    editor = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    before = vlm.token_scores(pattern(1, size=64), CAPTION_PROMPT, [TARGET])[0]
    edited, unedited = evaluate_captions(editor, caption_records([eic_row()]), max_new_tokens=3)
    assert edited.edited == ["c1"] and editor.edit_ids() == ["c1"]
    rel = next(p for p in edited.probes if p.kind == "rel")
    assert rel.retrieved and "Red circles belong to the Vol tribe." in rel.prompt
    assert rel.prompt.endswith(CAPTION_PROMPT)
    assert {p.kind for p in edited.probes} == {"rel", "tgen", "igen", "loc"}
    assert {p.kind for p in unedited.probes} == {"rel", "tgen", "igen"}
    u_rel = next(p for p in unedited.probes if p.kind == "rel")
    assert u_rel.prompt == CAPTION_PROMPT and u_rel.token_accuracy == pytest.approx(before.accuracy)
    for key in ("rewrite_acc", "rephrase_acc", "image_rephrase_acc", "multimodal_locality_acc"):
        assert 0.0 <= edited.easyedit[key] <= 1.0
    loc = next(p for p in edited.probes if p.kind == "loc")
    assert loc.retrieved == editor.retrieve(pattern(7, size=64), CAPTION_PROMPT).accepted
    assert loc.prompt == editor.fused_question(CAPTION_PROMPT, editor.retrieve(pattern(7, size=64), CAPTION_PROMPT))
    editor.remove("c1")
    again = vlm.token_scores(pattern(1, size=64), editor.fused_question(
        CAPTION_PROMPT, editor.retrieve(pattern(1, size=64), CAPTION_PROMPT)), [TARGET])[0]
    assert torch.equal(again.logprobs, before.logprobs)


def _probe(kind: str, acc: float, correct: bool, top10: float | None = None) -> CaptionProbe:
    return CaptionProbe(kind, "r", "p", "t", "g", acc, correct, True, top10)


def test_caption_metric_aggregation() -> None:
    result = CaptionResult("ReasonEdit", ["a", "b"], [], [
        _probe("rel", 1.0, True), _probe("rel", 0.5, False), _probe("tgen", 0.5, True), _probe("igen", 0.25, False),
        _probe("igen", 0.75, True), _probe("loc", 0.0, True, 0.8), _probe("loc", 0.0, False, 0.6)])
    assert result.easyedit == pytest.approx({"rewrite_acc": 0.75, "rephrase_acc": 0.5, "image_rephrase_acc": 0.5,
                                             "multimodal_locality_acc": 0.7})
    p = result.paper
    assert (p["reliability"], p["t_gen"], p["i_gen"], p["locality"]) == (0.5, 1.0, 0.5, 0.5)
    assert p["generality"] == pytest.approx(2 / 3)
    assert p["overall_hm"] == pytest.approx(3 / (2 + 1.5 + 2))
    assert TokenScores(torch.tensor([1, 2]), torch.tensor([-1.0, -2.0]), torch.tensor([1, 3]),
                       torch.zeros(2, 10)).accuracy == 0.5
    row = captioning.table_rows([result])[0]
    assert list(row) == list(captioning.TABLE_COLUMNS)
    assert (row["method"], row["edits"], row["Rel."], row["multimodal_locality_acc"]) == ("ReasonEdit", "2", "50.0", "70.0")
    assert "| ReasonEdit | 2 | 50.0 | 100.0 | 50.0 | 50.0 |" in captioning.results_table([result])


def test_caption_split_needs_the_rationale() -> None:
    records = caption_split(4, seed=0)
    assert len({r["id"] for r in records}) == 4
    for r in records:
        tribe = r["target"].split(" of the ")[1]
        assert tribe in r["rationale"] and tribe.split()[0] not in r["multimodal_locality_ground_truth"]
        assert r["image"] != r["image_rephrase"] != r["multimodal_locality_image"]
    assert caption_split(4, seed=0) == records and caption_split(4, seed=1) != records


def test_caption_command(tmp_path: Path, vlm: VLM) -> None:
    from reasonedit_plugin.cli import main

    folder = tmp_path / "tiny-qwen2-vl"
    vlm.model.save_pretrained(folder)
    vlm.processor.save_pretrained(folder)
    hp = tmp_path / "hp.yaml"
    hp.write_text(f"alg_name: ReasonEdit\nmodel_name: {folder}\nmax_new_tokens: 3\nguard: {{policy: 'off'}}\n")
    for i, seed in enumerate((1, 2, 7)):
        pattern(seed, size=64).save(tmp_path / f"{i}.png")
    (tmp_path / "caps.jsonl").write_text(json.dumps(
        {"id": "c1", "image": "0.png", "src": CAPTION_PROMPT, "alt": TARGET, "rephrase": "What does this image show?",
         "image_rephrase": "1.png", "m_loc": "2.png", "m_loc_q": CAPTION_PROMPT, "m_loc_a": "A blue square.",
         "rationale": RATIONALE}) + "\n")
    out = tmp_path / "run"
    assert main(["-q", "caption", "--hparams", str(hp), "--edits", str(tmp_path / "caps.jsonl"),
                 "--max-new-tokens", "3", "--out", str(out)]) == 0
    data = json.loads((out / "caption_results.json").read_text())
    assert [r["method"] for r in data["results"]] == ["ReasonEdit", "unedited"]
    assert "rewrite_acc" in (out / "caption_report.md").read_text()


@pytest.mark.parametrize("family", ["blip", "paligemma", "mllama", "idefics"])
def test_caption_edits_on_other_families(family: str, text_encoder) -> None:
    """The caption path on an encoder-decoder (BLIP), a prefix-LM (PaliGemma) and the cross-attention
    families (Mllama, IDEFICS): token accuracy equals the scorer's, facts fused into the caption prompt."""
    model, processor = build_or_skip(family)
    vlm = VLM(model, processor)
    editor = ReasonEditor(vlm, ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, max_new_tokens=2),
                          text_encoder=text_encoder)
    edited, unedited = evaluate_captions(editor, caption_records([eic_row()]), max_new_tokens=2)
    rel = next(p for p in edited.probes if p.kind == "rel")
    assert rel.retrieved and "Vol tribe" in rel.prompt
    (scores,) = vlm.token_scores(pattern(1, size=64), rel.prompt, [TARGET])
    assert rel.token_accuracy == scores.accuracy
    assert unedited.easyedit["rewrite_acc"] is not None and edited.paper["overall_hm"] is not None


def test_caption_locality_images_are_of_combinations_no_record_edits() -> None:
    records = caption_split(12, seed=0)
    edited = {" ".join(r["target"].split()[1:3]) for r in records}
    assert len(edited) == 12
    for r in records:
        plain = r["multimodal_locality_ground_truth"].rstrip(".").split(maxsplit=1)[1]
        assert plain not in edited, (plain, sorted(edited))
