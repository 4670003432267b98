"""Model knowledge as data: one :class:`ModelSpec` row per VLM family, keyed by ``config.model_type``.

Each row maps the abstract hook points of METHOD.md §3/§5 onto module-path templates of the Hugging
Face class (pyvene style): where the vision tower is, which linear is "the first MLP linear of vision
block L" (its INPUT is the key v(image)), where the vision-to-language projector/merger is, how many
vision blocks there are, the default block, and how the processor wants prompts and images.

Paths are those of transformers 5 (verified on tiny models built from each family's config classes in
``tests/tiny_models.py``). Older layouts (transformers 4.x, the reference code's paths such as
``visual.blocks.24.mlp.linear_fc1``) are accepted through ``legacy_prefixes``.

Adding a family is adding a row::

    from reasonedit_plugin.model_specs import ModelSpec, register_model_spec
    register_model_spec(ModelSpec(model_type="my_vlm", ...))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from .errors import UnsupportedModelError, did_you_mean

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_UNITS",
    "KnownDefault",
    "MODEL_SPECS",
    "ModelSpec",
    "VISION_CALLS",
    "get_model_spec",
    "register_model_spec",
]

IMAGE_UNITS = ("single", "grid_thw", "anyres", "pixel_padding", "image_tokens")
"""How the rows of a captured vision activation are split per image (see ``ModelSpec.image_units``)."""

VISION_CALLS = ("get_image_features", "vision_tower")
"""How the vision part is run: the model's ``get_image_features`` (tower + projector, no language
model) or the vision tower module alone (when the projector needs text, as InstructBLIP's Q-Former)."""


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
    vision_call: str = "get_image_features"
    vision_inputs: tuple[str, ...] = ("pixel_values",)
    """Processor outputs passed to the vision call (those present)."""
    image_units: str = "single"
    """Per-image split of captured rows: ``single`` (one crop per image), ``grid_thw`` (packed
    patches, Qwen), ``anyres`` (LLaVA-NeXT crops from ``image_sizes``), ``pixel_padding`` (Idefics3
    crops that are not all-zero padding), ``image_tokens`` (when there are more crops than samples,
    shares are the counts of image tokens per sample in ``input_ids``: InternVL and Gemma 3 processors
    drop ``num_patches`` / ``num_crops``; one image per sample)."""
    chat_template: bool = True
    """Prompts go through the processor's chat template (one user turn: image, then text)."""
    prompt_template: str | None = None
    """Prompt when there is no chat template (``{text}`` is replaced)."""
    nest_images: bool = False
    """The processor wants one list of images per sample (``[[img], [img]]``)."""
    needs_video_processor: bool = False
    """The processor class requires a video processor (torchvision in transformers 5)."""
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
        if self.vision_call not in VISION_CALLS:
            problems.append(f"vision_call {self.vision_call!r} is not one of {list(VISION_CALLS)}")
        if self.image_units not in IMAGE_UNITS:
            problems.append(f"image_units {self.image_units!r} is not one of {list(IMAGE_UNITS)}")
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


def _get_attr_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_LLAVA_NOTES = (
    "Processor needs patch_size, vision_feature_select_strategy and num_additional_image_tokens=1 "
    "(CLS) to count image tokens. transformers 4.x path: vision_tower.vision_model.encoder..."
)

_ROWS: list[ModelSpec] = [
    ModelSpec(
        model_type="llava",
        model_class="LlavaForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        vision_inputs=("pixel_values", "image_sizes"),
        prompt_template="USER: <image>\n{text} ASSISTANT:",
        known_defaults=(KnownDefault(24, 4096, 19, "LLaVA-1.5-7B (paper)"),),
        legacy_prefixes=(
            ("model.vision_tower.", "vision_tower.vision_model."),
            ("model.vision_tower.", "model.vision_tower.vision_model."),
            ("model.multi_modal_projector", "multi_modal_projector"),
        ),
        notes=_LLAVA_NOTES,
    ),
    ModelSpec(
        model_type="llava_next",
        model_class="LlavaNextForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        vision_inputs=("pixel_values", "image_sizes"),
        image_units="anyres",
        prompt_template="[INST] <image>\n{text} [/INST]",
        legacy_prefixes=(
            ("model.vision_tower.", "vision_tower.vision_model."),
            ("model.multi_modal_projector", "multi_modal_projector"),
        ),
        notes="AnyRes: several crops per image (count from image_sizes and image_grid_pinpoints); the key "
        "averages over all crops' tokens. " + _LLAVA_NOTES,
    ),
    ModelSpec(
        model_type="llava_onevision",
        model_class="LlavaOnevisionForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        vision_inputs=("pixel_values", "image_sizes", "batch_num_images"),
        image_units="anyres",
        needs_video_processor=True,
        legacy_prefixes=(("model.vision_tower.", "vision_tower.vision_model."),),
        notes="SigLIP tower, AnyRes crops (as llava_next); processor also wants a video processor.",
    ),
    ModelSpec(
        model_type="qwen2_vl",
        model_class="Qwen2VLForConditionalGeneration",
        vision_tower="model.visual",
        mlp_template="model.visual.blocks.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.depth",
        language_model="model.language_model",
        projectors=("model.visual.merger",),
        vision_inputs=("pixel_values", "image_grid_thw"),
        image_units="grid_thw",
        needs_video_processor=True,
        legacy_prefixes=(("model.visual.", "visual."),),
        notes="Patches of all images are packed in one sequence; split with image_grid_thw. Resolution "
        "follows min_pixels/max_pixels of the image processor.",
    ),
    ModelSpec(
        model_type="qwen2_5_vl",
        model_class="Qwen2_5_VLForConditionalGeneration",
        vision_tower="model.visual",
        mlp_template="model.visual.blocks.{L}.mlp",
        first_linear="gate_proj",
        num_blocks_attr="vision_config.depth",
        language_model="model.language_model",
        projectors=("model.visual.merger",),
        vision_inputs=("pixel_values", "image_grid_thw"),
        image_units="grid_thw",
        needs_video_processor=True,
        legacy_prefixes=(("model.visual.", "visual."),),
        notes="Gated MLP (gate_proj and up_proj read the same input); window attention blocks.",
    ),
    ModelSpec(
        model_type="qwen3_vl",
        model_class="Qwen3VLForConditionalGeneration",
        vision_tower="model.visual",
        mlp_template="model.visual.blocks.{L}.mlp",
        first_linear="linear_fc1",
        num_blocks_attr="vision_config.depth",
        language_model="model.language_model",
        projectors=("model.visual.merger", "model.visual.deepstack_merger_list"),
        vision_inputs=("pixel_values", "image_grid_thw"),
        image_units="grid_thw",
        needs_video_processor=True,
        known_defaults=(
            KnownDefault(27, 4096, 24, "Qwen3-VL-8B (paper)"),
            KnownDefault(24, 2560, 21, "Qwen3-VL-4B (paper)"),
        ),
        legacy_prefixes=(("model.visual.", "visual."),),
        notes="Reference paths visual.blocks.{L}.mlp.linear_fc1; deepstack mergers feed LM layers.",
    ),
    ModelSpec(
        model_type="qwen3_5",
        model_class="Qwen3_5ForConditionalGeneration",
        vision_tower="model.visual",
        mlp_template="model.visual.blocks.{L}.mlp",
        first_linear="linear_fc1",
        num_blocks_attr="vision_config.depth",
        language_model="model.language_model",
        projectors=("model.visual.merger",),
        vision_inputs=("pixel_values", "image_grid_thw"),
        image_units="grid_thw",
        needs_video_processor=True,
        legacy_prefixes=(("model.visual.", "visual."),),
        notes="Qwen3-VL-style vision tower with a hybrid linear-attention LM; uses Qwen3VLProcessor.",
    ),
    ModelSpec(
        model_type="instructblip",
        model_class="InstructBlipForConditionalGeneration",
        vision_tower="vision_model",
        mlp_template="vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="language_model",
        projectors=(),
        vision_call="vision_tower",
        chat_template=False,
        prompt_template="{text}",
        lm_block_template="language_model.model.layers.{L}",
        known_defaults=(KnownDefault(39, 4096, 38, "InstructBLIP-Vicuna-7B (paper)"),),
        notes="The Q-Former reads the instruction text, so language_projection depends on the question: "
        "keys use the vision tower only and the projector is not a candidate. No chat template; the "
        "processor inserts the query-token image placeholders and the Q-Former text itself.",
    ),
    ModelSpec(
        model_type="blip-2",
        model_class="Blip2ForConditionalGeneration",
        vision_tower="vision_model",
        mlp_template="vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="language_model",
        projectors=("language_projection",),
        chat_template=False,
        prompt_template="Question: {text} Answer:",
        lm_block_template="language_model.model.decoder.layers.{L}",
        notes="No chat template (BLIP-2's VQA prompt format). Decoder-only LMs (OPT) only: the "
        "Flan-T5 variants are encoder-decoder and their option NLL is not supported here.",
    ),
    ModelSpec(
        model_type="idefics3",
        model_class="Idefics3ForConditionalGeneration",
        vision_tower="model.vision_model",
        mlp_template="model.vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.text_model",
        projectors=("model.connector",),
        vision_inputs=("pixel_values", "pixel_attention_mask"),
        image_units="pixel_padding",
        nest_images=True,
        notes="Images are split into tiles plus a global view (do_image_splitting); the key averages "
        "all tiles. The processor wants one list of images per sample.",
    ),
    ModelSpec(
        model_type="smolvlm",
        model_class="SmolVLMForConditionalGeneration",
        vision_tower="model.vision_model",
        mlp_template="model.vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.text_model",
        projectors=("model.connector",),
        vision_inputs=("pixel_values", "pixel_attention_mask"),
        image_units="pixel_padding",
        nest_images=True,
        needs_video_processor=True,
        notes="As idefics3; SmolVLMProcessor needs the num2words package, and its apply_chat_template "
        "reads video settings, so prompts are rendered with the tokenizer's template engine.",
    ),
    ModelSpec(
        model_type="gemma3",
        model_class="Gemma3ForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        image_units="image_tokens",
        nest_images=True,
        legacy_prefixes=(("model.vision_tower.", "vision_tower.vision_model."),),
        notes="Projector is a pooled matrix product (no nn.Linear): the projector module itself is the "
        "candidate. Pan-and-scan crops (off by default) are averaged with the full image; the processor "
        "drops num_crops, so crops per image are counted from the image tokens in input_ids.",
    ),
    ModelSpec(
        model_type="internvl",
        model_class="InternVLForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layer.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        image_units="image_tokens",
        needs_video_processor=True,
        notes="HF-format InternVL (InternVL3 '-hf' checkpoints), not the trust_remote_code ones. Tiles "
        "(crop_to_patches) are averaged; the processor drops num_patches, so tiles per image are "
        "counted from the image tokens in input_ids.",
    ),
]

_REGISTRY: dict[str, ModelSpec] = {}
MODEL_SPECS: Mapping[str, ModelSpec] = MappingProxyType(_REGISTRY)
"""Read-only view of the registry; add rows with :func:`register_model_spec`."""


def register_model_spec(spec: ModelSpec, overwrite: bool = False) -> ModelSpec:
    """Add ``spec`` to :data:`MODEL_SPECS`; a second row for the same model_type needs ``overwrite``."""
    if not isinstance(spec, ModelSpec):
        raise UnsupportedModelError(f"register_model_spec needs a ModelSpec, got {type(spec).__name__}.")
    if spec.model_type in _REGISTRY and not overwrite:
        raise UnsupportedModelError(
            f"a ModelSpec for model_type {spec.model_type!r} is already registered; pass overwrite=True "
            "to replace it."
        )
    _REGISTRY[spec.model_type] = spec
    return spec


for _row in _ROWS:
    register_model_spec(_row)


def get_model_spec(model_or_config: Any) -> ModelSpec:
    """The row for a model, a config, or a ``model_type`` string."""
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
        if model_type is None:
            raise UnsupportedModelError(
                f"{type(model_or_config).__name__} has no config.model_type; pass a Hugging Face VLM, "
                "its config, or a model_type string."
            )
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type {model_type!r} has no ModelSpec.{did_you_mean(model_type, _REGISTRY)} "
            f"Supported: {sorted(_REGISTRY)}. To add one, register a row: "
            "reasonedit_plugin.model_specs.register_model_spec(ModelSpec(model_type=..., model_class=..., "
            "vision_tower=..., mlp_template='...blocks.{L}.mlp', first_linear=..., num_blocks_attr=..., "
            "language_model=...)) — see model_specs.py for the fields."
        ) from None
