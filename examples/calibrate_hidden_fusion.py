"""Choose the hidden-state fusion's layer, scale, positions and max_facts on a CALIBRATION split.

The split is ShapeRules ``calib`` (generated here: ``--n`` records, ``--seed`` 1), never the ``small``
split the comparison reports on. Every grid point runs the sequential protocol (METHOD.md §7, evaluated
once after the last edit, no EasyEdit keys) with the embedded default's hparams and
``fusion: {kind, layer, scale, positions, max_facts}`` replaced; the point with the best overall HM wins
(ties: hard locality, then the smaller scale). Writes every point and the choice as JSON::

    python examples/calibrate_hidden_fusion.py --kind hidden_bias --out docs/fusion/calibration_hidden_bias.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import torch

from reasonedit_plugin.cli_inputs import default_hparams_path, load_vlm
from reasonedit_plugin.data.shaperules import easy_vqa_root, generate_split
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.evaluation import (ProtocolConfig, ReasonEditMethod, UneditedMethod, evaluate_sequential,
                                          prepare_reference)
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.records import make_records

logger = logging.getLogger("calibrate_hidden_fusion")


def calib_records(n: int, seed: int) -> list:
    root = easy_vqa_root()
    rows = generate_split("calib", n, seed)
    for row in rows:
        for name in ("image", "image_rephrase", "multimodal_locality_image", "hard_locality_image"):
            if row.get(name):
                row[name] = str(root / row[name])
    return make_records(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hparams", default=str(default_hparams_path()))
    parser.add_argument("--kind", default="hidden_bias", choices=("hidden_bias", "gated"))
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="language-model blocks to try (default: every block of the model)")
    parser.add_argument("--scales", type=float, nargs="+", default=[3.0, 10.0, 30.0])
    parser.add_argument("--positions", nargs="+", default=["text", "question"])
    parser.add_argument("--max-facts", type=int, nargs="+", default=[2, 0])
    parser.add_argument("--n", type=int, default=24, help="calibration records (ShapeRules calib)")
    parser.add_argument("--seed", type=int, default=1, help="calib split seed (the small split uses 0)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    hparams = ReasonEditHyperParams.from_hparams(args.hparams)
    vlm = load_vlm(hparams)
    layers = args.layers if args.layers is not None else range(vlm.spec.num_lm_blocks(vlm.model.config))
    base = hparams.to_config()
    records = calib_records(args.n, args.seed)
    protocol = ProtocolConfig(eval_every=0, easyedit_metrics=False, seed=base.seed)
    reference = prepare_reference(UneditedMethod(vlm, base.max_new_tokens), records, protocol)
    text_encoder = ReasonEditor(vlm, base).text_encoder
    points = []
    for layer, scale, positions, max_facts in itertools.product(layers, args.scales, args.positions,
                                                                args.max_facts):
        fusion = {"kind": args.kind, "layer": layer, "scale": scale, "positions": positions,
                  "max_facts": max_facts}
        config = base.replace(fusion=fusion)
        start = time.perf_counter()
        method = ReasonEditMethod(lambda: ReasonEditor(vlm, config, text_encoder=text_encoder), name=args.kind)
        result = evaluate_sequential(method, reference, protocol)
        s = result.final
        point = {**fusion, "overall": s.overall, "reliability": s.reliability, "gen": s.gen,
                 "locality": s.locality, "hard_locality": s.hard_locality, "seconds": time.perf_counter() - start}
        logger.info("%s", point)
        points.append(point)
    best = max(points, key=lambda p: (p["overall"] or 0, p["hard_locality"] or 0, -p["scale"]))
    out = {"kind": args.kind, "split": f"ShapeRules calib n={args.n} seed={args.seed}",
           "edited": len(reference.errors), "hparams": str(args.hparams), "points": points,
           "chosen": {k: best[k] for k in ("layer", "scale", "positions", "max_facts")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    logger.info("chosen: %s", out["chosen"])


if __name__ == "__main__":
    main()
