"""Benchmark loaders (``dataset_loaders.py``): small files written here in EasyEdit's E-VQA / E-IC JSON and
in RationaleVQA's record format, mapped to edit records; one clear error per missing field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from reasonedit_plugin.dataset_loaders import DATASET_FORMATS, load_dataset
from reasonedit_plugin.errors import ConfigError, RecordError


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    for name, colour in (("val2014/a.jpg", "red"), ("val2014/b.jpg", "blue"), ("val2014/c.jpg", "green"),
                         ("000000000042.jpg", "white"), ("7.png", "black")):
        Image.new("RGB", (8, 8), colour).save(root / name)
    return root


def evqa_row(**changes):
    row = {"src": "What colour is the bus?", "pred": "red", "alt": "blue", "rephrase": "Which colour has the bus?",
           "image": "val2014/a.jpg", "image_rephrase": "val2014/b.jpg", "loc": "Capital of France?",
           "loc_ans": "Paris", "m_loc": "val2014/c.jpg", "m_loc_q": "What is on the table?", "m_loc_a": "a cup"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def write(path: Path, rows, jsonl: bool = False) -> Path:
    text = "\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    return path


def test_evqa_maps_every_easyedit_field(images, tmp_path):
    path = write(tmp_path / "vqa_eval.json", [evqa_row(), evqa_row(alt=""), evqa_row(src="Second?", rationale="Why.")])
    records = load_dataset("evqa", path, image_root=images)
    assert len(records) == 2  # the empty 'alt' is skipped, as EasyEdit's VQADataset does
    r = records[0]
    assert (r.prompt, r.target, r.rephrase_prompt) == ("What colour is the bus?", "blue", "Which colour has the bus?")
    assert r.image == str(images / "val2014/a.jpg") and r.image_rephrase == str(images / "val2014/b.jpg")
    assert (r.locality_prompt, r.locality_ground_truth) == ("Capital of France?", "Paris")
    assert r.multimodal_locality_image == str(images / "val2014/c.jpg")
    assert (r.multimodal_locality_prompt, r.multimodal_locality_ground_truth) == ("What is on the table?", "a cup")
    assert r.meta["pred"] == "red" and r.rationale == [] and records[1].rationale == ["Why."]
    assert records[0].id != records[1].id


def test_eic_with_separate_rephrase_root(images, tmp_path):
    other = tmp_path / "rephrase"
    other.mkdir()
    Image.new("RGB", (8, 8), "grey").save(other / "r.jpg")
    path = write(tmp_path / "caption_eval.jsonl", [evqa_row(src="a photo of", alt="two dogs on a sofa",
                                                            image_rephrase="r.jpg")], jsonl=True)
    (r,) = load_dataset("eic", path, image_root=images, rephrase_root=other)
    assert (r.prompt, r.target, r.meta["source"]) == ("a photo of", "two dogs on a sofa", "eic")
    assert r.image_rephrase == str(other / "r.jpg")


@pytest.mark.parametrize("kind, field, meaning", [("evqa", "src", "the question"), ("evqa", "alt", "the new answer"),
                                                  ("evqa", "image", "the image path"),
                                                  ("eic", "alt", "the new caption")])
def test_easyedit_missing_field_is_named(images, tmp_path, kind, field, meaning):
    path = write(tmp_path / "d.json", [evqa_row(), evqa_row(**{field: None})])
    with pytest.raises(RecordError, match=rf"record #1 of d.json has no '{field}' \({meaning}\)"):
        load_dataset(kind, path, image_root=images)


def test_easyedit_locality_fields_come_together(images, tmp_path):
    path = write(tmp_path / "d.json", [evqa_row(m_loc_a=None)])
    with pytest.raises(RecordError, match="has m_loc, m_loc_q but not m_loc_a"):
        load_dataset("evqa", path, image_root=images)
    path = write(tmp_path / "e.json", [evqa_row(loc=None, loc_ans=None, m_loc=None, m_loc_q=None, m_loc_a=None)])
    (r,) = load_dataset("evqa", path, image_root=images)  # locality is optional as a whole
    assert r.locality_prompt is None and r.multimodal_locality_image is None


def rvqa_row(**changes):
    row = {"uid": "aok-1", "image_id": 42, "question": "What is the man holding?", "answer": "umbrella",
           "rationale": ["It is raining.", "He keeps dry under it."],
           "choices": ["umbrella", "bat", "kite", "phone"], "idx_choices": 0}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


def test_rationalevqa_maps_question_answer_rationale_and_image_id(images, tmp_path):
    path = write(tmp_path / "aokvqa_val.jsonl",
                 [rvqa_row(), rvqa_row(uid="fvqa-2", image_id=None, image_path="7.png", answer=2, idx_choices=None)],
                 jsonl=True)
    first, second = load_dataset("rationalevqa", path, image_root=images)
    assert (first.id, first.prompt, first.target) == ("aok-1", "What is the man holding?", "umbrella")
    assert first.image == str(images / "000000000042.jpg")  # COCO 2017's zero-padded file name
    assert first.rationale == ["It is raining.", "He keeps dry under it."]
    assert first.choices == ["umbrella", "bat", "kite", "phone"]
    assert second.image == str(images / "7.png") and second.target == "kite"  # an index into choices


@pytest.mark.parametrize("field, match", [("question", "has no 'question' \\(the question\\)"),
                                          ("answer", "has no 'answer'"),
                                          ("rationale", "has no 'rationale' \\(the human rationale"),
                                          ("image_id", "has no 'image_path' / 'image' / 'image_id'")])
def test_rationalevqa_missing_field_is_named(images, tmp_path, field, match):
    path = write(tmp_path / "r.json", [rvqa_row(**{field: None})])
    with pytest.raises(RecordError, match=match):
        load_dataset("rationalevqa", path, image_root=images)


def test_rationalevqa_unknown_image_id_says_where_it_looked(images, tmp_path):
    path = write(tmp_path / "r.json", [rvqa_row(image_id=99)])
    with pytest.raises(RecordError, match=r"image_id '99' names no file .*000000000099.jpg.*--image-root"):
        load_dataset("rationalevqa", path, image_root=images)


def test_file_and_format_errors(images, tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset format 'evq'.*Did you mean 'evqa'"):
        load_dataset("evq", tmp_path / "x.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("evqa", tmp_path / "missing.json", image_root=images)
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_dataset("evqa", tmp_path / "bad.json", image_root=images)
    path = write(tmp_path / "d.json", [evqa_row(image="val2014/nope.jpg")])
    with pytest.raises(RecordError, match="does not exist"):
        load_dataset("evqa", path, image_root=images)
    with pytest.raises(ConfigError, match="image root"):
        load_dataset("evqa", path, image_root=tmp_path / "no-such-folder")
    assert set(DATASET_FORMATS) == {"evqa", "eic", "rationalevqa"}


def test_limit_and_data_wrapper(images, tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"data": [evqa_row(), evqa_row(src="B?"), evqa_row(src="C?")]}), encoding="utf-8")
    assert [r.prompt for r in load_dataset("evqa", path, image_root=images, limit=2)] == ["What colour is the bus?",
                                                                                          "B?"]


@pytest.mark.slow  # ~1.5 min on 2 shared cores: loads the embedded model and the text encoder
def test_cli_eval_on_a_rationalevqa_file(tmp_path):
    """`reasonedit eval --dataset rationalevqa PATH --image-root DIR` on the embedded model (ShapeRules edits
    written in RationaleVQA's format, images named by path under the easy-vqa root)."""
    try:
        from reasonedit_plugin.data.shaperules import easy_vqa_root
        from reasonedit_plugin.data.split_files import load_split

        rows, root = load_split("small")[:3], easy_vqa_root()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")
    from reasonedit_plugin.cli import main

    path = write(tmp_path / "rvqa.jsonl", [{"uid": r["id"], "question": r["prompt"], "answer": r["target"],
                                            "rationale": r["rationale"], "choices": r["choices"],
                                            "image_path": str(Path(r["image"]).relative_to(root))} for r in rows],
                 jsonl=True)
    out = tmp_path / "report"
    assert main(["-q", "eval", "--dataset", "rationalevqa", str(path), "--image-root", str(root), "--out", str(out),
                 "--eval-every", "0", "--locality-size", "5", "--no-plain-locality", "--no-easyedit-metrics"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    text = json.dumps(results)
    assert "ReasonEdit" in text and all(r["id"] in text for r in rows)
