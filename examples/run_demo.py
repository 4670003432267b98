"""The main job, from Python: what `reasonedit demo` does, spelled out with the library's API.

Applies the shipped ShapeRules edits one after another with ReasonEdit on the embedded tiny Qwen2-VL
(CPU), evaluates reliability, T/I/R-Gen, locality, hard locality, time per edit (and EasyEdit's keys),
and writes report.md / report.html / results.json / PNGs.

    python examples/run_demo.py                 # -> runs/demo
    python examples/run_demo.py --limit 12 --out runs/demo-small
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from reasonedit_plugin.baselines import run_comparison
from reasonedit_plugin.cli_inputs import default_hparams_path, shaperules_plain_probes
from reasonedit_plugin.data.split_files import load_split
from reasonedit_plugin.evaluation import ProtocolConfig
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.report import summary_text, write_report
from reasonedit_plugin.vlm import VLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="small", help="shipped ShapeRules split")
    parser.add_argument("--limit", type=int, help="use only the first N records")
    parser.add_argument("--out", default="runs/demo", help="report folder")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the tiny model runs fastest on one thread

    hparams = ReasonEditHyperParams.from_hparams(default_hparams_path())  # the embedded default
    vlm = VLM.from_pretrained(hparams.model_name, dtype=hparams.dtype, device="cpu")
    records = load_split(args.split)[: args.limit]
    config = hparams.to_config()
    protocol = ProtocolConfig(eval_every=10, eval_subsample=20, locality_size=100, seed=config.seed)

    comparison = run_comparison(
        vlm, records, config, methods=("ReasonEdit", "unedited"), protocol=protocol,
        model_path=hparams.model_name,
        extra_locality=shaperules_plain_probes(200, config.seed),  # plain easy-vqa questions for locality
        progress=True)
    files = write_report(comparison, Path(args.out), title="ReasonEdit demo (examples/run_demo.py)",
                         command="python examples/run_demo.py " + (f"--limit {args.limit} " if args.limit else "")
                         + f"--out {args.out}", hparams=hparams)
    print(summary_text(comparison))
    print(f"report: {files.markdown}")


if __name__ == "__main__":
    main()
