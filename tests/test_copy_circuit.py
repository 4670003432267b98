"""benchmarks/copy_circuit.py: the logit lens and the attention to a stated name, read on a tiny random model
(seconds; the code's reading, not a trained model's figures)."""

from __future__ import annotations

import pytest
import torch

from reasonedit_plugin.data import default_model_build as dmb
from reasonedit_plugin.data import shaperules as sr
from reasonedit_plugin.data import train_default_model as tdm
from reasonedit_plugin.data.default_model_scoring import encode
from reasonedit_plugin.data.training_mix import Example


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("copy_circuit")


@pytest.fixture(scope="module")
def tiny():
    cfg = tdm.TrainConfig(hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64, vision_dim=32,
                          vision_depth=1, vision_heads=2, num_layers=2, claim_layer=1, value_layer=1)
    tokenizer = dmb.build_tokenizer(sr.rule_world())
    torch.manual_seed(0)
    model = dmb.build_model(cfg, tokenizer).eval()
    model.set_attn_implementation("eager")
    return model, tokenizer


def _batch(tokenizer, text, answer):
    return encode(tokenizer, None, [Example("caption_facts", None, text, answer)], None)


def test_the_last_layers_lens_is_the_models_own_prediction_and_attention_goes_to_the_stated_name(script, tiny):
    model, tokenizer = tiny
    batch = _batch(tokenizer, "Red circles are members of the Qavuro tribe. Describe this image.",
                   "A red circle of the Qavuro tribe.")
    read = script.read_layers(model, tokenizer, batch, "Qavuro")
    assert len(read["ranks"]) == 3 and len(read["heads"]) == 2 and all(len(h) == 2 for h in read["heads"])
    assert all(0.0 < a <= 1.0 for layer in read["heads"] for a in layer)  # the name is stated once, attended a bit
    piece = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Qavuro")[0])
    q = next(p for p in range(batch["labels"].shape[1]) if int(batch["labels"][0, p]) == piece) - 1
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, q]
    assert read["ranks"][-1] == int((logits > logits[piece]).sum())  # the lens after the last layer is the output

    unstated = _batch(tokenizer, "Describe this image.", "A red circle of the Qavuro tribe.")
    assert all(a == 0.0 for layer in script.read_layers(model, tokenizer, unstated, "Qavuro")["heads"] for a in layer)


def test_a_name_outside_the_answer_is_a_clear_error(script, tiny):
    model, tokenizer = tiny
    batch = _batch(tokenizer, "Describe this image.", "A red circle.")
    with pytest.raises(ValueError, match="'Qavuro' is not spelled among the labelled answer tokens"):
        script.read_layers(model, tokenizer, batch, "Qavuro")
