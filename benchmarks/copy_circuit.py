"""Where a caption name is copied, layer by layer: at the answer position that predicts a made-up name's first
word piece (teacher-forced caption edits, as ``caption_names.py`` asks them), the logit lens after every decoder
layer (the hidden state through the model's final norm and tied head: is the piece already the argmax, and its
rank) and how much attention each layer's most attentive head pays to the name where the prompt states it.

A model that copies in one step shows one layer whose head attends almost only to the name, and the piece the
argmax from that layer on; a model that does not copy shows neither. Models trained by ``train_default_model``
(read with eager attention, which returns the weights).

    python benchmarks/copy_circuit.py "shipped=reasonedit_plugin/assets/tiny-qwen2-vl-shapes" "NAME=DIR" ... \
        --out benchmarks/results/copy_circuit.json --plot benchmarks/results/copy_circuit.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from caption_names import names, renamed
from entry_copy import model_parser, parse_models
from tqdm.auto import tqdm

from reasonedit_plugin.captioning import caption_split
from reasonedit_plugin.data.aux_probes import name_piece_targets
from reasonedit_plugin.data.default_model_scoring import edit_facts, encode, load_trained
from reasonedit_plugin.data.mix_text import fuse
from reasonedit_plugin.data.training_mix import Example


@torch.no_grad()
def read_layers(model: Any, tokenizer: Any, batch: dict[str, torch.Tensor], name: str) -> dict[str, list]:
    """One example (``batch`` of one row, with ``labels``): per layer the lens rank of ``name``'s first word piece
    at the position that predicts it in the answer (0: the argmax; the first entry reads the embeddings), and per
    layer and head the attention that position pays to the prompt's occurrences of that piece."""
    batch = dict(batch)
    labels = batch.pop("labels")
    where, pieces = name_piece_targets(tokenizer, labels, [name])
    if not len(where):
        raise ValueError(f"the name {name!r} is not spelled among the labelled answer tokens")
    q, piece = int(where[0, 1]), int(pieces[0])
    ids = batch["input_ids"][0]
    prompt_end = int((labels[0] != -100).nonzero()[0, 0])
    stated = [i for i in range(prompt_end) if int(ids[i]) == piece]
    out = model.model(**batch, use_cache=False, output_hidden_states=True, output_attentions=True)
    lm = model.model.language_model
    ranks = []
    for layer, hidden in enumerate(out.hidden_states):
        h = hidden[0, q]
        if layer < len(out.hidden_states) - 1:  # the last entry has been through the final norm already
            h = lm.norm(h)
        logits = model.lm_head(h)
        ranks.append(int((logits > logits[piece]).sum()))
    heads = [att[0, :, q, stated].sum(-1).tolist() for att in out.attentions]
    return {"ranks": ranks, "heads": heads}


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def measure(model_dir: Path, n: int, seed: int, pool: list[str]) -> dict[str, Any]:
    """``n`` caption edits, each asked with every name of ``pool``: per layer the lens argmax share and median
    rank, the most attentive head's attention to the name (median over edits) and each head's mean."""
    model, tokenizer, config, images = load_trained(model_dir, attn_implementation="eager")
    records = caption_split(n, seed=seed)
    reads = []
    for name in tqdm(pool, desc=model_dir.name, leave=False, dynamic_ncols=True):
        for record in (renamed(r, name) for r in records):
            text = fuse(edit_facts(record, "both", config.answer_template), record["prompt"])
            batch = encode(tokenizer, images, [Example("caption_facts", record["image"], text, record["target"])], None)
            reads.append(read_layers(model, tokenizer, batch, name))
    layers = len(reads[0]["heads"])
    return {"model": str(model_dir), "layers": layers, "n": len(reads),
            "lens_argmax": [round(sum(r["ranks"][k] == 0 for r in reads) / len(reads), 3) for k in range(layers + 1)],
            "lens_median_rank": [_median([r["ranks"][k] for r in reads]) for k in range(layers + 1)],
            "attention_max_head": [round(_median([max(r["heads"][k]) for r in reads]), 3) for k in range(layers)],
            "attention_per_head": [[round(sum(r["heads"][k][h] for r in reads) / len(reads), 3)
                                    for h in range(len(reads[0]["heads"][k]))] for k in range(layers)]}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lens, attn) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, res in results.items():
        line, = lens.plot(range(res["layers"] + 1), res["lens_argmax"], marker="o", label=label)
        attn.plot(range(1, res["layers"] + 1), res["attention_max_head"], marker="o", color=line.get_color())
    lens.set_xlabel("decoder layers read (0: the embeddings)")
    lens.set_ylabel("the name's first piece is the lens argmax")
    attn.set_xlabel("decoder layer")
    attn.set_ylabel("attention to the stated name\n(most attentive head, median)")
    layers = max(res["layers"] for res in results.values())
    lens.set_xticks(range(layers + 1))
    attn.set_xticks(range(1, layers + 1))
    for ax in (lens, attn):
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    lens.legend(fontsize=7)
    fig.suptitle("where a caption edit's made-up name is copied (teacher-forced, first word piece)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = model_parser(__doc__.split("\n\n")[0], 12, "caption edits per name (one image each, at most 23)")
    args, models = parse_models(parser, argv)
    if args.n > 23:
        parser.error(f"--n must be at most 23 (one caption_split draw: easy-vqa's colour + shape kinds), got {args.n}")
    pool = names(args.seed)["letters"]  # made-up names as training draws them, never a caption command's tribe
    results = {label: measure(path, args.n, args.seed, pool) for label, path in models.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "seed": args.seed, "names": pool, "models": results}, indent=1)
                        + "\n")
    for label, res in results.items():
        print(label, "lens argmax by layer", res["lens_argmax"], "attention to the name", res["attention_max_head"])
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
