"""Does the embedded model know, at a colour or shape word of its prompt, whether the image shows it?

    python benchmarks/grounding_probe.py --model DIR            # default: the shipped model

A fact about a near miss ("Red circles belong to the Kesh tribe.", asked of a red square) differs from a fact
about the image only in such words, so following the right facts needs this match somewhere in the model. The
script runs prompts of the training mix's ``facts`` and ``near_miss`` kinds on easy-vqa *test* images (never
trained on), takes the decoder's hidden state at every colour or shape word after each layer, and fits a
logistic probe (``sklearn``) "does the image show this word" on 70 % of the prompts; it prints the probe's
accuracy on the other 30 % per layer, beside the base rate (always guessing the majority label). A model whose
probe stays near the base rate never computes the match; one near 1.0 does, and whether its answers use it is
then the question (``examples/measure_default_model.py``'s near-miss rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reasonedit_plugin.data.aux_probes import GroundingProbe  # noqa: E402
from reasonedit_plugin.data.default_model_scoring import encode, load_trained  # noqa: E402
from reasonedit_plugin.data.shaperules import rule_world  # noqa: E402
from reasonedit_plugin.data.training_mix import MixSampler  # noqa: E402

DEFAULT_MODEL = ROOT / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes"


def word_states(model_dir: Path, prompts: int, seed: int, batch: int = 16) -> tuple[dict[int, np.ndarray], np.ndarray,
                                                                                   np.ndarray]:
    """Hidden states after each decoder layer at every colour or shape word ({layer: [m, H]}), whether the image
    shows the word [m], and the prompt each word came from [m]."""
    model, tokenizer, trained, images = load_trained(model_dir)
    cfg = dataclasses.replace(trained, mix={"facts": 0.5, "near_miss": 0.5}, easy_share=0.0)
    sampler = MixSampler(rule_world() if cfg.world_seed is None else rule_world(cfg.world_seed), cfg,
                         random.Random(f"grounding-probe:{seed}"), image_split="test")
    words = GroundingProbe(cfg.hidden_size, tokenizer, unit="word", image_split="test")  # its targets, not its head
    states: dict[int, list[np.ndarray]] = {layer: [] for layer in range(1, cfg.num_layers + 1)}
    shown: list[np.ndarray] = []
    source: list[np.ndarray] = []
    for start in range(0, prompts, batch):
        examples = [sampler.sample() for _ in range(min(batch, prompts - start))]
        inputs = encode(tokenizer, images, examples, None)
        with torch.no_grad():
            out = model(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True)
        where, truth = words.targets(inputs["input_ids"], [ex.image for ex in examples])
        for layer in states:
            states[layer].append(out.hidden_states[layer][where[:, 0], where[:, 1]].numpy())
        shown.append(truth.numpy())
        source.append(start + where[:, 0].numpy())
    return ({k: np.concatenate(v) for k, v in states.items()}, np.concatenate(shown).astype(float),
            np.concatenate(source))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--prompts", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(args.threads)
    states, shown, source = word_states(args.model, args.prompts, args.seed)
    train = source < int(0.7 * args.prompts)
    held = shown[~train]
    out = {"model": str(args.model), "words": int(len(shown)), "held_out_words": int(len(held)),
           "base_rate": round(float(max(held.mean(), 1 - held.mean())), 3), "held_out_accuracy": {}}
    for layer, x in states.items():
        probe = LogisticRegression(max_iter=2000).fit(x[train], shown[train])
        out["held_out_accuracy"][f"layer {layer}"] = round(float(probe.score(x[~train], held)), 3)
    print(f"{out['words']} colour/shape words ({out['held_out_words']} held out), base rate {out['base_rate']:.3f}")
    for name, acc in out["held_out_accuracy"].items():
        print(f"after decoder {name}: held-out accuracy {acc:.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
