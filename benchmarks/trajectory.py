"""Issue 12's rows along whole training runs: every evaluation step's weights measured, not only the kept one.

    python -m reasonedit_plugin.data.train_default_model --out DIR --seed S <recipe> --keep-every-eval
    for d in DIR_steps/step_*; do python examples/measure_default_model.py --model $d --n 200 --plain-n 20 \
        --json M/$(basename $d).json; done
    python benchmarks/trajectory.py "seed S=M,DIR/training_args.json" ... --out F.json --plot F.png

A run's kept step is one draw from its trajectory. This asks how much the measured rows move from one evaluation
step to the next (250 steps apart), whether any step meets the targets that are not bound by luck (held-out + both
>= 0.95, R-Gen with facts >= 0.90, near miss <= 0.10; the no-fact rows are luck-bound, ``no_fact_spread.py``, and
easy-vqa and the demo are not measured here), and whether the validation score that chooses the kept step follows
held-out + both (their correlation over the steps). Reads the measurement JSONs; runs no model.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from held_out_wordings import ROW, wording_split
from no_fact_spread import mdm, save

ROWS = {"both": ROW, "rgen": "R-Gen (+ both)", "near_miss": "near miss: answer changed by the facts",
        "no_fact_rgen": "R-Gen, no fact", "no_fact": "held-out, no fact"}


def _target(row: str) -> tuple[str, float]:
    """A one-sided target of :data:`measure_default_model.TARGETS` as (">=" | "<=", bound)."""
    lo, hi = mdm.target_bounds(row)
    return (">=", lo) if hi >= 1.0 else ("<=", hi)


TARGETS = {name: _target(ROWS[name]) for name in ("both", "rgen", "near_miss")}


def meets(row: dict, name: str) -> bool:
    return mdm.meets_target(ROWS[name], row[name])


def read_run(measures: Path, training_args: Path, first_step: int) -> dict:
    history = json.loads(training_args.read_text())["history"]
    valid = {row["step"]: row.get("valid_score") for row in history if "step" in row and "attempt" not in row}
    kept = next((row["selected_step"] for row in history if "selected_step" in row), None)
    steps = []
    for path in sorted(measures.glob("*step_*.json")):
        step = int(re.search(r"step_(\d+)", path.name).group(1))
        if step < first_step:
            continue
        rows = {r["row"]: r for r in json.loads(path.read_text())["rows"]}
        row = {"step": step, **{name: rows[title]["accuracy"] for name, title in ROWS.items()}}
        split = wording_split(rows[ROW]["by_wording"])
        row.update(worst_wording=split["worst_wording"], worst_accuracy=split["worst_accuracy"],
                   valid_score=valid.get(step))
        row["meets"] = [name for name in TARGETS if meets(row, name)]
        steps.append(row)
    if len(steps) < 2:
        raise SystemExit(f"{measures}: found {len(steps)} step measurements from step {first_step}; measure the "
                         "folders train_default_model --keep-every-eval wrote first.")
    both = [s["both"] for s in steps]
    scored = [s for s in steps if s["valid_score"] is not None]
    return {"kept_step": kept, "kept": next((s for s in steps if s["step"] == kept), None), "steps": steps,
            "both_range": [min(both), max(both)],
            "both_largest_step_change": round(max(abs(a - b) for a, b in zip(both, both[1:])), 4),
            "steps_meeting": {name: sum(name in s["meets"] for s in steps) for name in TARGETS},
            "steps_meeting_all_three": [s["step"] for s in steps if len(s["meets"]) == len(TARGETS)],
            "valid_score_vs_both_correlation": round(statistics.correlation(
                [s["valid_score"] for s in scored], [s["both"] for s in scored]), 3) if len(scored) > 2 else None}


def plot(path: Path, runs: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8), sharey=True, squeeze=False)
    for ax, (label, run) in zip(axes[0], runs.items()):
        x = [s["step"] for s in run["steps"]]
        for name, style in (("both", "-o"), ("rgen", "-s"), ("near_miss", "-^")):
            ax.plot(x, [s[name] for s in run["steps"]], style, ms=3, label=f"{ROWS[name]} ({TARGETS[name][0]} {TARGETS[name][1]})")
        ax.plot(x, [s["valid_score"] for s in run["steps"]], ":", color="grey", label="validation score (chooses the step)")
        for name, colour in (("both", "tab:blue"), ("rgen", "tab:orange"), ("near_miss", "tab:green")):
            ax.axhline(TARGETS[name][1], color=colour, lw=0.6, ls="--")
        for step in run["steps_meeting_all_three"]:
            ax.axvspan(step - 60, step + 60, color="gold", alpha=0.35, lw=0)
        if run["kept_step"] is not None:
            ax.axvline(run["kept_step"], color="black", lw=1)
        ax.set_title(f"{label}: kept step {run['kept_step']} (black); gold: all three met", fontsize=9)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("share (n = 200)")
    axes[0][0].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=MEASURES_DIR,TRAINING_ARGS_JSON (the run's final folder's)")
    ap.add_argument("--first-step", type=int, default=2000, help="the earliest step read (default 2000)")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    ap.add_argument("--plot", type=Path, default=None, help="draw each run's rows step by step")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.runs:
        label, _, paths = spec.partition("=")
        measures, _, training_args = paths.partition(",")
        if not label or not training_args:
            raise SystemExit(f"{spec!r}: give LABEL=MEASURES_DIR,TRAINING_ARGS_JSON.")
        runs[label] = read_run(Path(measures), Path(training_args), args.first_step)
    result = {"targets": {name: f"{ROWS[name]} {op} {bound}" for name, (op, bound) in TARGETS.items()},
              "first_step": args.first_step, "runs": runs}
    if args.plot is not None:
        plot(args.plot, runs)
    result["summary"] = {label: {k: v for k, v in run.items() if k != "steps"} for label, run in runs.items()}
    return save(result, args, "trajectory.py " + " ".join(f'"{spec}"' for spec in args.runs), unprinted=("runs",))


if __name__ == "__main__":
    main()
