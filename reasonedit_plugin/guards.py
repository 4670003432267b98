"""Checks on a rationale before its edit is committed (issue 7: malicious or noisy rationales).

Three checks, each switchable in :class:`~reasonedit_plugin.config.GuardConfig`:

1. **injection** — instruction-like text aimed at the model. A transparent rule set
   (:data:`INJECTION_RULES`: name, regex, weight, why); a text's score is the sum of the weights of the rules
   it matches, and it is flagged when the score reaches :data:`INJECTION_THRESHOLD`. Strong rules (ignore /
   override instructions, "always answer", "regardless", role play, system-prompt markers, invisible
   characters) weigh 1.0; weak ones (URLs, code, "you must", addressing "the model", imperative openings)
   weigh 0.5-0.6, so two weak signals are needed. The rationale sentences, the target and the question are
   checked, since all of them end up in retrieved values.
2. **contradiction** — with existing entries of the same key region. The new edit's answer key is looked up:
   one of the nearest answer entries (hubness-scaled, gate ignored) whose key is near-identical — the
   same image (vision parts within :attr:`RationaleGuard.same_image_tolerance`) and the same question (same
   normalised text or sentence-embedding cosine >= :data:`SAME_QUESTION_COSINE`) — and that states another
   answer is flagged. Each rationale
   sentence's key is looked up too: a nearby sentence with the same subject and relation but another value
   ("Red shapes belong to the Vol tribe." vs "... the Kem tribe."), or the same claim negated, is flagged.
   Claims about the particular image ("the shape in the image", "the shape", "it") are only compared between near-identical images (vision parts of the
   keys within :attr:`RationaleGuard.same_image_tolerance`, relative). Edits accepted earlier in the same
   ``edit`` call are compared the same way (all their entries, not only the nearest): a batch cannot
   contradict itself.
3. **visual** (off by default; one VLM pass per sentence) — sentences that describe the image are asked back
   as ``patches.question_template`` ("Does the image show <claim>?"), and flagged when
   ``vlm.yes_probability`` is below ``guard.visual_threshold``.

The editor applies ``guard.policy`` to the flags: ``warn`` logs and commits, ``quarantine`` holds the edit for
``editor.approve``, ``reject`` raises with nothing added. ``benchmarks/bench_guards.py`` measures detection and
false-positive rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from .config import GuardConfig
from .errors import ConfigError
from .records import EditRecord, normalize_answer

GUARD_KINDS = ("injection", "contradiction", "visual")
INJECTION_THRESHOLD = 1.0
SAME_QUESTION_COSINE = 0.9


@dataclass(frozen=True)
class GuardFlag:
    """One reason to distrust an edit."""

    kind: str
    """``injection``, ``contradiction`` or ``visual``."""
    detail: str
    sentence: str | None = None
    score: float | None = None

    def __str__(self) -> str:
        text = f"{self.kind}: {self.detail}"
        if self.sentence:
            short = self.sentence if len(self.sentence) <= 80 else self.sentence[:77] + "..."
            text += f" (in {short!r})"
        return text


@dataclass(frozen=True)
class InjectionRule:
    name: str
    pattern: re.Pattern
    weight: float
    why: str


def _rule(name: str, pattern: str, weight: float, why: str) -> InjectionRule:
    return InjectionRule(name, re.compile(pattern, re.IGNORECASE | re.MULTILINE), weight, why)


INJECTION_RULES: tuple[InjectionRule, ...] = (
    _rule("override_instructions",
          r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.!?]{0,40}\b(instructions?|rules?|prompts?|context|"
          r"guidelines|directions|facts|everything|above|previous|prior|earlier)\b",
          1.0, "asks to ignore or override instructions"),
    _rule("always_answer", r"\b(always|only|must|should|never)\s+(answer|respond|reply|say|output|choose|pick|select|"
          r"return|print)\b", 1.0, "dictates what to answer"),
    _rule("reveal_prompt", r"\b(print|reveal|show|repeat|output|leak)\b[^.!?]{0,30}\b(hidden|system|secret|original)\s+"
          r"(prompt|instructions?|message)|\brepeat\s+after\s+me\b", 1.0, "asks to reveal or parrot prompts"),
    _rule("regardless", r"\b(regardless\s+of|no\s+matter\s+(what|which|how)|irrespective\s+of|whatever\s+the\s+"
          r"(question|image|picture|user))\b", 1.0, "answer independent of the input"),
    _rule("role_play", r"\b(you\s+are\s+now|you're\s+now|act\s+as|pretend\s+(to\s+be|you\s+are|that)|role[- ]?play|"
          r"from\s+now\s+on|you\s+will\s+now|new\s+persona|jailbreak|DAN\s+mode|developer\s+mode)\b",
          1.0, "role play / persona switch"),
    _rule("system_marker", r"(<\|[a-z_]+\|>|\[/?INST\]|<</?SYS>>|</?(system|assistant|user)>|(^|[\s\"'])"
          r"(system|assistant|user)\s*:|###\s*(instruction|system|response))", 1.0, "chat / system-prompt markup"),
    _rule("hidden_characters", "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]", 1.0,
          "invisible or bidi-control characters"),
    _rule("every_question", r"\b(every|all|any|each)\s+(other\s+)?(questions?|quer(y|ies)|prompts?|requests?)\b",
          0.6, "targets all questions"),
    _rule("you_must", r"\byou\s+(must|should|will|need\s+to|have\s+to|are\s+required\s+to|shall|can\s+only)\b",
          0.6, "second-person command"),
    _rule("imperative_opening", r"^\s*[\"']?(ignore|disregard|forget|answer|respond|reply|say|output|print|repeat|"
          r"write|do\s+not|don't|never|always|stop|override|pretend|tell)\b", 0.6, "opens with an imperative"),
    _rule("imperative_clause", r"[;:,]\s*(just\s+|then\s+|simply\s+)?(say|answer|reply|respond|output|print|choose)\b",
          0.6, "a clause commanding an answer"),
    _rule("reply_format", r"\b(reply|respond|answer)\s+(only\s+)?(with|in)\b", 0.6, "dictates the reply format"),
    _rule("addresses_model", r"\b(the|this|you)\s+(model|assistant|AI|chatbot|language\s+model|LLM|bot)\b|\bAI\b",
          0.5, "addresses the model"),
    _rule("url", r"(https?://|www\.)\S+|\b[\w-]+\.(com|net|org|io|ru|xyz|ly)\b", 0.6, "a URL"),
    _rule("code", r"```|<script\b|\beval\s*\(|\bexec\s*\(|\bos\.system|\bsubprocess\b|\brm\s+-rf\b|\bDROP\s+TABLE\b|"
          r"\$\(|\{\{|\}\}|\bimport\s+[a-z_]+\b", 1.0, "code"),
)
"""The injection rule set: (name, regex, weight, why). Edit or extend it; scores are sums of weights."""


def injection_score(text: str) -> tuple[float, list[InjectionRule]]:
    """Score of one text and the rules it matched."""
    matched = [r for r in INJECTION_RULES if r.pattern.search(text)]
    return sum(r.weight for r in matched), matched


# ---------------------------------------------------------------------- claims (subject, relation, value)
_CLAIM = re.compile(
    r"^(?P<subject>.+?)\s+(?P<neg1>(?:do|does|did)\s+not\s+|(?:do|does|did)n't\s+|never\s+)?"
    r"(?P<rel>belongs?\s+to|(?:is|are)\s+owned\s+by|is|are|was|were|has|have|means?|lives?\s+in|comes?\s+from|"
    r"equals?)\s+(?P<neg2>not\s+|never\s+|no\s+longer\s+)?(?P<value>.+)$", re.IGNORECASE)
_REL = {"belong to": "belong to", "belongs to": "belong to", "is owned by": "belong to",
        "are owned by": "belong to", "is": "be", "are": "be", "was": "be", "were": "be", "has": "have",
        "have": "have", "mean": "mean", "means": "mean", "live in": "live in", "lives in": "live in",
        "come from": "come from", "comes from": "come from", "equal": "be", "equals": "be"}
FUNCTIONAL_RELATIONS = ("be", "belong to", "mean", "live in", "come from")
"""Relations with one value per subject: another value is a contradiction (``have`` is many-valued)."""
_DEICTIC = re.compile(r"\b(image|picture|photo|photograph|shown|visible|depicted|this|that|it|here)\b", re.I)


@dataclass(frozen=True)
class Claim:
    subject: str
    relation: str
    value: str
    negated: bool
    deictic: bool = False
    """About the particular image ("the shape in the image", "the shape", "it"), not a general rule
    ("red shapes", "every red shape")."""


def _stem(text: str) -> str:
    words = normalize_answer(text).split()
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def parse_claim(sentence: str) -> Claim | None:
    """(subject, relation, value, negated) of a simple declarative sentence, or None."""
    m = _CLAIM.match(sentence.strip().rstrip(".!?").strip())
    if m is None:
        return None
    rel = _REL.get(" ".join(m.group("rel").lower().split()))
    raw = m.group("subject").strip()
    subject, value = _stem(raw), _stem(m.group("value"))
    if rel is None or not subject or not value:
        return None
    deictic = bool(_DEICTIC.search(raw) or re.fullmatch(r"(the|this|that|its)\s+\w+|it|this|that", raw, re.I))
    return Claim(subject, rel, value, bool(m.group("neg1") or m.group("neg2")), deictic)


def conflicts(new: Claim, old: Claim) -> str | None:
    """Why two claims contradict, or None."""
    if new.subject != old.subject or new.relation != old.relation:
        return None
    if new.value == old.value and new.negated != old.negated:
        return "negates"
    if new.value != old.value and not new.negated and not old.negated and new.relation in FUNCTIONAL_RELATIONS:
        return "states another value than"
    return None


def is_visual_claim(sentence: str) -> bool:
    """A sentence about what the image shows (only these are asked back to the VLM)."""
    return bool(re.search(r"\b(image|picture|photo|photograph|shown|visible|depicted|see|seen)\b", sentence, re.I))


def claim_question(sentence: str, template: str) -> str:
    """METHOD.md §6: the sentence lower-cased, '.' -> '?', put into ``template`` ("Does the image show {claim}")."""
    claim = sentence.strip()
    claim = claim[:1].lower() + claim[1:]
    claim = claim.rstrip(".!") + "?" if not claim.endswith("?") else claim
    return template.format(claim=claim)


class RationaleGuard:
    """Runs the configured checks on one record before the editor commits it."""

    injection_threshold: float = INJECTION_THRESHOLD
    same_image_tolerance: float = 0.05
    """Two keys show 'the same image' when their vision parts differ by at most this fraction of the norm."""

    def __init__(self, config: GuardConfig, editor: Any):
        self.config = config
        self.editor = editor
        if config.visual and not callable(getattr(editor.vlm, "yes_probability", None)):
            raise ConfigError("guard.visual needs a VLM with yes_probability(image, question); this one has none. "
                              "Set guard.visual: false.")

    def check(self, record: EditRecord, image: Image.Image,
              batch: Sequence[tuple[EditRecord, Sequence[Any]]] = ()) -> list[GuardFlag]:
        """Flags for ``record``. ``batch``: the (record, pending entries) of edits accepted earlier in the
        same ``edit`` call, which are not in the codebook yet but must not be contradicted either."""
        flags: list[GuardFlag] = []
        if self.config.injection:
            flags += self.check_injection(record)
        if self.config.contradiction:
            flags += self.check_contradiction(record, image, batch)
        if self.config.visual:
            flags += self.check_visual(record, image)
        return flags

    # ------------------------------------------------------------------ 1. injection
    def check_injection(self, record: EditRecord) -> list[GuardFlag]:
        flags = []
        texts = [("rationale", s) for s in record.rationale] + [("target", record.target), ("prompt", record.prompt)]
        for where, text in texts:
            score, rules = injection_score(text)
            if score >= self.injection_threshold:
                names = ", ".join(f"{r.name} ({r.why}, {r.weight:g})" for r in rules)
                flags.append(GuardFlag("injection", f"{where} reads as instructions to the model, score "
                                       f"{score:.1f} >= {self.injection_threshold:g}: {names}", text, score))
        return flags

    # ------------------------------------------------------------------ 2. contradiction
    neighbours: int = 10
    """How many nearest entries (hubness-scaled, gate ignored) a key is compared with. The semantic tests
    (same question and image; same subject and relation) are strict, so a wider pool costs little precision."""

    def _neighbours(self, key: torch.Tensor) -> list[tuple[int, float]]:
        """The ``neighbours`` nearest entries of ``key`` by the retriever's scaled distance."""
        return self.editor.retriever.nearest(key, self.neighbours)

    def _same_image(self, key: torch.Tensor, entry_key: torch.Tensor) -> bool:
        vd = self.editor.keys.setup.vision_dim
        a, b = key[:vd].double(), entry_key[:vd].double()
        scale = max(float(torch.linalg.vector_norm(b)), 1e-12)
        return float(torch.linalg.vector_norm(a - b)) <= self.same_image_tolerance * scale

    def _answer_pattern(self) -> re.Pattern:
        template = self.editor.config.codebook.answer_template
        pattern = re.escape(template).replace(re.escape("{question}"), "(?P<question>.*)")
        return re.compile("^" + pattern.replace(re.escape("{answer}"), "(?P<answer>.*)") + "$", re.S)

    def _same_question(self, a: str, b: str) -> bool:
        if normalize_answer(a) == normalize_answer(b):
            return True
        emb = self.editor.text_encoder.encode([a, b])
        return float(torch.nn.functional.cosine_similarity(emb[0:1], emb[1:2])) >= SAME_QUESTION_COSINE

    def check_contradiction(self, record: EditRecord, image: Image.Image,
                            batch: Sequence[tuple[EditRecord, Sequence[Any]]] = ()) -> list[GuardFlag]:
        """Answers and rule sentences that contradict the codebook's nearest entries, or an edit earlier
        in the same batch (``batch``: (record, pending entries) pairs)."""
        ed = self.editor
        stored = ed._codebook is not None and len(ed.codebook) > 0
        if not stored and not batch:
            return []
        texts = [record.prompt] + list(record.rationale)
        keys = ed.keys.encode([image] * len(texts), texts)

        def nearby(key: torch.Tensor) -> Iterator[tuple[str, str, str, torch.Tensor, str]]:
            """(edit id, kind, value, key, where) of what ``key`` is compared with."""
            if stored:
                for eid, _ in self._neighbours(key):
                    for c in ed.codebook.entries[eid].contributions:
                        yield c.edit_id, c.kind, c.value, c.key, ""
            for other, pending in batch:
                for entry in pending:
                    yield other.id, entry.kind, entry.value, entry.key, ", same batch"

        flags: list[GuardFlag] = []
        answer_re = self._answer_pattern()
        for edit_id, kind, value, key, where in nearby(keys[0]):
            m = answer_re.match(value) if kind == "answer" else None
            if m is None or normalize_answer(m.group("answer")) == normalize_answer(record.target):
                continue
            if self._same_image(keys[0], key) and self._same_question(m.group("question"), record.prompt):
                flags.append(GuardFlag("contradiction", f"edit {edit_id!r}{where} already answers this question "
                                       f"for a near-identical key with {m.group('answer')!r}, this edit says "
                                       f"{record.target!r}", record.prompt))
        for sentence, new_key in zip(record.rationale, keys[1:]):
            new = parse_claim(sentence)
            if new is None:
                continue
            for edit_id, kind, value, key, where in nearby(new_key):
                old = parse_claim(value) if kind != "answer" else None
                why = conflicts(new, old) if old is not None else None
                if why is None or (new.deictic and not self._same_image(new_key, key)):
                    continue
                flags.append(GuardFlag("contradiction", f"{why} {value!r} (edit {edit_id!r}{where})", sentence))
        return _dedupe(flags)

    # ------------------------------------------------------------------ 3. visual claims
    def check_visual(self, record: EditRecord, image: Image.Image) -> list[GuardFlag]:
        template = self.editor.config.patches.question_template
        flags = []
        for sentence in record.rationale:
            if not is_visual_claim(sentence):
                continue
            question = claim_question(sentence, template)
            p = float(self.editor.vlm.yes_probability(image, question))
            if p < self.config.visual_threshold:
                flags.append(GuardFlag("visual", f"the model does not see this in the image: P(yes)={p:.2f} < "
                                       f"{self.config.visual_threshold:g} for {question!r}", sentence, p))
        return flags


def _dedupe(flags: Sequence[GuardFlag]) -> list[GuardFlag]:
    return list(dict.fromkeys(flags))
