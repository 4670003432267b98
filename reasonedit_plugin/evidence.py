"""The evidence check: an edit speaks for a query only if the query's image shows what the edit's rationale
says its own image shows (extension; the question is METHOD.md §6's "Does the image show <claim>?").

The null-set gate's image test compares vision activations. An image that shares the edited image's colour
but not its shape is close in that space, and whether it is in the edit's scope depends on the rule the
rationale states: for "Red shapes belong to the Kesh tribe." a red triangle is a generality probe, for "Kesh
members are red circles." it is a near miss. The rationale itself tells them apart: its *evidence* sentences
("This is a red circle.") describe the edited image. So, for every edit the gate matched:

* the edit's evidence is the set of its rationale sentences the model affirms on the edit's own image
  (P(yes) > ``evidence_own_yes``; rule sentences the model cannot check on an image drop out here). With
  ``evidence_caption`` the model's own caption of the edited image ("A brown circle.") is evidence too, when
  no sentence is (``fallback``: an edit left without evidence is otherwise not checked) or always
  (``always``); the edit then covers only images that look like the edited one. Computed once per edit,
  from the raw record the editor keeps, when the edit is added (an edit loaded or imported: when it is
  first matched);
* the query image must get P(yes) >= ``evidence_min_yes`` for every evidence sentence, else the edit is not
  matched (and another matched edit may win).

It costs one batched model pass over the evidence sentences of the *matched* edits (the claims of every matched
edit asked together), so unrelated queries the gate already rejected cost nothing. On EasyEdit's tensor inputs
(``ReasonEditModel``, one pass per claim) the question is spliced into the inputs EasyEdit built, in place of
the user's question; BLIP-2-style batches (``text_input``/``image``) run the gate without the check.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import ConfigError
from .records import EditRecord, load_image


def claim_question(sentence: str, template: str) -> str:
    """METHOD.md §6: the sentence with its first letter lower-cased and its final '.' replaced by '?', put into
    ``template`` ("Does the image show {claim}"). The embedded model was trained on exactly this form."""
    claim = sentence.strip()
    claim = claim[:1].lower() + claim[1:]
    claim = claim.rstrip(".!") + "?" if not claim.endswith("?") else claim
    return template.format(claim=claim)


@dataclass(frozen=True)
class EvidenceTest:
    """One evidence sentence of a matched edit asked about the query image, with the numbers behind it."""

    edit_id: str
    sentence: str
    own_yes: float
    """P(yes) on the edit's own image (> ``evidence_own_yes``, which made the sentence evidence)."""
    query_yes: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.query_yes >= self.threshold

    def explain(self) -> str:
        return (f"evidence of {self.edit_id}: P(yes)={self.query_yes:.3f} {'>=' if self.passed else '<'} "
                f"{self.threshold:g} on the query image (own image {self.own_yes:.3f})  {self.sentence[:60]!r}")


CAPTION_EVIDENCE = ("none", "fallback", "always")
"""When the model's caption of the edited image is evidence (``retrieval.nullset.evidence_caption``)."""

_ANSWERS_KEPT = 8192
"""How many (image, claim question) answers the check remembers."""

_CAPTION_TOKENS = 24
"""Longest caption generated as an edit's fallback evidence."""

EvidenceProbe = Callable[[Sequence[str]], dict[str, list[EvidenceTest]]]
"""edit ids -> the tests of each one's evidence on one query image (what the gate calls with the edits it matched;
their claims not asked about these pixels before are asked in one batched pass)."""

YesMany = Callable[[list[str]], list[float]]
"""claim questions -> their P(yes) on one query image."""


class EvidenceCheck:
    """Asks the VLM whether a query image shows a matched edit's evidence (see the module doc)."""

    def __init__(self, vlm: Any, template: str, own_yes: float, min_yes: float,
                 record_of: Callable[[str], Optional[EditRecord]], describe_prompt: str | None = None,
                 caption: str = "none"):
        """``caption`` (:data:`CAPTION_EVIDENCE`): whether the model's caption of an edit's image ("A brown
        circle."), asked for with ``describe_prompt``, is evidence too: when no rationale sentence is
        (``"fallback"``) or always (``"always"``)."""
        if caption not in CAPTION_EVIDENCE or (caption != "none" and not describe_prompt):
            raise ValueError(f"caption={caption!r} must be one of {CAPTION_EVIDENCE}; all but 'none' need a "
                             "describe_prompt")
        self.vlm = vlm
        self.template = template
        self.describe_prompt = describe_prompt if caption != "none" else None
        self.caption_always = caption == "always"
        self.own_yes = float(own_yes)
        self.min_yes = float(min_yes)
        self.record_of = record_of
        self._evidence: dict[str, tuple[Any, list[tuple[str, float]]]] = {}
        """edit id -> (what the evidence was read from, the evidence)."""
        self._answers: OrderedDict[tuple[bytes, str], float] = OrderedDict()
        """(image digest, claim question) -> P(yes), the most recent :data:`_ANSWERS_KEPT`: a query on an
        edited image (or on one asked about before) costs no model call."""

    @classmethod
    def from_config(cls, vlm: Any, config: Any, record_of: Callable[[str], Optional[EditRecord]]
                    ) -> "EvidenceCheck | None":
        """The check a :class:`~reasonedit_plugin.config.ReasonEditConfig` asks for (None when the null-set gate
        or its ``evidence_check`` is off); a model that cannot answer yes/no is refused with the setting to change."""
        nullset = config.retrieval.nullset
        if config.retrieval.gate != "nullset" or not nullset.evidence_check:
            return None
        if getattr(getattr(vlm, "spec", None), "scorer", None) == "image_text_similarity" or \
                not callable(getattr(vlm, "yes_probabilities", None)):
            raise ConfigError("retrieval.nullset.evidence_check asks the model yes/no questions about the query "
                              "image, and this model cannot answer them (it scores image-text similarity); set "
                              "evidence_check: false.")
        if nullset.evidence_caption != "none" and not config.patches.describe_prompt:
            raise ConfigError(f"retrieval.nullset.evidence_caption: {nullset.evidence_caption} asks the model for a "
                              "caption with patches.describe_prompt, which is empty; set one or evidence_caption: none.")
        return cls(vlm, config.patches.question_template, nullset.evidence_own_yes, nullset.evidence_min_yes,
                   record_of, config.patches.describe_prompt, nullset.evidence_caption)

    def __len__(self) -> int:
        """How many edits' evidence has been read (when an edit is added, or first matched)."""
        return len(self._evidence)

    def forget(self, edit_id: str) -> None:
        self._evidence.pop(edit_id, None)

    def forget_answers(self) -> None:
        """Forget the remembered answers (each edit's evidence stays)."""
        self._answers.clear()

    def evidence(self, edit_id: str) -> list[tuple[str, float]]:
        """(sentence, P(yes) on the edit's own image) for the sentences the model affirms there, and the
        model's caption of the image if it affirms that (``caption``: always, or when no sentence is
        affirmed); [] when the raw record (and so the image) is unknown, e.g. an edit imported without it.
        Read again when the edit's record changes (an id removed and added back with another image or
        rationale, by any path)."""
        record = self.record_of(edit_id)
        stamp = _stamp(record)
        known = self._evidence.get(edit_id)
        if known is not None and known[0] == stamp:
            return known[1]
        found: list[tuple[str, float]] = []
        if record is not None:
            image = load_image(record.image)
            digest = _digest(image)
            for sentence, p in self._yes(image, digest, list(dict.fromkeys(record.rationale))).items():
                if p > self.own_yes:
                    found.append((sentence, p))
            if self.describe_prompt and (self.caption_always or not found):
                caption = self.vlm.generate(image, self.describe_prompt, _CAPTION_TOKENS).strip()
                p = self._yes(image, digest, [caption])[caption] if caption else 0.0
                if p > self.own_yes and caption not in dict(found):
                    found.append((caption, p))
        self._evidence[edit_id] = (stamp, found)
        return found

    def probe(self, image: Any) -> EvidenceProbe:
        """The test for one query image (each claim asked at most once per query, and not at all when the same
        pixels were asked about before, e.g. the edited image itself)."""
        image = load_image(image)
        return self.probe_with(lambda questions: self.vlm.yes_probabilities(image, questions), _digest(image))

    def probe_inputs(self, inputs: Mapping[str, Any], yes: Callable[[str], float]) -> EvidenceProbe:
        """The test for a query given as processor outputs and ``yes`` (claim question -> P(yes) on them;
        EasyEdit's tensor path, one question per pass); answers are remembered by a digest of the pixel tensor."""
        pixels = next((v for k, v in inputs.items() if k.startswith("pixel_values") and v is not None), None)
        return self.probe_with(lambda questions: [yes(q) for q in questions],
                               None if pixels is None else tensor_digest(pixels))

    def probe_with(self, yes: YesMany, digest: bytes | None = None) -> EvidenceProbe:
        """The test for a query given as ``yes``: claim questions -> their P(yes) on the query's image.
        ``digest`` identifies the query's pixels: answers are remembered under it."""

        def tests(edit_ids: Sequence[str]) -> dict[str, list[EvidenceTest]]:
            claims = {edit_id: [(sentence, own, claim_question(sentence, self.template))
                                for sentence, own in self.evidence(edit_id)] for edit_id in edit_ids}
            asked = self._ask([q for rows in claims.values() for _, _, q in rows], yes, digest)
            return {edit_id: [EvidenceTest(edit_id, sentence, own, asked[q], self.min_yes) for sentence, own, q in rows]
                    for edit_id, rows in claims.items()}

        return tests

    def _yes(self, image: Any, digest: bytes, sentences: Sequence[str]) -> dict[str, float]:
        """P(yes) of each sentence's claim on an edit's own image, by sentence."""
        questions = {s: claim_question(s, self.template) for s in sentences}
        asked = self._ask(list(questions.values()), lambda qs: self.vlm.yes_probabilities(image, qs), digest)
        return {s: asked[q] for s, q in questions.items()}

    def _ask(self, questions: list[str], yes: YesMany, digest: bytes | None) -> dict[str, float]:
        """Question -> P(yes): remembered ones (under ``digest``) read back, the others asked in one call."""
        out: dict[str, float] = {}
        for q in questions:
            if digest is not None and (digest, q) in self._answers:
                self._answers.move_to_end((digest, q))
                out[q] = self._answers[(digest, q)]
        new = list(dict.fromkeys(q for q in questions if q not in out))
        if not new:
            return out
        for q, p in zip(new, yes(new)):
            out[q] = float(p)
            if digest is not None:
                self._answers[(digest, q)] = out[q]
        while len(self._answers) > _ANSWERS_KEPT:
            self._answers.popitem(last=False)
        return out


def _stamp(record: Optional[EditRecord]) -> Any:
    """What an edit's evidence depends on: its image (path, or the image object) and its rationale."""
    if record is None:
        return None
    image = record.image
    return (str(image) if isinstance(image, (str, os.PathLike)) else id(image), tuple(record.rationale))


def _digest(image: Any) -> bytes:
    """A digest of an RGB image's pixels (the same pixels give the model the same input)."""
    return hashlib.blake2b(repr(image.size).encode() + image.tobytes(), digest_size=16).digest()


def tensor_digest(values: Any) -> bytes:
    """A digest of a pixel tensor (EasyEdit's processed inputs), distinct from any image digest."""
    array = values.detach().cpu().contiguous().numpy()
    return hashlib.blake2b(b"tensor" + repr((array.shape, str(array.dtype))).encode() + array.tobytes(),
                           digest_size=16).digest()
