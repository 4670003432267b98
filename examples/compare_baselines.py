"""Compare ReasonEdit with EasyEdit's multimodal baselines, the EasyEdit way.

One hparams YAML per method; its ``alg_name`` selects the hyper-parameter class, and every method —
ReasonEdit included (``alg_name: ReasonEdit``) — runs through EasyEdit's ``MultimodalEditor.edit`` on the
same records, sequentially, so the table holds EasyEdit's own metrics (``rewrite_acc``, ``rephrase_acc``,
``image_rephrase_acc``, ``locality_acc``, ``multimodal_locality_acc``) for every row.

    PYTHONPATH=/path/to/EasyEdit python examples/compare_baselines.py \\
        --hparams hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml hparams/IKE/tiny-qwen2-vl-shapes.yaml \\
        --split small --limit 12 --out runs/compare-easyedit

Without ``--hparams`` it takes ``hparams/<METHOD>/tiny-qwen2-vl-shapes.yaml`` for every method that has
one. Without EasyEdit importable it says why and runs ``reasonedit compare`` instead (ReasonEdit, the
unedited model and the ablations, with the paper's metrics), so there is always a report.
A method that fails gets a row with the error, never zeros.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("ReasonEdit", "IKE", "GRACE", "WISE", "LoRA", "FT", "MEND", "SERAC")
HPARAMS_CLASS = {  # alg_name -> the class EasyEdit's own examples load it with
    "IKE": "IKEMultimodalHyperParams", "GRACE": "GraceHyperParams", "WISE": "WISEMultimodalHyperParams",
    "LoRA": "LoRAMultimodalHyperParams", "FT": "FTHyperParams", "MEND": "MENDMultimodalHparams",
    "SERAC": "SERACMultimodalHparams",
}
KEYS = ("rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc", "multimodal_locality_acc")


def load_hparams(path: Path) -> Any:
    """The hparams object of the YAML's ``alg_name`` (EasyEdit's ``<Class>.from_hparams``)."""
    alg_name = (yaml.safe_load(path.read_text()) or {}).get("alg_name")
    if alg_name == "ReasonEdit":
        from reasonedit_plugin import ReasonEditHyperParams

        return ReasonEditHyperParams.from_hparams(str(path))
    if alg_name not in HPARAMS_CLASS:
        raise ValueError(f"{path}: alg_name {alg_name!r} is not one of {list(HPARAMS_CLASS) + ['ReasonEdit']}")
    import easyeditor

    return getattr(easyeditor, HPARAMS_CLASS[alg_name]).from_hparams(str(path))


def requests_of(records: list[dict]) -> dict[str, Any]:
    """``MultimodalEditor.edit`` arguments for a list of ShapeRules/EasyEdit records."""
    return dict(
        prompts=[r["prompt"] for r in records], targets=[r["target"] for r in records],
        image=[r["image"] for r in records],
        rephrase_prompts=[r["rephrase_prompt"] for r in records],
        rephrase_image=[r["image_rephrase"] for r in records],
        locality_inputs={
            "text": {"prompt": [r["locality_prompt"] for r in records],
                     "ground_truth": [r["locality_ground_truth"] for r in records]},
            "vision": {"image": [r["multimodal_locality_image"] for r in records],
                       "prompt": [r["multimodal_locality_prompt"] for r in records],
                       "ground_truth": [r["multimodal_locality_ground_truth"] for r in records]},
        },
    )


def mean_post(metrics: list[dict]) -> dict[str, float]:
    out = {}
    for key in KEYS:
        values = [float(m["post"][key]) for m in metrics if key in m.get("post", {})]
        if values:
            out[key] = statistics.fmean(values)
    return out


def run_method(path: Path, records: list[dict]) -> dict[str, Any]:
    from easyeditor import MultimodalEditor

    start = time.perf_counter()
    try:
        hparams = load_hparams(path)
        editor = MultimodalEditor.from_hparams(hparams)
        kwargs = requests_of(records)
        if hparams.alg_name == "ReasonEdit":
            kwargs["rationales"] = [r["rationale"] for r in records]
        metrics, _, _ = editor.edit(**kwargs, sequential_edit=True, keep_original_weight=False, verbose=False)
    except Exception as exc:  # noqa: BLE001 - one failing method must not sink the table
        return {"method": path.parent.name, "hparams": str(path), "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    return {"method": hparams.alg_name, "hparams": str(path), "status": "ok", "post": mean_post(metrics),
            "seconds": time.perf_counter() - start, "per_record": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", nargs="+", type=Path, help="one YAML per method (alg_name selects it)")
    parser.add_argument("--split", default="small", help="shipped ShapeRules split")
    parser.add_argument("--limit", type=int, default=12, help="first N records (default 12)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare-easyedit"), help="report folder")
    args = parser.parse_args()

    try:
        import easyeditor  # noqa: F401
        from reasonedit_plugin.easyedit_adapter import register
    except Exception as exc:  # noqa: BLE001
        print(f"EasyEdit is not importable here ({type(exc).__name__}: {exc}); put an EasyEdit checkout on "
              "PYTHONPATH (docs/EASYEDIT.md). Running `reasonedit compare` (ReasonEdit, unedited, ablations; "
              "EasyEdit rows skipped) instead.", file=sys.stderr)
        from reasonedit_plugin.cli import main as cli_main

        argv = ["compare", "--split", args.split, "--out", str(args.out), "--balance", "yaml"]
        return cli_main(argv + (["--limit", str(args.limit)] if args.limit else []))
    register(rationales_kwarg=True)

    from reasonedit_plugin.data.shaperules import load_split

    records = load_split(args.split)[: args.limit]
    paths = args.hparams or [p for m in METHODS
                             if (p := ROOT / "hparams" / m / "tiny-qwen2-vl-shapes.yaml").is_file()]
    rows = [run_method(p, records) for p in paths]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "easyedit_results.json").write_text(json.dumps(rows, indent=1, default=str))
    lines = ["| method | " + " | ".join(KEYS) + " | s | status |", "|---" * (len(KEYS) + 3) + "|"]
    for row in rows:
        post = row.get("post", {})
        cells = [f"{100 * post[k]:.1f}" if k in post else "—" for k in KEYS]
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['seconds']:.0f} | {status} |")
    table = "\n".join(lines)
    (args.out / "easyedit_table.md").write_text(
        f"# EasyEdit metrics, {len(records)} ShapeRules '{args.split}' edits, sequential\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
