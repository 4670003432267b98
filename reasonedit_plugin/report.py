"""Reports of a comparison: a results table (markdown and HTML), PNG plots and a JSON file with every raw
number, the exact configuration, package versions, the seed and the command line.

Files written by :func:`write_report` into one folder:

- ``report.md`` / ``report.html``: one row per method (skipped rows say why), EasyEdit's keys, the plots;
- ``results.json``: the whole :class:`~reasonedit_plugin.baselines.Comparison` (every probe's answer,
  distance, scaled score and gate decision; every checkpoint; every edit's time), plus ``environment``;
- ``metrics_vs_edits.png``: the paper metrics at each checkpoint of the sequential protocol;
- ``retrieval_distances.png``: the best hubness-scaled score (and raw distance) of edited vs unrelated
  queries for ReasonEdit, with the gate threshold τ marked;
- ``topology_scale.png`` / ``topology_layer.png``: the ReasonEdit row's AutoScaler / AutoLayer sweep, or a
  diagnostic λ sweep at its layer when its λ was fixed (``baselines.topology_sweep``).
"""

from __future__ import annotations

import html
import importlib
import importlib.metadata
import json
import math
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from .errors import ReasonEditError
from .hparams import portable_model_name
from .metrics import retrieval_breakdown
from .plots import plot_metrics_vs_edits, plot_retrieval_distances, plot_topology

PAPER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("reliability", "Rel."), ("t_gen", "T-Gen"), ("i_gen", "I-Gen"), ("r_gen", "R-Gen"), ("gen", "Gen (HM)"),
    ("locality", "Loc."), ("hard_locality", "Hard Loc."),
    ("overall", "Overall (HM incl. hard loc.)"), ("overall_no_hard", "Old overall (HM w/o hard loc.)"),
    ("accepted_unrelated", "Unrelated accepted"),
)
EASYEDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rewrite_acc", "rewrite_acc"), ("rephrase_acc", "rephrase_acc"), ("image_rephrase_acc", "image_rephrase_acc"),
    ("locality_acc", "locality_acc"), ("multimodal_locality_acc", "multimodal_locality_acc"),
)
PACKAGES = ("torch", "transformers", "faiss-cpu", "faiss-gpu", "sentence-transformers", "numpy", "pillow",
            "easy-vqa", "matplotlib", "reasonedit-plugin")


@dataclass
class ReportFiles:
    folder: Path
    markdown: Path
    html: Path
    json: Path
    plots: list[Path] = field(default_factory=list)


# ================================================================================================
# Environment
# ================================================================================================

def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def model_files(folder: Union[str, Path, None], hash_limit: int = 100 * 2**20) -> dict[str, Any]:
    """The model folder's weight/config files with sizes, and sha256 for files under ``hash_limit`` bytes
    (so a report names exactly which weights produced it; big checkpoints are not hashed)."""
    import hashlib

    if folder is None or not Path(folder).is_dir():
        return {}
    out: dict[str, Any] = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix not in (".safetensors", ".json", ".bin", ".jinja"):
            continue
        entry: dict[str, Any] = {"bytes": path.stat().st_size}
        if entry["bytes"] <= hash_limit:
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        out[path.name] = entry
    return out


def environment() -> dict[str, Any]:
    """Python, platform, package versions, the EasyEdit commit (if importable) and this project's commit."""
    from .baselines import easyedit_commit, easyedit_status

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    ok, reason = easyedit_status()
    torch_info: dict[str, Any] = {}
    try:
        import torch

        torch_info = {"threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "packages": versions, "torch_runtime": torch_info,
        "easyeditor": {"importable": ok, "reason": reason, "commit": easyedit_commit() if ok else None},
        "reasonedit_plugin_commit": _git_commit(Path(__file__).resolve().parent),
    }


# ================================================================================================
# Tables
# ================================================================================================

def _pct(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _num(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_rows(comparison: Any) -> list[dict[str, str]]:
    """One dict per method: display strings for every column (metrics in %)."""
    rows = []
    for m in comparison.methods:
        row = {"Method": m.label or m.name, "Status": m.status}
        ev = m.evaluation
        if ev is None:
            for _, title in PAPER_COLUMNS + EASYEDIT_COLUMNS:
                row[title] = "—"
            row["s / edit"] = row["retrieval p50 / p95 ms"] = row["lookup p50 / p95 ms"] = row["n"] = "—"
            row["Notes"] = f"{m.status}: {m.reason}" if m.reason else m.status
        else:
            s = ev.final
            for key, title in PAPER_COLUMNS:
                row[title] = _pct(getattr(s, key))
            for key, title in EASYEDIT_COLUMNS:
                row[title] = _pct(s.easyedit.get(key))
            row["s / edit"] = "—" if m.kind == "unedited" else _num(ev.time_per_edit, 3)
            for title, lat in (("retrieval p50 / p95 ms", ev.retrieval_latency),
                               ("lookup p50 / p95 ms", ev.lookup_latency)):
                row[title] = "—" if lat is None or lat.p50_ms is None else f"{lat.p50_ms:.1f} / {lat.p95_ms:.1f}"
            row["n"] = str(ev.num_edited)
            row["Notes"] = _notes(m)
        rows.append(row)
    return rows


CHECKPOINT_TABLE = ["Method", "probed"] + [t for _, t in PAPER_COLUMNS]


def checkpoint_steps_reported(comparison: Any) -> list[int]:
    """The checkpoints that get their own table: 10, 100, 1000, ... edits, before the last edit, where a
    sequential row has one (the literature's "after T edits" columns)."""
    steps: set[int] = set()
    for m in comparison.methods:
        if m.ok and m.evaluation is not None and not comparison.single:
            last = m.evaluation.num_edited
            steps |= {c.num_edits for c in m.evaluation.checkpoints
                      if 10 <= c.num_edits < last and _power_of_ten(c.num_edits)}
    return sorted(steps)


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


def checkpoint_rows(comparison: Any, step: int) -> list[dict[str, str]]:
    """Every row's paper metrics at the checkpoint after ``step`` edits; ``probed`` says on how many of
    those edits (all of them unless the run's ``--subsample`` was smaller)."""
    rows = []
    for m in comparison.methods:
        point = None if m.evaluation is None else next(
            (c for c in m.evaluation.checkpoints if c.num_edits == step), None)
        if point is None:
            continue
        row = {"Method": m.label or m.name, "Status": m.status,
               "probed": f"{point.evaluated_edits} of {point.num_edits}"}
        row.update({title: _pct(getattr(point.scores, key)) for key, title in PAPER_COLUMNS})
        rows.append(row)
    return rows


RETRIEVAL_TABLE = ["Method", "probe", "n", "retrieved", "right, retrieved", "right, not retrieved"]
_KIND_TITLES = dict(PAPER_COLUMNS)


def retrieval_rows(comparison: Any) -> list[dict[str, str]]:
    """Per retrieving method and probe kind: the share of probes retrieval accepted an entry for, and the
    accuracy with and without one (:func:`~.metrics.retrieval_breakdown`, in %): an edit probe lost with
    nothing retrieved is the gate's miss, one lost with facts fused is the model's reading."""
    rows = []
    for m in comparison.methods:
        if m.evaluation is None:
            continue
        for kind, cell in retrieval_breakdown(m.evaluation.probes).items():
            rows.append({"Method": m.label or m.name, "Status": m.status, "probe": _KIND_TITLES.get(kind, kind),
                         "n": str(cell["n"]), "retrieved": _pct(cell["retrieved"]),
                         "right, retrieved": _pct(cell["right_retrieved"]),
                         "right, not retrieved": _pct(cell["right_not_retrieved"])})
    return rows


RETRIEVAL_INTRO = ("Each probe of the final evaluation by whether retrieval accepted an entry for it: an edit probe "
                   "answered wrong with nothing retrieved is a miss of the gate; one answered wrong with the facts "
                   "fused in is a miss of the model's reading. For Loc. and Hard Loc., *retrieved* is the gate's "
                   "false-accept rate.")


def _notes(m: Any) -> str:
    if m.kind == "ablation" and m.reason:
        return m.reason
    if m.kind in ("reasonedit", "ablation") and m.config.get("embedding"):
        emb = m.config["embedding"]
        note = f"layer {emb.get('layer')}, λ={_num(emb.get('scale'), 3)}"
        if m.topology is not None and getattr(m.topology, "balanced", False):
            note += " (AutoLayer/AutoScaler)"
        return note
    return ""


def _markdown_table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        out.append("| " + " | ".join(row.get(c, "").replace("|", "\\|") for c in columns) + " |")
    return "\n".join(out)


def _html_table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = "" if row.get("Status") == "ok" else f' class="{html.escape(row.get("Status", ""))}"'
        cells = "".join(f"<td>{html.escape(row.get(c, ''))}</td>" for c in columns)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


PAPER_TABLE = ["Method", "n"] + [t for _, t in PAPER_COLUMNS] + ["s / edit", "retrieval p50 / p95 ms",
                                                                  "lookup p50 / p95 ms", "Notes"]
EASYEDIT_TABLE = ["Method"] + [t for _, t in EASYEDIT_COLUMNS]


def _summary_lines(comparison: Any) -> list[str]:
    ref = comparison.reference
    p = comparison.protocol
    if comparison.single:
        protocol = "single-edit (fresh codebook per edit)"
    elif p.eval_every and p.eval_subsample >= ref.get("records_edited", 0):
        protocol = f"sequential, in dataset order, evaluated every {p.eval_every} edits on every edit made so far"
    elif p.eval_every:
        protocol = (f"sequential, in dataset order, evaluated every {p.eval_every} edits on a seeded "
                    f"{p.eval_subsample}-edit subsample and at the end on all")
    else:
        protocol = "sequential, in dataset order, evaluated once after the last edit, on all"
    edited = ref.get("records_edited", 0)
    correct = len(ref.get("already_correct", []))
    return [
        f"- Model: `{portable_model_name(comparison.model_path)}`",
        f"- Records: {edited + correct}; edited (unedited model wrong): {edited}; "
        f"already correct, not edited: {correct}",
        f"- Protocol: {protocol}; seed {p.seed}",
        f"- Locality pool: {ref.get('locality_kept')} of {ref.get('locality_candidates')} unrelated probes kept "
        f"(the unedited model answered them right); hard locality: {ref.get('hard_locality_kept')} of "
        f"{ref.get('hard_locality_candidates')}",
        f"- EasyEdit keys: {'computed' if not ref.get('easyedit_unavailable') else 'not computed: ' + str(ref['easyedit_unavailable'])}",
        f"- Wall time of the whole run: {comparison.seconds:.0f} s",
    ]


DEFINITIONS = """\
Definitions (METHOD.md §7). Metrics in %. Multiple-choice probes: the option of lowest summed NLL,
case-insensitive exact match; open answers: normalised exact match. **Rel.**: the edited question;
**T-Gen**: a rephrasing, same image; **I-Gen**: same question, another image needing the same rule;
**R-Gen**: another question answered by the rationale; **Loc.**: unrelated probes the unedited model got
right, still right; **Hard Loc.**: near-miss probes (same filter); **Gen (HM)**: harmonic mean of
T/I/R-Gen; **Overall (HM incl. hard loc.)**: the true harmonic mean of Rel., Gen, Loc. and Hard Loc.;
**Old overall (HM w/o hard loc.)**: the previous formula, Rel., Gen and Loc. only (it hid near-miss
failures); **Unrelated accepted**: share of Loc. and Hard Loc. probes for which retrieval accepted
anything (the gate's false-accept rate; lower is better). **s / edit**: wall time of one
edit (for ReasonEdit: the unedited-answer check, keys, radii, codebook insert); **retrieval**: query key
(vision + text encoder) plus codebook search, per query; **lookup**: the codebook search alone. EasyEdit keys:
teacher-forced token accuracy of the target (rewrite/rephrase/image_rephrase) and agreement of post-edit
top-1 (text) / top-10 (multimodal) tokens with the unedited model's (locality), as EasyEdit computes them."""


def _edit_k_lines(extra: dict[str, Any] | None) -> list[str]:
    ek = (extra or {}).get("edit_k")
    if not ek:
        return []
    cells = ", ".join(f"k={k}: {_pct(v)}" for k, v in ek["accuracy"].items())
    return ["## Edit-k generality", "",
            f"Edit k random records on a fresh codebook, then ask the edit questions of all other records "
            f"({ek['rounds']} seeded rounds, mean accuracy in %): {cells}", ""]


def _warnings(extra: dict[str, Any] | None) -> list[str]:
    """What the run warned about that the results depend on (e.g. a model read with another answer template)."""
    return list((extra or {}).get("warnings") or [])


def _captions(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    return (extra or {}).get("captions")


def _caption_intro(captions: dict[str, Any]) -> str:
    return (f"{captions['records']} generated caption edits (\"A <colour> <shape> of the <Tribe> tribe.\", the "
            f"tribe stated only by the rationale), applied one after another on a fresh codebook; EasyEdit's "
            f"caption token accuracies and the paper's metrics on generated captions (in %). Alone: "
            f"`{captions['command']}`.")


def render_markdown(comparison: Any, title: str, command: str | None, plots: Sequence[Path],
                    extra: dict[str, Any] | None = None) -> str:
    rows = table_rows(comparison)
    lines = [f"# {title}", ""]
    if command:
        lines += ["Regenerate with:", "", "```bash", command, "```", ""]
    lines += _summary_lines(comparison) + [""]
    if _warnings(extra):
        lines += ["## Warnings", ""] + [f"- {w}" for w in _warnings(extra)] + [""]
    lines += ["## Results", "", _markdown_table(rows, PAPER_TABLE), ""]
    ok_rows = [r for r in rows if r["Status"] == "ok"]
    if ok_rows and any(r[t] != "—" for r in ok_rows for _, t in EASYEDIT_COLUMNS):
        lines += ["## EasyEdit metrics", "", _markdown_table(ok_rows, EASYEDIT_TABLE), ""]
    for step in checkpoint_steps_reported(comparison):
        lines += [f"## After {step} edits", "", _markdown_table(checkpoint_rows(comparison, step), CHECKPOINT_TABLE),
                  ""]
    retrieval = retrieval_rows(comparison)
    if retrieval:
        lines += ["## Retrieved or not", "", RETRIEVAL_INTRO, "", _markdown_table(retrieval, RETRIEVAL_TABLE), ""]
    lines += _edit_k_lines(extra)
    captions = _captions(extra)
    if captions:
        lines += ["## Caption edits", "", _caption_intro(captions), "",
                  _markdown_table(captions["rows"], captions["columns"]), ""]
    skipped = [r for r in rows if r["Status"] != "ok"]
    if skipped:
        lines += ["## Not run", ""] + [f"- **{r['Method']}**: {r['Notes']}" for r in skipped] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += [DEFINITIONS, "", "Raw numbers, configuration and versions: `results.json`.", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child,td:last-child{text-align:left}
tr.skipped td,tr.failed td{color:#888}img{max-width:100%;margin:1em 0;border:1px solid #eee}
pre{background:#f6f6f6;padding:.6em}"""


def render_html(comparison: Any, title: str, command: str | None, plots: Sequence[Path],
                extra: dict[str, Any] | None = None) -> str:
    rows = table_rows(comparison)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if command:
        parts.append(f"<p>Regenerate with:</p><pre>{html.escape(command)}</pre>")
    parts.append("<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in _summary_lines(comparison))
                 + "</ul>")
    if _warnings(extra):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in _warnings(extra))
                     + "</ul>")
    parts.append("<h2>Results</h2>" + _html_table(rows, PAPER_TABLE))
    ok_rows = [r for r in rows if r["Status"] == "ok"]
    if ok_rows and any(r[t] != "—" for r in ok_rows for _, t in EASYEDIT_COLUMNS):
        parts.append("<h2>EasyEdit metrics</h2>" + _html_table(ok_rows, EASYEDIT_TABLE))
    for step in checkpoint_steps_reported(comparison):
        parts.append(f"<h2>After {step} edits</h2>" + _html_table(checkpoint_rows(comparison, step), CHECKPOINT_TABLE))
    retrieval = retrieval_rows(comparison)
    if retrieval:
        parts.append(f"<h2>Retrieved or not</h2><p>{html.escape(RETRIEVAL_INTRO)}</p>"
                     + _html_table(retrieval, RETRIEVAL_TABLE))
    captions = _captions(extra)
    if captions:
        rows = [dict(row, Status="ok") for row in captions["rows"]]
        parts.append(f"<h2>Caption edits</h2><p>{html.escape(_caption_intro(captions))}</p>"
                     + _html_table(rows, captions["columns"]))
    for p in plots:
        parts.append(f"<img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'>")
    parts.append(f"<p>{html.escape(DEFINITIONS)}</p><p>Raw numbers: results.json</p></body></html>")
    return "".join(parts)


# ================================================================================================
# Writing
# ================================================================================================

def portable_paths(value: Any, places: dict[str, str] | None = None) -> Any:
    """``value`` (plain JSON) with machine-specific path prefixes replaced by placeholders — the package
    folder by ``<reasonedit_plugin>``, the Python environment by ``<venv>``, the working directory by
    ``.``, the home folder by ``~`` (longest first) — so a committed results.json names no local folders."""
    if places is None:
        package = Path(__file__).resolve().parent
        places = {str(package): "<reasonedit_plugin>", str(Path(sys.prefix).resolve()): "<venv>",
                  sys.prefix: "<venv>", str(Path.cwd()): ".", str(Path.home()): "~"}
        places = {k: v for k, v in places.items() if len(k) > 1}
    alternatives = "|".join(re.escape(k) for k in sorted(places, key=len, reverse=True))
    prefix = re.compile(f"(?:{alternatives})(?=/|\\b|$)")

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str):
            return prefix.sub(lambda m: places[m.group(0)], item)
        return item

    return walk(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_report(comparison: Any, folder: Union[str, Path], *, title: str = "ReasonEdit evaluation",
                 command: str | None = None, hparams: Any = None, extra: dict[str, Any] | None = None,
                 topology: Any = None) -> ReportFiles:
    """Write report.md, report.html, results.json and the PNGs into ``folder``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReasonEditError(f"cannot create the report folder {str(folder)!r}: {exc}") from exc
    plots: list[Path] = []
    p = plot_metrics_vs_edits(comparison, folder / "metrics_vs_edits.png")
    if p is not None:
        plots.append(p)
    main = comparison.method("ReasonEdit")
    if main is not None and main.ok:
        p = plot_retrieval_distances(main, folder / "retrieval_distances.png")
        if p is not None:
            plots.append(p)
    if topology is None:
        topology = getattr(comparison, "topology", None)
    plots += plot_topology(topology, folder)
    md = folder / "report.md"
    md.write_text(render_markdown(comparison, title, command, plots, extra), encoding="utf-8")
    page = folder / "report.html"
    page.write_text(render_html(comparison, title, command, plots, extra), encoding="utf-8")
    payload = {
        "title": title, "command": command, "argv": list(sys.argv), "seed": comparison.protocol.seed,
        "environment": environment(),
        "model_files": model_files(comparison.model_path),
        "hparams": _jsonable(hparams.to_dict() if hasattr(hparams, "to_dict") else hparams),
        "comparison": _jsonable(comparison.to_dict()),
        "topology": _jsonable(topology),
        "extra": _jsonable(extra or {}),
    }
    js = folder / "results.json"
    js.write_text(json.dumps(portable_paths(payload), indent=1, allow_nan=False), encoding="utf-8")
    return ReportFiles(folder, md, page, js, plots)


def summary_text(comparison: Any) -> str:
    """A compact plain-text table for the terminal."""
    rows = table_rows(comparison)
    cols = ["Method", "n", "Rel.", "T-Gen", "I-Gen", "R-Gen", "Loc.", "Hard Loc.", "Overall (HM)", "s / edit",
            "lookup p50 / p95 ms"]
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    for r in rows:
        line = "  ".join(r.get(c, "").ljust(widths[c]) for c in cols)
        if r["Status"] != "ok":
            line = f"{r['Method'].ljust(widths['Method'])}  {r['Notes']}"
        lines.append(line)
    ok = [r for r in rows if r["Status"] == "ok" and any(r[t] != "—" for _, t in EASYEDIT_COLUMNS)]
    if ok:
        ecols = EASYEDIT_TABLE
        ew = {c: max(len(c), *(len(r.get(c, "")) for r in ok)) for c in ecols}
        lines += ["", "EasyEdit keys (%):", "  ".join(c.ljust(ew[c]) for c in ecols)]
        lines += ["  ".join(r.get(c, "").ljust(ew[c]) for c in ecols) for r in ok]
    return "\n".join(lines)
