"""Metrics and protocols of evaluation.py, with hand-computed cases and the fake VLM (fast)."""

import math

import pytest
import torch

from fakes import FakeVLM, pattern, solid
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.evaluation import (
    Probe, ProbeOutcome, ProtocolConfig, ReasonEditMethod, Scores, TeacherForced, UneditedMethod,
    checkpoint_steps, edit_probes, evaluate_edit_k, evaluate_sequential, evaluate_single, harmonic_mean,
    is_correct, locality_pool, percentile, prepare_reference, token_accuracy, topk_token_match,
)
from reasonedit_plugin.records import make_records

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "yellow": (230, 230, 30)}
TRIBES = ["Vol", "Kem", "Zib", "Nar"]


# ------------------------------------------------------------------------------------------ pure metrics

def test_harmonic_mean_hand_cases():
    assert harmonic_mean([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / (2 + 1))
    assert harmonic_mean([0.5, 0.25, 1.0]) == pytest.approx(3 / (2 + 4 + 1))
    assert harmonic_mean([0.9, 0.0, 1.0]) == 0.0
    assert harmonic_mean([0.5, None, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([None, None]) is None
    assert harmonic_mean([]) is None
    # not the reference's sum
    assert harmonic_mean([1.0, 1.0, 1.0]) != 3.0


def test_is_correct_multiple_choice_and_open():
    assert is_correct("Vol", "vol", multiple_choice=True)
    assert not is_correct("Vol.", "vol", multiple_choice=True)
    assert is_correct("The Vol.", "vol", multiple_choice=False)
    assert not is_correct("Kem", "vol", multiple_choice=False)


def test_percentile_matches_numpy_linear():
    import numpy as np

    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    for q in (0, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 50) is None


def test_token_accuracy_is_easyedit_shifted():
    # 4 positions, vocab 3; target tokens are the last two labels (2 then 1).
    labels = torch.tensor([-100, -100, 2, 1])
    logits = torch.zeros(4, 3)
    logits[1, 2] = 5.0  # position 1 predicts label[2] = 2: right
    logits[2, 0] = 5.0  # position 2 predicts label[3] = 1: wrong (0)
    logits[3, 1] = 5.0  # the last position predicts nothing
    assert token_accuracy(logits, labels) == pytest.approx(0.5)
    logits[2] = torch.tensor([0.0, 5.0, 0.0])
    assert token_accuracy(logits[None], labels[None]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no target token"):
        token_accuracy(logits, torch.full((4,), -100))


def test_topk_token_match_aligns_from_the_end():
    pre = torch.tensor([[1, 2], [3, 4], [5, 6]])
    post = torch.tensor([[9, 9], [9, 9], [3, 4], [5, 0]])  # longer: its last 3 rows are compared
    # rows: [9,9] vs [1,2] (0/2), [3,4] vs [3,4] (2/2), [5,0] vs [5,6] (1/2) -> 3/6
    assert topk_token_match(pre, post) == pytest.approx(0.5)
    assert topk_token_match(pre[:, :1], post[:, :1]) == pytest.approx(2 / 3)


def test_checkpoint_schedule():
    assert checkpoint_steps(10, 3) == [3, 6, 9, 10]
    assert checkpoint_steps(10, 5) == [5, 10]
    assert checkpoint_steps(3, 0) == [3]
    assert checkpoint_steps(3, 200) == [3]
    assert checkpoint_steps(0, 5) == []


def test_scores_from_outcomes_hand_computed():
    def o(kind, ok):
        return ProbeOutcome(kind, "e", "q", "a", "a" if ok else "b", ok)

    outcomes = ([o("reliability", True)] * 4 + [o("t_gen", True), o("t_gen", False)]
                + [o("i_gen", True)] * 2 + [o("r_gen", True), o("r_gen", True), o("r_gen", False), o("r_gen", False)]
                + [o("locality", True)] * 3 + [o("locality", False)])
    s = Scores.from_outcomes(outcomes)
    assert (s.reliability, s.t_gen, s.i_gen, s.r_gen, s.locality) == (1.0, 0.5, 1.0, 0.5, 0.75)
    assert s.hard_locality is None
    assert s.gen == pytest.approx(3 / (2 + 1 + 2))
    assert s.overall == pytest.approx(3 / (1 + 1 / 0.6 + 1 / 0.75))   # no hard-locality probe: 3 terms
    assert s.overall_no_hard == s.overall and s.accepted_unrelated is None
    assert s.counts == {"i_gen": 2, "locality": 4, "r_gen": 4, "reliability": 4, "t_gen": 2}
    assert set(s.to_dict()) >= {"reliability", "gen", "overall", "counts", "easyedit"}
    s = Scores.from_outcomes(outcomes + [o("hard_locality", True), o("hard_locality", False)])
    assert s.overall == pytest.approx(4 / (1 + 1 / 0.6 + 1 / 0.75 + 1 / 0.5))
    assert s.overall_no_hard == pytest.approx(3 / (1 + 1 / 0.6 + 1 / 0.75))


# ------------------------------------------------------------------------------------------ records

def rec(i, colour="red", **kw):
    """A record whose answer (a made-up tribe) needs the rationale; FakeVLM answers the LAST option
    unedited, so every tribe but the last is an error."""
    tribe = TRIBES[i % 3]
    base = {
        "id": f"e{i}", "image": solid(COLOURS[colour]), "prompt": "Which tribe owns this shape?",
        "target": tribe, "choices": TRIBES,
        "rationale": f"The shape in the image is {colour}. {colour.capitalize()} shapes belong to the {tribe} tribe.",
        "rephrase_prompt": "What tribe owns the shape shown?",
        "image_rephrase": solid(tuple(max(0, c - 10) for c in COLOURS[colour]), 40),
        "rgen_prompt": f"Is the tribe of this shape {tribe}?", "rgen_target": "yes", "rgen_choices": ["no", "yes"],
        "multimodal_locality_image": pattern(100 + i), "multimodal_locality_prompt": f"Does this look like static #{i}?",
        "multimodal_locality_ground_truth": "yes", "multimodal_locality_choices": ["no", "yes"],
        "hard_locality_image": pattern(200 + i), "hard_locality_prompt": "Which tribe owns this pattern?",
        "hard_locality_ground_truth": "Nar", "hard_locality_choices": TRIBES,
    }
    base.update(kw)
    return base


def records():
    return make_records([rec(0, "red"), rec(1, "blue"), rec(2, "green"),
                         rec(3, "yellow", target="Nar", rationale="Yellow shapes belong to the Nar tribe.")])


def cfg(**sections):
    """Guard off (it has its own tests); one key retrieved, since the fake VLM cannot tell two retrieved
    answers apart (it picks the first option any fact names) and its answer entries sit close together."""
    sections.setdefault("retrieval", {"cap_keys": 1})
    return ReasonEditConfig(guard={"policy": "off"}, **sections)


@pytest.fixture
def vlm():
    return FakeVLM()


@pytest.fixture
def reasonedit(vlm, text_encoder):
    return ReasonEditMethod(lambda: ReasonEditor(vlm, cfg(), text_encoder=text_encoder))


def test_nullset_gate_keeps_the_near_miss(vlm, reasonedit):
    """The default null-set gate on the same run: the near-miss (the edit's own question about a noise
    image) fails the image test, so hard locality holds while the edits still apply."""
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    result = evaluate_sequential(reasonedit, ref, ProtocolConfig(eval_every=0, easyedit_metrics=False))
    final = result.final
    assert final.reliability == 1.0 and final.t_gen == 1.0 and final.i_gen == 1.0 and final.r_gen == 1.0
    assert final.locality == 1.0 and final.hard_locality == 1.0 and final.overall == 1.0
    hard = [p for p in result.probes if p.kind == "hard_locality"]
    assert hard and not any(p.accepted for p in hard)
    assert final.accepted_unrelated == 0.0


def test_edit_probes_and_locality_pool_filter():
    rs = records()
    kinds = [p.kind for p in edit_probes(rs[0])]
    assert kinds == ["reliability", "t_gen", "i_gen", "r_gen"]
    shared_image = Probe("locality", "x", rs[0].image, "Plain?", "yes", ("no", "yes"))
    shared_question = Probe("locality", "x", pattern(7), rs[1].rephrase_prompt, "yes", ("no", "yes"))
    fine = Probe("locality", "x", pattern(8), "Plain?", "yes", ("no", "yes"))
    pool = locality_pool(rs, [shared_image, shared_question, fine, fine], size=100)
    assert [p.edit_id for p in pool] == ["e0", "e1", "e2", "e3", "x"]  # 4 records' probes + one extra
    small = locality_pool(rs, [fine], size=2, seed=3)
    assert len(small) == 2 and small == locality_pool(rs, [fine], size=2, seed=3)


def test_reference_keeps_only_errors_and_base_right_locality(vlm):
    rs = records()
    rs[1].multimodal_locality_ground_truth = "no"  # the fake answers the last option ("yes"): dropped
    ref = prepare_reference(UneditedMethod(vlm), rs, ProtocolConfig(easyedit_metrics=False))
    assert [r.id for r in ref.errors] == ["e0", "e1", "e2"]
    assert ref.already_correct == ["e3"]  # the fake already answers "Nar"
    assert sorted(p.edit_id for p in ref.locality) == ["e0", "e2", "e3"]
    assert ref.locality_candidates == 4
    assert sorted(ref.hard_locality) == ["e0", "e1", "e2"]


def test_predict_matches_editor_answer(reasonedit):
    rs = records()
    reasonedit.apply(rs[0])
    for image, q in [(rs[0].image, rs[0].prompt), (pattern(5), "Which tribe owns this pattern?")]:
        pred = reasonedit.predict(image, q, TRIBES)
        ans = reasonedit.editor.answer(image, q, TRIBES)
        assert pred.text == ans.text and pred.retrieval.facts == ans.retrieval.facts
        assert pred.retrieval.accepted == ans.retrieval.accepted


def test_sequential_protocol_on_fake(vlm, text_encoder):
    """The paper's percentile gate (the reference row): its known weakness shows in hard locality."""
    reasonedit = ReasonEditMethod(lambda: ReasonEditor(
        vlm, cfg(retrieval={"cap_keys": 1, "gate": "percentile"}), text_encoder=text_encoder))
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    seen = []
    result = evaluate_sequential(reasonedit, ref, ProtocolConfig(eval_every=2, eval_subsample=1,
                                                                  easyedit_metrics=False),
                                 on_checkpoint=seen.append)
    assert [c.num_edits for c in result.checkpoints] == [2, 3]
    assert [c.evaluated_edits for c in result.checkpoints] == [1, 3]
    assert seen == result.checkpoints
    final = result.final
    assert final.reliability == 1.0 and final.t_gen == 1.0 and final.r_gen == 1.0
    assert final.locality == 1.0
    # the near-miss asks the edit's own question about a noise image: text dominates the fake's keys,
    # the gate lets the edit's answer through, and the probe breaks -- what hard locality is for
    assert final.hard_locality == 0.0
    assert final.overall == 0.0 and final.overall_no_hard > 0.9   # the new HM fails, the old one hides it
    assert final.counts["reliability"] == 3 and final.counts["locality"] == 4
    assert len(result.edit_seconds) == 3 and result.time_per_edit > 0
    lat = result.retrieval_latency  # every probe of every checkpoint: 6 at the first, 19 at the end
    assert lat.n == 6 + len(result.probes) == 25 and lat.p95_ms >= lat.p50_ms > 0
    assert result.lookup_latency.n == 25 and result.lookup_latency.p50_ms <= lat.p50_ms
    assert result.gate_threshold is not None
    edited = [p for p in result.probes if p.kind == "reliability"]
    unrelated = [p for p in result.probes if p.kind == "locality"]
    assert all(p.accepted for p in edited) and not any(p.accepted for p in unrelated)
    assert all(p.best_score > p.threshold for p in unrelated)
    assert all(p.best_score is not None for p in result.probes)
    d = result.to_dict()
    assert d["final"]["reliability"] == 1.0 and d["reference"]["already_correct"] == ["e3"]


def test_unedited_scores_zero_reliability_full_locality(vlm):
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    result = evaluate_sequential(UneditedMethod(vlm), ref, ProtocolConfig(easyedit_metrics=False))
    assert result.final.reliability == 0.0 and result.final.locality == 1.0
    assert result.final.overall == 0.0 and result.retrieval_latency is None


def test_single_edit_protocol_resets(vlm, reasonedit):
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    result = evaluate_single(reasonedit, ref, ProtocolConfig(easyedit_metrics=False))
    assert result.protocol == "single" and result.final.reliability == 1.0
    assert result.final.counts["reliability"] == 3
    assert len(reasonedit.editor.codebook) == 0  # reset at the end


def test_edit_k_generality(vlm, reasonedit):
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    res = evaluate_edit_k(reasonedit, ref, ks=(1, 5), rounds=2, seed=0)
    assert res.accuracy[5] is None and len(res.per_round[1]) == 2
    assert 0.0 <= res.accuracy[1] <= 1.0


# ------------------------------------------------------------------------------------------ EasyEdit keys

class TokenFakeVLM(FakeVLM):
    """FakeVLM with teacher-forced logits: one token per word (id = word length), and the model predicts
    the target's tokens exactly when its prompt states "is <target>"; otherwise it predicts token 0."""

    V = 32

    def teacher_forced(self, image, text, target):
        words = (text + " " + target).split()
        n_target = len(target.split())
        ids = torch.tensor([min(len(w), self.V - 1) for w in words])
        labels = torch.full_like(ids, -100)
        labels[-n_target:] = ids[-n_target:]
        knows = f"is {target.lower()}" in text.lower()
        logits = torch.zeros(len(ids), self.V)
        for t in range(len(ids) - 1):
            logits[t, ids[t + 1] if knows or labels[t + 1] == -100 else 0] = 1.0
            logits[t, (ids[t + 1] + 1) % self.V] += 0.5  # a runner-up, for the top-10 comparison
        return TeacherForced(logits, labels)


def test_easyedit_keys_on_token_fake(text_encoder):
    vlm = TokenFakeVLM()
    rs = records()
    for r in rs:
        r.locality_prompt, r.locality_ground_truth = "How many legs does a spider have?", "eight"
    method = ReasonEditMethod(lambda: ReasonEditor(vlm, cfg(), text_encoder=text_encoder))
    ref = prepare_reference(UneditedMethod(vlm), rs, ProtocolConfig())
    assert ref.easyedit_unavailable is None and len(ref.pre_topk) == 6
    before = evaluate_sequential(UneditedMethod(vlm), ref, ProtocolConfig())
    assert before.final.easyedit["rewrite_acc"] == 0.0
    assert before.final.easyedit["locality_acc"] == 1.0 and before.final.easyedit["multimodal_locality_acc"] == 1.0
    after = evaluate_sequential(method, ref, ProtocolConfig())
    e = after.final.easyedit
    assert e["rewrite_acc"] == 1.0 and e["rephrase_acc"] == 1.0 and e["image_rephrase_acc"] == 1.0
    assert e["locality_acc"] == 1.0 and e["multimodal_locality_acc"] == 1.0
    assert set(e) == {"rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc",
                      "multimodal_locality_acc"}


def test_easyedit_keys_absent_with_reason_on_plain_fake(vlm):
    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig())
    assert "teacher-forced" in ref.easyedit_unavailable
    res = evaluate_sequential(UneditedMethod(vlm), ref, ProtocolConfig())
    assert res.final.easyedit == {} and not math.isnan(res.final.locality)


def test_vlm_teacher_forced_matches_easyedit_joint_tokenization():
    """On a tiny Qwen2-VL: our logits equal those of EasyEdit's prepare_multimodal_hf_edit input (the chat
    prompt string + target, processed together), and the labels mark the target's tokens at the end."""
    from tiny_models import FamilyUnavailable, build_tiny

    from reasonedit_plugin.evaluation import vlm_teacher_forced
    from reasonedit_plugin.vlm import VLM

    try:
        model, processor = build_tiny("qwen2_vl")
    except FamilyUnavailable as exc:
        pytest.skip(str(exc))
    vlm = VLM(model, processor)
    image = pattern(1)
    tf = vlm_teacher_forced(vlm, image, "What colour?", "red")
    joint = processor(images=[image], text=[vlm.prompt_text("What colour?") + "red"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**joint).logits[0].float()
    assert torch.allclose(tf.logits, expected, atol=1e-4)
    target_ids = processor.tokenizer("red", add_special_tokens=False)["input_ids"]
    assert tf.labels[-len(target_ids):].tolist() == target_ids
    assert (tf.labels[:-len(target_ids)] == -100).all()
    text_only = vlm_teacher_forced(vlm, None, "How many legs?", "eight")
    assert int((text_only.labels != -100).sum()) == len(processor.tokenizer("eight", add_special_tokens=False)["input_ids"])


def test_foreign_method_with_an_editor_attribute(vlm):
    """A baseline may hold its own ``editor`` (EasyEdit's MultimodalEditor): not mistaken for ReasonEdit's."""

    class Foreign(UneditedMethod):
        def __init__(self, vlm):
            super().__init__(vlm, name="foreign")
            self.editor = object()

    ref = prepare_reference(UneditedMethod(vlm), records(), ProtocolConfig(easyedit_metrics=False))
    result = evaluate_sequential(Foreign(vlm), ref, ProtocolConfig(easyedit_metrics=False))
    assert result.gate_threshold is None and result.final.locality == 1.0
