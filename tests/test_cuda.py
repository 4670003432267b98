"""The --device cuda paths, run where CUDA is (a GPU machine; skipped elsewhere, so CI never runs them).

Each test runs the same work on cpu and cuda and compares: a model on the GPU must give the answers it
gives on the CPU, up to float rounding in retrieval distances.
"""

from __future__ import annotations

import json

import pytest
import torch

from reasonedit_plugin.cli import main
from reasonedit_plugin.topology import TopologyConfig, auto_layer, auto_scale, no_balance

from test_training_loop import TINY_TRAINING

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_topology_balance_reads_cuda_features_as_it_reads_cpu_ones():
    """AutoLayer / AutoScaler / the no-balance ablation on a VLM's features left on the GPU (the compare
    command's default --balance auto failed there with a device mismatch until session 36)."""
    g = torch.Generator().manual_seed(0)
    vision = {"a": torch.randn(24, 8, generator=g), "b": torch.randn(24, 6, generator=g)}
    text = torch.randn(24, 5, generator=g)
    config = TopologyConfig(layer_samples=8, scale_samples=8, runs=3)
    on_gpu = {name: x.cuda() for name, x in vision.items()}
    assert auto_layer(on_gpu, text.cuda(), 3.0, config, 0) == auto_layer(vision, text, 3.0, config, 0)
    assert auto_scale(on_gpu["a"], text.cuda(), config, 0) == auto_scale(vision["a"], text, config, 0)
    assert no_balance(on_gpu["b"], text, 3.0, config, 0) == no_balance(vision["b"], text, 3.0, config, 0)


@pytest.mark.parametrize("balance", ["auto", "yaml"])
def test_compare_on_cuda_gives_the_cpu_rows(tmp_path, balance):
    """ReasonEdit and its answer-only ablation on the embedded model, on both devices: the same metrics and
    the same prediction and gate decision for every probe."""
    rows = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(["-q", "compare", "--device", device, "--limit", "6", "--methods", "ReasonEdit", "answer-only",
                     "--balance", balance, "--locality-size", "20", "--out", str(out)]) == 0
        data = json.loads((out / "results.json").read_text())
        rows[device] = {m["name"]: m for m in data["comparison"]["methods"]}
    for name, cpu_row in rows["cpu"].items():
        gpu_row = rows["cuda"][name]
        assert cpu_row["status"] == gpu_row["status"] == "ok", (name, gpu_row.get("reason"))
        cpu_eval, gpu_eval = cpu_row["evaluation"], gpu_row["evaluation"]
        assert cpu_eval["final"] == gpu_eval["final"], name
        assert [(p["predicted"], p["accepted"]) for p in cpu_eval["probes"]] == \
               [(p["predicted"], p["accepted"]) for p in gpu_eval["probes"]], name


def test_the_default_models_training_runs_on_cuda_and_saves_what_the_cpu_run_saves(tmp_path):
    """A few steps of the training recipe (every auxiliary head, checkpoint selection and the late steps'
    mean) on both devices: the CUDA run saves a stock folder whose weights are the CPU run's up to the
    numerics of a few optimiser steps (each moves a weight by at most about the learning rate)."""
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    from reasonedit_plugin.data import train_default_model as tdm

    tiny = dict(TINY_TRAINING, steps=6, num_layers=2, curriculum_steps=2, grounding_layer=1, claim_layer=2,
                value_layer=2, value_weight=1.0, average_from_step=4)
    weights = {}
    for device in ("cpu", "cuda"):
        cfg = tdm.TrainConfig(**tiny, out=str(tmp_path / device))
        result = tdm.train(cfg, progress=False, device=device)
        assert result["history"][-1]["averaged_steps"] == 2
        assert json.loads((tmp_path / device / "training_args.json").read_text())["device"].startswith(device)
        weights[device] = load_file(str(tmp_path / device / "model.safetensors"))
        Qwen2VLForConditionalGeneration.from_pretrained(cfg.out, local_files_only=True)
    assert weights["cpu"].keys() == weights["cuda"].keys()
    worst = max((weights["cpu"][k] - weights["cuda"][k]).abs().max().item() for k in weights["cpu"])
    assert worst < 6 * 2 * tiny.get("lr", tdm.TrainConfig.lr)
