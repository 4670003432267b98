"""End to end on every model family's tiny config: edit one record; the retrieved facts appear in the
model's prompt for the edited query and for a paraphrase, and not for an unrelated query."""

import pytest

from fakes import pattern
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.vlm import VLM
from tiny_models import FAMILIES, build_or_skip

RATIONALE = "The shape in the picture is a red circle. Red circles belong to the Vol tribe."


@pytest.mark.parametrize("family", FAMILIES)
def test_edit_retrieves_for_query_and_paraphrase_only(family, text_encoder):
    model, processor = build_or_skip(family)
    vlm = VLM(model, processor)
    cfg = ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, max_new_tokens=2)
    editor = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    image = pattern(1, size=64)
    question = "Which tribe owns the shape in this image?"
    report = editor.edit([{"id": "e1", "image": image, "prompt": question, "target": "Vol",
                           "choices": ["Vol", "Kem"], "rationale": RATIONALE}])
    assert report.added == ["e1"]

    edited = editor.answer(image, question, ["Vol", "Kem"])
    assert edited.retrieval.accepted, edited.retrieval.reason
    assert "Red circles belong to the Vol tribe." in edited.prompt
    assert edited.prompt == vlm.prompt_text(edited.question)

    para = editor.answer(image, "What tribe does the shape in this picture belong to?", ["Vol", "Kem"])
    assert para.retrieval.accepted, para.retrieval.reason
    assert "Red circles belong to the Vol tribe." in para.prompt

    other_q = "How many wheels does a bicycle have?"
    unrelated = editor.answer(pattern(7, size=64), other_q, ["two", "three"])
    assert not unrelated.retrieval.accepted, unrelated.retrieval.reason
    assert unrelated.prompt == vlm.prompt_text(other_q)
    assert "Vol" not in unrelated.prompt
