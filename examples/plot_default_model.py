"""Plot issue 12's targets for several measured default models (seeds or recipes) side by side.

Reads the JSON files that ``examples/measure_default_model.py --json FILE`` writes and draws, per target row,
one bar per model with the target as a line (or a band, for "near chance"), so which seed misses which target
is seen at a glance::

    python examples/plot_default_model.py --out docs/default_model/seeds.png \\
        "seed 0=docs/default_model/a.json" "seed 1=docs/default_model/b.json"
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Sequence

from measure_default_model import NO_FACT_ROW, PRIOR_TOLERANCE, TARGETS, meets_target, near_chance

NO_FACT_LABEL = f"held-out, no fact\n(chance +- {PRIOR_TOLERANCE:g})"
"""The one target row whose band is not fixed: chance of the measured split's rule questions (0.25 on the default)."""


@functools.lru_cache(maxsize=None)
def _measured(spec: str) -> tuple[str, tuple[dict, ...]]:
    """``LABEL=PATH`` (or a bare PATH, labelled by its file name) -> (label, the file's rows), read once per spec:
    :func:`load` and :func:`split_chance` both ask for every file."""
    label, _, path = spec.rpartition("=")
    path = path or spec
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"{path}: not a measure_default_model.py JSON ({exc}); write one with --json FILE.")
    return label or Path(path).stem, tuple(rows)


def load(spec: str) -> tuple[str, dict[str, float]]:
    """``LABEL=PATH`` (or a bare PATH, labelled by its file name) -> (label, row -> accuracy)."""
    label, rows = _measured(spec)
    return label, {r["row"]: float(r["accuracy"]) for r in rows}


def split_chance(specs: Sequence[str]) -> float | None:
    """The chance of the no-fact row that the files ``LABEL=PATH`` share (their row's ``chance``); None when a file
    lacks it or the files disagree (then that row is drawn without a band)."""
    values = {next((r.get("chance") for r in _measured(spec)[1] if r.get("row") == NO_FACT_ROW), None)
              for spec in specs}
    return values.pop() if len(values) == 1 and None not in values else None


def bar_colours(n: int) -> list:
    """One colour per model: matplotlib's ten-colour cycle up to ten models, tab20 beyond (none repeated up to
    twenty models; past twenty tab20 starts over)."""
    from matplotlib import colormaps

    return [f"C{i}" for i in range(n)] if n <= 10 else [colormaps["tab20"](i % 20) for i in range(n)]


def plot(models: Sequence[tuple[str, dict[str, float]]], out: Path, title: str, chance: float | None = None) -> Path:
    """One group of bars per target row; the held-out no-fact row last, its band chance ± 0.05 when ``chance``."""
    from matplotlib.patches import Rectangle

    from reasonedit_plugin.plots import new_figure, save_figure

    width = 0.8 / max(1, len(models))
    upright = len(models) > 5  # side by side, more than five labels per group overlap: stand them up
    no_fact = (chance - PRIOR_TOLERANCE, chance + PRIOR_TOLERANCE) if chance is not None else (None, None)
    groups = (*TARGETS, (NO_FACT_ROW, NO_FACT_LABEL, *no_fact))
    fig, axes = new_figure(2.0 + 1.9 * len(groups), 4.2)
    ax = axes[0, 0]
    colours = bar_colours(len(models))
    for t, (_, _, lo, hi) in enumerate(groups):
        if lo is not None:
            ax.add_patch(Rectangle((t - 0.45, lo), 0.9, hi - lo, color="tab:green", alpha=0.12, lw=0))

    def met(row: str, value: float) -> bool:
        if row == NO_FACT_ROW:
            return chance is not None and near_chance(value, chance)
        return meets_target(row, value)

    for m, (label, rows) in enumerate(models):
        xs = [t - 0.4 + width * (m + 0.5) for t in range(len(groups))]
        values = [rows.get(row, float("nan")) for row, *_ in groups]
        ax.bar(xs, values, width * 0.9, label=label, color=colours[m])
        for x, v, (row, *_) in zip(xs, values, groups):
            if v == v:  # (not NaN)
                ax.text(x, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=6, rotation=90 if upright else 0,
                        fontweight="bold" if met(row, v) else "normal")
    ax.set_xticks(range(len(groups)), [label for _, label, _, _ in groups], fontsize=8)
    ax.set_ylim(0, 1.2 if upright else 1.12)
    ax.set_ylabel("accuracy / share (n = 200; easy-vqa n = 1000)", fontsize=8)
    ax.set_title(title + "  (green: the target's passing range; bold: met)", fontsize=9)
    ax.legend(fontsize=8, ncol=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return save_figure(fig, out, dpi=120)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="LABEL=PATH of measure_default_model.py JSON files")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="issue 12 targets")
    args = ap.parse_args(argv)
    print(plot([load(spec) for spec in args.models], args.out, args.title, split_chance(args.models)))


if __name__ == "__main__":
    main()
