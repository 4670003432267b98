"""Does a model copy an answer entry that quotes the asked question, whatever the question's wording? (issue 12)

    python benchmarks/entry_copy.py "seed 8=DIR8" "seed 9=DIR9" --out benchmarks/results/entry_copy.json \
        --plot benchmarks/results/entry_copy.png

Each prompt is one answer entry quoting the asked question word for word, then the question: "For a red circle,
the answer to 'Which element does this shape stand for?' is wind. Which element does this shape stand for?". The
image is under a *train* rule and the entry's value is drawn at random, so three times in four it contradicts
what the model learnt: an answer other than the entry's is the model's memory or its reading of the question
winning over the entry. Asked in every question wording of every property (the train, valid, eval and extra
pools of ``rule_properties``) and in questions of made-up words (``CONTROL``, whose words split into word pieces,
and ``WORD_CONTROLS``, of whole vocabulary words), ``--n`` images each (the same images and values for every
model). The eval pool is the measured split's, so this is a measurement beside it, never a way to choose a model.
The held-out + both row of the measured split quotes the asked question the same way, so a wording a model does
not copy here is one it can fail there whatever the facts say (RESULTS.md, sessions 43 and 44).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import measure_default_model as mdm  # noqa: E402

from reasonedit_plugin.data.default_model_build import trained_answer_template  # noqa: E402
from reasonedit_plugin.data.easyvqa import easy_vqa_root, image_catalogue  # noqa: E402
from reasonedit_plugin.data.rule_properties import PROPERTIES, PROPERTY_BY_NAME  # noqa: E402
from reasonedit_plugin.data.shaperules import answer_entry, format_question, rule_world  # noqa: E402

POOLS = ("questions", "valid_questions", "eval_questions", "extra_questions")
"""The ``Property`` fields whose question wordings are asked: train, valid, eval and extra pools."""
CONTROL = "Harbor ravel plinth over garden?"
"""A question of made-up words: only matching the quote word for word can answer it. Two of its words split into
word pieces ("rave ##l", "pl ##int ##h"), and that alone decided it for two models of session 44 that copied each
whole-word question 1.00 (RESULTS.md, session 44)."""
WORD_CONTROLS = ("Rotary proof cities kaye?", "Shark rican benji sans alaska nature?",
                 "Python eyelids diverse torpedo ndp?")
"""Questions of random words that are each one token of the vocabulary (as the ``quote_copy`` training kind draws
them), seeded once and kept: the control without word pieces."""
CONTROL_POOLS = ("control", "control_words")
FOLLOWED = 0.9
"""A wording counts as copied when at least this share of its prompts follow the entry."""


def wordings() -> list[tuple[str, str, str]]:
    """(property, pool, question template) for every wording asked, the controls last (under each property)."""
    out = [(p.name, pool, q) for p in PROPERTIES for pool in POOLS for q in getattr(p, pool)]
    out += [(p.name, "control", CONTROL) for p in PROPERTIES]
    return out + [(p.name, "control_words", q) for p in PROPERTIES for q in WORD_CONTROLS]


def prompts(prop_name: str, template: str, n: int, seed: int,
            entry_template: str | None) -> list[tuple[str, str, list[str], str]]:
    """``n`` (image path, prompt, options, entry's value) items on test images under train rules of the
    property, seeded by the property alone (every wording of it asks the same images and values)."""
    prop = PROPERTY_BY_NAME[prop_name]
    world, root = rule_world(), easy_vqa_root()
    pool = [x for x in image_catalogue("test") if not world.rule_for(prop, x).held_out]
    rng = random.Random(f"entry-copy:{seed}:{prop_name}")
    items = []
    for info in rng.sample(pool, min(n, len(pool))):
        value = rng.choice(prop.values)
        question = format_question(template, info)
        text = f"{answer_entry(question, value, info, entry_template)} {question}"
        items.append((str(root / info.path), text, list(prop.values), value))
    return items


def measure(model_dir: Path, n: int, seed: int) -> dict[str, Any]:
    score, scorer, _ = mdm.make_scorer(model_dir)
    template = trained_answer_template(model_dir)
    rows = []
    for prop, pool, question in wordings():
        items = prompts(prop, question, n, seed, template)
        predictions = mdm.predict(score, items, f"{prop}: {question[:30]}")
        rows.append({"property": prop, "pool": pool, "question": question, "n": len(items),
                     "followed": round(mdm.accuracy_of(items, predictions), 4)})
    per_pool = {pool: [r["followed"] for r in rows if r["pool"] == pool] for pool in (*POOLS, *CONTROL_POOLS)}
    return {"model": str(model_dir), "scorer": scorer, "answer_template": template, "wordings": rows,
            "summary": {pool: {"min": min(v), "mean": round(sum(v) / len(v), 4),
                               "below": sum(x < FOLLOWED for x in v), "of": len(v)} for pool, v in per_pool.items()}}


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.95 * len(names) + 2), 4.6))
    colours = {"questions": "tab:blue", "valid_questions": "tab:green", "eval_questions": "tab:red",
               "extra_questions": "tab:purple", "control": "black", "control_words": "tab:orange"}
    offsets = {pool: (i - 2.5) * 0.1 for i, pool in enumerate(colours)}
    for x, name in enumerate(names):
        for r in results[name]["wordings"]:
            ax.scatter(x + offsets[r["pool"]], r["followed"], s=14, color=colours[r["pool"]], alpha=0.7,
                       label=r["pool"] if x == 0 else None)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    names_of = {"control": "made-up words (word pieces)", "control_words": "random whole words"}
    ax.legend(seen.values(), [names_of.get(k, f"{k} pool") for k in seen], fontsize=7, loc="lower left")
    ax.axhline(FOLLOWED, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=15)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("prompts answered with the entry's value")
    ax.set_title("answer entry quoting the asked question, one dot per wording", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def model_parser(description: str, n_default: int, n_help: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark that measures trained models side by side: ``NAME=MODEL_DIR ...``, ``--n``,
    ``--seed``, ``--threads``, ``--out`` and ``--plot`` (read them with :func:`parse_models`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR, a model trained by train_default_model")
    parser.add_argument("--n", type=int, default=n_default, help=n_help)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    return parser


def parse_models(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Path]]:
    """Parsed arguments of :func:`model_parser` and {name: model folder}; one-line errors for bad values. Sets
    torch's thread count."""
    args = parser.parse_args(argv)
    for flag, value in (("--n", args.n), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    models = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_dir():
            parser.error(f"{spec!r}: give NAME=MODEL_DIR with an existing model folder.")
        models[name] = Path(path)
    import torch

    torch.set_num_threads(args.threads)
    return args, models


def main(argv: list[str] | None = None) -> None:
    parser = model_parser(__doc__.split("\n\n")[0], 40, "prompts per wording")
    args, models = parse_models(parser, argv)
    results = {name: measure(path, args.n, args.seed) for name, path in models.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "seed": args.seed, "followed_threshold": FOLLOWED,
                                    "models": results}, indent=1) + "\n")
    for name, res in results.items():
        print(name, " ".join(f"{pool} min {s['min']:.2f} ({s['below']}/{s['of']} below {FOLLOWED})"
                             for pool, s in res["summary"].items()))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
