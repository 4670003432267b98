import json

import pytest
from PIL import Image

from reasonedit_plugin.errors import RecordError
from reasonedit_plugin.records import load_records, make_records, normalize_answer, split_sentences


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(path)
    return path


def good(image_file, **kw):
    rec = {"id": "e1", "image": str(image_file), "prompt": "What tribe owns this?", "target": "Vol",
           "rationale": "The shape is a red circle. Red circles belong to Vol!  Right?", "choices": ["Vol", "Kem"]}
    rec.update(kw)
    return rec


def test_split_sentences_paper_rule():
    assert split_sentences("A b. C d!  E f? G") == ["A b.", "C d!", "E f?", "G"]
    assert split_sentences(["One. Two.", "Three."]) == ["One.", "Two.", "Three."]
    assert split_sentences("No split.here") == ["No split.here"]
    assert split_sentences(None) == []


def test_valid_record_is_split_and_resolved(image_path):
    (rec,) = make_records(good(image_path))
    assert rec.rationale == ["The shape is a red circle.", "Red circles belong to Vol!", "Right?"]
    assert rec.id == "e1" and rec.choices == ["Vol", "Kem"]


@pytest.mark.parametrize("change, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"target": 3}, "target"),
    ({"rationale": 5}, "rationale"),
    ({"rationale": ["ok", 2]}, "rationale"),
    ({"choices": ["Kem", "Zib"]}, "choices"),
    ({"choices": "Vol"}, "choices"),
    ({"image": "/nonexistent/x.png"}, "image"),
])
def test_bad_fields_name_record_and_field(image_path, change, field):
    with pytest.raises(RecordError) as info:
        make_records(good(image_path, **change))
    assert "'e1'" in str(info.value) and repr(field) in str(info.value)
    assert info.value.field == field


def test_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(RecordError, match="not a readable image"):
        make_records(good(bad))


def test_unknown_field_did_you_mean(image_path):
    with pytest.raises(RecordError, match="Did you mean 'rationale'"):
        make_records({**good(image_path), "rationale_": "x"})


def test_duplicate_ids(image_path):
    with pytest.raises(RecordError, match="appears twice"):
        make_records([good(image_path), good(image_path)])


def test_load_jsonl_relative_paths(tmp_path, image_path):
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps(good("img.png")) + "\n\n" + json.dumps(good("img.png", id="e2")) + "\n")
    records = load_records(path)
    assert [r.id for r in records] == ["e1", "e2"]
    assert records[0].image == str(image_path)


def test_load_jsonl_bad_line(tmp_path):
    path = tmp_path / "edits.jsonl"
    path.write_text("{not json}\n")
    with pytest.raises(RecordError, match=r"edits.jsonl:1"):
        load_records(path)


def test_easyedit_aliases(image_path):
    (rec,) = make_records({"case_id": 7, "image": str(image_path), "src": "Q?", "alt": "A"})
    assert (rec.id, rec.prompt, rec.target) == ("7", "Q?", "A")


def test_normalize_answer():
    assert normalize_answer("The  Red, circle!") == "red circle"
