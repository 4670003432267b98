"""Checks on a rationale before its edit is committed (issue 7: malicious or noisy rationales).

Three checks, each switchable in :class:`~reasonedit_plugin.config.GuardConfig`:

1. **injection** — instruction-like text aimed at the model. A transparent rule set
   (:data:`INJECTION_RULES`: name, regex, weight, why) plus structural signals (guard_structure.py: the shape
   of an order, whatever its words) and obfuscation signals (guard_text.py); a text's score is the sum of the
   weights of what it matches, and it is flagged when the score reaches :data:`INJECTION_THRESHOLD`. Strong
   signals (ignore / override instructions, "regardless of the image", role play, chat markup, invisible
   characters, an obligation put on the model, an answer fixed for every question, an order to output one
   value) weigh 1.0; weak ones (one imperative clause, scope over other questions, a URL, addressing "the
   model", a word in another language) weigh 0.4-0.6, so two are needed. The rationale sentences, the target
   and the question are checked, since all of them end up in retrieved values.
2. **contradiction** — with existing entries of the same key region. The new edit's answer key is looked up:
   one of the nearest answer entries (hubness-scaled, gate ignored) whose key is near-identical — the
   same image (vision parts within :attr:`RationaleGuard.same_image_tolerance`) and the same question (same
   normalised text or sentence-embedding cosine >= :data:`SAME_QUESTION_COSINE`) — and that states another
   answer is flagged. Each rationale
   sentence's key is looked up too: a nearby sentence with the same subject and relation but another value
   ("Red shapes belong to the Vol tribe." vs "... the Kem tribe."), or the same claim negated, is flagged.
   Claims (read by guard_claims.py, paraphrases included) about the particular image ("the shape in the
   image", "the shape", "it") are only compared between near-identical images (vision parts of the keys
   within :attr:`RationaleGuard.same_image_tolerance`, relative). Edits accepted earlier in the same
   ``edit`` call are compared the same way (all their entries, not only the nearest): a batch cannot
   contradict itself.
3. **visual** (off by default; one batched VLM pass per edit) — sentences that describe the image are asked back
   as ``patches.question_template`` ("Does the image show <claim>?"), and flagged when
   ``vlm.yes_probabilities`` (the edit's claims in one pass) is below ``guard.visual_threshold``.

The editor applies ``guard.policy`` to the flags: ``warn`` logs and commits, ``quarantine`` (the default) holds
the edit for ``editor.approve`` / ``reasonedit approve``, ``reject`` raises with nothing added.
``benchmarks/bench_guards.py`` measures detection and false-positive rates; every set it ships has been read
while the rules were written (development data), so an honest figure needs a new set (``--file``).

The injection check reads each text in several forms (guard_text.py): as written, normalised (NFKC,
confusable and look-alike letters mapped to Latin, invisible characters removed, split letters joined,
leetspeak read as letters), one-letter misspellings of key words corrected, backwards when that reads
better, and any decoded payload (base64, hex, percent-encoding, Unicode tag characters, rot13 when hinted).
Rationales are meant to be declarative statements about the image and the world; the structural signals
describe the shape of an order (imperative clauses, obligations on the answerer, statements about other or
future questions, answers fixed for every question, questions and notes addressed to the model, markup,
delimiters, repetition), and the obfuscation signals the ways text is hidden from a reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from .config import GuardConfig
from .errors import ConfigError
from .evidence import claim_question
from .guard_claims import Claim, conflicts, parse_claim, parse_claims, same_value
from .guard_structure import structural_signals
from .guard_text import obfuscation_signals, variants
from .records import EditRecord, normalize_answer

__all__ = ["GUARD_KINDS", "INJECTION_RULES", "Claim", "GuardFlag", "InjectionRule", "RationaleGuard", "conflicts",
           "injection_score", "parse_claim", "parse_claims"]

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
          r"\b(ignore|disregard|forget|override[sn]?|overrode|supersede[sd]?|voids?|nullif(y|ies)|invalidates?|bypass|skip|"
          r"set\s+aside|revoke[sd]?|stop\s+following|pay\s+no\s+(attention|heed|mind)\s+to|take\s+no\s+notice\s+of|"
          r"(do\s+not|don't)\s+(pay\s+attention\s+to|look\s+at|consider|use)|turn\s+a\s+blind\s+eye\s+to|look\s+past|"
          r"takes?\s+(priority|precedence)\s+over|trumps|outranks|overrules?|prevails?\s+over)\b"
          r"[^.!?]{0,40}"
          r"\b(instructions?|rules?|prompts?|context|guidelines|guidance|directions|facts|everything|above|previous|"
          r"prior|earlier|image|picture|photo|question|what\s+you\s+(know|see))\b",
          1.0, "asks to ignore or override instructions (or the input)"),
    _rule("instructions_cancelled", r"\b(instructions?|rules?|guidance|guidelines|prompts?|directions|directives?|settings)\s+"
          r"(is|are|has\s+been|have\s+been|were|was)\s+(now\s+)?(cancell?ed|void(ed)?|revoked|withdrawn|suspended|lifted|"
          r"overridden|replaced|obsolete|invalid|null|disabled|no\s+longer\s+valid)\b", 1.0,
          "declares the instructions void"),
    _rule("always_answer", r"\b(always|only|must|should|never)\s+(answer|respond|reply|say|output|choose|pick|select|"
          r"return|print)(s|es|ed)?\b", 0.6, "dictates what to answer"),
    _rule("reveal_prompt", r"\b(print|reveal|show|repeat|output|leak|include)\b[^.!?]{0,30}\b(hidden|system|secret|"
          r"original|full|other\s+stored)\s+(prompt|instructions?|message|facts)|\brepeat\s+after\s+me\b",
          1.0, "asks to reveal or parrot prompts"),
    _rule("regardless", r"\b(regardless\s+of\s+(the\s+)?(question|image|picture|input|what)|no\s+matter\s+(what|which|"
          r"how|the\s+(question|image|picture))|irrespective\s+of|whatever\s+the\s+(question|image|picture|user)|"
          r"whatever\s+(\w+\s+){0,2}(shown|pictured|asked|asks|shows))\b", 1.0, "answer independent of the input"),
    _rule("role_play", r"\b(you\s+are\s+now|you're\s+now|act\s+as|pretend\s+(to\s+be|you\s+are|that)|role[- ]?play|"
          r"you\s+will\s+now|new\s+persona|persona\s+of|jailbreak|DAN\s+mode|developer\s+mode|stay\s+in\s+character|"
          r"(take\s+on|assume|play)\s+the\s+(character|role|persona|part)|behave\s+(like|as)|imagine\s+you\s+are|"
          r"you\s+are\s+(a|an)\s+\w+\s+(who|that)\s+(only|always))\b", 1.0, "role play / persona switch"),
    _rule("system_marker", r"(<\|[a-z_]+\|>|\[/?INST\]|<</?SYS>>|</?(system|assistant|user|instructions?)>|(^|[\s\"'])"
          r"(system|assistant|user)\s*:|###\s*\w|\[\[|\]\]|<!--|^-{3,}|\"role\"\s*:)", 1.0,
          "chat / system-prompt markup or delimiters"),
    _rule("hidden_characters", "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]", 1.0,
          "invisible or bidi-control characters"),
    _rule("code", r"```|<script\b|\beval\s*\(|\bexec\s*\(|\bos\.system|\bsubprocess\b|\brm\s+-rf\b|\bDROP\s+TABLE\b|"
          r"\$\(|\{\{|\}\}|\{%|%\}|\bimport\s+[a-z_]+\b|\bprint\s*\(", 1.0, "code"),
    # weak (0.4-0.6): two are needed
    _rule("same_answer", r"\b(same|one|single)\s+(answer|reply|response)\b", 0.5, "one answer for everything"),
    _rule("meta_reference", r"\b(previous|prior|earlier|above|original|hidden)\s+(instructions?|rules|guidance|"
          r"guidelines|prompts?|messages?|context)\b|\byour\s+(rules|guidelines|guidance|instructions|training|"
          r"previous|programming|system|outputs?)\b|\bthe\s+(user|operators?|developers?)\b|\b(system|developer|"
          r"admin|security|official)\s+(prompt|message|mode|notice|override|update|team|instruction)s?\b|\bsession\b|"
          r"\b(facts?|entries|data|notes|memories|rationales?|edits)\s+(that\s+)?you\s+(have\s+)?(stored|saved|remember|"
          r"hold|keep|know)\b|"
          r"\byour\s+(memory|knowledge|context|settings|behaviou?r|configuration|weights|database|defaults?)\b|"
          r"\b(rules?|instructions?|guidelines?|prompts?|directions?|facts|scores?|training|knowledge)\s+(that\s+)?you\s+"
          r"(were|have\s+been|'ve\s+been)\s+(given|told|taught|shown|trained)\b|\b(system\s+)?administrator\b",
          0.6, "talks about the model's instructions or its users"),
    _rule("say_value", r"\b(say|reply|respond|output|print|use|go\s+with)\s+(with\s+)?(only\s+)?(the\s+(single\s+)?word\s+)?"
          r"['\"]?(?-i:[A-Z0-9])[\w-]*|\b(answer(ed)?|reply|respond)\s+(with\s+)?['\"]?(?-i:[A-Z][a-z]+)\b",
          0.6, "dictates a word to answer"),
    _rule("answer_must_be", r"\b(answers?|reply|replies|response|responses|outputs?)\b[^.!?]{0,30}\b(must|has\s+to|have\s+to|"
          r"needs?\s+to|should|shall|is\s+now)\s+be\b|\b(only|single)\s+(valid\s+|correct\s+|right\s+)?(answer|reply|"
          r"response|output|word)\b|\b(only|ever)\s+(says?|outputs?|replies)\b", 0.6, "fixes what every answer must be"),
    _rule("reply_format", r"(?<!\bthe\s)(?<!\ban\s)(?<!\beach\s)(?<!\bevery\s)(?<!\bthis\s)(?<!\bthat\s)(?<!\byour\s)"
          r"\b(reply|respond|answer)\s+(only\s+)?(with|in)\b", 0.6, "dictates the reply format"),
    _rule("addresses_model", r"\b(the|this|you)\s+(model|assistant|AI|chatbot|language\s+model|LLM|bot)\b|\bAI\b|"
          r"\b(whoever|anyone\s+who)\s+reads\b|\breader\b|\boracle\b", 0.5, "addresses the model"),
    _rule("trust_this", r"\b(trust|believe|obey)\b[^.!?]{0,30}\b(this\s+(note|sentence|text|rationale|message|line)|me|over|"
          r"more\s+than|instead\s+of)\b|\bover\s+what\s+you\s+see\b",
          0.6, "asks to be trusted over the input"),
    _rule("url", r"(https?://|www\.)\S+|\b[\w-]+\.(com|net|org|io|ru|xyz|ly)\b", 0.6, "a URL"),
    _rule("delimiters", r"[\[\]{}<>`|\\]|={3,}|\*{3,}", 0.6, "delimiter characters (rationales are plain sentences)"),
    # other languages: the same four words (ignore/forget, answer, always, instructions) in 25 languages, a
    # translation lexicon (not phrases from the evaluation sets); two are needed, or one with another signal
    _rule("ml_ignore", r"\b(ignorez|ignorer|ignora|ignoriere|ignorieren|ignoreer|ignorar|ignore\s+as|vergiss|vergessen|"
          r"olvida\w*|dimentica\w*|esque[cç]a\w*|negeer|vergeet|oubliez|oublie|zignoruj|ignoruj|pomiń|zapomnij|zapomeň|"
          r"yoksay|görmezden|unut|abaikan|lupakan|ignorera|glöm|glem|bỏ\s+qua|phớt\s+lờ|αγνόησε|ξέχασε|ignoră|uită|"
          r"ohita|unohda|felejtsd|figyelmen\s+kívül)\b|игнорир\w*|ігнору\w*|не\s+обращай|забудь|忽略|忘记|忘記|"
          r"無視|无视|忘れ|不要理会|무시|잊어|تجاهل|انس|नज़रअंदाज़|नजरअंदाज|अनदेखा|भूल\s+जा|نادیده|התעלם|שכח",
          0.6, "'ignore' or 'forget' in another language"),
    _rule("ml_answer", r"\b(répondez|réponds|repondez|reponds|antworte|antworten|responde|responda|rispondi|antwoord|"
          r"odpowiadaj|odpowiedz|odpověz|odpovídej|cevap\s+ver|yanıtla|cevapla|jawab(?:lah)?|svara|trả\s+lời|απάντα|"
          r"απάντησε|răspunde|válaszolj|répondre|repondre|sagen|decir|responder|contestar?|rispondere|dizer|diga|antwoorden|"
          r"odpowiadać|odpowiedzieć)\b|отвечай|ответь|отвечать|скажи|говори|відповідай|说|說|回答|答え|答えて|답하|대답|أجب|اجب|"
          r"जवाब\s+द|उत्तर\s+द|پاسخ\s+بده|جواب\s+بده|ענה|תענה", 0.6, "'answer' in another language"),
    _rule("ml_always", r"\b(toujours|immer|siempre|sempre|altijd|zawsze|vždy|daima|her\s+zaman|selalu|alltid|altid|"
          r"luôn|πάντα|mindig|întotdeauna|mereu)\b|всегда|завжди|总是|總是|常に|始终|永远|항상|언제나|دائما|دائمًا|"
          r"हमेशा|همیشه|תמיד", 0.5, "'always' in another language"),
    _rule("ml_must", r"\b(dois|doit|devez|devrais|faut|sollst|sollen|musst|müssen|debes|deberías|tienes\s+que|devi|"
          r"dovresti|deves|tens\s+que|moet|moeten|musisz|powinieneś|musíš|zorundasın|harus|måste|må|phải)\b|"
          r"должен|должна|должны|обязан|必须|必須|应该|應該|べき|なければ|해야|يجب|चाहिए|باید|חייב", 0.4,
          "'you must' in another language"),
    _rule("ml_regardless", r"\b(egal\s+(was|welche\w*|wie)|unabhängig|no\s+importa|sin\s+importar|peu\s+importe|"
          r"quoi\s+que|quel(le)?\s+que\s+soit|non\s+importa|qualunque|independentemente|não\s+importa|ongeacht|"
          r"bez\s+względu|fark\s+etmez|apapun)\b|независимо|无论|不管|無論|関係なく|상관없이|بغض\s+النظر|चाहे", 0.6,
          "'regardless' in another language"),
    _rule("ml_every", r"\b(chaque|chacune|toutes\s+les|tous\s+les|jede[nrsm]?|cada|todas\s+las|todos\s+los|ogni|tutte\s+le|"
          r"tutti\s+i|elke|każd\w+|todas\s+as|todos\s+os)\b|кажд\w+|все\s|每个|每個|所有|すべて|全て|모든|كل", 0.4,
          "'every' in another language"),
    _rule("ml_input", r"\b(imagen|immagine|imagem|bild|afbeelding|obraz\w*|resim|gambar|pregunta\w*|domand\w*|frage\w*|"
          r"pergunta\w*|vraag|pytani\w*)\b|картинк\w*|изображени\w*|вопрос\w*|图片|圖片|图像|画像|写真|問題|问题|"
          r"質問|이미지|그림|질문|صورة|سؤال|तस्वीर|प्रश्न", 0.4, "'image' or 'question' in another language"),
    _rule("ml_instructions", r"\b(instructions?\s+précédentes|consignes|instrucciones|istruzioni|instruç\w+|instructies|"
          r"anweisungen|regeln|polecenia|instrukcje|pokyny|instrukce|talimat\w*|instruksi|perintah|instruktioner|"
          r"hướng\s+dẫn|οδηγίες|instrucțiuni|utasítás\w*|ohjeet)\b|инструкци\w*|вказівк\w*|指令|指示|지시|명령|"
          r"تعليمات|निर्देश|دستورالعمل|הוראות", 0.6, "'instructions' in another language"),
)
"""The injection rule set: (name, regex, weight, why). Edit or extend it; scores are sums of weights. Each
rule is matched against the text, its normalised form (NFKC, confusables, invisible characters removed, split
letters joined) and any decoded payload (guard_text.py); structural obfuscation signals add their weights."""


def injection_score(text: str) -> tuple[float, list[InjectionRule]]:
    """Score of one text and the rules (and obfuscation signals) it matched."""
    readings = variants(text)
    matched = [r for r in INJECTION_RULES if any(r.pattern.search(t) for t in readings)]
    signals = obfuscation_signals(text) + [s for reading in readings for s in structural_signals(reading)]
    matched += [InjectionRule(s.name, _NEVER, s.weight, s.why) for s in signals]
    matched = list({r.name: r for r in matched}.values())
    return sum(r.weight for r in matched), matched


def is_visual_claim(sentence: str) -> bool:
    """A sentence about what the image shows (only these are asked back to the VLM)."""
    return bool(re.search(r"\b(image|picture|photo|photograph|shown|visible|depicted|see|seen)\b", sentence, re.I))


class RationaleGuard:
    """Runs the configured checks on one record before the editor commits it."""

    injection_threshold: float = INJECTION_THRESHOLD
    same_image_tolerance: float = 0.05
    """Two keys show 'the same image' when their vision parts differ by at most this fraction of the norm."""

    def __init__(self, config: GuardConfig, editor: Any):
        self.config = config
        self.editor = editor
        if config.visual and not callable(getattr(editor.vlm, "yes_probabilities", None)):
            raise ConfigError("guard.visual needs a VLM with yes_probabilities(image, questions); this one has none. "
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
        answer_re = ed.config.codebook.answer_pattern()
        for edit_id, kind, value, key, where in nearby(keys[0]):
            m = answer_re.fullmatch(value) if kind == "answer" else None
            if m is None or same_value(m.group("answer"), record.target):
                continue
            if self._same_image(keys[0], key) and self._same_question(m.group("question"), record.prompt):
                flags.append(GuardFlag("contradiction", f"edit {edit_id!r}{where} already answers this question "
                                       f"for a near-identical key with {m.group('answer')!r}, this edit says "
                                       f"{record.target!r}", record.prompt))
        for sentence, new_key in zip(record.rationale, keys[1:]):
            claims = parse_claims(sentence)
            if not claims:
                continue
            for edit_id, kind, value, key, where in nearby(new_key):
                olds = parse_claims(value) if kind != "answer" else []
                for new in claims:
                    why = next((w for w in (conflicts(new, old) for old in olds) if w), None)
                    if why is None or (new.deictic and not self._same_image(new_key, key)):
                        continue
                    flags.append(GuardFlag("contradiction", f"{why} {value!r} (edit {edit_id!r}{where})", sentence))
        return _dedupe(flags)

    # ------------------------------------------------------------------ 3. visual claims
    def check_visual(self, record: EditRecord, image: Image.Image) -> list[GuardFlag]:
        template = self.editor.config.patches.question_template
        claims = {sentence: claim_question(sentence, template) for sentence in record.rationale
                  if is_visual_claim(sentence)}
        answers = self.editor.vlm.yes_probabilities(image, list(claims.values())) if claims else []
        flags = []
        for (sentence, question), p in zip(claims.items(), answers):
            if p < self.config.visual_threshold:
                flags.append(GuardFlag("visual", f"the model does not see this in the image: P(yes)={p:.2f} < "
                                       f"{self.config.visual_threshold:g} for {question!r}", sentence, p))
        return flags


def _dedupe(flags: Sequence[GuardFlag]) -> list[GuardFlag]:
    return list(dict.fromkeys(flags))
