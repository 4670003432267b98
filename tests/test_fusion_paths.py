"""The hidden-state fusions and contrastive tuning through the EasyEdit wrapper and the CLI, on the shipped
default model: same sequence length, the bias applied during model(**inputs), hooks gone afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reasonedit_plugin.data.split_files import load_split
from reasonedit_plugin.easyedit_adapter import _SESSIONS, apply_reasonedit_to_multimodal_model
from reasonedit_plugin.hooks import hook_count
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.records import load_image
from reasonedit_plugin.vlm import VLM

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


def _hparams(**sections) -> ReasonEditHyperParams:
    values = yaml.safe_load(DEFAULT.read_text())
    values.update({"only_edit_errors": False, "guard": {"policy": "off"}})
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value}
    return ReasonEditHyperParams.from_dict(values)


@pytest.fixture(scope="module")
def vlm():
    return VLM.from_pretrained(_hparams().model_name)


@pytest.fixture(scope="module")
def row(vlm):
    """The first `small` record whose question the tiny model can read: EasyEdit's wrapper retrieves with
    the question decoded from its token ids, and words outside the 149-word vocabulary decode as <unk>."""
    tokenizer = vlm.processor.tokenizer
    return next(r for r in load_split("small") if tokenizer.unk_token_id not in tokenizer(r["prompt"])["input_ids"])


def _easyedit_inputs(processor, prompt, target, image):
    content = [{"type": "image"}, {"type": "text", "text": prompt}]
    chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    return dict(processor(images=[image], text=[chat + target], return_tensors="pt", padding=True))


@pytest.mark.parametrize("kind", ["hidden_bias", "gated"])
def test_easyedit_wrapper_applies_the_bias_without_changing_the_length(vlm, row, kind):
    model, processor = vlm.model, vlm.processor
    image = load_image(row["image"])
    inputs = _easyedit_inputs(processor, row["prompt"], row["target"], image)
    with torch.no_grad():
        base = model(**inputs).logits
    hp = _hparams(fusion={"kind": kind, "gate_steps": 20})
    request = {"prompt": row["prompt"], "target": row["target"], "image": [image], "rationale": row["rationale"]}
    wrapper, restore = apply_reasonedit_to_multimodal_model(model, processor, [request], hp)
    with torch.no_grad():
        out = wrapper(**inputs).logits
    assert wrapper.last_retrieval.accepted
    assert out.shape == base.shape  # no tokens were spliced in
    assert not torch.equal(out, base)
    assert hook_count(model) == 0
    with torch.no_grad():
        generated = wrapper.generate(**{k: v for k, v in inputs.items()}, max_new_tokens=2, do_sample=False)
    assert torch.equal(generated[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert hook_count(model) == 0
    restore()
    with torch.no_grad():
        assert torch.equal(wrapper(**inputs).logits, base)
        assert torch.equal(model(**inputs).logits, base)  # the base model was never touched
    _SESSIONS.clear()


def test_contrastive_tuning_through_the_wrapper(vlm):
    rows = load_split("small")[:3]
    hp = _hparams(retrieval={"tuning": "contrastive"}, key_tuning={"steps": 10})
    wrapper = None
    for r in rows:
        request = {"prompt": r["prompt"], "target": r["target"], "image": [load_image(r["image"])],
                   "rationale": r["rationale"]}
        wrapper, _ = apply_reasonedit_to_multimodal_model(wrapper or vlm.model, vlm.processor, [request], hp)
    assert wrapper.editor.keys.tuner.version >= 1
    inputs = _easyedit_inputs(vlm.processor, rows[1]["prompt"], rows[1]["target"], load_image(rows[1]["image"]))
    with torch.no_grad():
        wrapper(**inputs)
    assert wrapper.last_retrieval.accepted


@pytest.mark.parametrize("kind", ["hidden_bias", "gated"])
def test_cli_eval_runs_the_new_kinds(tmp_path, kind):
    values = yaml.safe_load(DEFAULT.read_text())
    values["fusion"] = {**values["fusion"], "kind": kind, "gate_steps": 20}
    values["retrieval"] = {**values["retrieval"], "tuning": "contrastive"}
    values["key_tuning"] = {"steps": 5}
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(values))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reasonedit_plugin.cli", "-q", "eval", "--hparams", str(path), "--limit", "5",
           "--no-unedited", "--eval-every", "0", "--no-easyedit-metrics", "--locality-size", "5",
           "--no-plain-locality", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    config = results["comparison"]["config"]
    assert config["fusion"]["kind"] == kind and config["retrieval"]["tuning"] == "contrastive"
    rows = {m["name"]: m for m in results["comparison"]["methods"]}
    assert rows["ReasonEdit"]["status"] == "ok"
