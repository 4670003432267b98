"""Hand computations the VLM contract suites check the library against: each family's option scores from
one plain forward per option (no batching, no padding), and seeded noise images."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from PIL import Image

from reasonedit_plugin.vlm import VLM


def noise_image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _hand_causal(vlm: VLM, image: Image.Image, question: str, option: str, suffix: bool) -> float:
    """One unpadded forward of prompt + option, built by the processor itself (byte tokenizers without
    merges: tokenizing prompt + option concatenates the ids). ``suffix``: the option is passed the way
    the family's processor marks an answer (PaliGemma's ``suffix=``: causal token types)."""
    pixels = vlm._prepare_images([image])
    prompt = vlm.prompt_text(question)
    n = len(vlm.tokenizer(option, add_special_tokens=False)["input_ids"])
    start = vlm.build_inputs([image], [question])["input_ids"].shape[1]
    if suffix:
        inputs = vlm.processor(images=pixels, text=[prompt], suffix=[option], return_tensors="pt")
        inputs.pop("labels")
    else:
        inputs = vlm.processor(images=pixels, text=[prompt + option], return_tensors="pt")
        # text inputs not aligned with input_ids describe the prompt alone (InstructBLIP's Q-Former
        # reads the instruction, never the answer)
        alone = vlm.processor(images=pixels, text=[prompt], return_tensors="pt")
        for key, value in alone.items():
            full = inputs[key]
            if key != "input_ids" and value.dim() >= 2 and full.shape != value.shape \
                    and full.shape[1] != inputs["input_ids"].shape[1]:
                inputs[key] = value
    ids = inputs["input_ids"][0]
    assert ids.shape[0] >= start + n
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0].float()
    offset = logits.shape[0] - ids.shape[0]
    logp = logits[offset + start - 1: offset + start - 1 + n].log_softmax(-1)
    return float(-logp.gather(-1, ids[start:start + n, None]).sum())


def _hand_blip(vlm: VLM, image: Image.Image, question: str, option: str) -> float:
    """BLIP VQA by its parts: vision model -> text encoder over the question -> answer decoder."""
    model = vlm.model
    inputs = vlm.processor(images=vlm._prepare_images([image]), text=[vlm.prompt_text(question)], return_tensors="pt")
    ids = vlm.tokenizer(option, add_special_tokens=False)["input_ids"]
    decoder_ids = torch.tensor([[model.config.text_config.bos_token_id] + ids])
    with torch.no_grad():
        image_embeds = model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        question = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                      encoder_hidden_states=image_embeds).last_hidden_state
        logits = model.text_decoder(input_ids=decoder_ids, encoder_hidden_states=question,
                                    encoder_attention_mask=inputs["attention_mask"]).logits[0].float()
    logp = logits[:-1].log_softmax(-1)
    return float(-logp.gather(-1, torch.tensor(ids)[:, None]).sum())


def _hand_clip(vlm: VLM, image: Image.Image, question: str, options: list[str]) -> list[float]:
    """CLIP: cosine similarity of the image and each '<option>. <question>' text, times the logit scale,
    as -log_softmax over the options."""
    model = vlm.model
    pixels = vlm.processor.image_processor(vlm._prepare_images([image]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pixels).pooler_output
        sims = []
        for option in options:
            ids = vlm.tokenizer([f"{option}. {question}"], return_tensors="pt")
            txt = model.get_text_features(**ids).pooler_output
            sims.append(float(model.logit_scale.exp() * torch.nn.functional.cosine_similarity(img, txt)[0]))
    return [float(v) for v in -torch.tensor(sims).log_softmax(-1)]


def hand_option_nll(vlm: VLM, image: Image.Image, question: str, options: list[str]) -> list[float]:
    if vlm.spec.scorer == "image_text_similarity":
        return _hand_clip(vlm, image, question, options)
    if vlm.spec.scorer == "encoder_decoder":
        return [_hand_blip(vlm, image, question, o) for o in options]
    # a prefix-LM marks an answer with its own processor argument; everyone else just appends it
    suffix = "suffix" in inspect.signature(type(vlm.processor).__call__).parameters
    return [_hand_causal(vlm, image, question, o, suffix) for o in options]


OPTIONS = ["circle", "square", "a big triangle"]
HAND_ATOL = 1e-4
"""float32 sums of ~15 log-probabilities, batched and padded vs one by one: agree to ~1e-5."""
