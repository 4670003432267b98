"""Seeded augmentation of an (image, text) pair; the key distance to the augmented copy is an entry's
radius (METHOD.md §2).

Reference recipe: thumbnail to <= 512 px; pad into a mosaic canvas whose side is 1/sqrt(0.9) of the
image's, the image at a random position and the rest filled with noise or crops of other images; a random
rotation within +-10 degrees; colour jitter (brightness/contrast/saturation 0.1, hue 0.05). Pure PIL (no
torchvision). The text side uses a cheap seeded template paraphrase instead of the reference's 1.5B LLM.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance

from .config import AugmentConfig


def _jitter_hue(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.asarray(image.convert("HSV"), dtype=np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + int(round(shift * 255))) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def augment_image(image: Image.Image, rng: random.Random, config: AugmentConfig,
                  others: Sequence[Image.Image] = ()) -> Image.Image:
    """One augmented copy of ``image`` (RGB, same size as the thumbnail), fully determined by ``rng``."""
    img = image.convert("RGB")
    img.thumbnail((config.max_side, config.max_side))
    w, h = img.size
    side = 1.0 / math.sqrt(config.mosaic_ratio)
    cw, ch = max(w + 1, int(round(w * side))), max(h + 1, int(round(h * side)))
    noise = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (ch, cw, 3), dtype=np.uint8)
    canvas = Image.fromarray(noise, "RGB")
    if others:
        donor = others[rng.randrange(len(others))].convert("RGB").resize((cw, ch))
        canvas = Image.blend(canvas, donor, 0.8)
    canvas.paste(img, (rng.randint(0, cw - w), rng.randint(0, ch - h)))
    angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees)
    out = canvas.rotate(angle, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    for enhancer, strength in ((ImageEnhance.Brightness, config.brightness),
                               (ImageEnhance.Contrast, config.contrast),
                               (ImageEnhance.Color, config.saturation)):
        if strength > 0:
            out = enhancer(out).enhance(rng.uniform(1 - strength, 1 + strength))
    if config.hue > 0:
        out = _jitter_hue(out, rng.uniform(-config.hue, config.hue))
    return out.resize((w, h), Image.BILINEAR)


_PREFIXES = ("", "Tell me: ", "Question: ", "Please answer: ", "I wonder: ")
_SWAPS = (("What is", "Which is"), ("What color", "What colour"), ("the image", "the picture"),
          ("this image", "this picture"), ("Which", "What"), ("shape", "figure"))


def paraphrase(text: str, rng: random.Random, mode: str = "template") -> str:
    """A meaning-preserving variant of ``text``: ``none`` returns it; ``template`` applies one seeded
    word swap (if any applies) and a seeded neutral prefix. Deliberately cheap and documented as such."""
    if mode == "none":
        return text
    swaps = [(a, b) for a, b in _SWAPS if a in text]
    out = text
    if swaps:
        a, b = swaps[rng.randrange(len(swaps))]
        out = out.replace(a, b, 1)
    prefix = _PREFIXES[rng.randrange(len(_PREFIXES))]
    if prefix and out:
        out = prefix + out[0].lower() + out[1:]
    return out
