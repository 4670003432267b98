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

The editor applies ``guard.policy`` to the flags: ``warn`` logs and commits, ``quarantine`` (the default) holds
the edit for ``editor.approve`` / ``reasonedit approve``, ``reject`` raises with nothing added.
``benchmarks/bench_guards.py`` measures detection and false-positive rates on a development set (used to write
the rules) and on a held-out test set (not used to write them).

The injection check reads each text in several forms (guard_text.py): as written, normalised (NFKC,
confusable letters mapped to Latin, invisible characters removed, letters split by dots or spaces joined)
and any decoded payload; structural signals (mixed scripts inside a word, full-width letters, invisible
characters, encoded payloads, delimiters and markup) count without any word list. Rationales are meant to
be declarative statements about the image and the world; the weak rules describe the shape of an order
(imperative openings, second-person obligations, standing orders, "every question", a dictated answer
word, talk about the model's instructions), so two of them are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from .config import GuardConfig
from .errors import ConfigError
from .guard_text import obfuscation_signals, variants
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


_NEVER = re.compile(r"(?!)")


INJECTION_RULES: tuple[InjectionRule, ...] = (
    # strong (1.0): one is enough
    _rule("override_instructions",
          r"\b(ignore|disregard|forget|override|bypass|skip|set\s+aside|revoke[sd]?|stop\s+following)\b[^.!?]{0,40}"
          r"\b(instructions?|rules?|prompts?|context|guidelines|guidance|directions|facts|everything|above|previous|"
          r"prior|earlier|image|picture|photo|question|what\s+you\s+(know|see))\b",
          1.0, "asks to ignore or override instructions (or the input)"),
    _rule("always_answer", r"\b(always|only|must|should|never)\s+(answer|respond|reply|say|output|choose|pick|select|"
          r"return|print)\b", 1.0, "dictates what to answer"),
    _rule("reveal_prompt", r"\b(print|reveal|show|repeat|output|leak|include)\b[^.!?]{0,30}\b(hidden|system|secret|"
          r"original|full|other\s+stored)\s+(prompt|instructions?|message|facts)|\brepeat\s+after\s+me\b",
          1.0, "asks to reveal or parrot prompts"),
    _rule("regardless", r"\b(regardless\s+of\s+(the\s+)?(question|image|picture|input|what)|no\s+matter\s+(what|which|"
          r"how|the\s+(question|image|picture))|irrespective\s+of|whatever\s+the\s+(question|image|picture|user|shape)|"
          r"whatever\s+(is\s+)?(shown|pictured|asked))\b", 1.0, "answer independent of the input"),
    _rule("role_play", r"\b(you\s+are\s+now|you're\s+now|act\s+as|pretend\s+(to\s+be|you\s+are|that)|role[- ]?play|"
          r"you\s+will\s+now|new\s+persona|persona\s+of|jailbreak|DAN\s+mode|developer\s+mode|stay\s+in\s+character|"
          r"(take\s+on|assume)\s+the\s+(character|role|persona)|behave\s+(like|as)|imagine\s+you\s+are|"
          r"you\s+are\s+(a|an)\s+\w+\s+(who|that)\s+(only|always))\b", 1.0, "role play / persona switch"),
    _rule("system_marker", r"(<\|[a-z_]+\|>|\[/?INST\]|<</?SYS>>|</?(system|assistant|user|instructions?)>|(^|[\s\"'])"
          r"(system|assistant|user)\s*:|###\s*\w|\[\[|\]\]|<!--|^-{3,}|\"role\"\s*:)", 1.0,
          "chat / system-prompt markup or delimiters"),
    _rule("hidden_characters", "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]", 1.0,
          "invisible or bidi-control characters"),
    _rule("code", r"```|<script\b|\beval\s*\(|\bexec\s*\(|\bos\.system|\bsubprocess\b|\brm\s+-rf\b|\bDROP\s+TABLE\b|"
          r"\$\(|\{\{|\}\}|\{%|%\}|\bimport\s+[a-z_]+\b|\bprint\s*\(", 1.0, "code"),
    # weak (0.4-0.6): two are needed
    _rule("every_question", r"\b(every|all|any|each)\s+(other\s+|future\s+|of\s+the\s+following\s+)?(questions?|"
          r"quer(y|ies)|prompts?|requests?|inputs?|images?|pictures?|outputs?|answers?|replies|responses?)\b|"
          r"\b(to|for)\s+(everything|anything|all\s+of\s+(them|the\s+following))\b",
          0.6, "targets all questions"),
    _rule("same_answer", r"\b(same|one|single)\s+(answer|reply|response)\b", 0.5, "one answer for everything"),
    _rule("from_now_on", r"\b(from\s+(now|here)\s+on|until\s+further\s+notice|for\s+the\s+rest\s+of|going\s+forward|"
          r"henceforth|from\s+this\s+point)\b", 0.6, "a standing order"),
    _rule("you_must", r"\byou\s+(must|should|will|need\s+to|have\s+to|are\s+required\s+to|shall|can\s+only)\b",
          0.6, "second-person command"),
    _rule("meta_reference", r"\b(previous|prior|earlier|above|original|hidden)\s+(instructions?|rules|guidance|"
          r"guidelines|prompts?|messages?|context)\b|\byour\s+(rules|guidelines|guidance|instructions|training|"
          r"previous|programming|system|outputs?)\b|\bthe\s+(user|operators?|developers?)\b|\b(system|developer|"
          r"admin|security|official)\s+(prompt|message|mode|notice|override|update|team|instruction)s?\b|\bsession\b",
          0.6, "talks about the model's instructions or its users"),
    _rule("imperative_opening", r"^\s*[\"']?(please\s+|kindly\s+|just\s+)?(ignore|disregard|forget|answer|respond|"
          r"reply|say|output|print|repeat|write|do\s+not|don't|never|always|stop|override|pretend|tell|use|go\s+with|"
          r"treat|include|take|behave|act|assume|imagine|apply|decode|execute|reveal|choose|pick|select|return|give|"
          r"switch|trust|believe|obey|follow|let's|let\s+us)\b", 0.6, "opens with an imperative"),
    _rule("imperative_clause", r"[;:,—–-]\s*(just\s+|then\s+|simply\s+)?(say|answer|reply|respond|output|print|choose|"
          r"use|go\s+with)\b|\b(and|then)\s+(just\s+|simply\s+)?(say|output|print|reply|respond|answer)\b(?!\s+(is|to|of)\b)",
          0.6, "a clause commanding an answer"),
    _rule("say_value", r"\b(say|reply|respond|output|print|use|go\s+with)\s+(with\s+)?(only\s+)?(the\s+(single\s+)?word\s+)?"
          r"['\"]?(?-i:[A-Z0-9])[\w-]*|\b(answer(ed)?|reply|respond)\s+(with\s+)?['\"]?(?-i:[A-Z][a-z]+)\b",
          0.6, "dictates a word to answer"),
    _rule("answer_must_be", r"\b(answers?|reply|replies|response|responses|outputs?)\b[^.!?]{0,30}\b(must|has\s+to|have\s+to|"
          r"needs?\s+to|should|shall|is\s+now)\s+be\b|\b(only|single)\s+(valid\s+|correct\s+|right\s+)?(answer|reply|"
          r"response|output|word)\b|\b(only|ever)\s+(says?|outputs?|replies)\b", 0.6, "fixes what every answer must be"),
    _rule("reply_format", r"\b(reply|respond|answer)\s+(only\s+)?(with|in)\b", 0.6, "dictates the reply format"),
    _rule("addresses_model", r"\b(the|this|you)\s+(model|assistant|AI|chatbot|language\s+model|LLM|bot)\b|\bAI\b|"
          r"\b(whoever|anyone\s+who)\s+reads\b|\breader\b|\boracle\b", 0.5, "addresses the model"),
    _rule("question_to_model", r"^\s*(can|could|would|will)\s+you\b|\bwhy\s+not\s+(just\s+)?\w+|\bi'?d\s+appreciate\s+it\s+if\s+you\b",
          0.5, "asks the model to do something"),
    _rule("trust_this", r"\b(trust|believe|obey)\b[^.!?]{0,30}\b(this|me|it|sentence|note|over|more)\b|\bover\s+what\s+you\s+see\b",
          0.6, "asks to be trusted over the input"),
    _rule("url", r"(https?://|www\.)\S+|\b[\w-]+\.(com|net|org|io|ru|xyz|ly)\b", 0.6, "a URL"),
    _rule("delimiters", r"[\[\]{}<>`|\\]|={3,}|\*{3,}", 0.6, "delimiter characters (rationales are plain sentences)"),
    # other languages: the same instructions, other words
    _rule("ml_ignore", r"\b(ignorez|ignorer|ignora|ignoriere|ignorieren|ignoreer|ignorar|ignore\s+as|vergiss|vergessen|"
          r"olvida\w*|dimentica\w*|esque[cç]a\w*|negeer|oubliez|oublie)\b|игнорир\w*|не\s+обращай|忽略|無視|无视|"
          r"不要理会", 0.6, "'ignore' in another language"),
    _rule("ml_answer", r"\b(répondez|réponds|antworte|antworten|responde|responda|rispondi|antwoord)\b|отвечай|ответь|"
          r"回答|答え|答えて", 0.6, "'answer' in another language"),
    _rule("ml_always", r"\b(toujours|immer|siempre|sempre|altijd)\b|всегда|总是|常に|始终|永远", 0.5,
          "'always' in another language"),
    _rule("ml_instructions", r"\b(instructions?\s+précédentes|instrucciones|istruzioni|instruç\w+|instructies|"
          r"anweisungen|regeln)\b|инструкци\w*|指令|指示", 0.6, "'instructions' in another language"),
)
"""The injection rule set: (name, regex, weight, why). Edit or extend it; scores are sums of weights. Each
rule is matched against the text, its normalised form (NFKC, confusables, invisible characters removed, split
letters joined) and any decoded payload (guard_text.py); structural obfuscation signals add their weights."""


def injection_score(text: str) -> tuple[float, list[InjectionRule]]:
    """Score of one text and the rules (and obfuscation signals) it matched."""
    readings = variants(text)
    matched = [r for r in INJECTION_RULES if any(r.pattern.search(t) for t in readings)]
    matched += [InjectionRule(s.name, _NEVER, s.weight, s.why) for s in obfuscation_signals(text)]
    matched = list({r.name: r for r in matched}.values())
    return sum(r.weight for r in matched), matched


# ---------------------------------------------------------------------- claims (subject, relation, value)
_CLAIM = re.compile(
    r"^(?P<subject>.+?)\s+(?P<neg1>(?:do|does|did)\s+not\s+|(?:do|does|did)n't\s+|never\s+)?"
    r"(?P<rel>belongs?\s+to|(?:is|are)\s+owned\s+by|(?:is|are)\s+(?:(?:always|never|not)\s+)?worth|scores?|owns?|"
    r"is|are|was|were|has|have|means?|lives?\s+in|comes?\s+from|equals?)\s+(?P<neg2>not\s+|never\s+|no\s+longer\s+)?"
    r"(?P<value>.+)$", re.IGNORECASE)
_REL = {"belong to": "belong to", "belongs to": "belong to", "is owned by": "belong to",
        "are owned by": "belong to", "is": "be", "are": "be", "was": "be", "were": "be", "has": "have",
        "have": "have", "mean": "mean", "means": "mean", "live in": "live in", "lives in": "live in",
        "come from": "come from", "comes from": "come from", "equal": "be", "equals": "be", "score": "worth",
        "scores": "worth", "is worth": "worth", "are worth": "worth", "own": "owns", "owns": "owns"}
FUNCTIONAL_RELATIONS = ("be", "belong to", "mean", "live in", "come from", "worth")
_CLAUSE_END = re.compile(r"\s*(,|;|\(|\s-\s|\s(as|according|because|since|which|so|but|and\s+so)\s).*$", re.I)
_NUMBERS = {str(i): w for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                            "thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
                                            "twenty".split())}
_QUANTIFIERS = {"each", "every", "all", "any"}
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
    """Normalised words: no articles or quantifiers, digits as number words, a plural 's' dropped."""
    words = [_NUMBERS.get(w, w) for w in normalize_answer(text).split() if w not in _QUANTIFIERS]
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def parse_claim(sentence: str) -> Claim | None:
    """(subject, relation, value, negated) of a simple declarative sentence, or None."""
    m = _CLAIM.match(sentence.strip().rstrip(".!?").strip())
    if m is None:
        return None
    rel_words = m.group("rel").lower().split()
    negated_rel = len(rel_words) == 3 and rel_words[1] in ("never", "not")
    rel = _REL.get(" ".join(w for w in rel_words if w not in ("always", "never", "not")))
    raw = m.group("subject").strip()
    subject, value = _stem(raw), _stem(_CLAUSE_END.sub("", m.group("value")))
    if rel == "owns":  # "the Kem tribe owns green shapes" = "green shapes belong to the Kem tribe"
        subject, value, rel, raw = value, subject, "belong to", m.group("value")
    if rel is None or not subject or not value:
        return None
    deictic = bool(_DEICTIC.search(raw) or re.fullmatch(r"(the|this|that|its)\s+\w+|it|this|that", raw, re.I))
    return Claim(subject, rel, value, bool(m.group("neg1") or m.group("neg2") or negated_rel), deictic)


def conflicts(new: Claim, old: Claim) -> str | None:
    """Why two claims contradict, or None."""
    if new.subject != old.subject or new.relation != old.relation:
        return None
    a, b = set(new.value.split()), set(old.value.split())
    same = a <= b or b <= a  # "Bexa" restates "the island of Bexa"
    if same and new.negated != old.negated:
        return "negates"
    if not same and not new.negated and not old.negated and new.relation in FUNCTIONAL_RELATIONS:
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
        if not flags and len(record.rationale) > 1:  # markup or orders spread over sentences
            whole = " ".join(record.rationale)
            score, rules = injection_score(whole)
            if score >= self.injection_threshold:
                names = ", ".join(f"{r.name} ({r.why}, {r.weight:g})" for r in rules)
                flags.append(GuardFlag("injection", f"the rationale as a whole reads as instructions to the model, "
                                       f"score {score:.1f} >= {self.injection_threshold:g}: {names}", whole, score))
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
