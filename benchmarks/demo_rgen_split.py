"""Where a demo's R-Gen is won and lost: retrieval or the model's reading (issue 12's demo row).

    python benchmarks/demo_rgen_split.py --runs "shipped=RUN_DIR" "seed 8=RUN_DIR" ... \
        --out benchmarks/results/demo_rgen_split.json --plot benchmarks/results/demo_rgen_split.png
    # each RUN_DIR written by `reasonedit demo --out RUN_DIR` (its results.json); a label may name two runs,
    # "LABEL=OFF_DIR,ON_DIR", the same model without and with a setting, drawn side by side

Per run: the R-Gen probes of the final evaluation split by whether the gate retrieved an entry for them
(:func:`reasonedit_plugin.metrics.retrieval_breakdown`), the edited and unedited R-Gen, whether issue 12's demo
target (R-Gen >= 85 and >= 30 points above the unedited model) is met, and the accuracy on retrieved probes the
target would need with the run's retrieved share and its accuracy on the others. Reads results files only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasonedit_plugin.metrics import retrieval_breakdown  # noqa: E402

TARGET, ABOVE = 0.85, 0.30
"""Issue 12's demo row: R-Gen >= 85 % and at least 30 points above the unedited model."""


def split_of(run: Path) -> dict[str, Any]:
    """The R-Gen split of one demo run (a folder with results.json, or the file)."""
    path = run / "results.json" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"{run}: no results.json; give a folder written by `reasonedit demo --out`.")
    methods = json.loads(path.read_text())["comparison"]["methods"]
    edited = next(m for m in methods if m["kind"] == "reasonedit")["evaluation"]
    unedited = next((m for m in methods if m["kind"] == "unedited"), None)
    if unedited is None:
        raise SystemExit(f"{run}: the run has no unedited row (run the demo without --no-unedited).")
    cell = retrieval_breakdown([SimpleNamespace(**p) for p in edited["probes"]])["r_gen"]
    r_gen, base = edited["final"]["r_gen"], unedited["evaluation"]["final"]["r_gen"]
    want = max(TARGET, base + ABOVE)
    retrieved, other = cell["retrieved"], cell["right_not_retrieved"] or 0.0
    needed = (want - (1 - retrieved) * other) / retrieved if retrieved else None
    return {"run": str(run), **cell, "r_gen": r_gen, "unedited_r_gen": base, "target": want,
            "meets": r_gen >= want - 1e-9, "right_retrieved_needed": needed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help='"LABEL=DIR" or "LABEL=OFF_DIR,ON_DIR"')
    ap.add_argument("--names", nargs=2, default=("before", "after"), help="what the two runs of a label are")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    rows: dict[str, list[dict[str, Any]]] = {}
    for spec in args.runs:
        label, sep, dirs = spec.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"--runs {spec!r}: write LABEL=DIR or LABEL=OFF_DIR,ON_DIR.")
        rows[label] = [split_of(Path(d)) for d in dirs.split(",")]
    print("| model | run | R-Gen probes | retrieved | right, retrieved | right, not retrieved | R-Gen (unedited) "
          "| target met | right, retrieved needed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in rows.items():
        for name, r in zip(args.names if len(runs) == 2 else ("",), runs):
            other = "—" if r["right_not_retrieved"] is None else f"{100 * r['right_not_retrieved']:.1f}"
            need = "—" if r["right_retrieved_needed"] is None else f"{100 * r['right_retrieved_needed']:.1f}"
            print(f"| {label} | {name} | {r['n']} | {100 * r['retrieved']:.0f} % | {100 * r['right_retrieved']:.1f} | "
                  f"{other} | {100 * r['r_gen']:.1f} ({100 * r['unedited_r_gen']:.1f}) | "
                  f"{'yes' if r['meets'] else 'no'} | {need} |")
    if args.out:
        args.out.write_text(json.dumps({"command": "python benchmarks/demo_rgen_split.py " + " ".join(
            sys.argv[1:] if argv is None else argv), "names": list(args.names), "target": TARGET, "above": ABOVE,
            "runs": rows}, indent=1) + "\n")
    if args.plot:
        plot(rows, args.names, args.plot)


def plot(rows: dict[str, list[dict[str, Any]]], names: tuple[str, str], path: Path) -> None:
    """Demo R-Gen per model (one bar per run), with the level each model's target asks for."""
    from reasonedit_plugin.plots import new_figure, save_figure

    labels = list(rows)
    fig, axes = new_figure(max(6.0, 0.5 * len(labels) + 2), 4.2)
    ax = axes[0, 0]
    width = 0.38
    for i, label in enumerate(labels):
        runs = rows[label]
        for j, r in enumerate(runs):
            x = i + (j - (len(runs) - 1) / 2) * width
            ax.bar(x, 100 * r["r_gen"], width * 0.95, color=("#9aa7b8", "#1f77b4")[j if len(runs) == 2 else 1],
                   label=(names[j] if len(runs) == 2 else None) if i == 0 else None)
        ax.hlines(100 * runs[0]["target"], i - 0.45, i + 0.45, colors="#d62728", linewidth=2,
                  label="target (>= 85 and unedited + 30)" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("demo R-Gen (%)")
    ax.set_ylim(0, 118)
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax.set_title("ReasonEdit demo: R-Gen per model", fontsize=10)
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
