"""Which edit speaks for a hard locality probe, and why? A diagnosis on tuning data (never the report set).

    python benchmarks/why_hard_locality.py --sizes 100 300 1000

Stream: the hand-written *tuning* records (``benchmarks/data/tune_handwritten.jsonl``) first, then ShapeRules
``diag`` edits (generator, ``--seed``) up to each size, applied one after another with the shipped YAML
(only the unedited model's errors are edited). At each size, every edited tuning record's hard locality
probe is retrieved and answered; for each probe that got facts it prints the winning edit, its rationale and
its evidence tests (``evidence.py``), then a count by probe kind and outcome. A file of held-out records is
refused: the hand-written held-out set is for reporting only.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reasonedit_plugin.data import shaperules, split_files  # noqa: E402
from reasonedit_plugin.editor import ReasonEditor  # noqa: E402
from reasonedit_plugin.hparams import ReasonEditHyperParams  # noqa: E402
from reasonedit_plugin.records import make_records  # noqa: E402
from reasonedit_plugin.vlm import VLM  # noqa: E402

YAML = ROOT / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"
TUNE = ROOT / "benchmarks" / "data" / "tune_handwritten.jsonl"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--edits", type=Path, default=TUNE, help="hand-written tuning records (JSONL)")
    ap.add_argument("--hparams", type=Path, default=YAML)
    ap.add_argument("--seed", type=int, default=12, help="generator seed of the filler edits")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = split_files.load_jsonl(args.edits)
    if any("heldout" in str(r.get("meta", {}).get("source", "")) for r in rows):
        raise SystemExit(f"--edits {args.edits}: held-out records are for reporting only; diagnose on a tuning set.")
    hparams = ReasonEditHyperParams.from_hparams(args.hparams)
    vlm = VLM.from_pretrained(hparams.model_name)
    root = shaperules.easy_vqa_root()
    tune = make_records(rows, root)
    sizes = sorted(set(args.sizes))
    stream = tune + make_records(shaperules.generate_split("diag", int(sizes[-1] * 1.5) + 20, seed=args.seed), root)
    editor = ReasonEditor(vlm, hparams.to_config().replace(guard={"policy": "off"}))
    applied = 0
    for size in sizes:
        while editor.codebook.num_edits < size and applied < len(stream):
            editor.edit([stream[applied]])
            applied += 1
        outcomes: collections.Counter = collections.Counter()
        edited = [r for r in tune if r.id in editor.edit_records]
        for r in edited:
            kind = r.meta.get("hard_locality")
            answer = editor.answer(r.hard_locality_image, r.hard_locality_prompt, r.hard_locality_choices)
            ok = answer.text == r.hard_locality_ground_truth
            verdict = answer.retrieval.verdict
            if not answer.retrieval.accepted or verdict is None:
                outcomes[(kind, "no facts", ok)] += 1
                continue
            outcomes[(kind, "facts", ok)] += 1
            winner = editor.edit_records.get(verdict.winner)
            evidence = [f"{e.sentence[:50]!r} P(yes) {e.query_yes:.2f} (own {e.own_yes:.2f})"
                        for e in verdict.evidence if e.edit_id == verdict.winner]
            print(f"{size} edits: {r.id} ({kind}) {'right' if ok else 'WRONG'} with facts of {verdict.winner}"
                  f"{' (its own edit)' if verdict.winner == r.id else ''}: rationale "
                  f"{winner.rationale if winner else '?'}; evidence {evidence or 'none'}")
        print(f"== {size} edits ({editor.codebook.num_edits} applied), {len(edited)} tuning records edited: "
              + ", ".join(f"{k[0]} / {k[1]} / {'right' if k[2] else 'wrong'}: {n}"
                          for k, n in sorted(outcomes.items())), flush=True)


if __name__ == "__main__":
    main()
