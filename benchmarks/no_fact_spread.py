"""How far from chance the no-fact rows of ``examples/measure_default_model.py`` land by luck alone.

    python benchmarks/no_fact_spread.py --out benchmarks/results/no_fact_spread.json \
        --plot benchmarks/results/no_fact_spread.png

Four references for issue 12's "no fact at chance +/- 0.05" rows, read without any model run:

* the *neighbour guesser* on the measured split (200 records, seed 123, 13 held-out rules): a model that
  answers each held-out rule one way, the way the neighbouring train rules vote, ties broken once per rule at
  random (``measure_default_model.neighbour_guess_distribution``): its mean, spread and chance of landing in the band;
* the *unsure guesser*: a model that knows it does not know, each record answered by one of its options at
  random, on its own (``measure_default_model.unsure_guess_distribution``): the spread of a model whose every
  answer is a fair guess of its own, for both no-fact rows, and its chance of landing in both bands in one seed
  and in three;
* the *declining guesser* of the R-Gen no-fact row: a model that answers "no" to every yes / no question it
  has no fact for scores the split's share of "no" truths, the same in every seed (the split asks about the
  rule's own value about half the time);
* every committed measurement of a trained model on that split (``docs/default_model/*.json`` with the
  200-record seed-123 rows; re-measurements on other record files and the float16 re-store of the shipped
  model left out): the two no-fact rows' mean, spread and how many land in their bands, alone and together;
  and, per rule of the split (``by_rule``), the models' mean accuracy on its records and how many answer it
  right on most of them, beside the neighbour guesser's chance of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import measure_default_model as mdm  # noqa: E402

from reasonedit_plugin.data.shaperules import PRIOR_TOLERANCE, generate_split, neighbour_guess, rule_world  # noqa: E402

MEASURED = ROOT / "docs" / "default_model"
SKIP = ("_valid_pool", "_negated", "_training", "shipped_float16_storage")
"""Files that are not a first measurement of a model on the measured split."""


def committed_measurements(folder: Path, n: int, seed: int) -> list[tuple[str, dict[str, dict]]]:
    """(file name, row name -> row) of every committed first measurement of ``n`` records of ``seed``."""
    out = []
    for path in sorted(folder.glob("*.json")):
        if any(s in path.name for s in SKIP):
            continue
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("seed") != seed or "rows" not in data:
            continue
        rows = {r["row"]: r for r in data["rows"]}
        if rows.get(mdm.NO_FACT_ROW, {}).get("n") == n:
            out.append((path.name, rows))
    return out


def committed_rows(measurements: list[tuple[str, dict[str, dict]]]) -> list[dict[str, float | str]]:
    """The no-fact rows of the committed ``measurements`` (:func:`committed_measurements`)."""
    out = []
    for name, rows in measurements:
        if "R-Gen, no fact" in rows:
            out.append({"file": name, "held_out": rows[mdm.NO_FACT_ROW]["accuracy"],
                        "rgen": rows["R-Gen, no fact"]["accuracy"]})
    return out


def per_rule(measurements: list[tuple[str, dict[str, dict]]], records: list[dict]) -> dict[str, dict[str, float | int]]:
    """Which rules carry the held-out no-fact row: per rule of the split ``records``, over the committed
    ``measurements`` that split the row by rule (``by_rule``), the mean accuracy on its records, how many models
    answer it right on most of them, and the neighbour guesser's chance of it (:func:`.shaperules.neighbour_guess`)."""
    world = rule_world()
    accuracies: dict[str, list[float]] = {}
    for _, rows in measurements:
        for rule, (_, accuracy, _) in rows[mdm.NO_FACT_ROW].get("by_rule", {}).get("rules", {}).items():
            accuracies.setdefault(rule, []).append(accuracy)
    items = Counter(f"{r['meta']['property']}: {r['meta']['key']}" for r in records)
    out = {}
    for rule, values in sorted(accuracies.items()):
        prop, key = rule.split(": ", 1)
        out[rule] = {"records": items[rule], "models": len(values), "mean_accuracy": round(statistics.mean(values), 4),
                     "models_mostly_right": sum(v > 0.5 for v in values),
                     "neighbour_guess": round(neighbour_guess(world, world.rule(prop, key)), 4)}
    return out


def summary(values: list[float], chance: float) -> dict[str, float | int]:
    return {"mean": round(statistics.mean(values), 4), "sd": round(statistics.stdev(values), 4),
            "min": min(values), "max": max(values),
            "within_tolerance": sum(mdm.near_chance(v, chance) for v in values)}


def plot(path: Path, measured: list[float], guesser: dict[float, float], chance: float,
         by_rule: dict[str, dict[str, float | int]], unsure: dict[float, float]) -> None:
    """Left: the committed models' held-out no-fact figures (share of models per 0.025 bin), the neighbour
    guesser's outcomes (their probabilities) and the unsure guesser's (probability per bin), with the target band
    shaded. Right: per rule, the models' mean accuracy and the neighbour guesser's chance of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.025
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1.1]})
    ax.axvspan(chance - PRIOR_TOLERANCE, chance + PRIOR_TOLERANCE, color="tab:green", alpha=0.12,
               label=f"target: chance {chance:.2f} ± {PRIOR_TOLERANCE}")
    bins = [i * width for i in range(int(0.5 / width) + 1)]
    ax.hist(measured, bins=bins, weights=[1 / len(measured)] * len(measured), color="tab:blue", alpha=0.6,
            label=f"{len(measured)} committed models (share per {width} bin)")
    ax.vlines(list(guesser), 0, list(guesser.values()), color="tab:red", lw=3,
              label="neighbour guesser, ties broken at random (probability)")
    per_bin = [sum(q for acc, q in unsure.items() if lo - 1e-9 <= acc < lo + width - 1e-9) for lo in bins[:-1]]
    ax.stairs(per_bin, bins, color="black", lw=1.2,
              label="unsure guesser, each record at random (probability per bin)")
    ax.set_xlabel("held-out, no fact: accuracy (200 records, 13 rules)")
    ax.set_ylabel("share")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(0, 1.5 * max(max(guesser.values()), max(per_bin), 0.2))  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("How far from chance the held-out no-fact row lands", fontsize=10)
    rules = list(by_rule)
    x = range(len(rules))
    models = max(int(v["models"]) for v in by_rule.values()) if by_rule else 0
    bx.bar(x, [by_rule[r]["mean_accuracy"] for r in rules], color="tab:blue", alpha=0.6,
           label=f"models' mean accuracy on the rule's records ({models} models split by rule)")
    bx.scatter(x, [by_rule[r]["neighbour_guess"] for r in rules], color="tab:red", marker="_", s=300, lw=3,
               label="neighbour guesser's chance of the rule", zorder=3)
    bx.axhline(chance, color="grey", lw=0.8, ls="--", label=f"chance {chance:.2f}")
    bx.set_xticks(list(x))
    bx.set_xticklabels(rules, rotation=40, ha="right", fontsize=7)
    bx.set_ylim(0, 1.35)
    bx.set_ylabel("accuracy without the facts")
    bx.legend(fontsize=7, loc="upper left")
    bx.set_title("Which rules carry it", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark that reads the committed measurements of one split: --n, --seed, --out
    (its own --plot it adds itself; :func:`save` records both)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="records of the measured split")
    ap.add_argument("--seed", type=int, default=123, help="seed of the measured split")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    return ap


def save(result: dict, args: argparse.Namespace, script: str, unprinted: tuple[str, ...] = ()) -> dict:
    """Record the command that made ``result`` (its --out and --plot), print it without the ``unprinted`` keys
    and write it whole to --out: the end of every benchmark that takes :func:`split_parser`'s arguments."""
    result["command"] = (f"python benchmarks/{script}" + (f" --out {args.out}" if args.out else "")
                         + (f" --plot {args.plot}" if args.plot else ""))
    print(json.dumps({k: v for k, v in result.items() if k not in unprinted}, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = split_parser(__doc__)
    ap.add_argument("--plot", type=Path, default=None,
                    help="draw the committed models' held-out no-fact figures beside the neighbour guesser's")
    args = ap.parse_args(argv)
    records = generate_split("measure", args.n, args.seed)
    chance = mdm.rule_chance(records)
    measurements = committed_measurements(MEASURED, args.n, args.seed)
    rows = committed_rows(measurements)
    if len(rows) < 2:
        raise SystemExit(f"found {len(rows)} committed measurements of {args.n} records (seed {args.seed}) in "
                         f"{MEASURED}; measure models with examples/measure_default_model.py --json first.")
    both = sum(mdm.near_chance(r["held_out"], chance) and mdm.near_chance(r["rgen"], 0.5) for r in rows)
    neighbour = mdm.neighbour_guess_distribution(records)
    unsure = mdm.unsure_guess_distribution([r["choices"] for r in records])
    unsure_rows = {"held_out": mdm.guess_spread(unsure, chance),
                   "rgen": mdm.guess_spread(mdm.unsure_guess_distribution([r["rgen_choices"] for r in records]), 0.5)}
    says_no = sum(r["rgen_target"] == "no" for r in records) / len(records)
    one_seed = unsure_rows["held_out"]["within_tolerance"] * unsure_rows["rgen"]["within_tolerance"]
    unsure_rows |= {"both_within_tolerance": round(one_seed, 4), "both_in_three_seeds": round(one_seed ** 3, 4)}
    result = {"records": args.n, "seed": args.seed, "rules": len({(r["meta"]["property"], r["meta"]["key"])
                                                                  for r in records}),
              "chance": round(chance, 4), "tolerance": PRIOR_TOLERANCE,
              "neighbour_guess": mdm.guess_spread(neighbour, chance),
              "unsure_guess": unsure_rows,
              "rgen_declining_guess": {"accuracy": round(says_no, 4),
                                       "within_tolerance": mdm.near_chance(says_no, 0.5)},
              "committed_models": len(rows),
              "held_out_no_fact": summary([r["held_out"] for r in rows], chance),
              "rgen_no_fact": summary([r["rgen"] for r in rows], 0.5),
              "both_within_tolerance": both,
              "by_rule": per_rule(measurements, records)}
    if args.plot is not None:
        plot(args.plot, [r["held_out"] for r in rows], neighbour, chance, result["by_rule"], unsure)
    return save(result, args, "no_fact_spread.py")


if __name__ == "__main__":
    main()
