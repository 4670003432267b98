"""Does a validation measurement pick the variant of a run that does best on the measured split? (issue 12)

    python benchmarks/validation_transfer.py --out benchmarks/results/validation_transfer.json

Reads, for every model in ``--val-dir`` (default ``docs/default_model/validation_session39/``), its measurement on a
*validation* split (``examples/measure_default_model.py --edits VALID.jsonl``: the calibration rules and the
*valid* wording pool, which no evaluated split uses) and its measurement on the evaluated split, the committed
``docs/default_model/<same file name>``. Models are grouped by the ``seed<N>`` in their file name (the variants of one
training run: averaging windows, windows per part). Per seed it prints the three model rows of issue 12 that the
checkpoint choice can move (held-out + both, R-Gen with facts, near miss; the no-fact rows are luck, RESULTS.md
"Session 34") on both splits, the Spearman rank correlation of each row between the splits over the variants, and
the variant a fixed rule picks on the validation split: the most of the three targets met, ties broken by the sum
of the margins. Reads JSON files only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import measure_default_model as mdm  # noqa: E402

ROWS = ("held-out + both", "R-Gen (+ both)", "near miss: answer changed by the facts")
"""The issue-12 model rows a checkpoint choice can move (targets in ``measure_default_model.TARGETS``)."""


def margin(row: str, value: float) -> float:
    """How far ``value`` is inside its target (negative: outside): above the floor, or below the ceiling."""
    lo, hi = mdm.target_bounds(row)
    return value - lo if hi >= 1.0 else hi - value


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation, ties averaged (None when either side is constant or has fewer than three
    values)."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def accuracies(path: Path) -> dict[str, float]:
    return {r["row"]: r["accuracy"] for r in json.loads(path.read_text())["rows"]}


def compare(val_dir: Path, eval_dir: Path) -> dict[str, Any]:
    seeds: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(val_dir.glob("*.json")):
        seed = re.search(r"seed(\d+)", path.stem)
        other = eval_dir / path.name
        if seed is None or not other.is_file():
            raise SystemExit(f"{path}: name it after its model's measurement in {eval_dir} (with seed<N> in it); "
                             f"{other} is not there.")
        val, ev = accuracies(path), accuracies(other)
        seeds.setdefault(seed.group(1), []).append({
            "model": path.stem, "valid": {r: val[r] for r in ROWS}, "eval": {r: ev[r] for r in ROWS},
            "valid_met": sum(mdm.meets_target(r, val[r]) for r in ROWS),
            "valid_margin": round(sum(margin(r, val[r]) for r in ROWS), 4),
            "eval_met": sum(mdm.meets_target(r, ev[r]) for r in ROWS)})
    out: dict[str, Any] = {}
    for seed, variants in sorted(seeds.items(), key=lambda kv: int(kv[0])):
        pick = max(variants, key=lambda v: (v["valid_met"], v["valid_margin"]))
        out[seed] = {"variants": variants, "pick": pick["model"], "pick_eval_met": pick["eval_met"],
                     "best_eval_met": max(v["eval_met"] for v in variants),
                     "spearman": {r: spearman([v["valid"][r] for v in variants], [v["eval"][r] for v in variants])
                                  for r in ROWS}}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--val-dir", type=Path, default=ROOT / "docs" / "default_model" / "validation_session39")
    ap.add_argument("--eval-dir", type=Path, default=ROOT / "docs" / "default_model")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.val_dir.is_dir():
        raise SystemExit(f"--val-dir {args.val_dir}: no such folder of validation measurements.")
    result = compare(args.val_dir, args.eval_dir)
    short = {"held-out + both": "held-out + both", "R-Gen (+ both)": "R-Gen", "near miss: answer changed by the facts":
             "near miss"}
    for seed, s in result.items():
        rho = ", ".join(f"{short[r]} {'—' if c is None else f'{c:+.2f}'}" for r, c in s["spearman"].items())
        print(f"seed {seed}: the rule picks {s['pick']} ({s['pick_eval_met']} of 3 met on the measured split; the best "
              f"variant meets {s['best_eval_met']}); rank correlation valid/measured: {rho}")
        print("| model | " + " | ".join(f"{short[r]} valid / measured" for r in ROWS) + " | met valid / measured |")
        print("| --- | " + " | ".join("---" for _ in ROWS) + " | --- |")
        for v in s["variants"]:
            cells = " | ".join(f"{v['valid'][r]:.3f} / {v['eval'][r]:.3f}" for r in ROWS)
            print(f"| {v['model']} | {cells} | {v['valid_met']} / {v['eval_met']} |")
    if args.out:
        args.out.write_text(json.dumps({"command": "python benchmarks/validation_transfer.py " + " ".join(
            sys.argv[1:] if argv is None else argv), "rows": list(ROWS), "seeds": result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
