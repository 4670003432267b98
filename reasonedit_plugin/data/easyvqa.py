"""easy-vqa (PyPI ``easy-vqa``): 5,000 real 64x64 PNG images, each one coloured shape (8 colours x
3 shapes), with ~48k plain questions; which colour and shape each image shows, read off its questions."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

COLOURS: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
YES_NO: tuple[str, ...] = ("yes", "no")



def easy_vqa_root() -> Path:
    """The easy-vqa package's ``data`` folder (holds ``train/`` and ``test/`` images and questions)."""
    try:
        import easy_vqa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ShapeRules needs the easy-vqa images: pip install easy-vqa") from exc
    root = Path(easy_vqa.__file__).resolve().parent / "data"
    if not (root / "test" / "questions.json").is_file():
        raise FileNotFoundError(f"easy-vqa data not found under {root}; reinstall easy-vqa.")
    return root


@dataclass(frozen=True)
class ImageInfo:
    """One easy-vqa image whose colour and shape are determined by its own questions."""

    split: str
    image_id: int
    colour: str
    shape: str

    @property
    def path(self) -> str:
        """Path relative to :func:`easy_vqa_root`."""
        return f"{self.split}/images/{self.image_id}.png"


@dataclass(frozen=True)
class PlainQuestion:
    """One easy-vqa question (``image`` relative to :func:`easy_vqa_root`)."""

    question: str
    answer: str
    image_id: int
    split: str

    @property
    def image(self) -> str:
        return f"{self.split}/images/{self.image_id}.png"


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"easy-vqa split must be 'train' or 'test', got {split!r}.")


@functools.lru_cache(maxsize=2)
def plain_questions(split: str) -> tuple[PlainQuestion, ...]:
    """All easy-vqa questions of ``split`` in the package's order."""
    _check_split(split)
    with open(easy_vqa_root() / split / "questions.json", encoding="utf-8") as fh:
        rows = json.load(fh)
    return tuple(PlainQuestion(q, a, int(i), split) for q, a, i in rows)


def answer_choices(answer: str) -> list[str]:
    """Multiple-choice options for a plain easy-vqa answer: yes/no, the 8 colours, or the 3 shapes."""
    for group in (YES_NO, COLOURS, SHAPES):
        if answer in group:
            return list(group)
    raise ValueError(f"{answer!r} is not an easy-vqa answer.")


@functools.lru_cache(maxsize=2)
def image_catalogue(split: str) -> tuple[ImageInfo, ...]:
    """Images of ``split`` whose colour and shape follow unambiguously from their own questions.

    Each easy-vqa image shows exactly one shape. Attribute questions ("what color is the shape?")
    give the value directly; yes/no questions ("is there not a red shape?") give presence or absence.
    Images whose questions leave colour or shape open (about a fifth) are left out.
    """
    positive: dict[int, set[str]] = {}
    negative: dict[int, set[str]] = {}
    attrs = set(COLOURS) | set(SHAPES)
    for q in plain_questions(split):
        if q.answer in attrs:
            positive.setdefault(q.image_id, set()).add(q.answer)
            continue
        words = set(re.findall(r"\w+", q.question))
        mentioned = sorted(words & attrs)
        if len(mentioned) != 1:
            continue
        negated = bool(words & {"not", "no"})
        present = (q.answer == "yes") != negated
        (positive if present else negative).setdefault(q.image_id, set()).add(mentioned[0])
    infos = []
    for image_id in sorted(set(positive) | set(negative)):
        pos, neg = positive.get(image_id, set()), negative.get(image_id, set())
        colour = _resolve(COLOURS, pos, neg)
        shape = _resolve(SHAPES, pos, neg)
        if colour is not None and shape is not None:
            infos.append(ImageInfo(split, image_id, colour, shape))
    return tuple(infos)


def _resolve(group: Sequence[str], pos: set[str], neg: set[str]) -> str | None:
    found = [x for x in group if x in pos]
    if not found:
        found = [x for x in group if x not in neg]
    return found[0] if len(found) == 1 else None


@functools.lru_cache(maxsize=2)
def _catalogue_by_path(split: str) -> dict[str, ImageInfo]:
    return {info.path: info for info in image_catalogue(split)}


def image_info(path: str) -> ImageInfo:
    """The catalogue entry of an easy-vqa image: its path relative to :func:`easy_vqa_root`
    ("test/images/8.png") or under it."""
    root = easy_vqa_root()
    if Path(path).is_absolute() and Path(path).is_relative_to(root):
        path = Path(path).relative_to(root).as_posix()
    split = path.split("/", 1)[0]
    found = _catalogue_by_path(split).get(path) if split in ("train", "test") else None
    if found is None:
        raise ValueError(f"{path!r} is not an image of easy-vqa's {split!r} catalogue.")
    return found
