"""Contract suite of the VLM interface, run on a tiny random model of every ModelSpec family.

Each family is built in process from its config classes (``tests/tiny_models.py``); a family whose
classes the installed transformers lacks is skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reasonedit_plugin.errors import ReasonEditError, UnsupportedModelError
from reasonedit_plugin.hooks import ModulePathError, capture_inputs, hook_count, modify_outputs
from reasonedit_plugin.model_specs import (DEFAULT_TOKEN_INPUTS, MODEL_SPECS, ModelSpec, get_model_spec,
                                           register_model_spec)
from reasonedit_plugin.scoring import next_token_logits
from reasonedit_plugin.vlm import VLM
from hand_scoring import HAND_ATOL, OPTIONS, hand_option_nll, noise_image
from tiny_models import FAMILIES, build_or_skip

ASSET = Path(__file__).resolve().parents[1] / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes"

_CACHE: dict[str, VLM] = {}


def tiny_vlm(family: str) -> VLM:
    if family not in _CACHE:
        model, processor = build_or_skip(family)
        _CACHE[family] = VLM(model, processor)
    return _CACHE[family]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [noise_image(0, (40, 30)), noise_image(1, (30, 50)), noise_image(2, (64, 64))]


def test_every_spec_row_has_a_tiny_family() -> None:
    assert sorted(FAMILIES) == sorted(MODEL_SPECS)


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_found_by_model_type(family: str) -> None:
    vlm = tiny_vlm(family)
    assert vlm.model.config.model_type == family
    assert get_model_spec(vlm.model) is MODEL_SPECS[family]
    assert get_model_spec(vlm.model.config) is vlm.spec
    assert not vlm.model.training


@pytest.mark.parametrize("family", FAMILIES)
def test_resolve_layer(family: str) -> None:
    vlm = tiny_vlm(family)
    blocks = vlm.num_blocks()
    default = vlm.resolve_layer(None)
    assert isinstance(vlm.model.get_submodule(default), torch.nn.Module)
    assert default == vlm.spec.layer_path(vlm.spec.default_layer(vlm.model.config))
    assert vlm.resolve_layer(0) == vlm.spec.layer_path(0)
    assert vlm.resolve_layer(-1) == vlm.spec.layer_path(blocks - 1)
    assert vlm.resolve_layer("0") == vlm.spec.layer_path(0)
    assert vlm.resolve_layer(default) == default
    with pytest.raises(ReasonEditError, match="out of range"):
        vlm.resolve_layer(blocks)
    with pytest.raises(ReasonEditError, match="AutoLayer"):
        vlm.resolve_layer("auto")
    with pytest.raises(ModulePathError, match="Did you mean"):
        vlm.resolve_layer(default + "x")
    for current, legacy in vlm.spec.legacy_prefixes:  # reference-style paths are rewritten
        if default.startswith(current):
            assert vlm.resolve_layer(legacy + default[len(current):]) == default
    candidates = vlm.vision_candidates()
    assert default in candidates and len(set(candidates)) == len(candidates)


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_features_contract(family: str, images: list[Image.Image]) -> None:
    vlm = tiny_vlm(family)
    layer = vlm.resolve_layer(None)
    width = vlm.model.get_submodule(layer).in_features
    baseline_hooks = hook_count(vlm.model)

    with capture_inputs(vlm.model, [vlm.spec.language_model, vlm.spec.vision_tower]) as seen:
        feats = vlm.vision_features(images, layer)
    assert not seen.fired(vlm.spec.language_model), "the language model ran for a key"
    assert seen.fired(vlm.spec.vision_tower)
    assert hook_count(vlm.model) == baseline_hooks

    assert feats.dtype == torch.float32 and feats.shape == (len(images), width)
    assert torch.isfinite(feats).all()
    assert torch.equal(feats, vlm.vision_features(images, layer)), "not deterministic"
    assert not torch.allclose(feats[0], feats[1]), "two different images gave the same features"
    # the per-image split: a batch equals the images one by one
    singles = torch.cat([vlm.vision_features([img], layer) for img in images])
    torch.testing.assert_close(feats, singles, rtol=1e-4, atol=1e-5)
    # from processor outputs (the EasyEdit wrapper only has pixel tensors), whatever the texts
    inputs = vlm.build_inputs(images, ["what is this?", "a", "the colour of the thing"])
    torch.testing.assert_close(vlm.vision_features_from_inputs(inputs, layer), feats, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_features_multi_matches_single(family: str, images: list[Image.Image]) -> None:
    vlm = tiny_vlm(family)
    candidates = vlm.vision_candidates()
    multi = vlm.vision_features_multi(images[:2], candidates)
    assert list(multi) == candidates
    for path, value in multi.items():
        assert value.shape[0] == 2 and torch.isfinite(value).all(), path
    layer = vlm.resolve_layer(None)
    torch.testing.assert_close(multi[layer], vlm.vision_features(images[:2], layer))


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_pass_from_the_image_processor_equals_the_full_processor(family: str, images: list[Image.Image]) -> None:
    """Where a key's vision pass takes the image processor's outputs alone (no prompt), the features are
    exactly those from the full processor's outputs (text + images)."""
    vlm = tiny_vlm(family)
    module = vlm.resolve_layer(None)
    alone = vlm._image_inputs(images[:2])
    if alone is None:
        pytest.skip(f"{family}: the vision pass needs the full processor (image tokens or processor settings)")
    full = vlm.build_inputs(images[:2], ["", ""])
    assert torch.equal(vlm._vision_pass(alone, [module])[module], vlm._vision_pass(full, [module])[module])


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tap_reads_the_key_feature_from_an_answer_pass(family: str, images: list[Image.Image]) -> None:
    """An answer's own pass (option scoring: the image once per option) hands the tap the image's key
    feature, as a separate vision pass computes it; a check returning False stops the call there."""
    vlm = tiny_vlm(family)
    module = vlm.resolve_layer(None)
    baseline = hook_count(vlm.model)
    seen = []
    with vlm.vision_tap(module, lambda f: seen.append(f) or True) as tapped:
        scores = vlm.option_nll(images[0], "what is this?", ["a cat", "a dog"])
    assert tapped.fired and not tapped.stopped and len(seen) == 1 and len(scores) == 2
    torch.testing.assert_close(seen[0], vlm.vision_features([images[0]], module)[0], rtol=1e-5, atol=1e-6)
    with vlm.vision_tap(module, lambda f: False) as tapped:
        vlm.option_nll(images[0], "what is this?", ["a cat", "a dog"])
        pytest.fail("the call went on after the check said stop")
    assert tapped.stopped and hook_count(vlm.model) == baseline


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_removed_when_an_exception_passes(family: str, images: list[Image.Image]) -> None:
    vlm = tiny_vlm(family)
    layer = vlm.resolve_layer(0)
    baseline = hook_count(vlm.model)

    def explode(module, args, output):  # noqa: ANN001
        raise RuntimeError("boom inside the forward")

    with pytest.raises(RuntimeError, match="boom"):
        with capture_inputs(vlm.model, [layer]), modify_outputs(vlm.model, layer, explode):
            vlm.vision_features(images[:1], vlm.resolve_layer(-1))
    assert hook_count(vlm.model) == baseline
    with pytest.raises(KeyError):
        with capture_inputs(vlm.model, [layer], stop=True):
            raise KeyError("user code")
    assert hook_count(vlm.model) == baseline
    with pytest.raises(ModulePathError):
        with capture_inputs(vlm.model, [layer, "no.such.module"]):
            pass  # pragma: no cover
    assert hook_count(vlm.model) == baseline


@pytest.mark.parametrize("family", FAMILIES)
def test_language_side(family: str, images: list[Image.Image]) -> None:
    vlm = tiny_vlm(family)
    prompt = vlm.prompt_text("Which shape is red?")
    assert "Which shape is red?" in prompt
    assert vlm.prompt_text("") != prompt
    nll = vlm.option_nll(images[0], "Which shape is red?", ["circle", "square", "a big triangle"])
    assert len(nll) == 3 and all(np.isfinite(nll)) and all(v > 0 for v in nll)
    assert nll == vlm.option_nll(images[0], "Which shape is red?", ["circle", "square", "a big triangle"])
    if vlm.spec.scorer == "image_text_similarity":  # multiple choice only, and it says so
        for call in (lambda: vlm.continuation_nll(images[0], "Describe this image.", "A red circle."),
                     lambda: vlm.yes_probability(images[0], "Does the image show a circle?"),
                     lambda: vlm.generate(images[0], "What is it?", max_new_tokens=3)):
            with pytest.raises(UnsupportedModelError, match="give choices"):
                call()
        return
    mean = vlm.continuation_nll(images[0], "Describe this image.", "A red circle.")
    assert np.isfinite(mean) and mean > 0
    (scores,) = vlm.token_scores(images[0], "Describe this image.", ["A red circle."])
    assert scores.targets.shape == scores.predicted.shape == scores.logprobs.shape
    assert 0.0 <= scores.accuracy <= 1.0 and mean == pytest.approx(scores.nll / len(scores.targets))
    p = vlm.yes_probability(images[0], "Does the image show a circle?")
    assert 0.0 <= p <= 1.0
    assert isinstance(vlm.generate(images[0], "What is it?", max_new_tokens=3), str)



def _yes_with_head_rows(vlm: VLM, image: Image.Image,
                        questions: list[str]) -> tuple[list[float], list[tuple[int, ...]]]:
    """``vlm.yes_probabilities`` and the (batch, positions) of each call of the LM head it made (causal rows)."""
    rows: list[tuple[int, ...]] = []
    head = vlm.model.get_output_embeddings() if vlm.spec.scorer == "causal_lm" else None
    handle = head.register_forward_pre_hook(lambda m, args: rows.append(tuple(args[0].shape[:-1]))) if head else None
    try:
        return vlm.yes_probabilities(image, questions), rows
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_yes_probabilities_batch_questions_of_unequal_length(family: str, images: list[Image.Image],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The evidence check's batched yes/no pass reads each row at its own last real token: it equals the
    questions asked one by one, the LM head runs on the positions read only, lists longer than YES_BATCH go in
    several passes, and the one-question pass equals the last position of a full forward."""
    vlm = tiny_vlm(family)
    if vlm.spec.scorer == "image_text_similarity":
        return
    questions = ["Does the image show a circle?", "Is it red?",
                 "Does the image show a big blue square on a white page?"]
    one_by_one = [vlm.yes_probability(images[0], q) for q in questions]
    batched, rows = _yes_with_head_rows(vlm, images[0], questions)
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    if rows and "logits_to_keep" in inspect.signature(type(vlm.model).forward).parameters:
        # each row's last position only (left padding), or from the first padded row's end
        assert rows[-1][0] == 3 and (rows[-1][1] == 1 if vlm.spec.pad_left else rows[-1][1] < 12), rows
    monkeypatch.setattr("reasonedit_plugin.vlm.YES_BATCH", 2)
    chunked, rows = _yes_with_head_rows(vlm, images[0], questions)
    assert chunked == pytest.approx(one_by_one, abs=1e-5)
    assert vlm.spec.scorer != "causal_lm" or [r[0] for r in rows] == [2, 1]
    assert vlm.yes_probabilities(images[0], []) == []
    if vlm.spec.scorer == "causal_lm":
        inputs = vlm.build_inputs([images[0]], [questions[2]])
        inputs.pop("labels", None)
        with torch.inference_mode():
            full = vlm.model(**inputs).logits[0, -1]
        torch.testing.assert_close(next_token_logits(vlm, images[0], [questions[2]])[0], full.float(),
                                   rtol=1e-4, atol=1e-5)


# --- option scoring against a hand computation, for every row ------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_option_nll_matches_hand_computation(family: str, images: list[Image.Image]) -> None:
    """Batched, padded option scoring == one plain forward per option, for every row (catches per-token
    inputs extended wrongly: PaliGemma token types, Mllama/IDEFICS cross-attention masks)."""
    vlm = tiny_vlm(family)
    question = "Which shape is red?"
    expected = hand_option_nll(vlm, images[0], question, OPTIONS)
    got = vlm.option_nll(images[0], question, OPTIONS)
    np.testing.assert_allclose(got, expected, rtol=0, atol=HAND_ATOL)
    if vlm.spec.scorer != "image_text_similarity":
        mean = vlm.continuation_nll(images[0], question, OPTIONS[2])
        n = len(vlm.tokenizer(OPTIONS[2], add_special_tokens=False)["input_ids"])
        assert mean == pytest.approx(expected[2] / n, rel=1e-4)


def test_prefix_lm_option_tokens_stay_out_of_the_prefix(images: list[Image.Image]) -> None:
    """The token-type leak: with appended options in PaliGemma's bidirectional prefix (token type 0,
    the default for an unlisted per-token input) the scores differ from the hand computation."""
    vlm = tiny_vlm("paligemma")
    expected = hand_option_nll(vlm, images[0], "Which shape is red?", OPTIONS)
    leaky_row = dataclasses.replace(vlm.spec, token_inputs=DEFAULT_TOKEN_INPUTS)
    leaky = VLM(vlm.model, vlm.processor, spec=leaky_row)
    got = leaky.option_nll(images[0], "Which shape is red?", OPTIONS)
    assert np.abs(np.subtract(got, expected)).max() > 10 * HAND_ATOL, "the leak was not detected"
    np.testing.assert_allclose(vlm.option_nll(images[0], "Which shape is red?", OPTIONS), expected,
                               rtol=0, atol=HAND_ATOL)


def test_unlisted_per_token_input_of_another_rank_is_an_error(images: list[Image.Image]) -> None:
    vlm = tiny_vlm("mllama")
    row = dataclasses.replace(vlm.spec, token_inputs=DEFAULT_TOKEN_INPUTS)
    with pytest.raises(UnsupportedModelError, match="TokenInput\\('cross_attention_mask'"):
        VLM(vlm.model, vlm.processor, spec=row).option_nll(images[0], "q?", ["a", "bc"])


def test_images_are_thumbnailed(images: list[Image.Image]) -> None:
    model, processor = build_or_skip("qwen2_vl")
    vlm = VLM(model, processor, max_image_side=32)
    (small,) = vlm._prepare_images([noise_image(3, (300, 100))])
    assert max(small.size) == 32
    assert vlm.vision_features([noise_image(3, (300, 100))], vlm.resolve_layer(None)).shape[0] == 1


def test_unknown_model_type_lists_supported() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        get_model_spec("llama")
    message = str(info.value)
    assert "text-only" in message and "'llava'" not in message.split("Supported")[0]  # no look-alike hint
    assert "register_model_spec" in message and "model_specs" in message and "ADDING_A_FAMILY" in message
    for model_type in MODEL_SPECS:
        assert repr(model_type) in message
    hint = str(pytest.raises(UnsupportedModelError, get_model_spec, "qwen2_5_omni").value).split("Supported")[0]
    assert all(repr(q) in hint for q in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5")) and "'llava'" not in hint
    hint = str(pytest.raises(UnsupportedModelError, get_model_spec, "llava_next_video").value).split("Supported")[0]
    assert "'llava_next'" in hint and "LlavaNextVideoForConditionalGeneration" in hint
    hint = str(pytest.raises(UnsupportedModelError, get_model_spec, "vipllava").value).split("Supported")[0]
    assert "VipLlavaForConditionalGeneration" in hint and "text-only" not in hint

    class Config:
        model_type = "mystery_vlm"

    with pytest.raises(UnsupportedModelError, match="mystery_vlm"):
        get_model_spec(Config())


def test_register_model_spec_validates() -> None:
    row = MODEL_SPECS["qwen2_vl"]
    with pytest.raises(UnsupportedModelError, match="already registered"):
        register_model_spec(row)
    assert register_model_spec(row, overwrite=True) is row
    with pytest.raises(UnsupportedModelError, match="must contain"):
        ModelSpec(model_type="x", model_class="X", vision_tower="v", mlp_template="v.blocks.mlp",
                  first_linear="fc1", num_blocks_attr="vision_config.depth", language_model="lm")
    with pytest.raises(UnsupportedModelError, match="prompt_template"):
        ModelSpec(model_type="x", model_class="X", vision_tower="v", mlp_template="v.{L}.mlp",
                  first_linear="fc1", num_blocks_attr="vision_config.depth", language_model="lm",
                  chat_template=False)


def test_known_default_layers() -> None:
    class Sub:
        def __init__(self, **kw):  # noqa: ANN003
            self.__dict__.update(kw)

    def config(depth_attr: str, depth: int, hidden: int) -> Sub:
        return Sub(vision_config=Sub(**{depth_attr: depth}), text_config=Sub(hidden_size=hidden))

    assert MODEL_SPECS["qwen3_vl"].default_layer(config("depth", 27, 4096)) == 24
    assert MODEL_SPECS["qwen3_vl"].default_layer(config("depth", 24, 2560)) == 21
    assert MODEL_SPECS["llava"].default_layer(config("num_hidden_layers", 24, 4096)) == 19
    assert MODEL_SPECS["instructblip"].default_layer(config("num_hidden_layers", 39, 4096)) == 38
    assert MODEL_SPECS["qwen2_vl"].default_layer(config("depth", 32, 3584)) == 21  # ~2/3 depth
    assert MODEL_SPECS["qwen3_vl"].layer_path(24) == "model.visual.blocks.24.mlp.linear_fc1"


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "instructblip", "smolvlm", "mllama", "paligemma", "blip",
                                    "idefics", "clip"])
def test_from_pretrained_local_folder(family: str, tmp_path: Path, images: list[Image.Image]) -> None:
    """Saved and reloaded offline, with PIL image processors and no video processor (no torchvision)."""
    model, processor = build_or_skip(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vlm = VLM.from_pretrained(tmp_path, dtype="float32")
    reference = VLM(model, processor)
    layer = reference.resolve_layer(None)
    torch.testing.assert_close(vlm.vision_features(images, layer), reference.vision_features(images, layer))
    assert vlm.prompt_text("hi") == reference.prompt_text("hi")
    assert type(vlm.model) is type(model)
    np.testing.assert_allclose(vlm.option_nll(images[0], "q?", ["a", "bc"]),
                               reference.option_nll(images[0], "q?", ["a", "bc"]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ReasonEditError, match="local model folder"):
        VLM.from_pretrained(tmp_path / "missing")


@pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="the tiny Qwen2-VL asset is not built yet")
def test_shipped_tiny_qwen2_vl_loads_through_the_spec(images: list[Image.Image]) -> None:
    vlm = VLM.from_pretrained(ASSET)
    assert vlm.spec is MODEL_SPECS["qwen2_vl"]
    feats = vlm.vision_features(images, vlm.resolve_layer(None))
    assert feats.shape[0] == len(images) and torch.isfinite(feats).all()
    assert len(vlm.option_nll(images[0], "what shape is it?", ["circle", "square"])) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_easyedit_teacher_forced_logits_follow_the_row(family: str, images: list[Image.Image]) -> None:
    """evaluation.vlm_teacher_forced (EasyEdit's token accuracy / locality) extends per-token inputs as the
    row says: its target log-likelihood equals the hand computation; non-decoder scorers report none."""
    from reasonedit_plugin.evaluation import vlm_teacher_forced

    vlm = tiny_vlm(family)
    question, option = "Which shape is red?", OPTIONS[2]
    tf = vlm_teacher_forced(vlm, images[0], question, option)
    if vlm.spec.scorer != "causal_lm":
        assert tf is None
        return
    mask = tf.labels[1:] != -100
    logp = tf.logits[:-1].log_softmax(-1)[mask].gather(-1, tf.labels[1:][mask][:, None])
    (expected,) = hand_option_nll(vlm, images[0], question, [option])
    assert float(-logp.sum()) == pytest.approx(expected, abs=HAND_ATOL)


def test_clip_text_is_cut_to_77_tokens_keeping_the_option(images: list[Image.Image]) -> None:
    """CLIP reads '<option>. <fused question>' cut to its 77 positions from the end: a fused question
    far longer than that still scores, the option stays, and the question's tail is what is cut."""
    vlm = tiny_vlm("clip")
    long_question = "Red circles belong to the Vol tribe. " * 6 + "Which tribe owns the shape?"
    options = ["Vol", "Kem"]
    got = vlm.option_nll(images[0], long_question, options)
    model = vlm.model
    pixels = vlm.processor.image_processor(vlm._prepare_images([images[0]]), return_tensors="pt")["pixel_values"]
    sims = []
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        for option in options:
            ids = vlm.tokenizer(f"{option}. {long_question}")["input_ids"]
            assert len(ids) > 77
            kept = ids[:76] + [ids[-1]]  # the start (option first), then the end-of-text token CLIP pools at
            assert vlm.tokenizer.decode(kept[1:4]).startswith(option)
            txt = model.get_text_features(input_ids=torch.tensor([kept])).pooler_output
            sims.append(float(model.logit_scale.exp() * torch.nn.functional.cosine_similarity(img, txt)[0]))
    np.testing.assert_allclose(got, [float(v) for v in -torch.tensor(sims).log_softmax(-1)], rtol=0, atol=HAND_ATOL)
