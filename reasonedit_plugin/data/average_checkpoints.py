"""Average the weights a training run kept at its evaluation steps into one model folder.

    python -m reasonedit_plugin.data.average_checkpoints --run DIR --from-step 4000 --out AVG
    python -m reasonedit_plugin.data.average_checkpoints --run DIR --from-step 3000 --part visual.=5500 --out AVG

``DIR`` is a run of ``train_default_model --keep-every-eval``: its evaluation steps' weights are in
``DIR_steps/step_NNNNN``. The result is the uniform mean (in float64, stored in the checkpoints' dtype) of the
steps from ``--from-step`` to ``--to-step``, in a folder laid out like them (config, processor, tokenizer) whose
``training_args.json`` names the averaged steps. ``--part PREFIX=STEP`` gives the tensors whose names start with
``PREFIX`` a window of their own (``averaged_parts`` in ``training_args.json``; session 38: the vision tower's
window from step 5,500 and the language model's from 3,000). A kept step is one draw from a trajectory whose measured rows move
by up to 0.14 between evaluations 250 steps apart; the mean of the late steps reads as the trajectory does
(docs/RESULTS.md, session 36).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .default_model_build import staged_folder

WEIGHTS = "model.safetensors"


def steps_folder(run: Path) -> Path:
    """Where ``TrainConfig.keep_every_eval`` keeps a run's evaluation steps: ``<run>_steps``."""
    return run.with_name(f"{run.name}_steps")


def step_name(step: int, attempt: int = 0) -> str:
    """One kept step's folder name: ``step_NNNNN`` (``attempt<A>_step_NNNNN`` after a restart)."""
    return f"{f'attempt{attempt}_' if attempt else ''}step_{step:05d}"


def step_folders(run: Path, from_step: int, to_step: int | None = None) -> list[Path]:
    """The kept evaluation steps of ``run``'s last attempt (the one its model comes from) between ``from_step``
    and ``to_step``, in order."""
    folder = steps_folder(run)
    found = sorted((int(m.group(1) or 0), int(m.group(2)), p) for p in folder.glob("*step_*")
                   if (m := re.fullmatch(r"(?:attempt(\d+)_)?step_(\d+)", p.name)) and (p / WEIGHTS).is_file())
    last = max((attempt for attempt, _, _ in found), default=0)
    chosen = [p for attempt, step, p in found
              if attempt == last and step >= from_step and (to_step is None or step <= to_step)]
    if not chosen:
        raise ValueError(f"no kept steps of {run} between {from_step} and {to_step or 'the end'} in {folder}; "
                         "train with --keep-every-eval, or check --from-step / --to-step.")
    return chosen


class WeightMean:
    """The uniform mean of state dicts given one at a time, summed in float64 and returned in the last one's
    dtypes (tensors that are not floating point: the last one's). What ``TrainConfig.average_from_step`` keeps
    during a run and :func:`average_checkpoints` reads from its saved steps, with the same arithmetic."""

    def __init__(self) -> None:
        self.total: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.count = 0

    def add(self, state: dict[str, torch.Tensor]) -> None:
        if self.count and state.keys() != self.total.keys():
            raise ValueError("the checkpoints hold different tensors; average the steps of one run.")
        for key, value in state.items():
            if value.is_floating_point():
                self.total[key] = self.total[key] + value.double() if self.count else value.double()
            else:
                self.total[key] = value
            self.dtypes[key] = value.dtype
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        if not self.count:
            raise ValueError("nothing to average: no checkpoint was added.")
        return {key: (total / self.count).to(self.dtypes[key]).contiguous() if total.is_floating_point()
                else total for key, total in self.total.items()}


def average_checkpoints(folders: Sequence[Path], out: Path,
                        parts: Mapping[str, Sequence[Path]] | None = None) -> Path:
    """Write the uniform mean of ``folders``' weights to ``out`` (replaced whole; the last folder's other files).
    ``parts``: tensor-name prefix -> the folders whose mean those tensors take instead (a window of their own,
    e.g. ``{"visual.": later_steps}``); every prefix must name some tensor, and where prefixes overlap the longest
    decides (``{"visual.": a, "visual.merger.": b}``: the merger from ``b``, the rest of the tower from ``a``).
    Parts sharing a window read it once."""
    from safetensors.torch import save_file

    if not folders or any(not group for group in (parts or {}).values()):
        raise ValueError("average_checkpoints: give at least one checkpoint folder (for every part too).")
    means: dict[tuple[Path, ...], dict[str, torch.Tensor]] = {}

    def mean_of(group: Sequence[Path]) -> dict[str, torch.Tensor]:
        key = tuple(Path(f) for f in group)
        if key not in means:
            means[key] = _mean_of(key)
        return means[key]

    mean = dict(mean_of(folders))
    averaged: dict[str, list[str]] = {}
    for prefix, group in sorted((parts or {}).items(), key=lambda item: len(item[0])):  # longest prefix last
        names = [k for k in mean if k.startswith(prefix)]
        if not names:
            tops = sorted({k.split(".")[0] + "." for k in mean})
            raise ValueError(f"no tensor's name starts with {prefix!r}; the names start with {', '.join(tops)}")
        part = mean_of(group)
        mean.update({k: part[k] for k in names})
        averaged[prefix] = [Path(f).name for f in group]
    out = Path(out)
    with staged_folder(out) as tmp:
        shutil.copytree(folders[-1], tmp)
        save_file(mean, str(tmp / WEIGHTS), metadata={"format": "pt"})
        args_path = tmp / "training_args.json"
        if args_path.is_file():
            args = json.loads(args_path.read_text())
            args["averaged_steps"] = [Path(f).name for f in folders]
            if averaged:
                args["averaged_parts"] = averaged
            args_path.write_text(json.dumps(args, indent=2) + "\n")
    return out


def _mean_of(folders: Sequence[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    running = WeightMean()
    for folder in folders:
        running.add(load_file(str(Path(folder) / WEIGHTS)))
    return running.mean()


def _part(text: str) -> tuple[str, int]:
    """``--part PREFIX=STEP`` -> (prefix, step)."""
    prefix, _, step = text.rpartition("=")
    if not prefix or not step.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected PREFIX=FROM_STEP, e.g. visual.=5500")
    return prefix, int(step)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's --out (its steps in <run>_steps/)")
    parser.add_argument("--from-step", type=int, default=4000, help="first step averaged (default 4000)")
    parser.add_argument("--to-step", type=int, default=None, help="last step averaged (default: the last kept)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged model's folder")
    parser.add_argument("--part", type=_part, action="append", default=[], metavar="PREFIX=FROM_STEP",
                        help="tensors whose names start with PREFIX are averaged from FROM_STEP instead (to the same "
                             "--to-step); repeatable, e.g. --part visual.=5500 (overlapping prefixes: the longest "
                             "decides)")
    args = parser.parse_args(argv)
    try:
        folders = step_folders(args.run, args.from_step, args.to_step)
        prefixes = [prefix for prefix, _ in args.part]
        repeated = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if repeated:
            raise ValueError(f"--part {repeated[0]}= is given twice; give each prefix one step")
        parts = {prefix: step_folders(args.run, step, args.to_step) for prefix, step in args.part}
        average_checkpoints(folders, args.out, parts)
    except ValueError as exc:
        parser.exit(2, f"average_checkpoints: error: {exc}\n")
    print(f"averaged {len(folders)} steps ({folders[0].name} .. {folders[-1].name}) into {args.out}"
          + "".join(f"; {prefix}* from {group[0].name} ({len(group)} steps)" for prefix, group in parts.items()))


if __name__ == "__main__":
    main()
