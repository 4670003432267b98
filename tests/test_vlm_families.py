"""Contract suite of the VLM interface, run on a tiny random model of every ModelSpec family.

Each family is built in process from its config classes (``tests/tiny_models.py``); a family whose
classes the installed transformers lacks is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reasonedit_plugin.errors import ReasonEditError, UnsupportedModelError
from reasonedit_plugin.hooks import ModulePathError, capture_inputs, hook_count, modify_outputs
from reasonedit_plugin.model_specs import MODEL_SPECS, ModelSpec, get_model_spec, register_model_spec
from reasonedit_plugin.vlm import VLM
from tiny_models import FAMILIES, build_or_skip

ASSET = Path(__file__).resolve().parents[1] / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes"

_CACHE: dict[str, VLM] = {}


def tiny_vlm(family: str) -> VLM:
    if family not in _CACHE:
        model, processor = build_or_skip(family)
        _CACHE[family] = VLM(model, processor)
    return _CACHE[family]


def noise_image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


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
    mean = vlm.continuation_nll(images[0], "Describe this image.", "A red circle.")
    assert np.isfinite(mean) and mean > 0
    p = vlm.yes_probability(images[0], "Does the image show a circle?")
    assert 0.0 <= p <= 1.0
    assert isinstance(vlm.generate(images[0], "What is it?", max_new_tokens=3), str)


def test_option_nll_matches_hand_computed_logits(images: list[Image.Image]) -> None:
    vlm = tiny_vlm("qwen2_vl")
    question, options = "Which shape is red?", ["circle", "square", "a big triangle"]
    expected = []
    for option in options:
        # byte tokenizer without merges: tokenizing prompt + option == concatenating the token ids
        inputs = vlm.processor(images=[images[0]], text=[vlm.prompt_text(question) + option], return_tensors="pt")
        n = len(vlm.tokenizer(option, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0].float()
        ids = inputs["input_ids"][0]
        logp = logits[-n - 1:-1].log_softmax(-1).gather(-1, ids[-n:, None]).squeeze(-1)
        expected.append(float(-logp.sum()))
    got = vlm.option_nll(images[0], question, options)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert int(np.argmin(got)) == int(np.argmin(expected))
    mean = vlm.continuation_nll(images[0], question, options[2])
    n = len(vlm.tokenizer(options[2], add_special_tokens=False)["input_ids"])
    assert mean == pytest.approx(expected[2] / n, rel=1e-4)


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
    assert "Did you mean 'llava'" in message and "register_model_spec" in message
    for model_type in MODEL_SPECS:
        assert repr(model_type) in message

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


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "instructblip", "smolvlm"])
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
