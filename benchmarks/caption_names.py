"""Does a model copy a caption edit's made-up name, whatever the name? (issue 12, the shipping rule's caption edits)

    python benchmarks/caption_names.py "shipped=reasonedit_plugin/assets/tiny-qwen2-vl-shapes" "seed 8=DIR8" \
        --out benchmarks/results/caption_names.json --plot benchmarks/results/caption_names.png

The caption-copy row of ``measure_default_model.py`` and the shipping rule's caption edits ask the twelve tribe
names of ``reasonedit caption`` (``CAPTION_TRIBES``); a model copies a name in nearly all of its edits or in none,
so twelve names are a small sample of what a user may write. Here the same caption edits (``--n`` of
``captioning.caption_split``: an answer entry and a two-sentence rationale, then the caption instruction) are asked
with the name replaced by each name of three pools of twelve:

* ``tribes``   the caption command's twelve names ("Tor", "Dov"), as the row and the rule ask them;
* ``letters``  made-up names drawn as the ``caption_facts`` training kind draws 70 % of its names
               (:func:`mix_text.letters_name`, seeded here, never a tribe name): the training distribution;
* ``words``    capitalised whole English words of the vocabulary, as the kind draws the other 30 %
               (:func:`mix_text.name_words`).

The caption is generated greedily through the plugin's ``VLM.generate`` and is right when it equals the target up
to case and spacing (as ``reasonedit caption`` scores). A name is *copied* when at least ``COPIED`` of its edits are
right. With ``--pieces`` the same edits are also scored teacher-forced at the name's word pieces (its first piece,
and the later ``##`` pieces given the right earlier ones): whether the model's most likely token there is the right
piece, and its log-probability. A model whose copy is approximate puts the right piece just below a neighbour
(log-probability near the argmax's); one that does not copy at all gives it almost nothing. A measurement beside
the measured split, never a way to choose a model.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from entry_copy import model_parser, parse_models
from tqdm.auto import tqdm

from reasonedit_plugin.captioning import caption_split
from reasonedit_plugin.data.aux_probes import name_span
from reasonedit_plugin.data.default_model_build import trained_answer_template
from reasonedit_plugin.data.default_model_scoring import edit_facts
from reasonedit_plugin.data.easyvqa import easy_vqa_root
from reasonedit_plugin.data.language import CAPTION_TRIBES
from reasonedit_plugin.data.mix_text import fuse, letters_name, name_words, noise_vocabulary
from reasonedit_plugin.records import normalize_answer

POOLS = ("tribes", "letters", "words")
COPIED = 0.9
"""A name counts as copied when at least this share of its caption edits are right."""


def names(seed: int, per_pool: int = 12) -> dict[str, list[str]]:
    """The three pools' names, seeded (the same names for every model)."""
    rng = random.Random(f"caption-names:{seed}")
    letters: list[str] = []
    while len(letters) < per_pool:
        name = letters_name(rng)
        if name not in letters:
            letters.append(name)
    words = [w.capitalize() for w in rng.sample(name_words(noise_vocabulary()), per_pool)]
    return {"tribes": list(CAPTION_TRIBES[:per_pool]), "letters": letters, "words": words}


def renamed(record: dict[str, Any], name: str) -> dict[str, Any]:
    """``record`` (a ``caption_split`` edit) with its tribe name replaced by ``name`` in target and rationale."""
    old = record["target"].rsplit(" ", 2)[-2]
    swap = re.compile(rf"\b{re.escape(old)}\b")
    return {**record, "target": swap.sub(name, record["target"]), "rationale": swap.sub(name, record["rationale"])}


def name_pieces(vlm: Any, image: str, text: str, target: str, name: str) -> list[tuple[bool, float]]:
    """Teacher-forced, at each word piece of ``name`` inside ``target``: (the model's most likely token is that
    piece, the piece's log-probability)."""
    tokenizer = vlm.processor.tokenizer
    (scores,) = vlm.token_scores(image, text, [target])
    span = name_span(tokenizer, scores.targets.tolist(), name)
    if span is None:
        raise ValueError(f"the name {name!r} ({tokenizer.tokenize(name)}) is not among the pieces of its target "
                         f"{target!r} ({tokenizer.convert_ids_to_tokens(scores.targets.tolist())}); is the target "
                         "written in the tokenizer's own casing?")
    return [(bool(scores.predicted[k] == scores.targets[k]), float(scores.logprobs[k])) for k in span]


def _piece_summary(found: list[tuple[bool, float]]) -> dict[str, Any]:
    logps = sorted(lp for _, lp in found)
    return {"n": len(found), "right": round(sum(ok for ok, _ in found) / len(found), 4) if found else None,
            "median_logp": round(logps[len(logps) // 2], 3) if found else None}


def measure(model_dir: Path, n: int, seed: int, pools: dict[str, list[str]] | None = None,
            pieces: bool = False) -> dict[str, Any]:
    """One model's caption edits with every name of ``pools`` (None: :func:`names` of ``seed``); ``pieces``: also
    the teacher-forced scores at the name's word pieces (:func:`name_pieces`)."""
    from reasonedit_plugin.vlm import VLM

    vlm = VLM.from_pretrained(model_dir)
    template = trained_answer_template(model_dir)
    root = easy_vqa_root()
    records = caption_split(n, seed=seed)
    pools = pools or names(seed)
    rows = []
    for pool, pool_names in pools.items():
        for name in tqdm(pool_names, desc=f"{model_dir.name}: {pool}", leave=False, dynamic_ncols=True):
            right, generated, first, later = 0, [], [], []
            for record in (renamed(r, name) for r in records):
                image, text = str(root / record["image"]), fuse(edit_facts(record, "both", template), record["prompt"])
                caption = vlm.generate(image, text, max_new_tokens=16)
                right += normalize_answer(caption) == normalize_answer(record["target"])
                generated.append(caption)
                if pieces:
                    found = name_pieces(vlm, image, text, record["target"], name)
                    first.append(found[0])
                    later += found[1:]
            row = {"pool": pool, "name": name, "n": len(records), "right": round(right / len(records), 4),
                   "example": generated[0]}
            if pieces:
                row["first_piece"], row["later_pieces"] = _piece_summary(first), _piece_summary(later)
            rows.append(row)
    summary = {}
    for pool in POOLS:
        rates = [r["right"] for r in rows if r["pool"] == pool]
        summary[pool] = {"mean": round(sum(rates) / len(rates), 4), "copied": sum(x >= COPIED for x in rates),
                         "of": len(rates)}
        if pieces:
            for part in ("first_piece", "later_pieces"):
                parts = [r[part] for r in rows if r["pool"] == pool and r[part]["n"]]
                summary[pool][part] = {
                    "right": round(sum(p["right"] * p["n"] for p in parts) / sum(p["n"] for p in parts), 4)
                    if parts else None,
                    # the median of the names' medians (each name's over its edits)
                    "median_logp": sorted(p["median_logp"] for p in parts)[len(parts) // 2] if parts else None}
    return {"model": str(model_dir), "answer_template": template, "names": rows, "summary": summary}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2) + 3.0, 4.4))
    colours = {"tribes": "tab:red", "letters": "tab:blue", "words": "tab:green"}
    titles = {"tribes": "the caption command's 12 tribes", "letters": "made-up, as trained (letters)",
              "words": "English words, as trained"}
    width = 0.8 / len(POOLS)
    for i, pool in enumerate(POOLS):
        xs = [x + (i - 1) * width for x in range(len(labels))]
        ax.bar(xs, [results[m]["summary"][pool]["mean"] for m in labels], width, color=colours[pool],
               label=titles[pool], alpha=0.85)
        for x, m in zip(xs, labels):
            rates = [r["right"] for r in results[m]["names"] if r["pool"] == pool]
            ax.scatter([x] * len(rates), rates, s=8, color="black", alpha=0.5, zorder=3)
        pieces = [(x, results[m]["summary"][pool].get("first_piece")) for x, m in zip(xs, labels)]
        pieces = [(x, p["right"]) for x, p in pieces if p and p["right"] is not None]
        if pieces:  # --pieces: how often the name's first piece is the model's most likely token
            ax.scatter(*zip(*pieces), marker="D", s=40, facecolors="none", edgecolors=colours[pool], linewidths=1.5,
                       zorder=4, label="diamond: the name's first piece is the argmax, teacher-forced" if i == 0 else None)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=15)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("caption edits by the kind of name (bar: pool mean; dot: one name)", fontsize=10)
    ax.set_ylabel("caption edits generated right")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = model_parser(__doc__.split("\n\n")[0], 12, "caption edits per name (one image each, at most 23)")
    parser.add_argument("--pieces", action="store_true",
                        help="also score the name's word pieces teacher-forced (is the right piece the argmax?)")
    args, models = parse_models(parser, argv)
    if args.n > 23:
        parser.error(f"--n must be at most 23 (one caption_split draw: easy-vqa's colour + shape kinds), got {args.n}")
    pools = names(args.seed)  # read once: the vocabulary's words are parsed from MiniLM's tokenizer file
    results = {label: measure(path, args.n, args.seed, pools, args.pieces) for label, path in models.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "seed": args.seed, "copied_threshold": COPIED,
                                    "names": pools, "models": results}, indent=1) + "\n")
    for label, res in results.items():
        print(label, " ".join(f"{pool} {s['mean']:.2f} ({s['copied']}/{s['of']} copied)"
                              + (f", first piece right {s['first_piece']['right']:.2f} (median log p "
                                 f"{s['first_piece']['median_logp']:.1f})" if args.pieces else "")
                              for pool, s in res["summary"].items()))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
