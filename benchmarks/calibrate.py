"""Choose ReasonEdit's settings for a model on a calibration split, never on the split you report.

    python benchmarks/calibrate.py --grid embedding.scale=1,3,10 retrieval.nullset.text_min_cos=0.5,0.6
    python benchmarks/calibrate.py --model DIR --grid embedding.scale=3,10 --out runs/calib.json
    python benchmarks/calibrate.py --edits benchmarks/data/tune_handwritten.jsonl --grid retrieval.nullset.text_min_cos=0.4,0.5,0.6

Every combination of the ``--grid`` values (dotted ``section.field`` or ``section.sub.field`` paths of the
ReasonEdit config, comma-separated values parsed as YAML scalars) is applied on top of ``--hparams``
(default: the embedded model's YAML) and evaluated with the sequential protocol (METHOD.md §7: only records
the unedited model gets wrong are edited, one after another, and everything is scored after the last
edit) on a generated ShapeRules calibration split (``--split calib``, seed 1: rules, images and prompts
disjoint from the shipped ``small`` split). Prints one row per combination, best overall HM (with hard
locality) first, and writes every score to ``--out`` (JSON). ``--edits`` adds records from a JSONL file to
the stream (e.g. the hand-written *tuning* set, ``benchmarks/make_heldout_set.py --set tune``, for settings
that must hold in human wordings); a file of held-out records is refused.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from reasonedit_plugin.data import shaperules, split_files  # noqa: E402
from reasonedit_plugin.editor import ReasonEditor  # noqa: E402
from reasonedit_plugin.errors import ReasonEditError  # noqa: E402
from reasonedit_plugin.evaluation import (ProtocolConfig, ReasonEditMethod, UneditedMethod,  # noqa: E402
                                          evaluate_sequential, evaluate_single, prepare_reference)
from reasonedit_plugin.hparams import ReasonEditHyperParams  # noqa: E402
from reasonedit_plugin.records import make_records  # noqa: E402
from reasonedit_plugin.vlm import VLM  # noqa: E402

YAML = ROOT / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"
METRICS = ("reliability", "t_gen", "i_gen", "r_gen", "locality", "hard_locality", "overall", "overall_no_hard",
           "accepted_unrelated")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["embedding.scale=1,3"]`` -> ``{"embedding.scale": [1, 3]}`` (values as YAML scalars)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        path, sep, values = item.partition("=")
        if not sep or "." not in path or not values:
            raise SystemExit(f"--grid {item!r}: write section.field=v1,v2 (e.g. embedding.scale=1,3,10).")
        grid[path] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def overrides(setting: dict[str, Any]) -> dict[str, Any]:
    """``{"retrieval.nullset.text_min_cos": 0.5}`` -> ``{"retrieval": {"nullset": {"text_min_cos": 0.5}}}``."""
    nested: dict[str, Any] = {}
    for path, value in setting.items():
        *parents, leaf = path.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hparams", type=Path, default=YAML)
    ap.add_argument("--model", help="model folder (overrides the YAML's model_name)")
    ap.add_argument("--grid", nargs="+", default=[], help="section.field=v1,v2 ...")
    ap.add_argument("--split", default="calib", help="generated ShapeRules split name (default calib)")
    ap.add_argument("--n", type=int, default=72, help="records generated (default 72)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--locality", type=int, default=60, help="size of the plain locality pool")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--protocol", choices=("sequential", "single"), default="sequential",
                    help="single: every record edited alone on an empty codebook (the 1-edit regime)")
    ap.add_argument("--edits", type=Path, help="JSONL of extra (tuning) records, images relative to easy-vqa")
    ap.add_argument("--out", type=Path, default=Path("runs/calibrate.json"))
    args = ap.parse_args(argv)
    if args.split not in shaperules.CALIBRATION_SPLITS:
        raise SystemExit(f"--split {args.split!r}: calibrate on a calibration split {shaperules.CALIBRATION_SPLITS}, "
                         "not on a split you report.")
    torch.set_num_threads(args.threads)
    grid = parse_grid(args.grid)
    hparams = ReasonEditHyperParams.from_hparams(args.hparams)
    model = args.model or hparams.model_name
    base = hparams.to_config()
    settings = []  # every grid point's config, built before anything runs: a bad one fails in a second
    for values in itertools.product(*grid.values()) if grid else [()]:
        setting = dict(zip(grid, values))
        try:
            settings.append((setting, type(base).from_dict(merged(base.to_dict(), overrides(setting)))))
        except ReasonEditError as exc:
            raise SystemExit(f"--grid point {setting}: {exc}") from None
    rows_in = shaperules.generate_split(args.split, args.n, seed=args.seed) if args.n > 0 else []
    if args.edits is not None:
        extra = split_files.load_jsonl(args.edits)
        held = [r["id"] for r in extra if "heldout" in str(r.get("meta", {}).get("source", ""))]
        if held:
            raise SystemExit(f"--edits {args.edits}: {len(held)} records are held-out records ({held[0]}, ...); "
                             "tune on a tuning set (benchmarks/make_heldout_set.py --set tune).")
        rows_in = rows_in + extra
    records = make_records(rows_in, shaperules.easy_vqa_root())
    vlm = VLM.from_pretrained(model)
    proto = ProtocolConfig(eval_every=0, locality_size=args.locality, easyedit_metrics=False)
    started = time.time()
    reference = prepare_reference(UneditedMethod(vlm, base.max_new_tokens), records, proto, progress=False)
    rows = []
    for setting, config in settings:
        method = ReasonEditMethod(lambda: ReasonEditor(vlm, config), name="ReasonEdit")
        t = time.time()
        evaluate = evaluate_single if args.protocol == "single" else evaluate_sequential
        result = evaluate(method, reference, proto, progress=False)
        scores = result.final
        row = {"setting": setting, "seconds": round(time.time() - t, 1),
               **{k: getattr(scores, k) for k in METRICS}}
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    rows.sort(key=lambda r: -(r["overall"] or 0))
    out = {"command": "python benchmarks/calibrate.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": str(model), "hparams": str(args.hparams), "split": args.split, "n": args.n, "seed": args.seed, "protocol": args.protocol,
           "edits_file": None if args.edits is None else str(args.edits),
           "edited": len(reference.errors), "rows": rows, "seconds": round(time.time() - started, 1),
           "environment": {"python": platform.python_version(), "torch": torch.__version__,
                           "threads": args.threads, "load_at_start": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"\n{len(reference.errors)} of {len(records)} calibration records edited; best first:")
    for r in rows:
        print(f"  overall {100 * (r['overall'] or 0):5.1f}  rel {100 * (r['reliability'] or 0):5.1f}  "
              f"r_gen {100 * (r['r_gen'] or 0):5.1f}  hard {100 * (r['hard_locality'] or 0):5.1f}  {r['setting']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
