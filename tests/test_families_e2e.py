"""End to end on every model family's tiny config: edit -> answer -> remove.

For each row: the key is the input of a vision-MLP linear (a hook on it fires while answering); after
one edit the retrieved facts appear in the model's prompt for the edited image (question and a
paraphrase) and not for an unrelated image; ``remove`` gives back the unedited prompt and option
scores bit for bit.
"""

import pytest
import torch

from fakes import pattern
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.hooks import capture_inputs, hook_count
from reasonedit_plugin.vlm import VLM
from tiny_models import FAMILIES, build_or_skip

RATIONALE = "The shape in the picture is a red circle. Red circles belong to the Vol tribe."
QUESTION = "Which tribe owns the shape in this image?"
CHOICES = ["Vol", "Kem"]


@pytest.mark.parametrize("family", FAMILIES)
def test_edit_answer_remove(family, text_encoder):
    model, processor = build_or_skip(family)
    vlm = VLM(model, processor)
    cfg = ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}, max_new_tokens=2)
    editor = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    image, other = pattern(1, size=64), pattern(7, size=64)
    other_q = "How many wheels does a bicycle have?"
    before = editor.answer(image, QUESTION, CHOICES)
    before_other = editor.answer(other, other_q, ["two", "three"])

    report = editor.edit([{"id": "e1", "image": image, "prompt": QUESTION, "target": "Vol",
                           "choices": CHOICES, "rationale": RATIONALE}])
    assert report.added == ["e1"]

    # the key is read from the input of a linear inside a vision block's MLP
    key_module = editor.keys.vision_module
    linear = vlm.model.get_submodule(key_module)
    assert isinstance(linear, torch.nn.Linear)
    assert key_module.startswith(vlm.spec.mlp_template.split("{L}")[0])
    baseline_hooks = hook_count(vlm.model)
    with capture_inputs(vlm.model, [key_module]) as seen:
        edited = editor.answer(image, QUESTION, CHOICES)
    assert seen.fired(key_module) and seen[key_module].shape[-1] == linear.in_features
    assert hook_count(vlm.model) == baseline_hooks

    assert edited.retrieval.accepted, edited.retrieval.reason
    assert "Red circles belong to the Vol tribe." in edited.prompt
    assert edited.prompt == vlm.prompt_text(edited.question)
    assert edited.option_nll != before.option_nll

    para = editor.answer(image, "What tribe does the shape in this picture belong to?", CHOICES)
    assert para.retrieval.accepted, para.retrieval.reason
    assert "Red circles belong to the Vol tribe." in para.prompt

    unrelated = editor.answer(other, other_q, ["two", "three"])
    assert not unrelated.retrieval.accepted, unrelated.retrieval.reason
    assert unrelated.prompt == vlm.prompt_text(other_q) == before_other.prompt
    assert "Vol" not in unrelated.prompt
    assert unrelated.option_nll == before_other.option_nll

    editor.remove("e1")
    after = editor.answer(image, QUESTION, CHOICES)
    assert not after.retrieval.accepted
    assert after.prompt == before.prompt and after.question == QUESTION
    assert after.option_nll == before.option_nll  # bit for bit: same floats
