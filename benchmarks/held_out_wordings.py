"""How much of the held-out + both row's error sits in one question wording.

    python benchmarks/held_out_wordings.py --out benchmarks/results/held_out_wordings.json \
        --plot benchmarks/results/held_out_wordings.png

Issue 12's "held-out rule with facts, held-out wordings >= 0.95" row of ``examples/measure_default_model.py``
asks its 200 records in only nine question wordings of the eval pool, 5 to 39 records each. A model that
misreads one of the large ones loses 0.1-0.2 of the row at once. This reads every committed measurement of a
trained model on the measured split (``docs/default_model/*.json`` whose row carries ``by_wording``; the same
files as ``no_fact_spread.py``) and gives, per model, the row's accuracy, its worst wording and that wording's
share of the row's errors, and the accuracy on the other wordings; then how many models meet the target, and how
many would if their worst wording were read as well as the rest. No model is run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from no_fact_spread import MEASURED, committed_measurements, mdm, save, split_parser

ROW = "held-out + both"
TARGET = mdm.target_bounds(ROW)[0]


def wording_split(by_wording: dict[str, list]) -> dict[str, object]:
    """One model's row split by wording: ``by_wording`` maps wording -> [n, accuracy]."""
    n_all = sum(n for n, _ in by_wording.values())
    errors = {w: n * (1 - acc) for w, (n, acc) in by_wording.items()}
    wrong = sum(errors.values())
    worst = max(errors, key=lambda w: (errors[w], w))
    n_rest = n_all - by_wording[worst][0]
    return {"accuracy": round(1 - wrong / n_all, 4), "wordings": len(by_wording),
            "worst_wording": worst, "worst_n": by_wording[worst][0], "worst_accuracy": by_wording[worst][1],
            "worst_share_of_errors": round(errors[worst] / wrong, 4) if wrong > 1e-9 else 0.0,
            # a row asked in one wording has no other wordings to read
            "accuracy_other_wordings": round(1 - (wrong - errors[worst]) / n_rest, 4) if n_rest else None}


def plot(path: Path, models: list[dict]) -> None:
    """Each model's errors on the row (share of its records), the worst wording's part stacked under the rest,
    with the target's allowance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(models, key=lambda m: 1 - m["accuracy"])
    worst = [(1 - m["accuracy"]) * m["worst_share_of_errors"] for m in models]
    rest = [(1 - m["accuracy"]) - w for m, w in zip(models, worst)]
    x = range(len(models))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(x, worst, color="tab:red", alpha=0.7, label="errors in the model's worst wording")
    ax.bar(x, rest, bottom=worst, color="tab:blue", alpha=0.6, label="errors in the other wordings")
    ax.axhline(1 - TARGET, color="tab:green", lw=1.5, label=f"target: at most {1 - TARGET:.2f} wrong")
    ax.set_xlabel(f"{len(models)} committed models, fewest errors first")
    ax.set_ylabel(f"share of the {ROW!r} row wrong")
    ax.set_xticks([])
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Held-out + both: how much of the error is one question wording", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = split_parser(__doc__)
    ap.add_argument("--plot", type=Path, default=None, help="draw each model's errors, worst wording apart")
    args = ap.parse_args(argv)
    models = [{"file": name, **wording_split(rows[ROW]["by_wording"])}
              for name, rows in committed_measurements(MEASURED, args.n, args.seed)
              if "by_wording" in rows.get(ROW, {})]
    if len(models) < 2:
        raise SystemExit(f"found {len(models)} committed measurements with a per-wording split of {ROW!r}; "
                         "measure models with examples/measure_default_model.py --json first.")
    result = {"row": ROW, "target": TARGET, "records": args.n, "seed": args.seed,
              "wordings": sorted({m["wordings"] for m in models}), "committed_models": len(models),
              "meet_target": sum(mdm.meets_target(ROW, m["accuracy"]) for m in models),
              "meet_on_the_other_wordings": sum(mdm.meets_target(ROW, m["accuracy_other_wordings"] or 0.0)
                                                for m in models),
              "worst_share_of_errors_mean": round(statistics.mean(m["worst_share_of_errors"] for m in models), 4),
              "models": models}
    if args.plot is not None:
        plot(args.plot, models)
    return save(result, args, "held_out_wordings.py", unprinted=("models",))


if __name__ == "__main__":
    main()
