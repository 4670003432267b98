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


def load_hparams(path: Path, model_folder: Path | None = None) -> Any:
    """The hparams object of the YAML's ``alg_name`` (EasyEdit's hparams class for the method).

    ``model_folder`` replaces ``model_name`` (the run copy of the model, see ``main``); the ShapeRules YAMLs
    say ``model_name: package://tiny-qwen2-vl-shapes``, which EasyEdit's own ``from_hparams`` cannot resolve,
    so EasyEdit methods load through ``reasonedit_plugin.easyedit_baselines.load_hparams`` (the same
    classes as ``HPARAMS_CLASS``, plus package paths and a did-you-mean for unknown keys)."""
    alg_name = (yaml.safe_load(path.read_text()) or {}).get("alg_name")
    if alg_name == "ReasonEdit":
        from reasonedit_plugin import ReasonEditHyperParams

        hparams = ReasonEditHyperParams.from_hparams(str(path))
        if model_folder is not None:
            hparams.model_name = hparams.name = str(model_folder)
        return hparams
    if alg_name not in HPARAMS_CLASS:
        raise ValueError(f"{path}: alg_name {alg_name!r} is not one of {list(HPARAMS_CLASS) + ['ReasonEdit']}")
    from reasonedit_plugin.easyedit_baselines import load_hparams as load_easyedit_hparams

    return load_easyedit_hparams(alg_name, path, model_folder)


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


def run_method(path: Path, records: list[Any], model_folder: Path | None) -> dict[str, Any]:
    """Sequential editing the way EasyEdit's loop does it: one ``MultimodalEditor.edit`` call per record
    on the same editor (``sequential_edit=True``), EasyEdit's metrics after each."""
    from easyeditor import MultimodalEditor
    from reasonedit_plugin.easyedit_baselines import edit_arguments, train_request

    start = time.perf_counter()
    try:
        hparams = load_hparams(path, model_folder)
        editor = MultimodalEditor.from_hparams(hparams)
        metrics: list[dict] = []
        for i, record in enumerate(records):
            kwargs = edit_arguments([record])
            if hparams.alg_name == "ReasonEdit":
                kwargs["rationales"] = [" ".join(record.rationale)]
            if hparams.alg_name == "IKE":  # IKE's demonstrations: the facts edited so far
                from easyeditor.models.ike.util import encode_ike_facts_multimodal
                from sentence_transformers import SentenceTransformer
                from reasonedit_plugin.text_encoder import resolve_text_encoder_path

                hparams.sentence_model_name = str(resolve_text_encoder_path(str(hparams.sentence_model_name)))
                if getattr(hparams, "results_dir", None) in (None, "", "."):
                    hparams.results_dir = str(model_folder.parent / "scratch")
                train_ds = [train_request(r) for r in records[: i + 1]]
                encode_ike_facts_multimodal(SentenceTransformer(hparams.sentence_model_name, device="cpu"),
                                            train_ds, hparams)
                kwargs["train_ds"] = train_ds
            out, _, _ = editor.edit(**kwargs, sequential_edit=True, keep_original_weight=False, verbose=False)
            metrics.extend(out)
    except Exception as exc:  # noqa: BLE001 - one failing method must not sink the table
        return {"method": path.parent.name, "hparams": str(path), "status": "failed",
                "reason": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    return {"method": hparams.alg_name, "hparams": str(path), "status": "ok", "post": mean_post(metrics),
            "seconds": time.perf_counter() - start, "per_record": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", nargs="+", type=Path, help="one YAML per method (alg_name selects it)")
    parser.add_argument("--model", help="local model folder (default: the embedded tiny-qwen2-vl-shapes)")
    parser.add_argument("--split", default="small", help="shipped ShapeRules split")
    parser.add_argument("--limit", type=int, default=12, help="first N records (default 12)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare-easyedit"), help="report folder")
    args = parser.parse_args()

    try:
        import easyeditor  # noqa: F401
        from reasonedit_plugin import register
    except Exception as exc:  # noqa: BLE001
        print(f"EasyEdit is not importable here ({type(exc).__name__}: {exc}); put an EasyEdit checkout on "
              "PYTHONPATH (docs/EASYEDIT.md). Running `reasonedit compare` (ReasonEdit, unedited, ablations; "
              "EasyEdit rows skipped) instead.", file=sys.stderr)
        from reasonedit_plugin.cli import main as cli_main

        argv = ["compare", "--split", args.split, "--out", str(args.out), "--balance", "yaml"]
        return cli_main(argv + (["--limit", str(args.limit)] if args.limit else []))
    register(rationales_kwarg=True)

    from reasonedit_plugin.data.split_files import load_split
    from reasonedit_plugin.records import make_records

    records = make_records(load_split(args.split)[: args.limit])
    paths = args.hparams or [p for m in METHODS
                             if (p := ROOT / "hparams" / m / "tiny-qwen2-vl-shapes.yaml").is_file()]
    # EasyEdit loads the model by path; a run copy of the embedded model gets the video-processor config
    # that transformers asks for when torchvision is installed (the shipped folder is image-only)
    from reasonedit_plugin.easyedit_baselines import ModelFolder
    from reasonedit_plugin.hparams import resolve_model_name

    model = Path(args.model) if args.model else Path(resolve_model_name("package://tiny-qwen2-vl-shapes"))
    copy = ModelFolder(model)
    rows = [run_method(p, records, copy.path) for p in paths]
    copy.cleanup()

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
