"""The text the training mix builds its prompts from: facts fused with a question (:func:`fuse`, and
:func:`split_question` back), word noise that keeps what a prompt asks and answers (:func:`word_noise`), and the
names a caption edit copies (:func:`letters_name`, :func:`name_words`, the sentences that state them).

Pure functions of their arguments and the ``rng`` they are given: :class:`.training_mix.MixSampler` draws from
them in a fixed order, which the recorded training runs depend on.
"""

from __future__ import annotations

import json
import random
import re
from typing import TYPE_CHECKING, Sequence

from .language import CAPTION_TRIBES, RETIRED_CAPTION_TRIBES
from .shaperules import COLOURS, PROPERTIES, SENTENCE_SPLIT, SHAPES, YES_NO

if TYPE_CHECKING:  # pragma: no cover
    from .shaperules import ImageInfo

CAPTION_SUFFIXES = (("of the {name} tribe", "{Colour} {shape}s are members of the {name} tribe."),
                    ("from {name} island", "{Colour} {shape}s come from {name} island."),
                    ("that {name} drew", "{name} drew every {colour} {shape}."),
                    ("named {name}", "Every {colour} {shape} is named {name}."),
                    ("in the {name} style", "{Colour} {shape}s are drawn in the {name} style."))
"""How a caption edit extends a caption, and the rule sentence that says so (training wordings; names
are made up per example)."""
NAME_RELATIONS = (("{name} drew every {colour} {shape}.", "Who drew this shape?"),
                  ("Every {colour} {shape} is named {name}.", "What is this shape named?"),
                  ("{Colour} {shape}s are drawn in the {name} style.", "In which style is this shape drawn?"))
"""``name_facts``' sentences stating a name for a colour + shape, and the question asking for it (relations no
rule property uses: the world's tribe and island questions keep their own values)."""
CONSONANTS, VOWELS = "bcdfghjklmnpqrstvwxz", "aeiouy"
SYLLABLES = ("ba", "ko", "ri", "zu", "me", "ta", "lo", "fi", "nu", "ge", "sa", "po", "vy", "dre", "qua", "xo")

WORD = re.compile(r"[A-Za-z]+")
PROTECTED = frozenset(w.lower() for w in (*COLOURS, *SHAPES, *YES_NO, *(v for p in PROPERTIES for v in p.values),
                                          *(p.name for p in PROPERTIES), "point", "not", "no", "never", "only",
                                          "shape", "colour", "color", "what", "which", "how", "many"))
"""Words word noise never touches (nor their plurals): every answer value, colour, shape and property name,
the negations, and the words that say what a plain question asks ("What *shape* ...", "How many ...")."""


def word_noise(text: str, rate: float, rng: random.Random, words: Sequence[str]) -> str:
    """Each unprotected word of ``text`` is, with probability ``rate``, deleted or replaced by a random
    English word from ``words`` (half each): wordings the model has never seen must not stop it from
    reading a fact (word dropout as a regulariser). Values, colours, shapes and negations are kept."""
    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        lower = word.lower()
        if lower in PROTECTED or lower.rstrip("s") in PROTECTED or rng.random() >= rate:
            return word
        return rng.choice(words) if rng.random() < 0.5 else ""

    return re.sub(r" {2,}", " ", WORD.sub(swap, text)).strip()


def word_noise_inside(text: str, rate: float, rng: random.Random, words: Sequence[str]) -> str:
    """:func:`word_noise` on a piece of a sentence, its leading and trailing spaces kept (the text between two
    quotes of a question: "..., the answer to " before one)."""
    core = text.strip()
    if not core:
        return text
    lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()):]
    return lead + (word_noise(core, rate, rng, words) or core) + trail


def noise_vocabulary() -> list[str]:
    """Whole English words of MiniLM's WordPiece vocabulary (letters only, 3-12 characters)."""
    from .default_model_build import minilm_dir

    vocab = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    return sorted(w for w in vocab if w.isascii() and w.isalpha() and 3 <= len(w) <= 12 and w not in PROTECTED)


def name_words(vocabulary: Sequence[str]) -> list[str]:
    """The whole words of ``vocabulary`` (:func:`noise_vocabulary`) short enough to be a caption edit's name
    (at most 7 letters; most of them one WordPiece token)."""
    return [w for w in vocabulary if len(w) <= 7]


def letters_name(rng: random.Random) -> str:
    """3-6 random letters, consonants and vowels alternating ("Kem", "Ruvado"): WordPiece splits them into
    pieces of every kind, continuation pieces ("##m") included, so what is learnt is copying the pieces of
    the prompt, not writing a small set of syllables. Never a caption command's name, current or retired."""
    while True:
        start = rng.randint(0, 1)
        letters = [rng.choice(CONSONANTS if (i + start) % 2 == 0 else VOWELS) for i in range(rng.randint(3, 6))]
        name = "".join(letters).capitalize()
        if name not in CAPTION_TRIBES and name not in RETIRED_CAPTION_TRIBES:
            return name


def naming(info: ImageInfo, name: str) -> dict[str, str]:
    """The fields of a sentence that names ``info``'s colour + shape (``CAPTION_SUFFIXES``, ``NAME_RELATIONS``)."""
    return {"name": name, "colour": info.colour, "shape": info.shape, "Colour": info.colour.capitalize()}


def split_question(text: str) -> tuple[str, str]:
    """(the facts, the question) of a :func:`fuse`d prompt: the question is its last sentence (a quoted question
    inside an answer entry, "...'Which tribe?' is Kesh.", ends no sentence: no space follows its '?')."""
    question = SENTENCE_SPLIT.split(text)[-1]
    return text[: len(text) - len(question)].rstrip(), question


def fuse(facts: Sequence[str], question: str) -> str:
    """METHOD.md §4: facts joined by single spaces, one space, then the question (no facts: the question)."""
    return " ".join([*facts, question]) if facts else question
