"""Patch entries: ground each rationale sentence in the image regions the model itself agrees with
(METHOD.md §6).

The image (long side <= ``max_side``) gets a ``grid`` x ``grid`` layout; candidates are the rectangular
unions of cells, minus the full image and crops whose aspect ratio reaches ``max_aspect`` (29 crops for
the 3x3 default). For a sentence s the model is asked "Does the image show <s lower-cased, '.' -> '?'>"
on each crop; crops with P(yes) / (P(yes) + P(no)) > ``yes_threshold`` pass and are scored by the mean
per-token NLL of s under "Describe this image.". Stored: the lowest-NLL crops of the smallest passing
size (ties kept, NLL rounded to 2 decimals) and the single best crop overall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from .config import PatchConfig


@dataclass(frozen=True)
class Crop:
    """A rectangle of grid cells, rows [r0, r1) and columns [c0, c1), with its pixel box."""

    r0: int
    r1: int
    c0: int
    c1: int
    box: tuple[int, int, int, int]

    @property
    def cells(self) -> int:
        return (self.r1 - self.r0) * (self.c1 - self.c0)


def candidate_crops(size: tuple[int, int], config: PatchConfig) -> list[Crop]:
    """Every rectangular union of grid cells except the full image and wrong-aspect crops."""
    w, h = size
    g = config.grid
    xs = [round(i * w / g) for i in range(g + 1)]
    ys = [round(i * h / g) for i in range(g + 1)]
    crops = []
    for r0 in range(g):
        for r1 in range(r0 + 1, g + 1):
            for c0 in range(g):
                for c1 in range(c0 + 1, g + 1):
                    if (r0, r1, c0, c1) == (0, g, 0, g):
                        continue
                    box = (xs[c0], ys[r0], xs[c1], ys[r1])
                    bw, bh = box[2] - box[0], box[3] - box[1]
                    if bw < 1 or bh < 1 or max(bw / bh, bh / bw) >= config.max_aspect:
                        continue
                    crops.append(Crop(r0, r1, c0, c1, box))
    return crops


def claim_question(sentence: str, config: PatchConfig) -> str:
    claim = sentence.strip().lower().replace(".", "?")
    if not claim.endswith("?"):
        claim += "?"
    return config.question_template.format(claim=claim)


def select_crops(passing: Sequence[tuple[Crop, float]]) -> list[Crop]:
    """From (crop, NLL) pairs that passed the yes-check: the lowest-NLL crops of the smallest size
    (ties at 2 decimals kept) plus the best crop overall, in a deterministic order."""
    if not passing:
        return []
    smallest = min(c.cells for c, _ in passing)
    small = [(c, n) for c, n in passing if c.cells == smallest]
    best_small = min(round(n, 2) for _, n in small)
    chosen = [c for c, n in small if round(n, 2) == best_small]
    overall = min(passing, key=lambda cn: (cn[1], cn[0].cells, cn[0].box))[0]
    if overall not in chosen:
        chosen.append(overall)
    return chosen


def find_patches(vlm: Any, image: Image.Image, sentences: Sequence[str],
                 config: PatchConfig) -> list[tuple[Image.Image, str]]:
    """(crop image, sentence) pairs to store as patch entries for one edit's rationale."""
    img = image.convert("RGB")
    img.thumbnail((config.max_side, config.max_side))
    crops = candidate_crops(img.size, config)
    crop_images = {c: img.crop(c.box) for c in crops}
    questions = [claim_question(sentence, config) for sentence in sentences]
    yes = {crop: vlm.yes_probabilities(crop_images[crop], questions) for crop in crops} if questions else {}
    out: list[tuple[Image.Image, str]] = []
    for i, sentence in enumerate(sentences):
        passing = []
        for crop in crops:
            if yes[crop][i] > config.yes_threshold:
                nll = vlm.continuation_nll(crop_images[crop], config.describe_prompt, sentence)
                passing.append((crop, float(nll)))
        out.extend((crop_images[c], sentence) for c in select_crops(passing))
    return out
