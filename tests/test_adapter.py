"""The EasyEdit adapter without EasyEdit: requests built by hand in EasyEdit's format.

Contract mechanics (question recovery, splice, logits trimming, identical logits when nothing is
retrieved, sessions, restore) use a tiny Qwen2-VL from ``tests/tiny_models.py`` and a
small stand-in editor whose retrieval is keyed by question text; one test runs the real engine.
"""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
import torch
from PIL import Image

from reasonedit_plugin import easyedit_adapter as adapter
from reasonedit_plugin.config import FusionConfig
from reasonedit_plugin.easyedit_adapter import (
    RestoreEdits,
    apply_reasonedit_to_multimodal_model,
    end_session,
    request_to_record,
)
from reasonedit_plugin.easyedit_rationales import RationaleSource
from reasonedit_plugin.errors import ConfigError, ReasonEditError, RecordError, UnsupportedModelError
from reasonedit_plugin.fusion import fuse
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.retriever import Retrieval

QUESTION = "What shape is this?"
TARGET = "circle"
RATIONALE = "It has no corners. Its edge is round."


# ------------------------------------------------------------------------------ helpers
def red(size: int = 56) -> Image.Image:
    return Image.new("RGB", (size, size), (220, 20, 20))


def blue(size: int = 56) -> Image.Image:
    return Image.new("RGB", (size, size), (20, 20, 220))


def hparams(**extra: Any) -> ReasonEditHyperParams:
    values = {"alg_name": "ReasonEdit", "model_name": "/models/tiny-qwen2-vl", "device": "cpu", **extra}
    return ReasonEditHyperParams.from_dict(values)


def easyedit_request(prompt: str = QUESTION, target: str = TARGET, image: Image.Image | None = None,
                     **extra: Any) -> dict[str, Any]:
    """A request as MultimodalEditor._prepare_requests builds it for Qwen2-VL (image: a list of one PIL)."""
    request = {"prompt": prompt, "target": target, "image": [image or red()], "file_type": "image",
               "rephrase_prompt": "Which shape is shown?", "image_rephrase": [red(64)],
               "locality_prompt": "What is the capital of France?", "locality_ground_truth": "Paris",
               "multimodal_locality_image": [blue()], "multimodal_locality_prompt": "What colour is it?",
               "multimodal_locality_ground_truth": "blue"}
    request.update(extra)
    return request


def easyedit_inputs(processor: Any, prompt: str, target: str, image: Image.Image | None) -> dict[str, Any]:
    """What EasyEdit's prepare_multimodal_hf_edit feeds to model(**inputs)."""
    content = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": prompt}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    if image is None:
        return dict(processor(text=[chat + target], return_tensors="pt", padding=True))
    return dict(processor(images=[image], text=[chat + target], return_tensors="pt", padding=True))


class StandInEditor:
    """The slice of ReasonEditor the adapter uses; retrieves an edit's facts when the question matches."""

    def __init__(self, fusion: FusionConfig | None = None):
        self.records: dict[str, dict[str, Any]] = {}
        self.questions: list[str] = []
        self.query_inputs: list[dict[str, Any]] = []
        self.fusion = fusion or FusionConfig()

    def edit(self, records):
        for r in records:
            if r["id"] in self.records:
                raise ReasonEditError(f"edit {r['id']!r} already exists")
            self.records[r["id"]] = r
        return types.SimpleNamespace(outcomes=[types.SimpleNamespace(edit_id=r["id"], status="added")
                                               for r in records])

    def remove(self, edit_id: str):
        self.records.pop(edit_id, None)
        return []

    def edit_ids(self):
        return list(self.records)

    def retrieve_from_inputs(self, inputs, question, yes=None):
        self.questions.append(question)
        self.yes = yes
        self.query_inputs.append(dict(inputs))
        facts = []
        for r in self.records.values():
            if r["prompt"] == question:
                facts.append(f"The answer to '{r['prompt']}' is {r['target']}.")
                rationale = r.get("rationale") or []
                facts.extend([rationale] if isinstance(rationale, str) else rationale)
        return Retrieval(bool(facts), facts=facts)

    def fused_question(self, question, retrieval):
        return fuse(question, retrieval.facts if retrieval.accepted else [], self.fusion)


def stand_in_factory(created: list | None = None):
    def factory(model, tok, hp):
        editor = StandInEditor(hp.fusion)
        if created is not None:
            created.append((model, tok, hp, editor))
        return editor
    return factory


@pytest.fixture(scope="module")
def tiny_qwen():
    try:
        from tests.tiny_models import FamilyUnavailable, build_tiny
    except ImportError as exc:  # the shared tiny-model builder is not available
        pytest.skip(f"tests/tiny_models.build_tiny unavailable: {exc}")
    try:
        return build_tiny("qwen2_vl")
    except FamilyUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    adapter._SESSIONS.clear()


def logits_of(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------ requests and rationales
def test_request_to_record_takes_easyedit_fields():
    record = request_to_record(easyedit_request(rationale=RATIONALE, choices=["circle", "square"]),
                               hparams(), "easyedit-00001")
    assert record["id"] == "easyedit-00001" and record["prompt"] == QUESTION and record["target"] == TARGET
    assert isinstance(record["image"], Image.Image)
    assert record["rationale"] == RATIONALE and record["choices"] == ["circle", "square"]
    # evaluation-only fields stay with EasyEdit
    assert "locality_prompt" not in record and "image_rephrase" not in record


def test_request_image_forms():
    hp = hparams(missing_rationale="answer_only")
    assert isinstance(request_to_record(easyedit_request(image=red()) | {"image": red()}, hp, "a")["image"],
                      Image.Image)
    with pytest.raises(RecordError, match="one image per request"):
        request_to_record(easyedit_request() | {"image": [red(), blue()]}, hp, "a")
    with pytest.raises(UnsupportedModelError, match="pre-processed tensor"):
        request_to_record(easyedit_request() | {"image": torch.zeros(3, 364, 364)}, hp, "a")
    with pytest.raises(UnsupportedModelError, match="file_type='video'"):
        request_to_record(easyedit_request(file_type="video"), hp, "a")


def test_missing_rationale_is_an_error_that_names_every_way_to_give_one():
    with pytest.raises(RecordError) as info:
        request_to_record(easyedit_request(), hparams(), "a")
    message = str(info.value)
    for way in ("rationales=[...]", "register(rationales_kwarg=True)", "rationale_source", "'rationale' field",
                "missing_rationale: answer_only"):
        assert way in message


def test_answer_only_policy_stores_no_rationale():
    record = request_to_record(easyedit_request(), hparams(missing_rationale="answer_only"), "a")
    assert "rationale" not in record


def test_rationale_source_in_easyedit_dataset_format(tmp_path):
    # The JSON given to EasyEdit's VQADataset (src/alt/...), plus a rationale per record.
    data = [{"src": QUESTION, "alt": TARGET, "pred": "square", "image": "a.png", "rationale": RATIONALE},
            {"src": QUESTION, "alt": "triangle", "image": "b.png", "rationale": "It has three corners."},
            {"src": "Unrelated?", "alt": "x", "image": "c.png"}]
    (tmp_path / "train.json").write_text(json.dumps(data), encoding="utf-8")
    hp = hparams(rationale_source=str(tmp_path / "train.json"))
    assert request_to_record(easyedit_request(), hp, "a")["rationale"] == RATIONALE
    assert request_to_record(easyedit_request(target="triangle"), hp, "b")["rationale"] == "It has three corners."
    with pytest.raises(RecordError, match="2 different rationales"):
        request_to_record(easyedit_request(target="hexagon"), hp, "c")
    # the request's own field wins
    assert request_to_record(easyedit_request(rationale="Own."), hp, "d")["rationale"] == "Own."


def test_rationale_source_with_edit_dataset_template(tmp_path):
    # MultimodalEditor.edit_dataset(ds, template="Question: {} Short answer:") rewrites request['prompt'].
    template = "Question: {} Short answer:"
    data = [{"src": "How many points does this shape have?", "alt": "nine", "image": "a.png",
             "rationale": "It is a nonagon."},
            {"src": "How many points?", "alt": "three", "image": "b.png", "rationale": "A triangle."},
            {"src": "What shape is this?", "alt": "circle", "image": "c.png", "rationale": RATIONALE},
            {"src": "What shape is this?", "alt": "square", "image": "d.png", "rationale": "Four corners."}]
    (tmp_path / "ds.json").write_text(json.dumps(data), encoding="utf-8")
    hp = hparams(rationale_source=str(tmp_path / "ds.json"))
    ask = lambda q, t: request_to_record(easyedit_request(template.format(q), t), hp, "x")["rationale"]  # noqa: E731
    assert ask("How many points does this shape have?", "nine") == "It is a nonagon."  # longest contained
    assert ask("How many points?", "three") == "A triangle."
    assert ask("What shape is this?", "square") == "Four corners."  # the answer disambiguates
    with pytest.raises(RecordError, match="has no rationale"):
        ask("Which colour is it?", "red")
    assert RationaleSource(tmp_path / "ds.json").recorded_question("Q: What shape is this? A:") == "What shape is this?"


def test_rationale_source_jsonl_relative_to_yaml(tmp_path):
    lines = [{"prompt": QUESTION, "target": TARGET, "rationale": ["It has no corners.", "It is round."]}]
    (tmp_path / "edits.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    (tmp_path / "h.yaml").write_text("alg_name: ReasonEdit\nmodel_name: /m/qwen2-vl\nrationale_source: edits.jsonl\n",
                                     encoding="utf-8")
    hp = ReasonEditHyperParams.from_hparams(tmp_path / "h.yaml")
    assert request_to_record(easyedit_request(), hp, "a")["rationale"] == ["It has no corners.", "It is round."]


def test_rationale_source_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        request_to_record(easyedit_request(), hparams(rationale_source=str(tmp_path / "nope.json")), "a")


# ------------------------------------------------------------------------------ the HF contract
def test_nothing_retrieved_gives_identical_logits(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, "How many corners?", "none", blue())
    base = logits_of(model, inputs)
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    out = logits_of(wrapper, inputs)
    assert torch.equal(out, base)
    assert wrapper.editor.questions == ["How many corners?"]  # the question was recovered exactly
    assert wrapper.last_retrieval is not None and not wrapper.last_retrieval.accepted


def test_retrieved_facts_enter_the_prompt_and_logits_are_trimmed(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, TARGET, red())
    length = inputs["input_ids"].shape[1]
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    out = logits_of(wrapper, inputs)
    assert wrapper.editor.questions == [QUESTION]
    assert wrapper.last_retrieval.accepted
    assert out.shape == (1, length, model.config.text_config.vocab_size)

    # Reference: EasyEdit's own prompt built around the fused question, run on the base model.
    fused = f"The answer to '{QUESTION}' is {TARGET}. {RATIONALE} {QUESTION}"
    reference_inputs = easyedit_inputs(processor, fused, TARGET, red())
    reference = logits_of(model, reference_inputs)
    assert reference.shape[1] > length
    torch.testing.assert_close(out, reference[:, -length:], rtol=1e-5, atol=1e-5)
    assert not torch.equal(out, logits_of(model, inputs)[:, -length:])

    # The query saw the caller's pixel tensors.
    seen = wrapper.editor.query_inputs[0]
    assert torch.equal(seen["pixel_values"], inputs["pixel_values"])


def test_evidence_questions_are_asked_on_the_inputs_easyedit_built(tiny_qwen):
    """The gate's evidence check on EasyEdit's tensor path: the claim question spliced into the caller's
    inputs gives the P(yes) the model gives that question on the same image built by the processor."""
    from reasonedit_plugin.scoring import yes_share

    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, TARGET, red())
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    logits_of(wrapper, inputs)
    claim = "Does the image show it has no corners?"
    reference = logits_of(model, easyedit_inputs(processor, claim, "", red()))[0, -1]
    assert wrapper.editor.yes(claim) == pytest.approx(yes_share(processor.tokenizer, reference), abs=1e-5)
    other = logits_of(model, easyedit_inputs(processor, claim, "", blue()))[0, -1]
    assert yes_share(processor.tokenizer, other) != pytest.approx(yes_share(processor.tokenizer, reference), abs=1e-6)


def test_trimmed_logits_line_up_with_easyedit_right_aligned_labels(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, TARGET, red())
    ids = inputs["input_ids"]
    target_ids = processor.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[0, -len(target_ids):] = torch.tensor(target_ids)
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    logits = logits_of(wrapper, inputs)[:, :-1]
    targ = labels[:, 1:]
    mask = targ != -100
    # The positions EasyEdit scores predict exactly the target tokens from the fused prompt.
    fused = f"The answer to '{QUESTION}' is {TARGET}. {RATIONALE} {QUESTION}"
    reference = logits_of(model, easyedit_inputs(processor, fused, TARGET, red()))[:, :-1]
    torch.testing.assert_close(logits[mask], reference[:, -logits.shape[1]:][mask], rtol=1e-5, atol=1e-5)
    assert mask.sum().item() == len(target_ids)


def test_text_only_inputs_pass_through(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, TARGET, None)
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    assert torch.equal(logits_of(wrapper, inputs), logits_of(model, inputs))
    assert wrapper.editor.questions == []


def test_base_model_is_never_modified(tiny_qwen):
    model, processor = tiny_qwen
    before = state(model)
    wrapper, restore = apply_reasonedit_to_multimodal_model(
        model, processor, [easyedit_request(rationale=RATIONALE)], hparams(), editor_factory=stand_in_factory())
    logits_of(wrapper, easyedit_inputs(processor, QUESTION, TARGET, red()))
    restore()
    assert_same_state(before, state(model))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert wrapper.model is model and wrapper.config is model.config  # attribute fallback


def test_generate_returns_the_callers_prompt_then_new_tokens(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, "", red())
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    out = wrapper.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(out[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    assert wrapper.last_retrieval.accepted


def test_batches_of_more_than_one_are_refused(tiny_qwen):
    model, processor = tiny_qwen
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, processor, [easyedit_request(rationale=RATIONALE)],
                                                      hparams(), editor_factory=stand_in_factory())
    inputs = dict(processor(images=[red(), blue()], text=[
        processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                      add_generation_prompt=True, tokenize=False) for q in (QUESTION, "Why?")],
        return_tensors="pt", padding=True))
    with pytest.raises(ReasonEditError, match="one example at a time"):
        wrapper(**inputs)


# ------------------------------------------------------------------------------ apply, modes, restore
def test_single_mode_gives_a_fresh_wrapper_and_restore_undoes_it(tiny_qwen):
    model, processor = tiny_qwen
    inputs = easyedit_inputs(processor, QUESTION, TARGET, red())
    base = logits_of(model, inputs)
    created: list = []
    w1, restore1 = apply_reasonedit_to_multimodal_model(
        model, processor, [easyedit_request(rationale=RATIONALE)], hparams(), copy=False, return_orig_weights=True,
        keep_original_weight=False, editor_factory=stand_in_factory(created))
    w2, _ = apply_reasonedit_to_multimodal_model(
        model, processor, [easyedit_request(prompt="Why?", rationale=RATIONALE)], hparams(),
        editor_factory=stand_in_factory(created))
    assert w1 is not w2 and len(created) == 2
    assert created[0][0] is model and created[0][1] is processor
    assert isinstance(restore1, RestoreEdits) and callable(restore1)
    assert w1.edit_log == ["easyedit-00001"]
    assert not torch.equal(logits_of(w1, inputs), base)
    with torch.no_grad():  # EasyEdit calls it like this
        assert restore1() == ["easyedit-00001"]
    assert w1.editor.edit_ids() == [] and torch.equal(logits_of(w1, inputs), base)


def test_a_list_of_several_requests_applies_every_one():
    editor_made: list = []
    model = torch.nn.Linear(2, 2)
    requests = [easyedit_request(rationale=RATIONALE), easyedit_request(prompt="Why?", rationale=RATIONALE)]
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, None, requests, hparams(),
                                                      editor_factory=stand_in_factory(editor_made))
    assert sorted(wrapper.editor.edit_ids()) == ["easyedit-00001", "easyedit-00002"]


def test_sequential_mode_appends_to_one_codebook_and_restore_ends_the_session():
    model = torch.nn.Linear(2, 2)
    hp = hparams()
    created: list = []
    factory = stand_in_factory(created)
    w1, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="A."), hp,
                                                 editor_factory=factory, train_ds=None)
    w2, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(prompt="Q2?", rationale="B."), hp,
                                                 editor_factory=factory, train_ds=None)
    assert w1 is w2 and len(created) == 1
    assert w1.editor.edit_ids() == ["easyedit-00001", "easyedit-00002"]
    # the returned model may be passed back as `model`
    w3, restore = apply_reasonedit_to_multimodal_model(w2, None, easyedit_request(prompt="Q3?", rationale="C."), hp,
                                                       editor_factory=factory)
    assert w3 is w1 and len(w1.editor.edit_ids()) == 3
    assert not hasattr(model, "reasonedit") and "editor" not in vars(model)  # nothing written on the base model
    assert restore() == ["easyedit-00003", "easyedit-00002", "easyedit-00001"]
    w4, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="D."), hp,
                                                 editor_factory=factory)
    assert w4 is not w1 and w4.editor.edit_ids() == ["easyedit-00001"]


def test_sequential_session_restarts_for_new_hparams_and_end_session():
    model = torch.nn.Linear(2, 2)
    factory = stand_in_factory()
    w1, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="A."), hparams(),
                                                 editor_factory=factory)
    w2, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="A."), hparams(),
                                                 editor_factory=factory)
    assert w2 is not w1
    end_session(w2)
    hp = w2.hparams
    w3, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="A."), hp,
                                                 editor_factory=factory)
    assert w3 is not w2


def test_copy_true_wraps_a_copy():
    model = torch.nn.Linear(2, 2)
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, None, [easyedit_request(rationale="A.")], hparams(),
                                                      copy=True, editor_factory=stand_in_factory())
    assert wrapper.model is not model and torch.equal(wrapper.model.weight, model.weight)


def test_a_failing_request_adds_nothing():
    model = torch.nn.Linear(2, 2)
    editor = StandInEditor()
    wrapper, _ = apply_reasonedit_to_multimodal_model(model, None, easyedit_request(rationale="A."), hparams(),
                                                      editor_factory=lambda *a: editor)
    with pytest.raises(RecordError):
        apply_reasonedit_to_multimodal_model(wrapper, None, [easyedit_request(rationale="B."), easyedit_request()],
                                             hparams(), editor_factory=lambda *a: editor)
    assert editor.edit_ids() == ["easyedit-00001"]


def test_hparams_are_checked():
    with pytest.raises(ConfigError, match="ReasonEditHyperParams"):
        apply_reasonedit_to_multimodal_model(torch.nn.Linear(2, 2), None, [easyedit_request()], object())
    wrapper, _ = apply_reasonedit_to_multimodal_model(
        torch.nn.Linear(2, 2), None, [easyedit_request(rationale="A.")],
        {"alg_name": "ReasonEdit", "model_name": "/m/qwen2-vl"}, editor_factory=stand_in_factory())
    assert isinstance(wrapper.hparams, ReasonEditHyperParams)
    with pytest.raises(RecordError, match="no requests"):
        apply_reasonedit_to_multimodal_model(torch.nn.Linear(2, 2), None, [], hparams())


# ------------------------------------------------------------------------------ the BLIP-2 / MiniGPT-4 contract
class WordTokenizer:
    """Whitespace 'tokenizer' with a stable vocabulary (enough for the BLIP-2 style contract)."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split(" ") if w]

    def decode(self, ids, **kwargs) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return " ".join(inverse[i] for i in ids)

    def __call__(self, texts, **kwargs):
        return {"input_ids": torch.tensor([self.encode(t) for t in texts])}


class FakeBlip2(torch.nn.Module):
    """Mimics EasyEdit's Blip2OPT forward(samples): 4 query tokens + text tokens; labels from prompts_len."""

    def __init__(self, tok: WordTokenizer):
        super().__init__()
        self.tok = tok
        self.embed = torch.nn.Embedding(200, 8)
        self.head = torch.nn.Linear(8, 200)

    def forward(self, samples):
        ids = torch.tensor([self.tok.encode(samples["text_input"][0])])
        image = samples["image"].float().mean().expand(1, 4, 8)
        hidden = torch.cat([image, self.embed(ids)], dim=1).cumsum(dim=1)
        labels = torch.cat([torch.full((1, 4), -100), ids], dim=1)
        labels[:, 4:4 + samples["prompts_len"][0]] = -100
        return types.SimpleNamespace(logits=self.head(hidden), labels=labels)


def blip_batch(tok: WordTokenizer, prompt: str, target: str, image: torch.Tensor) -> dict[str, Any]:
    return {"text_input": [prompt + " " + target], "image": image, "labels": torch.tensor([tok.encode(target)]),
            "prompts_len": [len(tok.encode(prompt))]}


def test_blip2_contract_fuses_and_trims():
    tok = WordTokenizer()
    model = FakeBlip2(tok)
    image = torch.ones(1, 3, 8, 8)
    editor = StandInEditor()
    wrapper, restore = apply_reasonedit_to_multimodal_model(
        model, tok, [easyedit_request(rationale="It is round.")], hparams(), editor_factory=lambda *a: editor)

    plain = blip_batch(tok, "How many corners?", "none", image)
    with torch.no_grad():
        assert torch.equal(wrapper(plain).logits, model(plain).logits)

    batch = blip_batch(tok, QUESTION, TARGET, image)
    with torch.no_grad():
        base = model(batch)
        out = wrapper(batch)
    assert editor.questions[-1] == QUESTION and wrapper.last_retrieval.accepted
    assert out.logits.shape == base.logits.shape and torch.equal(out.labels, base.labels)
    fused = f"The answer to '{QUESTION}' is {TARGET}. It is round. {QUESTION}"
    with torch.no_grad():
        reference = model(blip_batch(tok, fused, TARGET, image))
    delta = reference.logits.shape[1] - base.logits.shape[1]
    torch.testing.assert_close(out.logits, reference.logits[:, delta:])
    assert torch.equal(editor.query_inputs[-1]["pixel_values"], image)
    restore()
    with torch.no_grad():
        assert torch.equal(wrapper(batch).logits, base.logits)


# ------------------------------------------------------------------------------ the real engine
def test_real_engine_end_to_end_on_tiny_qwen2_vl(tiny_qwen):
    try:
        from reasonedit_plugin.vlm import VLM  # noqa: F401
        from reasonedit_plugin.text_encoder import shared_text_encoder

        shared_text_encoder()
    except Exception as exc:  # the VLM interface or the packaged sentence encoder is not installed
        pytest.skip(f"the engine's VLM / text encoder is unavailable here: {exc}")
    model, processor = tiny_qwen
    hp = hparams(only_edit_errors=False, augment={"enabled": False})
    wrapper, restore = apply_reasonedit_to_multimodal_model(model, processor, easyedit_request(rationale=RATIONALE), hp)
    assert wrapper.editor.edit_ids() == ["easyedit-00001"]

    edited = easyedit_inputs(processor, QUESTION, TARGET, red())
    out = logits_of(wrapper, edited)
    assert wrapper.last_retrieval.accepted and RATIONALE.split(". ")[0] in " ".join(wrapper.last_retrieval.facts)
    assert out.shape[1] == edited["input_ids"].shape[1]

    unrelated = easyedit_inputs(processor, "What is the capital of France?", "Paris", blue())
    base = logits_of(model, unrelated)
    got = logits_of(wrapper, unrelated)
    if not wrapper.last_retrieval.accepted:
        assert torch.equal(got, base)
    restore()
    assert torch.equal(logits_of(wrapper, edited), logits_of(model, edited))
