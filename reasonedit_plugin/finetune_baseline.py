"""FT: fine-tuning the language model's last layers on each edit, with EasyEdit's FT settings — a baseline
row for Hugging Face VLMs (METHOD.md §7: "FT lr 1e-4").

EasyEdit has no multimodal FT (``'FT'`` is not in ``ALG_MULTIMODAL_DICT``; its ``apply_ft_to_model``
tokenises text only), so this row is this project's own, clearly labelled "FT (ours, EasyEdit's FT
settings)". It follows EasyEdit's FT: for each edit, ``num_steps`` Adam steps (``lr``, ``weight_decay``)
on the negative log-likelihood of the target after the prompt — here the chat prompt WITH the image —
updating only the weights named by ``rewrite_module_tmp`` for ``layers``; with ``norm_constraint`` each
weight is clamped to within that distance of its pre-edit value after every step. Edits accumulate (the
sequential protocol). The settings are read from EasyEdit's FT YAML form (``hparams/FT/<model>.yaml``).

The method works on a deep copy of the model, so the comparison's shared model is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from .baseline_registry import read_baseline_yaml
from .errors import ConfigError, did_you_mean
from .edit_methods import DirectAnswers
from .records import EditRecord, ImageLike, load_image

__all__ = ["FineTuneConfig", "FineTuneMethod"]

LABEL = "FT (ours, EasyEdit's FT settings)"

EASYEDIT_ONLY_KEYS = frozenset({
    "alg_name", "model_name", "device", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp", "ln_f_module",
    "lm_head_module", "batch_size", "max_length", "model_parallel", "kl_factor", "objective_optimization"})
"""Keys of EasyEdit's ``FTHyperParams`` this row does not use (the model comes from the comparison)."""


@dataclasses.dataclass
class FineTuneConfig:
    """EasyEdit's FT settings this row uses."""

    layers: list[int]
    """Decoder blocks whose ``rewrite_module_tmp`` weight is trained (negative: from the end)."""
    rewrite_module_tmp: str
    """Parameter name template, ``{}`` = the block number (e.g. ``model.language_model.layers.{}.mlp.down_proj.weight``)."""
    lr: float = 1e-4
    """Adam learning rate (METHOD.md §7: FT lr 1e-4)."""
    num_steps: int = 25
    """Optimisation steps per edit (EasyEdit's FT YAMLs)."""
    weight_decay: float = 0.0
    norm_constraint: Union[float, bool] = False
    """Max absolute change of each trained weight from its pre-edit value; false: none (EasyEdit's form)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.layers or not all(isinstance(i, int) for i in self.layers):
            raise ConfigError(f"FT layers={self.layers!r}: give a non-empty list of block numbers.")
        if "{}" not in self.rewrite_module_tmp:
            raise ConfigError(f"FT rewrite_module_tmp={self.rewrite_module_tmp!r} needs '{{}}' for the block number.")
        if not self.lr > 0 or self.num_steps < 1:
            raise ConfigError(f"FT needs lr > 0 and num_steps >= 1, got lr={self.lr}, num_steps={self.num_steps}.")
        if self.norm_constraint is not False and not (isinstance(self.norm_constraint, (int, float))
                                                      and self.norm_constraint > 0):
            raise ConfigError(f"FT norm_constraint={self.norm_constraint!r}: a positive number or false.")

    @classmethod
    def from_yaml(cls, path: Union[str, Path], seed: int = 0) -> "FineTuneConfig":
        """Read EasyEdit's FT YAML form; keys this row does not use are listed in ``EASYEDIT_ONLY_KEYS``."""
        kwargs = read_baseline_yaml(path, "FT", {f.name for f in dataclasses.fields(cls)}, EASYEDIT_ONLY_KEYS)
        kwargs.setdefault("seed", seed)
        for key in ("lr", "weight_decay"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = float(kwargs[key])
        return cls(**kwargs)


class FineTuneMethod(DirectAnswers):
    """The FT row behind the comparison's ``EditMethod`` interface (a deep copy of the VLM's model)."""

    def __init__(self, vlm: Any, config: FineTuneConfig, max_new_tokens: int = 16):
        from .vlm import VLM

        self.name = "FT"
        self.label = LABEL
        self.settings = config
        self.max_new_tokens = max_new_tokens
        model = copy.deepcopy(vlm.model).eval()
        self.vlm = VLM(model, vlm.processor)
        n = self.vlm.num_blocks
        names = [config.rewrite_module_tmp.format(i % n if i < 0 else i) for i in config.layers]
        params = dict(model.named_parameters())
        missing = [p for p in names if p not in params]
        if missing:
            raise ConfigError(f"FT rewrite_module_tmp gives {missing[0]!r}, which is not a parameter of this model."
                              f"{did_you_mean(missing[0], params)}")
        for p in model.parameters():
            p.requires_grad_(False)
        self.weights = {name: params[name] for name in names}
        self._pristine = {name: w.detach().clone() for name, w in self.weights.items()}
        self.losses: list[tuple[float, float]] = []
        """(first-step, last-step) target NLL per applied edit."""
        self.config = {"label": LABEL, "weights": names, **dataclasses.asdict(config)}

    @property
    def extra(self) -> dict[str, Any]:
        return {"ft": {"edits": len(self.losses), "loss_first_mean": _mean([a for a, _ in self.losses]),
                       "loss_last_mean": _mean([b for _, b in self.losses])}}

    def reset(self) -> None:
        with torch.no_grad():
            for name, w in self.weights.items():
                w.copy_(self._pristine[name])
        self.losses = []

    def apply(self, record: EditRecord) -> None:
        start = time.perf_counter()
        inputs, target = target_inputs(self.vlm, record.image, record.prompt, record.target)
        torch.manual_seed(self.settings.seed)
        weights = list(self.weights.values())
        before = [w.detach().clone() for w in weights]
        optimizer = torch.optim.Adam(weights, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        first = last = float("nan")
        try:
            for w in weights:
                w.requires_grad_(True)
            with torch.enable_grad():
                for step in range(self.settings.num_steps):
                    optimizer.zero_grad(set_to_none=True)
                    logits = self.vlm.model(**inputs).logits[0]
                    pred = logits[-len(target) - 1:-1].float()
                    loss = torch.nn.functional.cross_entropy(pred, target.to(pred.device))
                    loss.backward()
                    optimizer.step()
                    if self.settings.norm_constraint is not False:
                        eps = float(self.settings.norm_constraint)
                        with torch.no_grad():
                            for w, b in zip(weights, before):
                                w.copy_(torch.clamp(w, min=b - eps, max=b + eps))
                    last = float(loss.detach())
                    first = last if step == 0 else first
        finally:
            for w in weights:
                w.requires_grad_(False)
                w.grad = None
        self.losses.append((first, last))
        self.last_apply_seconds = time.perf_counter() - start


def target_inputs(vlm: Any, image: ImageLike, text: str, target: str) -> tuple[dict[str, Any], torch.Tensor]:
    """Processor inputs of (image, the chat prompt of ``text``) followed by ``target``'s tokens, and those
    tokens (the teacher-forced layout of EasyEdit's ``prepare_multimodal_hf_edit``), for training."""
    ids = vlm.tokenizer(target, add_special_tokens=False)["input_ids"]
    base = vlm.build_inputs([load_image(image)], [text])
    prompt = base["input_ids"]
    cont = torch.tensor([ids], dtype=prompt.dtype, device=prompt.device)
    inputs = dict(base)
    for key, value in base.items():
        if key != "input_ids" and torch.is_tensor(value) and value.shape == prompt.shape:
            tail = torch.ones_like(cont, dtype=value.dtype) if key == "attention_mask" else \
                torch.zeros_like(cont, dtype=value.dtype)
            inputs[key] = torch.cat([value, tail], dim=1)
    inputs["input_ids"] = torch.cat([prompt, cont], dim=1)
    return inputs, cont[0]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
