"""Prompt fusion (paper) vs hidden-state fusion (hidden_bias, gated) vs contrastive key tuning, one table.

Every variant is an hparams YAML (default: the embedded default and its three variant YAMLs in
``hparams/ReasonEdit/``); all share one unedited reference (the same edited records, locality pool and
hard-locality probes), edit the first ``--edits`` error records sequentially and are scored once after
the last edit: Rel, T/I/R-Gen, Loc, hard Loc, overall HM, EasyEdit's five keys, time per edit, learning
time per edit (gate / key projection training), answer latency (retrieval + the model's answer pass, per
probe) and context tokens added to the prompt per answered probe (over probes where facts were fused)::

    python examples/compare_fusion.py --split small --edits 10 --out docs/fusion/small_10
    python -m reasonedit_plugin.data.shaperules --split seq --n 420 --seed 3 --out /tmp/seq.jsonl
    python examples/compare_fusion.py --edits-file /tmp/seq.jsonl --edits 300 --every 10 --out docs/fusion/seq_300

(``--variant NAME YAML`` runs one variant; ``--limit N`` uses the first N records only.)

``--every K`` overrides ``fusion.gate_every`` and ``key_tuning.every`` (training after every K edits
instead of every edit, to fit long runs on a CPU). Writes ``results.json`` and ``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from reasonedit_plugin.cli_inputs import load_vlm, shaperules_plain_probes
from reasonedit_plugin.data.shaperules import easy_vqa_root
from reasonedit_plugin.data.split_files import load_jsonl, load_split
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.evaluation import (EASYEDIT_KEYS, Prediction, ProtocolConfig, ReasonEditMethod,
                                          UneditedMethod, evaluate_sequential, percentile, prepare_reference)
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.records import make_records

logger = logging.getLogger("compare_fusion")

HPARAMS = Path(__file__).resolve().parent.parent / "hparams" / "ReasonEdit"
DEFAULT_VARIANTS = {
    "prompt (paper)": HPARAMS / "tiny-qwen2-vl-shapes.yaml",
    "hidden_bias": HPARAMS / "tiny-qwen2-vl-shapes-hidden-bias.yaml",
    "gated": HPARAMS / "tiny-qwen2-vl-shapes-gated.yaml",
    "prompt + contrastive": HPARAMS / "tiny-qwen2-vl-shapes-contrastive.yaml",
}
PAPER = ("reliability", "t_gen", "i_gen", "r_gen", "locality", "hard_locality", "overall")


class TimedMethod:
    """ReasonEditMethod that also times each answer and counts the prompt tokens fusion added."""

    def __init__(self, inner: ReasonEditMethod):
        self.inner = inner
        self.name = inner.name
        self.latency: list[float] = []
        self.added_tokens: list[int] = []

    def reset(self) -> None:
        self.inner.reset()

    def apply(self, record: Any) -> None:
        self.inner.apply(record)

    def predict(self, image: Any, question: str, choices: Sequence[str] | None) -> Prediction:
        start = time.perf_counter()
        pred = self.inner.predict(image, question, choices)
        self.latency.append(time.perf_counter() - start)
        r = pred.retrieval
        if r is not None and r.accepted and r.facts:
            editor = self.inner.editor
            tok = editor.vlm.tokenizer
            fused = editor.fused_question(question, r)
            self.added_tokens.append(len(tok(fused, add_special_tokens=False)["input_ids"])
                                     - len(tok(question, add_special_tokens=False)["input_ids"]))
        return pred

    def teacher_forced(self, image: Any, question: str, target: str) -> Any:
        return self.inner.teacher_forced(image, question, target)


def _records(args: argparse.Namespace) -> list:
    if args.edits_file:
        return make_records(load_jsonl(args.edits_file, easy_vqa_root()))
    return make_records(load_split(args.split))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--split", default="small", help="shipped ShapeRules split (default small)")
    src.add_argument("--edits-file", help="a ShapeRules JSONL (image paths relative to the easy-vqa root)")
    parser.add_argument("--limit", type=int, help="use only the first N records (a cheaper reference)")
    parser.add_argument("--edits", type=int, default=10, help="edit the first N error records")
    parser.add_argument("--every", type=int, help="override fusion.gate_every and key_tuning.every")
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "YAML"),
                        help="a variant (repeatable); default: prompt, hidden_bias, gated, prompt + contrastive")
    parser.add_argument("--locality-size", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also score a seeded 50-record subsample every K edits (logged and saved)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    variants = {name: Path(path) for name, path in args.variant} if args.variant else DEFAULT_VARIANTS
    hparams = {name: ReasonEditHyperParams.from_hparams(str(path)) for name, path in variants.items()}
    first = next(iter(hparams.values()))
    vlm = load_vlm(first)
    base = first.to_config()
    protocol = ProtocolConfig(eval_every=args.checkpoint_every, seed=base.seed, locality_size=args.locality_size)
    records = _records(args)[:args.limit]
    extra = shaperules_plain_probes(2 * args.locality_size, base.seed)
    start = time.perf_counter()
    reference = prepare_reference(UneditedMethod(vlm, base.max_new_tokens), records, protocol, extra)
    logger.info("reference: %d errors, %d locality, %d hard locality (%.0f s)", len(reference.errors),
                len(reference.locality), len(reference.hard_locality), time.perf_counter() - start)
    if len(reference.errors) < args.edits:
        logger.warning("only %d error records: editing all of them", len(reference.errors))
    reference.errors = reference.errors[:args.edits]
    kept = {r.id for r in reference.errors}
    reference.hard_locality = {k: v for k, v in reference.hard_locality.items() if k in kept}

    rows = []
    text_encoder = None
    for name, hp in hparams.items():
        config = hp.to_config()
        if args.every:
            config = config.replace(fusion={"gate_every": args.every}, key_tuning={"every": args.every})
        factory = (lambda c=config: ReasonEditor(vlm, c, text_encoder=text_encoder))
        inner = ReasonEditMethod(factory, name=name)
        text_encoder = text_encoder or inner.editor.text_encoder
        method = TimedMethod(inner)
        t0 = time.perf_counter()
        result = evaluate_sequential(method, reference, protocol, on_checkpoint=lambda c, n=name: logger.info(
            "checkpoint %s @%d: %s", n, c.num_edits, {k: c.scores.metric(k) for k in PAPER}))
        wall = time.perf_counter() - t0
        s = result.final
        editor = inner.editor
        learning = sum(editor.learning_seconds) / max(1, len(result.edit_seconds))
        row = {
            "variant": name, "hparams": _portable(variants[name]), "fusion": config.fusion.kind,
            "tuning": config.retrieval.tuning, "edits": result.num_edited,
            **{k: s.metric(k) for k in PAPER}, **{k: s.easyedit.get(k) for k in EASYEDIT_KEYS},
            "time_per_edit_s": result.time_per_edit, "learning_s_per_edit": learning,
            "answer_latency_p50_ms": percentile([1000 * x for x in method.latency], 50),
            "answer_latency_p95_ms": percentile([1000 * x for x in method.latency], 95),
            "tokens_added_mean": statistics.fmean(method.added_tokens) if method.added_tokens else 0.0,
            "fused_probes": len(method.added_tokens), "probes": len(method.latency), "wall_s": wall,
            "fusion_settings": {k: getattr(config.fusion, k) for k in
                                ("layer", "scale", "positions", "max_facts", "gate_every")},
            "key_tuning": (editor.keys.tuner.describe() if getattr(editor.keys, "tuner", None) is not None
                           and config.retrieval.tuning == "contrastive" else None),
            "gate": editor.hidden.gate.describe() if editor.hidden is not None and editor.hidden.gate else None,
            "checkpoints": [{"edits": c.num_edits, "probed_edits": c.evaluated_edits,
                             **{k: c.scores.metric(k) for k in PAPER}} for c in result.checkpoints],
        }
        logger.info("%s", {k: v for k, v in row.items() if not isinstance(v, dict)})
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"records": len(records), "edited": len(reference.errors), "locality": len(reference.locality),
            "hard_locality": len(reference.hard_locality), "every": args.every,
            "source": args.edits_file or f"ShapeRules {args.split}"}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(table(rows, meta))
    print(table(rows, meta))


def _portable(path: Path) -> str:
    """A YAML path relative to the repository when it is inside it (reports name no machine path)."""
    try:
        return str(Path(path).resolve().relative_to(HPARAMS.parent.parent))
    except ValueError:
        return str(path)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = ["variant", "Rel", "T-Gen", "I-Gen", "R-Gen", "Loc", "hard Loc", "HM", "rewrite", "rephrase",
            "img-rephrase", "loc_acc", "mm_loc_acc", "s/edit", "learn s/edit", "answer p50 ms",
            "tokens added"]
    lines = [f"{meta['source']}: {meta['edited']} sequential edits, {meta['locality']} locality and "
             f"{meta['hard_locality']} hard-locality probes; scored after the last edit.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["variant"]] + [_pct(r[k]) for k in PAPER] + [_pct(r[k]) for k in EASYEDIT_KEYS] + [
            f"{r['time_per_edit_s']:.2f}", f"{r['learning_s_per_edit']:.2f}",
            f"{r['answer_latency_p50_ms']:.0f}", f"{r['tokens_added_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
