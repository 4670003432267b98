"""A fake VLM with the VLM interface, for fast engine tests without transformers models.

Its vision features are a 4x4 RGB thumbnail of the image (48 numbers); it "reads" facts: an option gets a
low NLL when the text says "is <option>" (else the last option wins), so retrieval visibly changes answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image


_FAKE_COLOURS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}


@dataclass(frozen=True)
class FakeSpec:
    model_type: str = "fake"


class FakeVLM:
    def __init__(self):
        self.spec = FakeSpec()
        self.model = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(self.model.weight, 0.5)
        torch.nn.init.constant_(self.model.bias, 0.0)
        self.vision_calls = 0

    def resolve_layer(self, layer: Any) -> str:
        return "fake.vision.mlp" if layer is None else str(layer)

    def vision_features(self, images: Sequence[Image.Image], module: str) -> torch.Tensor:
        self.vision_calls += 1
        feats = [np.asarray(im.convert("RGB").resize((4, 4)), dtype=np.float32).reshape(-1) / 255.0
                 for im in images]
        return torch.tensor(np.stack(feats))

    def vision_features_multi(self, images: Sequence[Image.Image], modules: Sequence[str]) -> dict[str, torch.Tensor]:
        feats = self.vision_features(images, modules[0])
        return {m: feats for m in modules}

    def vision_features_from_inputs(self, inputs, module):
        return self.vision_features(inputs["images"], module)

    def prompt_text(self, text: str) -> str:
        return f"<user><image>{text}<assistant>"

    def option_nll(self, image, text: str, options: Sequence[str]) -> list[float]:
        low = text.lower()
        return [0.1 if f"is {o.lower()}" in low else 2.0 - 0.01 * i for i, o in enumerate(options)]

    def yes_probability(self, image, question: str) -> float:
        """P(yes) for "Does the image show ...?": high when the question names the image's colour (red, green or
        blue, judged from the mean pixel), low when it names another of them, 0.5 when it names none."""
        mean = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
        named = [c for c in _FAKE_COLOURS if c in question.lower()]
        if not named:
            return 0.5
        nearest = min(_FAKE_COLOURS, key=lambda c: float(((mean - np.array(_FAKE_COLOURS[c])) ** 2).sum()))
        return 0.9 if nearest in named else 0.05

    def yes_probabilities(self, image, questions) -> list[float]:
        self.yes_batches = getattr(self, "yes_batches", 0) + 1
        return [self.yes_probability(image, q) for q in questions]

    def continuation_nll(self, image, text: str, continuation: str) -> float:
        """Lower for crops whose dominant colour the continuation names, and for larger crops."""
        w, h = image.size
        return 1.0 - self.yes_probability(image, continuation) * 0.5 + 1.0 / (w * h)

    def generate(self, image, text: str, max_new_tokens: int) -> str:
        words = text.rstrip(".?").split()
        for i, w in enumerate(words[:-1]):
            if w == "is":
                return words[i + 1].strip(".")
        return "unknown"


def solid(color: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def pattern(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")

