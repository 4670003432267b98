"""SERAC for Hugging Face VLMs (ours): a scope classifier over the edit memory plus a counterfactual model
conditioned on the retrieved edit, following SERAC's design (Mitchell et al., 2022).

EasyEdit's multimodal SERAC runs only its LAVIS BLIP-2/MiniGPT-4 models (docs/BASELINES.md), so this
row is this project's, labelled "SERAC (ours, for HF VLMs)":

* **edit memory**: every applied edit (image, question, answer), with its features: the question's
  sentence embedding (the packaged MiniLM) and the image's vision feature (the mean-pooled input of the
  model spec's default vision-MLP linear — the same kind of feature ReasonEdit keys use);
* **scope classifier**: a logistic model on the pair features ``[|a - b|, a * b]`` of (query, edit), for
  text and vision separately; the query goes to the counterfactual model with the highest-scoring edit when
  its probability is above ``threshold``, else to the unchanged base model;
* **counterfactual model**: a copy of the VLM whose language model is fine-tuned to answer
  ``"Edit: <question> Answer: <answer>. Question: <query>"`` (with the query's image) with the edit's answer.

Both are trained once per row on ShapeRules edits of ANOTHER rule world (``world_seed``) over easy-vqa's
TRAIN images, so neither the rules' answers nor the images of the evaluated (test-image) edits are seen.
In-scope training queries: the edit itself, its rephrased question, its rephrased image; out-of-scope:
its hard-locality probe (same question, other shape), its multimodal-locality probe and another edit's
question. Settings: ``hparams/SERAC/<model>.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from pathlib import Path
from typing import Any, Sequence, Union

import torch

from .baseline_registry import read_baseline_yaml
from .errors import ConfigError
from .edit_methods import Prediction, TeacherForced, _pick, vlm_teacher_forced
from .finetune_baseline import target_inputs
from .records import EditRecord, ImageLike, load_image, make_records

__all__ = ["SeracConfig", "SeracMethod"]

LABEL = "SERAC (ours, for HF VLMs)"
NOT_USED = frozenset({"alg_name", "model_name", "device"})


@dataclasses.dataclass
class SeracConfig:
    """Training and routing settings of the SERAC row."""

    train_edits: int = 120
    """ShapeRules training edits (another rule world, easy-vqa train images)."""
    world_seed: int = 6
    """Rule world of the training edits (the evaluated ShapeRules splits use world 5)."""
    classifier_steps: int = 300
    classifier_lr: float = 0.05
    threshold: float = 0.5
    """Scope probability above which the counterfactual model answers."""
    cf_steps: int = 200
    """Single-example AdamW steps of the counterfactual model."""
    cf_lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_edits < 4 or self.classifier_steps < 1 or self.cf_steps < 1:
            raise ConfigError("SERAC needs train_edits >= 4, classifier_steps >= 1 and cf_steps >= 1.")
        if not 0.0 < self.threshold < 1.0 or not self.classifier_lr > 0 or not self.cf_lr > 0:
            raise ConfigError(f"SERAC needs 0 < threshold < 1 and positive learning rates, got threshold="
                              f"{self.threshold}, classifier_lr={self.classifier_lr}, cf_lr={self.cf_lr}.")

    @classmethod
    def from_yaml(cls, path: Union[str, Path], seed: int = 0) -> "SeracConfig":
        values = read_baseline_yaml(path, "SERAC", {f.name for f in dataclasses.fields(cls)}, NOT_USED)
        kwargs = {k: (float(v) if isinstance(v, str) else v) for k, v in values.items()}
        kwargs.setdefault("seed", seed)
        return cls(**kwargs)


def edit_prompt(edit: EditRecord, question: str) -> str:
    """The counterfactual model's input text: the retrieved edit, then the query's question."""
    return f"Edit: {edit.prompt} Answer: {edit.target}. Question: {question}"


class SeracMethod:
    """The SERAC row behind the comparison's ``EditMethod`` interface."""

    def __init__(self, vlm: Any, config: SeracConfig, text_encoder: Any = None, max_new_tokens: int = 16,
                 train_records: Sequence[EditRecord] | None = None):
        from .text_encoder import shared_text_encoder
        from .vlm import VLM

        self.name, self.label, self.settings = "SERAC", LABEL, config
        self.max_new_tokens = max_new_tokens
        self.vlm = vlm
        self.text_encoder = text_encoder or shared_text_encoder()
        self.module = vlm.resolve_layer(None)
        self.memory: list[EditRecord] = []
        self._memory_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.routed = {"counterfactual": 0, "base": 0}
        start = time.perf_counter()
        records = list(train_records) if train_records is not None else self._training_records()
        self.classifier, self.classifier_accuracy = self._train_classifier(records)
        self.cf = VLM(copy.deepcopy(vlm.model), vlm.processor)
        self.cf_losses = self._train_counterfactual(records)
        self.training_seconds = time.perf_counter() - start
        self.config = {"label": LABEL, "vision_module": self.module, **dataclasses.asdict(config)}

    # ------------------------------------------------------------------ training
    def _training_records(self) -> list[EditRecord]:
        from .data.shaperules import easy_vqa_root, generate_split, rule_world

        rows = generate_split("serac-train", self.settings.train_edits, self.settings.seed,
                              rule_world(self.settings.world_seed), image_split="train")
        return make_records(rows, image_root=easy_vqa_root())

    def _features(self, image: ImageLike, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(image) if not hasattr(image, "size") else f"pil:{id(image)}", question)
        if key not in self._cache:
            text = self.text_encoder.encode([question])[0]
            vision = self.vlm.vision_features([load_image(image)], self.module)[0].detach().float().cpu()
            self._cache[key] = (torch.nn.functional.normalize(text, dim=0),
                                torch.nn.functional.normalize(vision, dim=0))
        return self._cache[key]

    @staticmethod
    def _pair(q: tuple[torch.Tensor, torch.Tensor], e: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        (qt, qv), (et, ev) = q, e
        return torch.cat([(qt - et).abs(), qt * et, (qv - ev).abs(), qv * ev], dim=-1)

    def _train_classifier(self, records: Sequence[EditRecord]) -> tuple[torch.nn.Linear, float]:
        rng = random.Random(self.settings.seed)
        pairs: list[tuple[EditRecord, ImageLike, str, float]] = []
        for r in records:
            pairs += [(r, r.image, r.prompt, 1.0), (r, r.image, r.rephrase_prompt or r.prompt, 1.0)]
            if r.image_rephrase is not None:
                pairs.append((r, r.image_rephrase, r.prompt, 1.0))
            if r.hard_locality_image is not None and r.hard_locality_prompt:
                pairs.append((r, r.hard_locality_image, r.hard_locality_prompt, 0.0))
            if r.multimodal_locality_image is not None and r.multimodal_locality_prompt:
                pairs.append((r, r.multimodal_locality_image, r.multimodal_locality_prompt, 0.0))
            other = rng.choice([o for o in records if o.id != r.id])
            pairs.append((r, other.image, other.prompt, 0.0))
        x = torch.stack([self._pair(self._features(img, q), self._features(r.image, r.prompt))
                         for r, img, q, _ in pairs])
        y = torch.tensor([label for *_, label in pairs])
        order = list(range(len(pairs)))
        rng.shuffle(order)
        cut = int(0.8 * len(order))
        train, held = torch.tensor(order[:cut]), torch.tensor(order[cut:])
        torch.manual_seed(self.settings.seed)
        model = torch.nn.Linear(x.shape[1], 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.settings.classifier_lr)
        with torch.enable_grad():
            for _ in range(self.settings.classifier_steps):
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[train]).squeeze(-1), y[train])
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            accuracy = float(((model(x[held]).squeeze(-1) > 0).float() == y[held]).float().mean())
        model.requires_grad_(False)
        return model, accuracy

    def _train_counterfactual(self, records: Sequence[EditRecord]) -> tuple[float, float]:
        rng = random.Random(self.settings.seed + 1)
        examples = []
        for r in records:
            examples += [(r, r.image, r.rephrase_prompt or r.prompt)]
            if r.image_rephrase is not None:
                examples.append((r, r.image_rephrase, r.prompt))
        model = self.cf.model
        vision = set(n for n, _ in model.named_parameters() if "visual" in n or "vision" in n)
        weights = [p for n, p in model.named_parameters() if n not in vision]
        optimizer = torch.optim.AdamW(weights, lr=self.settings.cf_lr)
        losses: list[float] = []
        torch.manual_seed(self.settings.seed)
        try:
            for p in weights:
                p.requires_grad_(True)
            with torch.enable_grad():
                for _ in range(self.settings.cf_steps):
                    edit, image, question = rng.choice(examples)
                    inputs, target = target_inputs(self.cf, image, edit_prompt(edit, question), edit.target)
                    optimizer.zero_grad(set_to_none=True)
                    logits = model(**inputs).logits[0, -len(target) - 1:-1].float()
                    loss = torch.nn.functional.cross_entropy(logits, target)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
        finally:
            for p in model.parameters():
                p.requires_grad_(False)
                p.grad = None
        model.eval()
        head = losses[: max(1, len(losses) // 10)]
        tail = losses[-max(1, len(losses) // 10):]
        return sum(head) / len(head), sum(tail) / len(tail)

    # ------------------------------------------------------------------ the EditMethod interface
    @property
    def extra(self) -> dict[str, Any]:
        return {"serac": {"training_seconds": self.training_seconds, "scope_classifier_heldout_accuracy":
                          self.classifier_accuracy, "counterfactual_loss_first_tenth": self.cf_losses[0],
                          "counterfactual_loss_last_tenth": self.cf_losses[1], "routed": dict(self.routed)}}

    def reset(self) -> None:
        self.memory, self._memory_features = [], None
        self.routed = {"counterfactual": 0, "base": 0}

    def apply(self, record: EditRecord) -> None:
        self.memory.append(record)
        t, v = self._features(record.image, record.prompt)
        if self._memory_features is None:
            self._memory_features = (t[None], v[None])
        else:
            self._memory_features = (torch.cat([self._memory_features[0], t[None]]),
                                     torch.cat([self._memory_features[1], v[None]]))

    def route(self, image: ImageLike | None, question: str) -> EditRecord | None:
        """The in-scope edit for (image, question), or None (the base model answers)."""
        if image is None or not self.memory:
            return None
        qt, qv = self._features(image, question)
        et, ev = self._memory_features
        n = len(self.memory)
        pairs = self._pair((qt.expand(n, -1), qv.expand(n, -1)), (et, ev))
        scores = torch.sigmoid(self.classifier(pairs).squeeze(-1))
        best = int(torch.argmax(scores))
        return self.memory[best] if float(scores[best]) > self.settings.threshold else None

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        edit = self.route(image, question)
        self.routed["counterfactual" if edit else "base"] += 1
        vlm, text = (self.cf, edit_prompt(edit, question)) if edit else (self.vlm, question)
        img = load_image(image) if image is not None else None
        if choices:
            return Prediction(_pick(list(choices), vlm.option_nll(img, text, list(choices))))
        return Prediction(vlm.generate(img, text, self.max_new_tokens))

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        edit = self.route(image, question)
        if edit is None:
            return vlm_teacher_forced(self.vlm, image, question, target)
        return vlm_teacher_forced(self.cf, image, edit_prompt(edit, question), target)

