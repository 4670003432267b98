"""Batches and multiple-choice scoring for the embedded default VLM (METHOD.md §7: summed NLL of each
option's tokens, lowest wins), shared by training (its periodic evaluation) and
``examples/measure_default_model.py``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from PIL import Image

from .aux_probes import name_piece_targets
from .default_model_build import EOS_TOKEN, PAD_TOKEN, build_image_processor, saved_config
from .shaperules import RuleWorld, answer_choices, answer_entry, easy_vqa_root, entry_codebook, generate_split, image_info, plain_questions
from .mix_text import fuse
from .train_config import TrainConfig
from .training_mix import Example


def chat_text(tokenizer: Any, text: str, with_image: bool) -> str:
    """The templated prompt: one user turn (the image, then the text) and a generation prompt."""
    content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


class ImageCache:
    """Processed pixels per image path (each 64x64 easy-vqa image is processed once)."""

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor
        self.root = easy_vqa_root()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, rel_path: str) -> tuple[torch.Tensor, torch.Tensor]:
        if rel_path not in self._cache:
            with Image.open(self.root / rel_path) as im:
                out = self.image_processor(images=[im.convert("RGB")], return_tensors="pt")
            self._cache[rel_path] = (out["pixel_values"], out["image_grid_thw"][0])
        return self._cache[rel_path]


class TrainedModel(NamedTuple):
    """A folder saved by ``train_default_model``, loaded for scoring: the model (eval mode), its tokenizer, the
    ``TrainConfig`` it was trained with and an :class:`ImageCache` of its own image processor."""
    model: Any
    tokenizer: Any
    config: TrainConfig
    images: ImageCache


def load_trained(folder: str | Path, **from_pretrained_kwargs: Any) -> TrainedModel:
    """Load a model trained by ``train_default_model`` (its ``training_args.json`` names the configuration);
    ``from_pretrained_kwargs`` go to the model's ``from_pretrained`` (e.g. ``attn_implementation="eager"``)."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    folder = Path(folder)
    try:
        config = TrainConfig(**saved_config(folder))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no training_args.json: it was not saved by train_default_model "
                                "(load other models with reasonedit_plugin.vlm.VLM.from_pretrained)") from None
    model = Qwen2VLForConditionalGeneration.from_pretrained(folder, local_files_only=True,
                                                            **from_pretrained_kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return TrainedModel(model, tokenizer, config, ImageCache(build_image_processor(config)))


def encode(tokenizer: Any, images: ImageCache, examples: Sequence[Example], answers: Sequence[str] | None,
           merge: int = 4, with_eos: bool = True) -> dict[str, torch.Tensor]:
    """Model inputs for prompts + continuations; ``labels`` mark the continuation tokens only.

    ``answers`` defaults to each example's answer; the continuation is followed by ``<|im_end|>``
    when ``with_eos`` (training), and is bare for option scoring (METHOD.md §7).
    """
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    image_pad = "<|image_pad|>"
    rows, labels, pixel_values, grids = [], [], [], []
    for i, ex in enumerate(examples):
        prompt = chat_text(tokenizer, ex.text, ex.image is not None)
        if ex.image is not None:
            pixels, grid = images.get(ex.image)
            prompt = prompt.replace(image_pad, image_pad * int(grid.prod().item() // merge), 1)
            pixel_values.append(pixels)
            grids.append(grid)
        answer = ex.answer if answers is None else answers[i]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + (EOS_TOKEN if with_eos else ""), add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    label_t = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    image_id = tokenizer.convert_tokens_to_ids(image_pad)
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": label_t,
             "mm_token_type_ids": (input_ids == image_id).long()}
    if pixel_values:
        batch["pixel_values"] = torch.cat(pixel_values)
        batch["image_grid_thw"] = torch.stack(grids)
    return batch


def answer_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the labelled tokens only (the LM head runs on those positions alone: with a
    30k-subword vocabulary it would cost more than the rest of the model on every prompt token).
    Returns (log-probs of the selected tokens, row index of each), on the model's device (the batch is
    moved there)."""
    device = next(model.parameters()).device
    batch = {name: value.to(device) for name, value in batch.items()}
    labels = batch.pop("labels")
    hidden = model.model(**batch, use_cache=False).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    selected = target != -100
    logits = model.lm_head(hidden[selected]).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target[selected].unsqueeze(-1)).squeeze(-1)
    rows = selected.nonzero()[:, 0]
    return logp, rows


@torch.no_grad()
def option_nlls(model: Any, tokenizer: Any, images: ImageCache, example: Example,
                options: Sequence[str]) -> list[float]:
    batch = encode(tokenizer, images, [example] * len(options), list(options), with_eos=False)
    logp, rows = answer_logprobs(model, batch)
    return (-torch.zeros(len(options), device=logp.device).index_add(0, rows, logp)).tolist()


def mc_accuracy(model: Any, tokenizer: Any, images: ImageCache, examples: Sequence[Example]) -> float:
    correct = 0
    for ex in examples:
        scores = option_nlls(model, tokenizer, images, ex, ex.choices)
        best = min(range(len(scores)), key=lambda j: (scores[j], j))
        correct += ex.choices[best].lower() == ex.answer.lower()
    return correct / max(1, len(examples))


@torch.no_grad()
def copy_accuracy(model: Any, tokenizer: Any, images: ImageCache, examples: Sequence[Example]) -> float:
    """Share of ``examples`` whose every word piece of the name they copy (``Example.copy``) is the model's most
    likely token, teacher-forced: the open-vocabulary copy a caption edit needs (examples without a name, or
    whose answer does not spell it, count as wrong)."""
    right, device = 0, next(model.parameters()).device
    for start in range(0, len(examples), 8):
        chunk = examples[start:start + 8]
        batch = encode(tokenizer, images, chunk, None)
        labels = batch.pop("labels")
        where, pieces = name_piece_targets(tokenizer, labels, [ex.copy for ex in chunk])
        if not len(where):
            continue
        hidden = model.model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).last_hidden_state
        hit = model.lm_head(hidden[where[:, 0], where[:, 1]]).argmax(-1).cpu() == pieces
        right += sum(bool(hit[where[:, 0] == row].all()) for row in where[:, 0].unique().tolist())
    return right / max(1, len(examples))


EVAL_ROWS = ("none", "answer", "rationale", "both", "rgen", "rgen_none", "hard", "hard_facts")


def edit_facts(record: dict[str, Any], mode: str = "both", template: str | None = None) -> list[str]:
    """What ReasonEdit stores for an edit record: the answer entry (in ``template``, default the codebook's;
    one naming ``{image}`` describes the edit's image) and/or the rationale sentences."""
    from .shaperules import SENTENCE_SPLIT

    facts = []
    if mode in ("answer", "both"):
        image = image_info(record["image"]) if entry_codebook(template).names_image else None
        facts.append(answer_entry(record["prompt"], record["target"], image, template))
    if mode in ("rationale", "both"):
        facts += [s for s in SENTENCE_SPLIT.split(record["rationale"]) if s]
    return facts


def record_examples(records: Sequence[dict[str, Any]], row: str, template: str | None = None) -> list[Example]:
    """Examples of one evaluation ``row`` (:data:`EVAL_ROWS`) from edit records (relative image paths):
    the edited question without facts / with the answer entry / rationale / both; the R-Gen yes/no
    question with both / without; the hard-locality probe alone / with the edit's facts. ``template``: the
    answer entries' (:func:`edit_facts`)."""
    out = []
    for r in records:
        if row in ("none", "answer", "rationale", "both"):
            facts = edit_facts(r, row, template) if row != "none" else []
            out.append(Example(row, r["image"], fuse(facts, r["prompt"]), r["target"], tuple(r["choices"])))
        elif row in ("rgen", "rgen_none"):
            facts = edit_facts(r, template=template) if row == "rgen" else []
            out.append(Example(row, r["image"], fuse(facts, r["rgen_prompt"]), r["rgen_target"], tuple(r["rgen_choices"])))
        elif row in ("hard", "hard_facts"):
            facts = edit_facts(r, template=template) if row == "hard_facts" else []
            out.append(Example(row, r["hard_locality_image"], fuse(facts, r["hard_locality_prompt"]),
                               r["hard_locality_ground_truth"], tuple(r["hard_locality_choices"])))
        else:
            raise ValueError(f"row must be one of {EVAL_ROWS}, got {row!r}.")
    return out


def held_out_examples(world: RuleWorld, n: int, seed: int, mode: str, image_split: str = "test",
                      template: str | None = None) -> list[Example]:
    """Questions on held-out (eval) rules in held-out wordings, test images. ``mode``: a row of :data:`EVAL_ROWS`."""
    return record_examples(generate_split(f"train-eval-{seed}", n, seed, world, image_split), mode, template)


def plain_examples(n: int, seed: int, image_split: str = "test") -> list[Example]:
    rng = random.Random(f"plain-eval:{seed}:{image_split}")
    qs = rng.sample(list(plain_questions(image_split)), n)
    return [Example("plain", q.image, q.question, q.answer, tuple(answer_choices(q.answer))) for q in qs]

