"""Auxiliary heads of the embedded model's training (``train_default_model.py``); discarded after training.

* :class:`AttributeProbe`: colour and shape of each image from its mean-pooled merged vision tokens (keeps
  the vision tower of a from-scratch model from collapsing to an image-independent vector).
* :class:`GroundingProbe`: at every colour or shape word of a prompt, whether the image shows it, read
  from the hidden state after an early decoder layer. A fact about a near miss ("Red circles belong to
  ...", asked of a red square) differs from a fact about the image only in such words; this head asks
  the model to compute, at the word itself, the match that deciding whether to follow the fact needs.
  With ``unit="sentence"`` it asks the next step, at the end of each sentence naming a colour or shape:
  does the image show all of them (does the sentence's claim hold for this image).
* :class:`ValueProbe`: at the end of each sentence naming a colour or shape and a rule's value, that value if
  the image shows every colour and shape the sentence names, else "none": the value a fact gives *this*
  image, gated where the answer can read it in one step (the claim head leaves the answer to combine the
  sentence's end with its value word, two steps for a three-layer model).
* :class:`CopyLens`: at each word piece of a name the answer copies from the prompt (a caption edit's made-up
  name), that piece read from the hidden state after an early decoder layer through the model's own final norm
  and tied head. The models that copy caption names do it in their first layer (one head attending to the
  name, its value written onto the answer position: ``benchmarks/copy_circuit.py``); this asks a deeper model to
  copy there too. No parameters of its own.
"""

from __future__ import annotations

from typing import Any, Iterator, Literal, Sequence

import torch

from .rule_properties import PROPERTIES
from .shaperules import COLOURS, SHAPES, image_catalogue


def image_labels(split: str = "train") -> dict[str, tuple[int, int]]:
    """easy-vqa image path -> (colour index, shape index) for the images of ``split``."""
    return {info.path: (COLOURS.index(info.colour), SHAPES.index(info.shape)) for info in image_catalogue(split)}


class AttributeProbe(torch.nn.Module):
    """Auxiliary head: colour and shape of each image from its mean-pooled merged vision tokens."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.colour = torch.nn.Linear(hidden_size, len(COLOURS))
        self.shape = torch.nn.Linear(hidden_size, len(SHAPES))
        self.labels = image_labels()

    def loss(self, merged: torch.Tensor, grids: torch.Tensor, paths: Sequence[str], merge: int = 4) -> torch.Tensor:
        sizes = (grids.prod(-1) // merge).tolist()
        pooled = torch.stack([chunk.mean(0) for chunk in merged.split(sizes)])
        targets = torch.tensor([self.labels.get(p, (-100, -100)) for p in paths], device=pooled.device)
        return (torch.nn.functional.cross_entropy(self.colour(pooled), targets[:, 0], ignore_index=-100)
                + torch.nn.functional.cross_entropy(self.shape(pooled), targets[:, 1], ignore_index=-100))


def attribute_words(tokenizer: Any) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, int], tuple[int, int]]]:
    """Where the tokenizer spells a colour or shape word (plurals too): token id -> (attribute, index) for
    one-piece words, and (previous id, id) -> (attribute, index) for words of several pieces, labelled at
    their second piece ("rec ##tangle [##s]", "tea ##l"). Attribute 0: colour, 1: shape."""
    single: dict[int, tuple[int, int]] = {}
    pairs: dict[tuple[int, int], tuple[int, int]] = {}
    for attr, words in enumerate((COLOURS, SHAPES)):
        for index, word in enumerate(words):
            for form in (word, word + "s"):
                ids = tokenizer(" " + form, add_special_tokens=False)["input_ids"]
                if len(ids) == 1:
                    single[ids[0]] = (attr, index)
                elif form == word:  # a plural of several pieces starts with its singular's pieces
                    pairs[(ids[0], ids[1])] = (attr, index)
    return single, pairs


SENTENCE_ENDS = (".", "?", "!", ";")
"""Tokens that end a sentence (or a clause with its own subject) for ``GroundingProbe(unit="sentence")``."""


class PromptWords:
    """Where a prompt names a colour or shape, where its sentences end, and what each training image shows:
    what the grounding and value heads' targets are read from."""

    def __init__(self, tokenizer: Any, image_split: str = "train"):
        self.labels = image_labels(image_split)
        """Whose images the targets know (training: the train split; a diagnosis may ask about test images)."""
        self.single, self.pairs = attribute_words(tokenizer)
        self.ends = set(tokenizer.convert_tokens_to_ids(list(SENTENCE_ENDS)))

    def rows(self, input_ids: torch.Tensor, paths: Sequence[str | None]
             ) -> Iterator[tuple[int, list[int], tuple[int, int]]]:
        """(row, its token ids, (colour index, shape index) of its image) for the rows of a batch whose image
        has known attributes (a row without an image, or with an unknown one, has no targets)."""
        for row, (ids, path) in enumerate(zip(input_ids.tolist(), paths)):
            truth = self.labels.get(path) if path is not None else None
            if truth is not None:
                yield row, ids, truth

    def attribute(self, ids: list[int], pos: int) -> tuple[int, int] | None:
        """(attribute, index) of the colour or shape word whose (last labelled) piece is at ``pos``, if any."""
        return self.single.get(ids[pos]) or (self.pairs.get((ids[pos - 1], ids[pos])) if pos else None)

    def scan(self, ids: list[int]) -> Iterator[tuple[int, tuple[int, int]] | tuple[int, None]]:
        """(position, (attribute, index)) of each colour or shape word; sentence ends as (position, None)."""
        for pos, tok in enumerate(ids):
            hit = self.attribute(ids, pos)
            if hit is not None or tok in self.ends:
                yield pos, hit


class GroundingProbe(torch.nn.Module):
    """Auxiliary head: does the image show the colour or shape word at this prompt position (``unit="word"``),
    or every colour and shape word of the sentence ending here (``unit="sentence"``, at the sentence's last
    token; sentences naming none are skipped). One logit from the hidden state; binary cross-entropy over
    every target of the batch."""

    def __init__(self, hidden_size: int, tokenizer: Any, unit: Literal["word", "sentence"] = "word",
                 image_split: str = "train"):
        super().__init__()
        if unit not in ("word", "sentence"):
            raise ValueError(f"unit={unit!r}: use 'word' or 'sentence'.")
        self.unit = unit
        self.head = torch.nn.Linear(hidden_size, 1)
        self.words = PromptWords(tokenizer, image_split)

    def targets(self, input_ids: torch.Tensor, paths: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) pairs [m, 2] of the targets of rows whose image has known attributes, and
        whether the image shows the word, or all of the sentence's words (float [m])."""
        where: list[tuple[int, int]] = []
        shown: list[float] = []
        for row, ids, truth in self.words.rows(input_ids, paths):
            named: list[bool] = []  # the current sentence's words: shown or not
            for pos, hit in self.words.scan(ids):
                if hit is not None:
                    named.append(truth[hit[0]] == hit[1])
                    if self.unit == "word":
                        where.append((row, pos))
                        shown.append(float(named[-1]))
                elif named:  # the end of a sentence that named a colour or shape
                    if self.unit == "sentence":
                        where.append((row, pos))
                        shown.append(float(all(named)))
                    named = []
        return torch.tensor(where, dtype=torch.long).reshape(-1, 2), torch.tensor(shown)

    def loss(self, hidden: torch.Tensor, input_ids: torch.Tensor, paths: Sequence[str | None]) -> torch.Tensor | None:
        """The head's loss on ``hidden`` [B, T, H] (None: no colour or shape word in a row with an image)."""
        where, shown = self.targets(input_ids, paths)
        if not len(where):
            return None
        where = where.to(hidden.device)
        logits = self.head(hidden[where[:, 0], where[:, 1]]).squeeze(-1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, shown.to(logits.device))


NEGATIONS = ("not", "never", "no")
"""Words after which a value in the same sentence is the one a negated rule form denies ("..., not Vol")."""

CONTRACTIONS = ("s", "t", "re", "ll", "ve", "d", "m")
"""Pieces after an apostrophe that make it a contraction or possessive ("it's", "don't"), not a quote mark."""


class ValueProbe(torch.nn.Module):
    """Auxiliary head: at the end of each sentence naming a colour or shape and a value of a ShapeRules property
    (one not preceded by a negation in the sentence: its first such), that value's class if the image shows
    every colour and shape the sentence names, else class 0 ("none"). Sentences without both are skipped.
    A quoted question is part of its sentence and claims nothing: its words and its '?' are passed over, so
    an image-naming answer entry ("For a red circle, the answer to '...?' is Kesh.") gets the target its own
    named image and answer give; an apostrophe no quote mark closes before its sentence ends (a plural
    possessive) silences only the rest of that sentence. Cross-entropy over every target of the batch."""

    def __init__(self, hidden_size: int, tokenizer: Any, image_split: str = "train"):
        super().__init__()
        self.values = [v for prop in PROPERTIES for v in prop.values]
        self.head = torch.nn.Linear(hidden_size, 1 + len(self.values))
        self.words = PromptWords(tokenizer, image_split)
        self.spelled: dict[int, list[tuple[tuple[int, ...], int]]] = {}
        """Last piece -> (the value's pieces, its class) of each value ending in it."""
        for n, value in enumerate(self.values):
            pieces = tuple(tokenizer(" " + value, add_special_tokens=False)["input_ids"])
            self.spelled.setdefault(pieces[-1], []).append((pieces, n + 1))
        self.negations = set(tokenizer.convert_tokens_to_ids(list(NEGATIONS)))
        self.quote = tokenizer.convert_tokens_to_ids("'")
        self.contractions = set(tokenizer.convert_tokens_to_ids(list(CONTRACTIONS)))

    def _is_quote(self, ids: list[int], pos: int) -> bool:
        """Whether the token at ``pos`` opens or closes a quotation (an apostrophe not starting a contraction)."""
        return ids[pos] == self.quote and (pos + 1 == len(ids) or ids[pos + 1] not in self.contractions)

    def _value_at(self, ids: list[int], pos: int) -> int | None:
        """The class of the value whose last piece is at ``pos``, if one ends there."""
        for spelled, cls in self.spelled.get(ids[pos], ()):
            if pos + 1 >= len(spelled) and tuple(ids[pos + 1 - len(spelled): pos + 1]) == spelled:
                return cls
        return None

    def targets(self, input_ids: torch.Tensor, paths: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) pairs [m, 2] of the sentence ends with a target, and the target classes (long [m])."""
        where: list[tuple[int, int]] = []
        classes: list[int] = []
        for row, ids, truth in self.words.rows(input_ids, paths):
            named: list[bool] = []
            value: int | None = None
            negated = quoted = False
            for pos, tok in enumerate(ids):
                if self._is_quote(ids, pos):
                    quoted = not quoted
                elif quoted and tok in self.words.ends and ids[pos + 1: pos + 2] != [self.quote]:
                    quoted = False  # an apostrophe that closed no quotation (a plural possessive, "shapes'
                    # points"): it ends with its sentence, which is read from here on as if unquoted
                if quoted:
                    continue
                hit = self.words.attribute(ids, pos)
                if hit is not None:
                    named.append(truth[hit[0]] == hit[1])
                negated = negated or tok in self.negations
                found = self._value_at(ids, pos)
                if found is not None and value is None and not negated:
                    value = found
                if tok in self.words.ends:
                    if named and value is not None:
                        where.append((row, pos))
                        classes.append(value if all(named) else 0)
                    named, value, negated = [], None, False
        return torch.tensor(where, dtype=torch.long).reshape(-1, 2), torch.tensor(classes, dtype=torch.long)

    def loss(self, hidden: torch.Tensor, input_ids: torch.Tensor, paths: Sequence[str | None]) -> torch.Tensor | None:
        """The head's loss on ``hidden`` [B, T, H] (None: no sentence with a target)."""
        where, classes = self.targets(input_ids, paths)
        if not len(where):
            return None
        where = where.to(hidden.device)
        return torch.nn.functional.cross_entropy(self.head(hidden[where[:, 0], where[:, 1]]), classes.to(hidden.device))


def name_span(tokenizer: Any, ids: Sequence[int], name: str) -> range | None:
    """Where ``name``'s word pieces first stand together in the token ids ``ids`` (None where they never do)."""
    want = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(name))
    start = next((i for i in range(len(ids) - len(want) + 1) if list(ids[i:i + len(want)]) == want), None)
    return None if start is None else range(start, start + len(want))


def name_piece_targets(tokenizer: Any, labels: torch.Tensor,
                       copies: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, predicting position) pairs [m, 2] and the piece each predicts (long [m]): every word piece of each
    row's copied name (``copies``, "" for none), found in its labelled answer tokens (``labels`` [B, T], -100
    outside the answer); a row whose answer does not spell its name gives none."""
    where: list[tuple[int, int]] = []
    pieces: list[int] = []
    for row, name in enumerate(copies):
        if not name:
            continue
        answer = (labels[row] != -100).nonzero()[:, 0].tolist()
        ids = labels[row, answer].tolist()
        span = name_span(tokenizer, ids, name)
        if span is None:
            continue
        for k in span:
            where.append((row, answer[k] - 1))
            pieces.append(ids[k])
    return torch.tensor(where, dtype=torch.long).reshape(-1, 2), torch.tensor(pieces, dtype=torch.long)


class CopyLens:
    """Auxiliary loss without parameters of its own: at each answer position holding a word piece of the name
    the example copies (``Example.copy``), cross-entropy of that piece against the model's final norm and tied
    head applied to the hidden state after an early decoder layer (a logit lens at the predicting position)."""

    def __init__(self, tokenizer: Any, norm: torch.nn.Module, head: torch.nn.Module):
        self.tokenizer, self.norm, self.head = tokenizer, norm, head

    def targets(self, labels: torch.Tensor, copies: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`name_piece_targets` with this lens's tokenizer."""
        return name_piece_targets(self.tokenizer, labels, copies)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor, copies: Sequence[str]) -> torch.Tensor | None:
        """The lens loss on ``hidden`` [B, T, H] (None: no name piece in the batch)."""
        where, pieces = self.targets(labels, copies)
        if not len(where):
            return None
        where = where.to(hidden.device)
        logits = self.head(self.norm(hidden[where[:, 0], where[:, 1]])).float()
        return torch.nn.functional.cross_entropy(logits, pieces.to(hidden.device))
