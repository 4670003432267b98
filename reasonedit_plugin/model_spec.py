"""The row type of the model-spec table: :class:`ModelSpec` and the small value types of its fields.

One row says where a VLM family keeps what ReasonEdit needs (METHOD.md §3/§5 hook points as module-path
templates, pyvene style) and how its processor and scoring behave. The table of rows and the registry
are in :mod:`reasonedit_plugin.model_specs`; adding a family is ``docs/ADDING_A_FAMILY.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from .errors import UnsupportedModelError

__all__ = [
    "DEFAULT_TOKEN_INPUTS",
    "IMAGE_UNITS",
    "KnownDefault",
    "ModelSpec",
    "SCORERS",
    "TOKEN_FILLS",
    "TokenInput",
    "VISION_CALLS",
    "config_value",
]

IMAGE_UNITS = ("single", "grid_thw", "pixel_padding", "image_tokens")
"""How the rows of a captured vision activation are split per image (see ``ModelSpec.image_units``)."""

VISION_CALLS = ("get_image_features", "vision_tower")
"""How the vision part is run: the model's ``get_image_features`` (tower + projector, no language
model) or the vision tower module alone (when the projector needs text, as InstructBLIP's Q-Former).
A row may instead give a callable ``fn(vlm, vision_kwargs)`` (see :mod:`reasonedit_plugin.families`)."""

SCORERS = ("causal_lm", "encoder_decoder", "image_text_similarity")
"""How options/continuations are scored (:mod:`reasonedit_plugin.scoring`): a decoder-only LM reading
the prompt (most VLMs), an encoder-decoder whose text encoder reads the prompt and whose decoder
produces the answer (BLIP VQA), or image-text similarity (CLIP: multiple choice only)."""

TOKEN_FILLS = ("mask", "last")
"""How a per-token input is extended over appended option tokens (``TokenInput.fill``), besides an int."""


@dataclass(frozen=True)
class TokenInput:
    """A processor output with one entry per text token that option scoring must extend when it appends
    option tokens after the prompt (METHOD.md §7)."""

    name: str
    """Processor output key, e.g. ``"token_type_ids"`` or ``"cross_attention_mask"``."""
    fill: Union[str, int] = 0
    """Value at appended positions: an int (e.g. ``1`` puts them in PaliGemma's causal suffix; ``0`` in its
    bidirectional prefix, where an option's tokens would see themselves), ``"mask"`` (1 on real option
    tokens, 0 on padding: attention masks) or ``"last"`` (repeat the last prompt position: which images
    a token attends to in cross-attention masks, as ``generate`` does)."""
    seq_dim: int = 1
    """Axis of the text positions (any rank: a 4-D ``[batch, text, images, tiles]`` mask has 1)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise UnsupportedModelError("TokenInput needs a processor output name.")
        if isinstance(self.fill, str) and self.fill not in TOKEN_FILLS:
            raise UnsupportedModelError(f"TokenInput {self.name!r}: fill {self.fill!r} is not an int or one of "
                                        f"{list(TOKEN_FILLS)}.")
        if self.seq_dim < 1:
            raise UnsupportedModelError(f"TokenInput {self.name!r}: seq_dim={self.seq_dim} must be >= 1 (0 is "
                                        "the batch).")


DEFAULT_TOKEN_INPUTS = (TokenInput("attention_mask", "mask"),)


@dataclass(frozen=True)
class KnownDefault:
    """A reference default block for one known model size (METHOD.md §3)."""

    vision_blocks: int
    """``ModelSpec.num_blocks_attr`` of that checkpoint."""
    text_hidden: int
    """``text_config.hidden_size`` of that checkpoint (tells e.g. Qwen3-VL-8B from -4B)."""
    layer: int
    source: str
    """The checkpoint the value was found for, e.g. ``"Qwen3-VL-8B (paper)"``."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a VLM family keeps what ReasonEdit needs. Pure data; see :mod:`reasonedit_plugin.vlm`."""

    model_type: str
    """``config.model_type`` of the top-level model."""
    model_class: str
    """transformers class that ``VLM.from_pretrained`` instantiates for a local folder."""
    vision_tower: str
    """Module path of the vision encoder."""
    mlp_template: str
    """Module path of vision block ``{L}``'s MLP."""
    first_linear: str
    """Name (inside the MLP) of its first linear, whose INPUT is the key activation."""
    num_blocks_attr: str
    """Dotted config attribute holding the number of vision blocks."""
    language_model: str
    """Module path of the language model (never run for keys; tests assert it)."""
    projectors: tuple[str, ...] = ()
    """Vision-to-language projector/merger modules (AutoLayer candidates: their linears)."""
    vision_call: Union[str, Callable[[Any, dict[str, Any]], Any]] = "get_image_features"
    """One of :data:`VISION_CALLS`, or ``fn(vlm, vision_kwargs)`` that runs the vision part."""
    vision_inputs: tuple[str, ...] = ("pixel_values",)
    """Processor outputs passed to the vision call (those present), e.g. Mllama's ``aspect_ratio_ids``
    and ``aspect_ratio_mask`` next to ``pixel_values``."""
    image_units: Union[str, Callable[[Any, Mapping[str, Any]], list[int]]] = "single"
    """Per-image split of captured rows: ``single`` (one crop per image), ``grid_thw`` (packed
    patches, Qwen), ``pixel_padding`` (Idefics3
    crops that are not all-zero padding), ``image_tokens`` (when there are more crops than samples,
    shares are the counts of image tokens per sample in ``input_ids``: InternVL and Gemma 3 processors
    drop ``num_patches`` / ``num_crops``; one image per sample), or ``fn(vlm, inputs) -> shares``
    (e.g. :func:`reasonedit_plugin.families.anyres_units`)."""
    scorer: str = "causal_lm"
    """How options and continuations are scored: one of :data:`SCORERS`."""
    token_inputs: tuple[TokenInput, ...] = DEFAULT_TOKEN_INPUTS
    """Per-token processor outputs and how option scoring extends them. Outputs not listed here that are
    shaped like ``input_ids`` are extended with 0; any other output with a text axis is an error."""
    decoder_module: str | None = None
    """``encoder_decoder`` scorer: module whose output ``.logits`` are the answer decoder's."""
    decoder_start_attr: str = "text_config.bos_token_id"
    """``encoder_decoder`` scorer: config attribute of the decoder's first token."""
    max_text_tokens_attr: str | None = None
    """Config attribute bounding the text length (CLIP: 77 positions); longer texts are truncated."""
    chat_template: bool = True
    """Prompts go through the processor's chat template (one user turn: image, then text)."""
    prompt_template: str | None = None
    """Prompt when there is no chat template (``{text}`` is replaced)."""
    nest_images: bool = False
    """The processor wants one list of images per sample (``[[img], [img]]``)."""
    needs_video_processor: bool = False
    """The processor class requires a video processor (torchvision in transformers 5)."""
    optional_processor_args: tuple[str, ...] = ()
    """Processor ``__init__`` arguments that are required but may be None when it loads without its
    video processor (SmolVLM's ``video_processor``)."""
    pad_left: bool = True
    """Batched prompts of unequal length may be padded on the left (every row then ends at the last position,
    whose logits alone a yes/no pass computes). False where left padding would move a row's positions: the
    row's tokenizer's own padding side is kept then (InstructBLIP: the Q-Former reads the padded text with
    absolute positions)."""
    processor_kwargs: tuple[tuple[str, Any], ...] = ()
    """Extra keyword arguments of every processor call, e.g. ``(("truncation", True),)``."""
    easyedit_image_prefix: str | None = None
    """Text EasyEdit prepends to prompts for images when the chat template renders none (Qwen-VL:
    ``<|vision_start|><|image_pad|><|vision_end|>``); the EasyEdit wrapper uses it to find the question."""
    known_defaults: tuple[KnownDefault, ...] = ()
    default_fraction: float = 2 / 3
    """Default block when no known size matches: ``round(fraction * (blocks - 1))``."""
    legacy_prefixes: tuple[tuple[str, str], ...] = ()
    """(current prefix, older prefix) pairs: a path given with the older prefix is rewritten."""
    notes: str = ""
    """Processor quirks and anything a user of this family should know."""
    lm_block_template: str = ""
    """Module path of language-model block ``{L}`` (hidden-state fusion); empty: ``<language_model>.layers.{L}``."""
    lm_blocks_attr: str = "text_config.num_hidden_layers"
    """Dotted config attribute holding the number of language-model blocks."""

    def __post_init__(self) -> None:
        problems = []
        if not self.model_type:
            problems.append("model_type is empty")
        if "{L}" not in self.mlp_template:
            problems.append(f"mlp_template {self.mlp_template!r} must contain '{{L}}'")
        if not callable(self.vision_call) and self.vision_call not in VISION_CALLS:
            problems.append(f"vision_call {self.vision_call!r} is not a callable or one of {list(VISION_CALLS)}")
        if not callable(self.image_units) and self.image_units not in IMAGE_UNITS:
            problems.append(f"image_units {self.image_units!r} is not a callable or one of {list(IMAGE_UNITS)}")
        if self.scorer not in SCORERS:
            problems.append(f"scorer {self.scorer!r} is not one of {list(SCORERS)}")
        if self.scorer == "encoder_decoder" and not self.decoder_module:
            problems.append("the encoder_decoder scorer needs decoder_module (the module returning the "
                            "answer decoder's logits)")
        if not all(isinstance(t, TokenInput) for t in self.token_inputs):
            problems.append("token_inputs must be TokenInput(name, fill, seq_dim) values")
        elif len({t.name for t in self.token_inputs}) != len(self.token_inputs):
            problems.append("token_inputs name an output twice")
        if not self.chat_template and not self.prompt_template:
            problems.append("a row without chat_template needs a prompt_template")
        if self.prompt_template is not None and "{text}" not in self.prompt_template:
            problems.append(f"prompt_template {self.prompt_template!r} must contain '{{text}}'")
        if not 0 < self.default_fraction <= 1:
            problems.append(f"default_fraction={self.default_fraction} must be in (0, 1]")
        if not self.vision_inputs or "pixel_values" not in self.vision_inputs:
            problems.append("vision_inputs must include 'pixel_values'")
        if self.lm_block_template and "{L}" not in self.lm_block_template:
            problems.append(f"lm_block_template {self.lm_block_template!r} must contain '{{L}}'")
        if problems:
            raise UnsupportedModelError(f"invalid ModelSpec for {self.model_type!r}: " + "; ".join(problems) + ".")

    # --- helpers that only read the row and a config ------------------------------------------

    def layer_path(self, layer: int) -> str:
        """Module path of block ``layer``'s first MLP linear."""
        return f"{self.mlp_template.format(L=layer)}.{self.first_linear}"

    def lm_block_path(self, layer: int) -> str:
        """Module path of language-model block ``layer`` (whose output hidden-state fusion biases)."""
        template = self.lm_block_template or f"{self.language_model}.layers.{{L}}"
        return template.format(L=layer)

    def num_lm_blocks(self, config: Any) -> int:
        value = _get_attr_path(config, self.lm_blocks_attr)
        if value is None:
            raise UnsupportedModelError(
                f"{self.model_type}: config has no {self.lm_blocks_attr!r}; fix the row's lm_blocks_attr.")
        return int(value)

    def num_blocks(self, config: Any) -> int:
        value = _get_attr_path(config, self.num_blocks_attr)
        if value is None:
            raise UnsupportedModelError(
                f"{self.model_type}: config has no {self.num_blocks_attr!r}; fix the row's num_blocks_attr."
            )
        return int(value)

    def default_layer(self, config: Any) -> int:
        """The reference block for a known size, else ~2/3 of the vision depth."""
        blocks = self.num_blocks(config)
        hidden = _get_attr_path(config, "text_config.hidden_size")
        for known in self.known_defaults:
            if known.vision_blocks == blocks and known.text_hidden == hidden:
                return known.layer
        return min(blocks - 1, max(0, round(self.default_fraction * (blocks - 1))))


def config_value(config: Any, dotted: str) -> Any:
    """``config.a.b`` for ``dotted == "a.b"``; None when any part is missing."""
    return _get_attr_path(config, dotted)


def _get_attr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
