"""The engine end to end on a fake VLM (fast); real model families are covered in test_families_e2e.py."""

import pytest

from fakes import FakeVLM, pattern, solid
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ReasonEditError, RecordError
from reasonedit_plugin.fusion import fuse_prompt
from reasonedit_plugin.config import FusionConfig

RED = solid((220, 20, 20))
BLUE = solid((20, 20, 220))


def record(rid="e1", image=RED, **kw):
    base = {"id": rid, "image": image, "prompt": "Which tribe owns this shape?", "target": "Vol",
            "choices": ["Vol", "Kem", "Zib"],
            "rationale": "The shape in the image is red. Red shapes belong to the Vol tribe."}
    base.update(kw)
    return base


def config(**sections):
    """Engine config with the rationale guard off (the guard has its own tests)."""
    return ReasonEditConfig(guard={"policy": "off"}, **sections)


@pytest.fixture
def editor(text_encoder):
    return ReasonEditor(FakeVLM(), config(), text_encoder=text_encoder)


def test_fusion_paper_format_and_identity():
    cfg = FusionConfig()
    assert fuse_prompt("Q?", [], cfg) == "Q?"
    assert fuse_prompt("Q?", ["A.", "B."], cfg) == "A. B. Q?"


def test_empty_codebook_is_identical_and_skips_vision(editor):
    vlm = editor.vlm
    ans = editor.answer(RED, "Which tribe owns this shape?", ["Vol", "Kem"])
    assert ans.question == "Which tribe owns this shape?"
    assert ans.prompt == vlm.prompt_text("Which tribe owns this shape?")
    assert not ans.retrieval.accepted and vlm.vision_calls == 0


def test_edit_fixes_answer_and_protects_unrelated(editor):
    before = editor.answer(RED, "Which tribe owns this shape?", ["Vol", "Kem", "Zib"])
    assert before.text != "Vol"
    report = editor.edit([record(), record("e2", BLUE, target="Kem",
                                           rationale="The shape is blue. Blue shapes belong to the Kem tribe.")])
    assert report.added == ["e1", "e2"]
    after = editor.answer(RED, "Which tribe owns this shape?", ["Vol", "Kem", "Zib"])
    assert after.text == "Vol" and after.retrieval.accepted
    assert "Red shapes belong to the Vol tribe." in after.question
    assert after.question.endswith(" Which tribe owns this shape?")
    para = editor.answer(RED, "What tribe owns the shape shown?", ["Vol", "Kem", "Zib"])
    assert para.text == "Vol"
    unrelated = editor.answer(pattern(3), "How many legs does a spider have?", ["eight", "six"])
    assert not unrelated.retrieval.accepted and unrelated.question == "How many legs does a spider have?"


def test_only_edit_errors_skips_correct(editor):
    rec = record(prompt="The colour is red. Which tribe?", target="red", choices=["red", "blue"])
    report = editor.edit([rec])
    assert report.skipped == ["e1"] and len(editor.codebook) == 0


def test_batch_is_all_or_nothing(editor):
    with pytest.raises(RecordError, match="'bad'"):
        editor.edit([record(), record("bad", prompt="")])
    assert len(editor.codebook) == 0
    editor.edit([record()])
    with pytest.raises(ReasonEditError, match="already exists"):
        editor.edit([record("e9", BLUE), record()])
    assert editor.edit_ids() == ["e1"]


def test_remove_restores(editor):
    editor.edit([record()])
    editor.remove("e1")
    assert len(editor.codebook) == 0
    assert not editor.retrieve(RED, "Which tribe owns this shape?").accepted


def test_answer_only_ablation(text_encoder):
    cfg = config(codebook={"rationale_entries": False})
    ed = ReasonEditor(FakeVLM(), cfg, text_encoder=text_encoder)
    ed.edit([record()])
    assert [e.kinds for e in ed.codebook.entries.values()] == [["answer"]]
    ans = ed.answer(RED, "Which tribe owns this shape?", ["Vol", "Kem"])
    assert ans.retrieval.facts == ["The answer to 'Which tribe owns this shape?' is Vol."]


def test_radii_are_seeded(text_encoder):
    radii = []
    for _ in range(2):
        ed = ReasonEditor(FakeVLM(), config(), text_encoder=text_encoder)
        ed.edit([record()])
        radii.append([e.radius for e in ed.codebook.entries.values()])
    assert radii[0] == radii[1] and all(r > 0 for r in radii[0])


class CaptioningVLM(FakeVLM):
    """Captions a solid image by its dominant channel (what ``patches.describe_prompt`` asks for)."""

    def __init__(self, empty=False):
        super().__init__()
        self.empty, self.described = empty, 0

    def generate(self, image, text, max_new_tokens):
        if text != "Describe this image.":
            return super().generate(image, text, max_new_tokens)
        self.described += 1
        r, _, b = image.convert("RGB").getpixel((0, 0))
        return "" if self.empty else ("A red square." if r > b else "A blue square.")


NAMING = "For {image}, the answer to '{question}' is {answer}."


def test_an_answer_template_naming_the_image_gets_the_models_caption(text_encoder):
    cfg = config(codebook={"rationale_entries": False, "answer_template": NAMING})
    vlm = CaptioningVLM()
    ed = ReasonEditor(vlm, cfg, text_encoder=text_encoder)
    ed.edit([record(), record("e2", BLUE, target="Kem")])
    assert vlm.described == 2
    ans = ed.answer(RED, "Which tribe owns this shape?", ["Vol", "Kem"])
    assert ans.retrieval.facts == ["For a red square, the answer to 'Which tribe owns this shape?' is Vol."]
    assert ans.text == "Vol"
    assert ed.answer(BLUE, "Which tribe owns this shape?", ["Vol", "Kem"]).text == "Kem"
    pattern_ = cfg.codebook.answer_pattern()
    assert pattern_.fullmatch(ans.retrieval.facts[0]).group("answer") == "Vol"


def test_an_image_naming_template_needs_a_caption(text_encoder):
    from reasonedit_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="describe_prompt"):
        config(codebook={"answer_template": NAMING}, patches={"describe_prompt": ""})
    ed = ReasonEditor(CaptioningVLM(empty=True), config(codebook={"answer_template": NAMING}), text_encoder=text_encoder)
    with pytest.raises(ReasonEditError, match="no caption of its image"):
        ed.edit([record()])
    assert len(ed.codebook) == 0
