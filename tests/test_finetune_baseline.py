"""The FT row (``finetune_baseline.py``): EasyEdit's FT settings on a Hugging Face VLM, on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.finetune_baseline import FineTuneConfig, FineTuneMethod
from reasonedit_plugin.records import make_record

REPO = Path(__file__).resolve().parents[1]
FT_YAML = REPO / "hparams" / "FT" / "tiny-qwen2-vl-shapes.yaml"


@pytest.fixture(scope="module")
def vlm():
    from reasonedit_plugin.hparams import resolve_model_name
    from reasonedit_plugin.vlm import VLM

    return VLM.from_pretrained(resolve_model_name("package://tiny-qwen2-vl-shapes"))


@pytest.fixture()
def record(tmp_path):
    Image.new("RGB", (64, 64), (150, 90, 40)).save(tmp_path / "brown.png")
    return make_record({"id": "e1", "image": str(tmp_path / "brown.png"), "prompt": "How many points does this "
                        "circle score?", "target": "nine", "choices": ["two", "five", "seven", "nine"]})


def test_shipped_yaml_is_easyedits_ft_form():
    """METHOD.md §7's lr and EasyEdit's FT form, on the last block of the shipped model (the YAML's own rule)."""
    import json

    config = FineTuneConfig.from_yaml(FT_YAML)
    blocks = json.loads((REPO / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes" / "config.json").read_text(
        encoding="utf-8"))["text_config"]["num_hidden_layers"]
    assert config.lr == 1e-4 and config.num_steps == 25 and config.norm_constraint is False
    assert config.layers == [blocks - 1]


def test_edit_lowers_the_target_nll_and_leaves_the_shared_model_alone(vlm, record):
    shared = {n: p.detach().clone() for n, p in vlm.model.named_parameters()}
    config = FineTuneConfig.from_yaml(FT_YAML)
    config.lr, config.num_steps = 1e-2, 10  # a strong setting so the test sees the edit take
    method = FineTuneMethod(vlm, config)
    name = next(iter(method.weights))
    method.apply(record)
    (first, last), = method.losses
    assert last < first
    assert not torch.equal(method.weights[name], method._pristine[name])
    assert method.predict(record.image, record.prompt, record.choices).text == "nine"
    assert all(torch.equal(p, shared[n]) for n, p in vlm.model.named_parameters())  # a copy was trained
    assert method.teacher_forced(record.image, record.prompt, record.target).logits.shape[-1] > 0
    method.reset()
    assert torch.equal(method.weights[name], method._pristine[name]) and method.losses == []
    assert all(not p.requires_grad for p in method.vlm.model.parameters())


def test_norm_constraint_bounds_every_change(vlm, record):
    config = FineTuneConfig.from_yaml(FT_YAML)
    config.lr, config.num_steps, config.norm_constraint = 1e-1, 3, 1e-3
    method = FineTuneMethod(vlm, config)
    method.apply(record)
    for name, w in method.weights.items():
        assert (w - method._pristine[name]).abs().max() <= 1e-3 + 1e-7


def test_bad_settings_are_one_line_errors(vlm, tmp_path):
    with pytest.raises(ConfigError, match="lr > 0"):
        FineTuneConfig(layers=[2], rewrite_module_tmp="a.{}.w", lr=0)
    with pytest.raises(ConfigError, match="not a parameter of this model"):
        FineTuneMethod(vlm, FineTuneConfig(layers=[2], rewrite_module_tmp="model.nope.{}.weight"))
    bad = tmp_path / "ft.yaml"
    bad.write_text(FT_YAML.read_text() + "learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        FineTuneConfig.from_yaml(bad)
