"""A family added from outside the package by one ModelSpec row (docs/ADDING_A_FAMILY.md): the example
module registers it, hparams YAML and command line name such modules, and the whole method runs on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hand_scoring import HAND_ATOL, OPTIONS, hand_option_nll, noise_image
from reasonedit_plugin.errors import UnsupportedModelError
from reasonedit_plugin.model_specs import MODEL_SPECS, ModelSpec, register_model_spec
from reasonedit_plugin.vlm import VLM


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [noise_image(0, (40, 30)), noise_image(1, (30, 50)), noise_image(2, (64, 64))]


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def build_tiny_vipllava(seed: int = 0) -> tuple[object, object]:
    """The test template of docs/ADDING_A_FAMILY.md: a tiny random model + processor from config
    classes (no download), reusing the byte-level tokenizer of tiny_models."""
    from tiny_models import LLAVA_TEMPLATE, _clip_vision, _cls, _instantiate, _llama_text, tiny_tokenizer

    tok = tiny_tokenizer(["<pad>", "<s>", "</s>", "<image>"], LLAVA_TEMPLATE, pad_token="<pad>", bos_token="<s>",
                         eos_token="</s>")
    config = _cls("", "VipLlavaConfig")(vision_config=_clip_vision(), text_config=_llama_text(),
                                        image_token_index=3, vision_feature_layers=[-2, -1])
    image_processor = _cls("", "LlavaImageProcessorPil")(size={"shortest_edge": 28},
                                                         crop_size={"height": 28, "width": 28})
    processor = _cls("", "LlavaProcessor")(image_processor=image_processor, tokenizer=tok, patch_size=14,
                                           vision_feature_select_strategy="default",
                                           num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _instantiate("VipLlavaForConditionalGeneration", config, seed), processor


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch):
    """examples/ on sys.path; the example row is unregistered afterwards whoever registered it."""
    import sys

    from reasonedit_plugin import model_specs

    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert "vipllava" not in MODEL_SPECS
    try:
        yield
    finally:
        model_specs._REGISTRY.pop("vipllava", None)
        sys.modules.pop("family_vipllava", None)


@pytest.fixture
def outside_row(examples_on_path):
    """Registers examples/family_vipllava.py the way `model_specs: [family_vipllava]` does."""
    from reasonedit_plugin.model_specs import load_model_specs

    assert load_model_specs(["family_vipllava"]) == ["vipllava"]
    assert load_model_specs("family_vipllava") == []  # imported once: no duplicate error
    return MODEL_SPECS["vipllava"]


def test_yaml_and_cli_name_modules_that_register_rows(examples_on_path, tmp_path: Path, capsys) -> None:
    from reasonedit_plugin import model_specs
    from reasonedit_plugin.cli import main
    from reasonedit_plugin.errors import ConfigError
    from reasonedit_plugin.hparams import ReasonEditHyperParams

    yaml_path = tmp_path / "vip.yaml"
    yaml_path.write_text("alg_name: ReasonEdit\nmodel_name: package://tiny-qwen2-vl-shapes\n"
                         "model_specs: [family_vipllava]\n")
    hparams = ReasonEditHyperParams.from_hparams(str(yaml_path))
    assert hparams.model_specs == ["family_vipllava"] and "vipllava" in MODEL_SPECS
    assert hparams.to_dict()["model_specs"] == ["family_vipllava"]
    with pytest.raises(ConfigError, match="model_specs.*expected list"):
        ReasonEditHyperParams.from_dict({"alg_name": "ReasonEdit", "model_name": "m", "model_specs": "family_vipllava"})

    model_specs._REGISTRY.pop("vipllava")
    import sys

    sys.modules.pop("family_vipllava")
    # the command line loads the modules before the command runs (here it then fails on the missing edits)
    code = main(["edit", "--model-specs", "family_vipllava", "--edits", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "cb")])
    assert code != 0 and "vipllava" in MODEL_SPECS
    assert main(["edit", "--model-specs", "no_such_pkg.specs", "--edits", "x.jsonl", "--out", "cb"]) != 0
    assert "cannot import module 'no_such_pkg.specs'" in capsys.readouterr().err


def test_a_family_added_from_outside_by_a_row(outside_row: ModelSpec, images: list[Image.Image], text_encoder) -> None:
    from fakes import pattern

    from reasonedit_plugin import ModelSpec as Exported, ReasonEditor, register_model_spec as exported_register
    from reasonedit_plugin.config import ReasonEditConfig

    assert Exported is ModelSpec and exported_register is register_model_spec
    model, processor = build_tiny_vipllava()
    vlm = VLM(model, processor)
    assert vlm.spec is outside_row
    layer = vlm.resolve_layer(None)
    feats = vlm.vision_features(images, layer)
    assert feats.shape == (3, model.get_submodule(layer).in_features)
    torch.testing.assert_close(feats, torch.cat([vlm.vision_features([im], layer) for im in images]))
    np.testing.assert_allclose(vlm.option_nll(images[0], "Which shape is red?", OPTIONS),
                               hand_option_nll(vlm, images[0], "Which shape is red?", OPTIONS), rtol=0, atol=HAND_ATOL)
    editor = ReasonEditor(vlm, ReasonEditConfig(only_edit_errors=False, guard={"policy": "off"}),
                          text_encoder=text_encoder)
    editor.edit([{"id": "e1", "image": pattern(1, size=64), "prompt": "Which tribe owns the shape?",
                  "target": "Vol", "rationale": "Red circles belong to the Vol tribe."}])
    assert "Vol tribe" in editor.answer(pattern(1, size=64), "Which tribe owns the shape?", ["Vol", "Kem"]).prompt


def test_load_model_specs_errors_name_the_fix() -> None:
    from reasonedit_plugin.model_specs import load_model_specs

    with pytest.raises(UnsupportedModelError, match="cannot import module 'no_such_pkg.specs'.*PYTHONPATH"):
        load_model_specs(["no_such_pkg.specs"])
    with pytest.raises(UnsupportedModelError, match="module names"):
        load_model_specs([""])
