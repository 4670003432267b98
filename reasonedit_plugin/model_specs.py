"""Model knowledge as data: one :class:`ModelSpec` row per VLM family, keyed by ``config.model_type``.

Each row maps the abstract hook points of METHOD.md §3/§5 onto module-path templates of the Hugging
Face class (pyvene style): where the vision tower is, which linear is "the first MLP linear of vision
block L" (its INPUT is the key v(image)), where the vision-to-language projector/merger is, how many
vision blocks there are, the default block, and how the processor wants prompts and images.

Paths are those of transformers 5 (verified on tiny models built from each family's config classes in
``tests/tiny_models.py``). Older layouts (transformers 4.x, the reference code's paths such as
``visual.blocks.24.mlp.linear_fc1``) are accepted through ``legacy_prefixes``.

The row type itself is :mod:`reasonedit_plugin.model_spec`. Adding a family is adding a row
(``docs/ADDING_A_FAMILY.md``)::

    from reasonedit_plugin.model_specs import ModelSpec, register_model_spec
    register_model_spec(ModelSpec(model_type="my_vlm", ...))
"""

from __future__ import annotations

import importlib
import logging
import re
from types import MappingProxyType
from typing import Any, Mapping, Sequence, Union

from . import families
from .errors import UnsupportedModelError
from .model_spec import (  # noqa: F401 - the row type is re-exported here, next to its table
    DEFAULT_TOKEN_INPUTS, IMAGE_UNITS, SCORERS, TOKEN_FILLS, VISION_CALLS, KnownDefault, ModelSpec, TokenInput,
    config_value)

logger = logging.getLogger(__name__)

_QWEN_IMAGE_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"

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
        image_units=families.anyres_units,
        prompt_template="[INST] <image>\n{text} [/INST]",
        legacy_prefixes=(
            ("model.vision_tower.", "vision_tower.vision_model."),
            ("model.multi_modal_projector", "multi_modal_projector"),
        ),
        notes="AnyRes: several crops per image (counted from image_sizes and image_grid_pinpoints by "
        "families.anyres_units); the key "
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
        image_units=families.anyres_units,
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
        easyedit_image_prefix=_QWEN_IMAGE_TOKENS,
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
        easyedit_image_prefix=_QWEN_IMAGE_TOKENS,
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
        easyedit_image_prefix=_QWEN_IMAGE_TOKENS,
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
        easyedit_image_prefix=_QWEN_IMAGE_TOKENS,
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
        pad_left=False,
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
        optional_processor_args=("video_processor",),
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
    ModelSpec(
        model_type="mllama",
        model_class="MllamaForConditionalGeneration",
        vision_tower="model.vision_model",
        mlp_template="model.vision_model.transformer.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        vision_call="vision_tower",
        vision_inputs=("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"),
        token_inputs=DEFAULT_TOKEN_INPUTS + (TokenInput("cross_attention_mask", "last"),),
        nest_images=True,
        notes="Llama 3.2 Vision: the vision model also needs aspect_ratio_ids and aspect_ratio_mask; the "
        "language model reads the image through cross-attention layers whose 4-D mask [batch, text, "
        "images, tiles] is extended over option tokens by repeating the last prompt position. The key "
        "averages all tiles of the local transformer (padding tiles included: their count follows the "
        "aspect ratio). The global transformer's blocks and the projector (applied by the model's forward "
        "after the vision model, not inside it) are not AutoLayer candidates.",
    ),
    ModelSpec(
        model_type="paligemma",
        model_class="PaliGemmaForConditionalGeneration",
        vision_tower="model.vision_tower",
        mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.language_model",
        projectors=("model.multi_modal_projector",),
        chat_template=False,
        prompt_template="<image>{text}",
        token_inputs=DEFAULT_TOKEN_INPUTS + (TokenInput("token_type_ids", 1),),
        legacy_prefixes=(("model.vision_tower.", "vision_tower.vision_model."),),
        notes="Prefix-LM: token_type_ids 0 is the bidirectional prefix (image + prompt), 1 the causal "
        "suffix. Appended option tokens get 1, as the processor gives a `suffix`; with 0 an option's "
        "tokens would be visible to the positions that predict them. The processor adds <bos> after "
        "the image tokens and a newline after the prompt.",
    ),
    ModelSpec(
        model_type="blip",
        model_class="BlipForQuestionAnswering",
        vision_tower="vision_model",
        mlp_template="vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="text_encoder",
        vision_call="vision_tower",
        chat_template=False,
        prompt_template="{text}",
        scorer="encoder_decoder",
        decoder_module="text_decoder",
        notes="BLIP VQA (seed model of the paper), encoder-decoder: the text encoder reads the question "
        "(facts fused into it) with cross-attention to the image; the answer decoder starts from "
        "text_config.bos_token_id and is scored with teacher forcing. The vision tower has no "
        "projector inside the model (the text encoder cross-attends to it).",
    ),
    ModelSpec(
        model_type="idefics",
        model_class="IdeficsForVisionText2Text",
        vision_tower="model.vision_model",
        mlp_template="model.vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="model.layers",
        vision_call=families.flatten_images_vision_call,
        chat_template=False,
        prompt_template="User: {text}\nAssistant:",
        token_inputs=DEFAULT_TOKEN_INPUTS + (TokenInput("image_attention_mask", "last"),),
        notes="IDEFICS (open Flamingo): gated cross-attention from the LM to the image; pixel_values is "
        "[batch, images, C, H, W] (flattened for the tower) and image_attention_mask [batch, text, "
        "images] is extended over option tokens by repeating the last prompt position. The processor "
        "puts the image before the text itself. Perceiver resampler (off by default) is not a candidate.",
    ),
    ModelSpec(
        model_type="clip",
        model_class="CLIPModel",
        vision_tower="vision_model",
        mlp_template="vision_model.encoder.layers.{L}.mlp",
        first_linear="fc1",
        num_blocks_attr="vision_config.num_hidden_layers",
        language_model="text_model",
        projectors=("visual_projection",),
        chat_template=False,
        prompt_template="{text}",
        scorer="image_text_similarity",
        max_text_tokens_attr="text_config.max_position_embeddings",
        notes="CLIP-ViT as a multiple-choice answerer (seed model of the paper): each option is scored by "
        "image-text similarity of the text '<option>. <fused question>', cut to the text encoder's 77 "
        "positions from the end (so the option always stays and what is cut is the question's tail, "
        "then the lowest-ranked facts). It cannot generate: answers need choices; captions, patches "
        "and yes-probabilities are not available.",
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
            f"model_type {model_type!r} has no ModelSpec.{suggest_model_type(model_type)} "
            f"Supported: {sorted(_REGISTRY)}. To add one, register a row: "
            "register_model_spec(ModelSpec(model_type=..., model_class=..., vision_tower=..., "
            "mlp_template='...blocks.{L}.mlp', first_linear=..., num_blocks_attr=..., language_model=...)) "
            "from reasonedit_plugin, and name its module in the hparams (model_specs: [my_pkg.specs]) or "
            "on the command line (--model-specs my_pkg.specs); see docs/ADDING_A_FAMILY.md."
        ) from None


def _stem(model_type: str) -> str:
    """The family name without versions and variants: ``qwen2_5_vl`` -> ``qwen``, ``blip-2`` -> ``blip``."""
    match = re.match(r"[a-z]+", model_type.lower())
    return match.group(0) if match else model_type.lower()


def suggest_model_type(model_type: str) -> str:
    """A hint for an unknown model_type: rows of the same family (a registered model_type it extends, or
    the same name stem), never an unrelated family that merely looks alike; what transformers knows
    about it (a text-only model, or an image-text class to put in a row)."""
    known = sorted(_REGISTRY)
    longer = [k for k in known if model_type.startswith(k)]
    same_family = ([max(longer, key=len)] if longer
                   else [k for k in known if _stem(k) == _stem(model_type)])
    hint = ""
    if same_family:
        hint = " Rows of the same family: " + ", ".join(repr(k) for k in same_family) + " (a new variant " \
               "usually needs its own row; copy the closest one and adjust the paths)."
    try:
        from transformers.models.auto import modeling_auto as auto
    except ImportError:  # pragma: no cover
        return hint
    multimodal = None
    for name in ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES",
                 "MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES",
                 "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"):
        mapping = getattr(auto, name, {})
        if multimodal is None and model_type in mapping:
            multimodal = mapping[model_type]
    text_only = model_type in getattr(auto, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {}) and multimodal is None
    if text_only:
        hint += (f" {model_type!r} is a text-only language model in transformers; ReasonEdit edits "
                 "vision-language models (keys come from a vision encoder).")
    elif multimodal:
        hint += f" transformers loads it with {multimodal}: use that as the row's model_class."
    return hint


def load_model_specs(modules: Union[str, Sequence[str]]) -> list[str]:
    """Import Python modules that register ModelSpec rows (``model_specs: [my_pkg.specs]`` in the hparams,
    ``--model-specs`` on the command line); returns the model_types they added. Importing a module twice
    is a no-op (Python caches modules), so rows are registered once."""
    if isinstance(modules, str):
        modules = [modules]
    before = set(_REGISTRY)
    for name in modules:
        if not isinstance(name, str) or not name.strip():
            raise UnsupportedModelError(f"model_specs entries must be module names like 'my_pkg.specs', got "
                                        f"{name!r}.")
        try:
            importlib.import_module(name.strip())
        except ImportError as exc:
            raise UnsupportedModelError(
                f"model_specs: cannot import module {name!r} ({exc}); put its package on PYTHONPATH or "
                "install it, and give its dotted name (my_pkg.specs), not a file path.") from exc
    added = sorted(set(_REGISTRY) - before)
    if added:
        logger.info("model specs registered by %s: %s", ", ".join(modules), ", ".join(added))
    return added
