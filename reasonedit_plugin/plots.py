"""The report's PNG plots, and the figure helpers every plot of the package draws with (matplotlib's
object API: no pyplot, so no global state and no display backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

from .errors import ReasonEditError
from .metrics import EDIT_KINDS, UNRELATED_KINDS

PLOT_METRICS: tuple[tuple[str, str], ...] = (
    ("reliability", "Reliability"), ("gen", "Generalisation (HM of T/I/R-Gen)"), ("locality", "Locality"),
    ("hard_locality", "Hard locality"),
)


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    """A figure and its axes as a [rows, cols] array."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ReasonEditError("plots need matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save_figure(fig: Any, path: Union[str, Path], dpi: int = 110,
                rect: Sequence[float] | None = None) -> Path:
    """Lay ``fig`` out (within ``rect``, room left for a legend or title) and write it as a PNG."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(**({} if rect is None else {"rect": tuple(rect)}))
    fig.savefig(out, dpi=dpi, format="png")
    return out


_STYLE = {"ReasonEdit": dict(color="black", linewidth=2.4, marker="o", zorder=5),
          "unedited": dict(color="tab:gray", linestyle="--", marker="s")}


def plot_metrics_vs_edits(comparison: Any, path: Union[str, Path]) -> Path | None:
    """The paper metrics after each checkpoint, one line per method that ran (None if nothing to plot)."""
    runs = [m for m in comparison.methods if m.ok and m.evaluation is not None and m.evaluation.checkpoints]
    if not runs:
        return None
    fig, axes = new_figure(10.5, 6.8, 2, 2)
    cmap = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan"]
    markers = ["^", "v", "D", "P", "X", "<", ">", "h"]
    styles: dict[str, dict[str, Any]] = {}
    for m in runs:  # distinct colour AND marker, so methods with equal numbers stay visible
        if m.name in _STYLE:
            styles[m.name] = dict(_STYLE[m.name])
        else:
            i = len([n for n in styles if n not in _STYLE])
            styles[m.name] = dict(color=cmap[i % len(cmap)], marker=markers[i % len(markers)],
                                  markersize=7 - (i % 3), linewidth=1.3, alpha=0.85,
                                  linestyle=("-", "--", "-.", ":")[i % 4])
    for ax, (key, title) in zip(axes.reshape(-1), PLOT_METRICS):
        for m in runs:
            pts = [(c.num_edits, c.scores.metric(key)) for c in m.evaluation.checkpoints
                   if c.scores.metric(key) is not None]
            if not pts:
                continue
            style = styles[m.name]
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], label=m.label or m.name, **style)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("number of sequential edits")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(metrics_title(runs), fontsize=10)
    return save_figure(fig, path, rect=(0, 0.07, 1, 0.96))


def metrics_title(runs: Sequence[Any]) -> str:
    """The title of :func:`plot_metrics_vs_edits`: what its intermediate points probed (a seeded subsample, or
    every edit so far when ``--subsample`` covered them all) and how many edits the last point probed."""
    intermediate = [c for m in runs for c in m.evaluation.checkpoints[:-1]]
    last = runs[0].evaluation.checkpoints[-1]
    if not intermediate:
        return f"Metrics after all {last.num_edits} edits"
    sampled = any(c.evaluated_edits < c.num_edits for c in intermediate)
    probed = "a seeded subsample of the edits so far" if sampled else "every edit so far"
    return f"Metrics vs number of edits (intermediate points: {probed}; last point: all {last.num_edits} edits)"


def plot_retrieval_distances(result: Any, path: Union[str, Path]) -> Path | None:
    """Histograms of the best scaled score and raw distance of edited vs unrelated queries (final
    evaluation of one ReasonEdit row), with the gate threshold τ."""
    ev = result.evaluation
    if ev is None:
        return None
    edited = [p for p in ev.probes if p.kind in EDIT_KINDS and p.best_score is not None]
    unrelated = [p for p in ev.probes if p.kind in UNRELATED_KINDS and p.best_score is not None]
    if not edited and not unrelated:
        return None
    import numpy as np

    fig, axes = new_figure(11.0, 4.8, 1, 2)
    for ax, attr, title in ((axes[0, 0], "best_score", "best hubness-scaled score  d / σ"),
                            (axes[0, 1], "best_distance", "best raw L2 distance")):
        groups = [
            ("edited queries (Rel/T/I/R-Gen)", [getattr(p, attr) for p in edited], "tab:blue"),
            ("unrelated: locality", [getattr(p, attr) for p in unrelated if p.kind == "locality"], "tab:green"),
            ("unrelated: hard locality", [getattr(p, attr) for p in unrelated if p.kind == "hard_locality"],
             "tab:red"),
        ]
        values = [v for _, vs, _ in groups for v in vs if v is not None]
        if not values:
            continue
        bins = np.linspace(min(values), max(values) + 1e-9, 31)
        for label, vs, colour in groups:
            if vs:
                ax.hist(vs, bins=bins, alpha=0.55, color=colour, label=f"{label} (n={len(vs)})")
        if attr == "best_score" and ev.gate_threshold is not None:
            ax.axvline(ev.gate_threshold, color="black", linestyle="--", linewidth=1.5,
                       label=f"gate τ = {ev.gate_threshold:.3f} (final codebook)")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("queries")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
        ax.grid(alpha=0.3)
    n_acc = sum(1 for p in unrelated if p.accepted)
    fig.suptitle(f"{result.label or result.name}: nearest codebook entry per query after all edits "
                 f"({n_acc}/{len(unrelated)} unrelated queries passed the gate)", fontsize=10)
    return save_figure(fig, path, rect=(0, 0, 1, 0.93))


def plot_topology(calibration: Any, folder: Union[str, Path]) -> list[Path]:
    """The AutoScaler / AutoLayer sweep PNGs of a Calibration (``topology.py`` draws them)."""
    if calibration is None or not hasattr(calibration, "plot"):
        return []
    return [Path(p) for p in calibration.plot(Path(folder) / "topology.png")]
