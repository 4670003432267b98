"""Tiny, randomly initialised VLMs and processors for every supported family, built in process.

No downloads: configs come from the config classes of the installed ``transformers``, tokenizers are
byte-level BPE vocabularies without merges (every byte is a token, so any text round-trips), and
image processors use the PIL backends (no torchvision needed), and processors that want a video
processor get none (``reasonedit_plugin.vlm.processor_without_video``). Other test modules import this
(pytest puts ``tests/`` on ``sys.path``)::

    from tiny_models import FAMILIES, FamilyUnavailable, build_or_skip, build_tiny
    model, processor = build_tiny("qwen2_vl")

``build_tiny`` raises :class:`FamilyUnavailable` (with the reason) when the installed transformers
lacks a class the family needs; tests turn that into ``pytest.skip``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch

__all__ = ["FAMILIES", "FamilyUnavailable", "build_or_skip", "build_tiny", "tiny_tokenizer"]


class FamilyUnavailable(RuntimeError):
    """The installed transformers cannot build this family (a class is missing)."""


def _cls(module: str, name: str) -> Any:
    """``transformers.<module>.<name>``, or :class:`FamilyUnavailable` naming what is missing."""
    try:
        mod = importlib.import_module(f"transformers.{module}" if module else "transformers")
        return getattr(mod, name)
    except (ImportError, AttributeError) as exc:
        import transformers

        raise FamilyUnavailable(
            f"transformers {transformers.__version__} has no {name} ({module or 'transformers'}): {exc}"
        ) from exc


def tiny_tokenizer(specials: list[str], chat_template: str | None = None, **special_attrs: Any) -> Any:
    """A byte-level BPE tokenizer with no merges: ``specials`` first (ids 0..k-1), then the 256 bytes.

    ``special_attrs`` are passed to the tokenizer (``pad_token="<pad>"``, ``extra_special_tokens=...``).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    fast_cls = _cls("", "PreTrainedTokenizerFast")
    vocab: dict[str, int] = {}
    for token in specials:
        vocab[token] = len(vocab)
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = fast_cls(tokenizer_object=backend, **special_attrs)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


VOCAB = 320  # > 256 bytes + the special tokens of any family below
"""Vocabulary size of every tiny language model."""


# --- chat templates (short versions of the families' real templates) --------------------------

LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

CHATML_TEMPLATE = (  # Qwen / InternVL style; ``IMAGE`` is replaced per family
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ 'IMAGE' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _llama_text(vocab_size: int = VOCAB, **overrides: Any) -> Any:
    values = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    values.update(overrides)
    return _cls("", "LlamaConfig")(**values)


def _clip_vision(**overrides: Any) -> Any:
    values = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=28, patch_size=14, projection_dim=32)
    values.update(overrides)
    return _cls("", "CLIPVisionConfig")(**values)


def _build_llava(seed: int) -> tuple[Any, Any]:
    specials = ["<pad>", "<s>", "</s>", "<image>"]
    tok = tiny_tokenizer(specials, LLAVA_TEMPLATE, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    config = _cls("", "LlavaConfig")(
        vision_config=_clip_vision(), text_config=_llama_text(), image_token_index=3,
        image_seq_length=4, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    image_processor = _cls("", "LlavaImageProcessorPil")(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = _cls("", "LlavaProcessor")(
        image_processor=image_processor, tokenizer=tok, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE)
    model = _instantiate("LlavaForConditionalGeneration", config, seed)
    return model, processor


def _no_video(processor_cls: type) -> type:
    """``processor_cls`` accepting ``video_processor=None``: the video processors of transformers 5 need
    torchvision, which this project does not require (images only)."""
    from reasonedit_plugin.vlm import processor_without_video

    return processor_without_video(processor_cls)


def _instantiate(class_name: str, config: Any, seed: int) -> Any:
    model_cls = _cls("", class_name)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]


def _qwen_image_processor(patch: int) -> Any:
    side = patch * 2  # one merged token covers (2 * patch) px squared; tiny images give a handful
    return _cls("", "Qwen2VLImageProcessorPil")(
        min_pixels=side * side * 2, max_pixels=side * side * 8, patch_size=patch, merge_size=2,
        temporal_patch_size=2)


def _qwen_tokenizer() -> Any:
    template = CHATML_TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    return tiny_tokenizer(QWEN_SPECIALS, template, pad_token="<|endoftext|>", eos_token="<|im_end|>")


def _qwen_ids(tok: Any) -> dict[str, int]:
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


_QWEN_TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=0, eos_token_id=2, pad_token_id=0)
_MROPE = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0}

_QWEN_FAMILIES: dict[str, dict[str, Any]] = {
    "qwen2_vl": dict(
        config="Qwen2VLConfig", model="Qwen2VLForConditionalGeneration", processor="Qwen2VLProcessor",
        patch=14, text=dict(_QWEN_TEXT, rope_parameters=_MROPE),
        vision=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2)),
    "qwen2_5_vl": dict(
        config="Qwen2_5_VLConfig", model="Qwen2_5_VLForConditionalGeneration",
        processor="Qwen2_5_VLProcessor", patch=14, text=dict(_QWEN_TEXT, rope_parameters=_MROPE),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                    fullatt_block_indexes=[1])),
    "qwen3_vl": dict(
        config="Qwen3VLConfig", model="Qwen3VLForConditionalGeneration", processor="Qwen3VLProcessor",
        patch=16, text=dict(_QWEN_TEXT, head_dim=8, rope_parameters=dict(_MROPE, mrope_interleaved=True)),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                    deepstack_visual_indexes=[0])),
    "qwen3_5": dict(
        config="Qwen3_5Config", model="Qwen3_5ForConditionalGeneration", processor="Qwen3VLProcessor",
        patch=16,
        text=dict(_QWEN_TEXT, head_dim=16, linear_conv_kernel_dim=2, linear_key_head_dim=8,
                  linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                  layer_types=["linear_attention", "full_attention"],
                  rope_parameters=dict(_MROPE, mrope_interleaved=True, partial_rotary_factor=0.5)),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16)),
}


def _build_qwen(family: str, seed: int) -> tuple[Any, Any]:
    row = _QWEN_FAMILIES[family]
    config_cls = _cls("", row["config"])
    processor_cls = _no_video(_cls("", row["processor"]))
    tok = _qwen_tokenizer()
    config = config_cls(text_config=dict(row["text"]), vision_config=dict(row["vision"]), **_qwen_ids(tok))
    processor = processor_cls(image_processor=_qwen_image_processor(row["patch"]), tokenizer=tok,
                              video_processor=None, chat_template=tok.chat_template)
    return _instantiate(row["model"], config, seed), processor


def _blip_parts(seed: int, family: str) -> tuple[Any, Any]:
    instruct = family == "instructblip"
    prefix = "InstructBlip" if instruct else "Blip2"
    tok = tiny_tokenizer(["<pad>", "<s>", "</s>", "<image>"], None, pad_token="<pad>", bos_token="<s>",
                         eos_token="</s>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=28, patch_size=14)
    qformer = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=512)
    if instruct:
        text = _llama_text()
    else:
        text = _cls("", "OPTConfig")(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                     num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=512,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = _cls("", f"{prefix}Config")(vision_config=vision, qformer_config=qformer, text_config=text,
                                        num_query_tokens=4, image_token_index=3)
    image_processor = _cls("", "BlipImageProcessorPil")(size={"height": 28, "width": 28})
    if instruct:
        qformer_tok = tiny_tokenizer(["[PAD]", "[CLS]", "[SEP]"], None, pad_token="[PAD]", cls_token="[CLS]",
                                     sep_token="[SEP]")
        processor = _cls("", "InstructBlipProcessor")(
            image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qformer_tok, num_query_tokens=4)
    else:
        processor = _cls("", "Blip2Processor")(image_processor=image_processor, tokenizer=tok, num_query_tokens=4)
    return _instantiate(f"{prefix}ForConditionalGeneration", config, seed), processor


def _build_idefics3_like(family: str, seed: int) -> tuple[Any, Any]:
    prefix = "Idefics3" if family == "idefics3" else "SmolVLM"
    specials = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                "<image>", "<global-img>"]
    tok = tiny_tokenizer(specials, IDEFICS3_TEMPLATE, pad_token="<|endoftext|>", eos_token="<end_of_utterance>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    config = _cls("", f"{prefix}Config")(
        vision_config=vision, text_config=_llama_text(pad_token_id=0, bos_token_id=1, eos_token_id=2),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
    # 32 px tiles of 4x4 patches -> (16 / 2**2) = 4 image tokens per tile; a tiny image is one tile
    image_processor = _cls("", f"{prefix}ImageProcessorPil")(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    kwargs: dict[str, Any] = dict(image_processor=image_processor, tokenizer=tok, image_seq_len=4,
                                  chat_template=IDEFICS3_TEMPLATE)
    processor_cls = _cls("", f"{prefix}Processor")
    if family == "smolvlm":
        try:
            import num2words  # noqa: F401  (SmolVLMProcessor requires it)
        except ImportError as exc:
            raise FamilyUnavailable("SmolVLMProcessor needs the `num2words` package (pip install num2words)") from exc
        processor_cls = _no_video(processor_cls)
        kwargs["video_processor"] = None
    processor = processor_cls(**kwargs)
    return _instantiate(f"{prefix}ForConditionalGeneration", config, seed), processor


def _build_llava_next(seed: int) -> tuple[Any, Any]:
    tok = tiny_tokenizer(["<pad>", "<s>", "</s>", "<image>"], LLAVA_TEMPLATE, pad_token="<pad>",
                         bos_token="<s>", eos_token="</s>")
    pinpoints = [[28, 56], [56, 28], [56, 56]]
    config = _cls("", "LlavaNextConfig")(
        vision_config=_clip_vision(), text_config=_llama_text(), image_token_index=3,
        image_grid_pinpoints=pinpoints, vision_feature_layer=-2, vision_feature_select_strategy="default")
    image_processor = _cls("", "LlavaNextImageProcessorPil")(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    processor = _cls("", "LlavaNextProcessor")(
        image_processor=image_processor, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _instantiate("LlavaNextForConditionalGeneration", config, seed), processor


def _build_llava_onevision(seed: int) -> tuple[Any, Any]:
    template = CHATML_TEMPLATE.replace("IMAGE", "<image>\n")
    tok = tiny_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], template,
                         pad_token="<|endoftext|>", eos_token="<|im_end|>")
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    text = _cls("", "Qwen2Config")(**dict(_QWEN_TEXT))
    vision = _cls("", "SiglipVisionConfig")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=28, patch_size=14)
    config = _cls("", "LlavaOnevisionConfig")(
        vision_config=vision, text_config=text, image_token_index=3, video_token_index=4,
        image_grid_pinpoints=pinpoints, vision_feature_layer=-1, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9")
    image_processor = _cls("", "LlavaOnevisionImageProcessorPil")(
        size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    processor = _no_video(_cls("", "LlavaOnevisionProcessor"))(
        image_processor=image_processor, tokenizer=tok, video_processor=None, num_image_tokens=4,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=template)
    return _instantiate("LlavaOnevisionForConditionalGeneration", config, seed), processor


def _build_gemma3(seed: int) -> tuple[Any, Any]:
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
    tok = tiny_tokenizer(specials, GEMMA3_TEMPLATE, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                         extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                               "image_token": "<image_soft_token>"})
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = _cls("", "Gemma3TextConfig")(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, sliding_window=64,
        query_pre_attn_scalar=8, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = _cls("", "SiglipVisionConfig")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=32, patch_size=8)
    config = _cls("", "Gemma3Config")(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"])
    image_processor = _cls("", "Gemma3ImageProcessorPil")(size={"height": 32, "width": 32})
    processor = _cls("", "Gemma3Processor")(image_processor=image_processor, tokenizer=tok,
                                            chat_template=GEMMA3_TEMPLATE, image_seq_length=4)
    return _instantiate("Gemma3ForConditionalGeneration", config, seed), processor


def _build_internvl(seed: int) -> tuple[Any, Any]:
    template = CHATML_TEMPLATE.replace("IMAGE", "<IMG_CONTEXT>\n")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = tiny_tokenizer(specials, template, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                         extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                               "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    vision = _cls("", "InternVLVisionConfig")(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=[28, 28],
        patch_size=[14, 14])
    text = _cls("", "Qwen2Config")(**dict(_QWEN_TEXT))
    config = _cls("", "InternVLConfig")(vision_config=vision, text_config=text,
                                        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                                        image_seq_length=1, downsample_ratio=0.5)
    image_processor = _cls("", "GotOcr2ImageProcessorPil")(size={"height": 28, "width": 28})
    processor = _no_video(_cls("", "InternVLProcessor"))(
        image_processor=image_processor, tokenizer=tok, video_processor=None, image_seq_length=1,
        chat_template=template)
    return _instantiate("InternVLForConditionalGeneration", config, seed), processor


MLLAMA_TEMPLATE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<|image|>' }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _build_mllama(seed: int) -> tuple[Any, Any]:
    specials = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|eot_id|>", "<|image|>", "<|start_header_id|>",
                "<|end_header_id|>"]
    tok = tiny_tokenizer(specials, MLLAMA_TEMPLATE, pad_token="<|finetune_right_pad_id|>",
                         bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    # 28 px tiles, up to 2 per image (aspect ratios 1x1, 1x2, 2x1); cross-attention in LM layer 1
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                  image_size=28, patch_size=14, max_num_tiles=2, intermediate_layers_indices=[0],
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]], vision_output_dim=64)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, cross_attention_layers=[1], max_position_embeddings=512, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    config = _cls("", "MllamaConfig")(vision_config=vision, text_config=text,
                                      image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    image_processor = _cls("", "MllamaImageProcessorPil")(size={"height": 28, "width": 28}, max_image_tiles=2)
    processor = _cls("", "MllamaProcessor")(image_processor=image_processor, tokenizer=tok,
                                            chat_template=MLLAMA_TEMPLATE)
    return _instantiate("MllamaForConditionalGeneration", config, seed), processor


def _build_paligemma(seed: int) -> tuple[Any, Any]:
    tok = tiny_tokenizer(["<pad>", "<eos>", "<bos>", "<image>"], None, pad_token="<pad>", eos_token="<eos>",
                         bos_token="<bos>", extra_special_tokens={"image_token": "<image>"})
    text = _cls("", "GemmaConfig")(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = _cls("", "SiglipVisionConfig")(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, image_size=28, patch_size=14, projection_dim=32)
    config = _cls("", "PaliGemmaConfig")(vision_config=vision, text_config=text, projection_dim=32, hidden_size=32,
                                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    image_processor = _cls("", "SiglipImageProcessorPil")(size={"height": 28, "width": 28})
    image_processor.image_seq_length = 4  # (28 / 14) ** 2 patches, as the hub's preprocessor_config says
    processor = _cls("", "PaliGemmaProcessor")(image_processor=image_processor, tokenizer=tok)
    return _instantiate("PaliGemmaForConditionalGeneration", config, seed), processor


def _build_blip_vqa(seed: int) -> tuple[Any, Any]:
    tok = tiny_tokenizer(["[PAD]", "[CLS]", "[SEP]", "[DEC]"], None, pad_token="[PAD]", cls_token="[CLS]",
                         sep_token="[SEP]", bos_token="[DEC]", eos_token="[SEP]")
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                encoder_hidden_size=32, max_position_embeddings=512, pad_token_id=0, bos_token_id=3,
                sep_token_id=2, eos_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                  patch_size=14)
    config = _cls("", "BlipConfig")(text_config=text, vision_config=vision, projection_dim=32)
    image_processor = _cls("", "BlipImageProcessorPil")(size={"height": 28, "width": 28})
    processor = _cls("", "BlipProcessor")(image_processor=image_processor, tokenizer=tok)
    return _instantiate("BlipForQuestionAnswering", config, seed), processor


def _build_idefics(seed: int) -> tuple[Any, Any]:
    tok = tiny_tokenizer(["<unk>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"],
                         None, pad_token="<unk>", bos_token="<s>", eos_token="</s>")
    vision = dict(embed_dim=32, image_size=28, intermediate_size=64, patch_size=14, num_hidden_layers=2,
                  num_attention_heads=4)
    config = _cls("", "IdeficsConfig")(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vision_config=vision, cross_layer_interval=1, max_position_embeddings=512, additional_vocab_size=0,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    image_processor = _cls("", "IdeficsImageProcessorPil")(image_size=28)
    processor = _cls("", "IdeficsProcessor")(image_processor=image_processor, tokenizer=tok)
    return _instantiate("IdeficsForVisionText2Text", config, seed), processor


def _build_clip(seed: int) -> tuple[Any, Any]:
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tokenizer(["<|endoftext|>", "<|startoftext|>"], None, pad_token="<|endoftext|>",
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    # CLIP pools the text at its end-of-text token: the tokenizer adds it, as CLIP's does
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 0)])
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, pad_token_id=0, bos_token_id=1, eos_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28,
                  patch_size=14)
    config = _cls("", "CLIPConfig")(text_config=text, vision_config=vision, projection_dim=16)
    image_processor = _cls("", "CLIPImageProcessorPil")(size={"shortest_edge": 28},
                                                        crop_size={"height": 28, "width": 28})
    processor = _cls("", "CLIPProcessor")(image_processor=image_processor, tokenizer=tok)
    return _instantiate("CLIPModel", config, seed), processor


_BUILDERS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "llava_onevision": _build_llava_onevision,
    **{family: (lambda seed, family=family: _build_qwen(family, seed)) for family in _QWEN_FAMILIES},
    "instructblip": lambda seed: _blip_parts(seed, "instructblip"),
    "blip-2": lambda seed: _blip_parts(seed, "blip-2"),
    "idefics3": lambda seed: _build_idefics3_like("idefics3", seed),
    "smolvlm": lambda seed: _build_idefics3_like("smolvlm", seed),
    "gemma3": _build_gemma3,
    "internvl": _build_internvl,
    "mllama": _build_mllama,
    "paligemma": _build_paligemma,
    "blip": _build_blip_vqa,
    "idefics": _build_idefics,
    "clip": _build_clip,
}

FAMILIES: list[str] = list(_BUILDERS)
"""Every ``config.model_type`` with a tiny builder (one per ModelSpec row)."""


def build_tiny(model_type: str, seed: int = 0) -> tuple[Any, Any]:
    """A tiny random ``(model, processor)`` of ``model_type`` (hidden 32, 2 layers, 28-64 px images).

    Weights depend only on ``seed``; the global RNG is left as it was. Raises
    :class:`FamilyUnavailable` when the installed transformers lacks a class the family needs.
    """
    if model_type not in _BUILDERS:
        raise KeyError(f"no tiny builder for {model_type!r}; known: {FAMILIES}")
    return _BUILDERS[model_type](seed)


def build_or_skip(model_type: str, seed: int = 0) -> tuple[Any, Any]:
    """:func:`build_tiny`, turning :class:`FamilyUnavailable` into ``pytest.skip`` with its reason."""
    import pytest

    try:
        return build_tiny(model_type, seed)
    except FamilyUnavailable as exc:
        pytest.skip(f"{model_type}: {exc}")
