"""The null-set gate's evidence check (evidence.py): a matched edit speaks only if the query image shows what
its rationale says the edited image shows. FakeVLM answers "Does the image show ...?" with yes when the
claim names the image's colour (0.9; another colour 0.05, none 0.5)."""

import pytest

from fakes import FakeVLM, solid
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.evidence import EvidenceCheck, claim_question
from reasonedit_plugin.gate import NullSetGateConfig, as_dict, describe
from reasonedit_plugin.records import make_record

TRIBES = ["Vol", "Kem", "Taro"]
RED, DARK_RED, GREEN = (200, 20, 20), (150, 30, 30), (20, 200, 20)


class CountingVLM(FakeVLM):
    def __init__(self):
        super().__init__()
        self.asked: list[str] = []

    def yes_probability(self, image, question):
        self.asked.append(question)
        return super().yes_probability(image, question)


def editor(text_encoder, check=True, vlm=None, **nullset):
    # a loose image test (factor 1000, no domain images), so only the evidence check can tell the images apart
    cfg = ReasonEditConfig(guard={"policy": "off"}, only_edit_errors=False,
                           retrieval={"gate": "nullset", "nullset": {"image_factor": 1000.0, "conflict_share": 1.0, "null_percentile": 100,
                                                                     "evidence_check": check, **nullset}})
    return ReasonEditor(vlm or FakeVLM(), cfg, text_encoder=text_encoder)


def record(rid, colour_name, image, target, extra=""):
    return {"id": rid, "image": image, "prompt": "Which tribe owns this shape?", "target": target, "choices": TRIBES,
            "rationale": f"The shape is {colour_name}. {colour_name.title()} shapes belong to the {target} tribe."
                         + extra}


def test_claim_question_is_the_trained_form():
    assert claim_question("The figure is painted Red.", "Does the image show {claim}") == \
        "Does the image show the figure is painted Red?"
    assert claim_question("is it red?", "Does the image show {claim}") == "Does the image show is it red?"


def test_an_image_that_passes_the_key_tests_but_not_the_evidence_is_rejected(text_encoder):
    off, on = editor(text_encoder, check=False), editor(text_encoder)
    for ed in (off, on):
        ed.edit([record("red", "red", solid(RED), "Vol")])
        assert ed.retrieve(solid(DARK_RED), "Which tribe owns this shape?").accepted     # in scope: both
    assert off.retrieve(solid(GREEN), "Which tribe owns this shape?").accepted         # the key tests alone
    res = on.retrieve(solid(GREEN), "Which tribe owns this shape?")
    assert not res.accepted and res.facts == []
    assert "no edit's evidence is shown by the query image" in res.reason
    failed = [e for e in res.verdict.evidence if not e.passed]
    assert failed and failed[0].edit_id == "red" and failed[0].query_yes == pytest.approx(0.05)
    assert failed[0].own_yes == pytest.approx(0.9) and failed[0].threshold == pytest.approx(0.5)
    lines = describe(res.verdict, 0.6)
    assert any(line.strip().startswith("FAIL") and "evidence of red: P(yes)=0.050 < 0.5" in line for line in lines)
    assert as_dict(res.verdict)["evidence"][0]["passed"] is False
    assert on.answer(solid(GREEN), "Which tribe owns this shape?", TRIBES).question == "Which tribe owns this shape?"


def test_a_failed_edit_leaves_the_field_to_the_edit_whose_evidence_holds(text_encoder):
    ed = editor(text_encoder)
    ed.edit([record("red", "red", solid(RED), "Vol"), record("green", "green", solid(GREEN), "Kem")])
    greenish = solid((60, 170, 20))                   # within the image test of both edits, green to the model
    res = ed.retrieve(greenish, "Which tribe owns this shape?")
    assert res.accepted and res.verdict.winner == "green" and res.verdict.kept_edits == ["green"]
    assert {e.edit_id for e in res.verdict.evidence if not e.passed} == {"red"}
    assert all("red" not in f.lower() for f in res.facts)
    assert ed.answer(greenish, "Which tribe owns this shape?", TRIBES).text == "Kem"


def test_only_sentences_the_model_affirms_on_the_edit_image_are_evidence(text_encoder):
    ed = editor(text_encoder)
    ed.edit([record("red", "red", solid(RED), "Vol", extra=" Tribes are very old.")])
    assert [s for s, _ in ed.evidence.evidence("red")] == ["The shape is red.", "Red shapes belong to the Vol tribe."]
    unknown = EvidenceCheck(FakeVLM(), "Does the image show {claim}", 0.5, 0.2, lambda edit_id: None)
    assert unknown.evidence("imported-without-record") == []
    assert unknown.probe(solid(GREEN))(["imported-without-record"]) == {"imported-without-record": []}  # passes


def test_model_calls_only_for_matched_edits_on_new_pixels(text_encoder):
    vlm = CountingVLM()
    ed = editor(text_encoder, vlm=vlm)
    ed.edit([record("red", "red", solid(RED), "Vol")])
    assert len(vlm.asked) == 2 and len(ed.evidence) == 1   # its two sentences on its own image, read at edit time
    vlm.asked.clear()
    assert not ed.retrieve(solid(GREEN), "How many legs does a spider have?").accepted   # fails the text test
    assert vlm.asked == []
    ed.retrieve(solid(DARK_RED), "Which tribe owns this shape?")
    assert len(vlm.asked) == 2                         # the two sentences on the query image
    vlm.asked.clear()
    ed.retrieve(solid(DARK_RED), "Which tribe owns this shape?")       # asked about before: remembered
    ed.retrieve(solid(RED), "What tribe is this one in?")               # the edited image: its own answers
    assert vlm.asked == []
    ed.retrieve(solid((170, 25, 25)), "Which tribe owns this shape?")  # new pixels: asked again
    assert len(vlm.asked) == 2
    ed.remove("red")
    ed.edit([record("red", "green", solid(GREEN), "Kem")])               # the id again, another record
    assert [s for s, _ in ed.evidence.evidence("red")] == ["The shape is green.", "Green shapes belong to the Kem tribe."]


def test_evidence_survives_save_and_load(text_encoder, tmp_path):
    ed = editor(text_encoder)
    ed.edit([record("red", "red", solid(RED), "Vol")])
    ed.save(tmp_path / "cb")
    loaded = ReasonEditor.load(tmp_path / "cb", FakeVLM(), ed.config, text_encoder=text_encoder)
    assert not loaded.retrieve(solid(GREEN), "Which tribe owns this shape?").accepted
    assert loaded.retrieve(solid(DARK_RED), "Which tribe owns this shape?").accepted


def test_config_checks():
    with pytest.raises(ConfigError, match="evidence_min_yes"):
        NullSetGateConfig(evidence_min_yes=1.5)
    with pytest.raises(ConfigError, match="own image could fail"):
        NullSetGateConfig(evidence_min_yes=0.6, evidence_own_yes=0.5)
    with pytest.raises(ConfigError, match="evidence_own_yes"):
        NullSetGateConfig(evidence_own_yes=1.0)
    assert make_record(record("r", "red", solid(RED), "Vol")).rationale[0] == "The shape is red."


class CaptioningVLM(FakeVLM):
    def generate(self, image, text, max_new_tokens):
        if text == "Describe this image.":
            return "A green shape." if self.yes_probability(image, "green") > 0.5 else "A red shape."
        return super().generate(image, text, max_new_tokens)


def test_a_rule_stated_alone_gets_the_models_caption_as_evidence(text_encoder):
    """evidence_caption: fallback -- an edit whose rationale names nothing the model sees on its image is
    checked against the model's own caption of that image; with 'none' it is not checked."""
    rule_only = {"id": "rule", "image": solid(RED), "prompt": "Which tribe owns this shape?", "target": "Vol",
                 "choices": TRIBES, "rationale": "Members of this tribe are old. It is the Vol tribe."}
    plain = editor(text_encoder, vlm=CaptioningVLM())
    plain.edit([rule_only])
    assert plain.evidence.evidence("rule") == []
    assert plain.retrieve(solid(GREEN), "Which tribe owns this shape?").accepted
    fallback = editor(text_encoder, vlm=CaptioningVLM(), evidence_caption="fallback")
    fallback.edit([rule_only])
    assert [s for s, _ in fallback.evidence.evidence("rule")] == ["A red shape."]
    res = fallback.retrieve(solid(GREEN), "Which tribe owns this shape?")
    assert not res.accepted and res.verdict.evidence[0].sentence == "A red shape."
    assert fallback.retrieve(solid(DARK_RED), "Which tribe owns this shape?").accepted
    with pytest.raises(ConfigError, match="evidence_caption"):
        NullSetGateConfig(evidence_caption="describe")


def test_with_caption_always_the_caption_joins_the_affirmed_sentences(text_encoder):
    """evidence_caption: always -- the caption is evidence beside the sentences the model affirms (once, even
    when a sentence says the same); fallback adds it only to an edit without them."""
    stated = record("red", "red", solid(RED), "Vol", extra=" A red shape.")
    fallback, always = editor(text_encoder, vlm=CaptioningVLM(), evidence_caption="fallback"), \
        editor(text_encoder, vlm=CaptioningVLM(), evidence_caption="always")
    plain = record("red", "red", solid(RED), "Vol")
    fallback.edit([plain])
    always.edit([plain])
    rationale = ["The shape is red.", "Red shapes belong to the Vol tribe."]
    assert [s for s, _ in fallback.evidence.evidence("red")] == rationale
    assert [s for s, _ in always.evidence.evidence("red")] == rationale + ["A red shape."]
    res = always.retrieve(solid(GREEN), "Which tribe owns this shape?")
    assert not res.accepted and {e.sentence for e in res.verdict.evidence if not e.passed} == \
        set(rationale + ["A red shape."])
    assert always.retrieve(solid(DARK_RED), "Which tribe owns this shape?").accepted
    with pytest.raises(ConfigError, match="describe_prompt"):
        ReasonEditor(CaptioningVLM(), ReasonEditConfig(
            patches={"describe_prompt": ""}, retrieval={"gate": "nullset", "nullset": {
                "evidence_check": True, "evidence_caption": "always"}}), text_encoder=text_encoder)
    again = editor(text_encoder, vlm=CaptioningVLM(), evidence_caption="always")
    again.edit([stated])
    assert [s for s, _ in again.evidence.evidence("red")] == rationale + ["A red shape."]


def test_answers_on_tensor_inputs_are_remembered_by_their_pixels():
    import torch

    from reasonedit_plugin.evidence import tensor_digest

    check = EvidenceCheck(FakeVLM(), "Does the image show {claim}", 0.5, 0.2,
                          lambda edit_id: make_record(record("red", "red", solid(RED), "Vol")))
    asked = []

    def yes(questions):
        asked.append(list(questions))
        return [0.9] * len(questions)

    pixels = torch.ones(4, 6)
    for _ in range(2):
        tests = check.probe_with(yes, tensor_digest(pixels))(["red"])["red"]
        assert [t.passed for t in tests] == [True, True]
    assert len(asked) == 1 and len(asked[0]) == 2       # two sentences, asked once (together) for these pixels
    check.probe_with(yes, tensor_digest(pixels * 2))(["red"])
    check.probe_with(yes)(["red"])                        # no digest: nothing remembered
    assert [len(a) for a in asked] == [2, 2, 2]
    assert tensor_digest(pixels) != tensor_digest(pixels.double())


def test_a_model_that_cannot_answer_yes_or_no_is_refused_with_the_setting_to_change(text_encoder):
    class SimilarityOnly(FakeVLM):
        def __init__(self):
            super().__init__()
            self.spec = type("Spec", (), {"model_type": "clip", "scorer": "image_text_similarity"})()

    with pytest.raises(ConfigError, match="set evidence_check: false"):
        editor(text_encoder, vlm=SimilarityOnly())
    assert editor(text_encoder, check=False, vlm=SimilarityOnly()).evidence is None


def test_evidence_is_read_again_when_an_edit_id_comes_back_with_another_record(text_encoder):
    """Whatever path re-adds an id (import, eviction then re-edit), the cached evidence follows the record."""
    records = {"red": make_record(record("red", "red", solid(RED), "Vol"))}
    check = EvidenceCheck(FakeVLM(), "Does the image show {claim}", 0.5, 0.5, records.get)
    assert [s for s, _ in check.evidence("red")][0] == "The shape is red."
    records["red"] = make_record(record("red", "green", solid(GREEN), "Kem"))
    assert [s for s, _ in check.evidence("red")][0] == "The shape is green."
    del records["red"]
    assert check.evidence("red") == []


def test_the_claims_of_every_matched_edit_are_asked_in_one_pass():
    """The gate hands the probe all the edits it matched: their claims go to the model in one batched call, each
    claim once (two edits sharing a sentence), the claims asked before about the same pixels not again."""
    records = {"red": make_record(record("red", "red", solid(RED), "Vol")),
               "red2": make_record(record("red2", "red", solid(DARK_RED), "Kem", extra=" It is a big shape."))}
    vlm = FakeVLM()
    check = EvidenceCheck(vlm, "Does the image show {claim}", 0.45, 0.45, records.get)
    for edit_id in records:
        check.evidence(edit_id)
    asked = []

    def yes(questions):
        asked.append(list(questions))
        return vlm.yes_probabilities(solid(GREEN), questions)

    probe = check.probe_with(yes, b"green")
    tests = probe(["red", "red2"])
    assert list(tests) == ["red", "red2"] and [len(tests["red"]), len(tests["red2"])] == [2, 3]
    assert [t.passed for t in tests["red2"]] == [False, False, True]          # red on a green image; the size: 0.5
    assert len(asked) == 1 and len(asked[0]) == len(set(asked[0])) == 4      # "The shape is red." asked once
    probe(["red2"])
    assert len(asked) == 1                                                    # remembered for these pixels
