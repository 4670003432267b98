"""Claims the contradiction check compares (issue 14): a rationale sentence read as (subject, relation, value).

"Red shapes belong to the Vol tribe." is (red shape, belong to, vol tribe). Paraphrases are read into the
same form, so that a contradiction is caught however it is worded and a restatement is not taken for one:

* relations by meaning: "belongs to", "is owned / claimed / held by", "is assigned to", and the active
  "the Kem tribe owns / claims / holds" (subject and value swapped) are one relation; "is worth", "scores",
  "earns", "yields", "is valued at", "counts for" are another;
* numbers as values: "25", "twenty-five" and "twenty five" are one value (:func:`canonical_numbers`);
* value first: "fire is the element of blue shapes" = "the element of blue shapes is fire";
* negation and correction: "do not belong to", "are never", "are not owned by" negate; "not X but Y",
  "Y rather than X", "Y instead of X", "Y, not X", "Y and not X" state Y.

The parser reads simple declarative sentences only; anything else is no claim (and so never a conflict).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .records import normalize_answer

__all__ = ["Claim", "FUNCTIONAL_RELATIONS", "canonical_numbers", "conflicts", "parse_claim", "parse_claims",
           "same_value"]

_OWNED = r"(?:owned|claimed|held|possessed|controlled|ruled|kept)\s+by|(?:given|assigned|allotted|allocated)\s+to"
_CLAIM = re.compile(
    r"^(?P<subject>.+?)\s+(?P<neg1>(?:do|does|did)\s+not\s+|(?:do|does|did)n't\s+|never\s+)?"
    r"(?P<rel>belongs?\s+to|(?:is|are|was|were|(?:has|have)\s+(?:always\s+)?been)\s+"
    rf"(?P<negp>not\s+|never\s+|no\s+longer\s+)?(?:always\s+)?(?:{_OWNED})|"
    r"(?:is|are)\s+(?:(?:always|never|not)\s+)?worth|(?:is|are)\s+valued\s+at|counts?\s+for|scores?|earns?|yields?|"
    r"owns?|claims?|holds?|possess(?:es)?|controls?|"
    r"is|are|was|were|has|have|means?|lives?\s+in|comes?\s+from|equals?)\s+(?P<neg2>not\s+|never\s+|no\s+longer\s+)?"
    r"(?P<value>.+)$", re.IGNORECASE)
_REL = {"belong to": "belong to", "belongs to": "belong to", "owned by": "belong to", "claimed by": "belong to",
        "held by": "belong to", "possessed by": "belong to", "controlled by": "belong to", "ruled by": "belong to",
        "kept by": "belong to", "given to": "belong to", "assigned to": "belong to", "allotted to": "belong to",
        "allocated to": "belong to", "is": "be", "are": "be", "was": "be", "were": "be", "has": "have",
        "have": "have", "mean": "mean", "means": "mean", "live in": "live in", "lives in": "live in",
        "come from": "come from", "comes from": "come from", "equal": "be", "equals": "be", "score": "worth",
        "scores": "worth", "earn": "worth", "earns": "worth", "yield": "worth", "yields": "worth", "worth": "worth",
        "valued at": "worth", "count for": "worth", "counts for": "worth", "own": "owns", "owns": "owns",
        "claim": "owns", "claims": "owns", "hold": "owns", "holds": "owns", "possess": "owns", "possesses": "owns",
        "control": "owns", "controls": "owns"}
FUNCTIONAL_RELATIONS = ("be", "belong to", "mean", "live in", "come from", "worth")
"""Relations with one value per subject: another value is a contradiction (``have`` is many-valued)."""
_REL_FILLER = {"is", "are", "was", "were", "has", "have", "been", "always", "never", "not", "no", "longer"}
_NOT_BUT = re.compile(r"\bnot\s+(?:(?P<p1>to|by|in|from|at|for)\s+)?[^,;.]+?,?\s+but\s+(?:rather\s+)?"
                      r"(?:(?P<p2>to|by|in|from|at|for)\s+)?", re.I)
_CLAUSE_END = re.compile(r"\s*(,|;|\(|\s-\s|\s(as|according|because|since|which|so|but|and\s+so|rather\s+than|"
                         r"instead\s+of|and\s+not|not)\s).*$", re.I)
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
         "seventeen eighteen nineteen".split()
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_ASIDE = re.compile(r",[^,]{1,40},")
_DISCOURSE = re.compile(r"^(?:(?:actually|in\s+fact|indeed|however|but|so|well|also|and|note\s+that|remember\s+that|"
                        r"of\s+course|correction|by\s+the\s+way|in\s+truth|really)\b\s*[:,]?\s*)+", re.I)
_VALUE_FIRST = re.compile(r"^(?P<value>\w+(?:\s+\w+)?)\s+(?P<copula>is|are)\s+the\s+(?P<noun>\w+)\s+of\s+"
                          r"(?P<subject>.+)$", re.I)
"""'Fire is the element of blue shapes' -> 'the element of blue shapes is Fire'."""
_CLAUSES = re.compile(r";|,\s*(?:and|but|while|whereas)\s+", re.I)
_ANAPHORIC = re.compile(r"^(?:their|its|his|her|they|them|these|those|such)\b", re.I)
"""A subject that points back ("their element", "they"): resolved against the clause before it in
:func:`parse_claims`, otherwise compared on the same image only (like "it")."""
_QUANTIFIERS = {"each", "every", "all", "any"}
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


def canonical_numbers(words: list[str]) -> list[str]:
    """Number words as digits: ["twenty", "five", "point"] -> ["25", "point"], ["nine"] -> ["9"]; "hundred"
    multiplies ("two hundred five" -> "205")."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w not in _TENS and w not in _UNITS and w != "hundred":
            out.append(w)
            i += 1
            continue
        total, current = 0, 0
        while i < len(words) and (words[i] in _TENS or words[i] in _UNITS or words[i] == "hundred"
                                  or (words[i] == "and" and current and i + 1 < len(words)
                                      and (words[i + 1] in _TENS or words[i + 1] in _UNITS))):
            w = words[i]
            if w == "hundred":
                current = max(current, 1) * 100
            elif w in _TENS:
                current += _TENS[w]
            elif w in _UNITS:
                current += _UNITS.index(w)
            i += 1
        out.append(str(total + current))
    return out


def _stem(text: str) -> str:
    """Normalised words: no articles or quantifiers, numbers as digits, a plural 's' dropped."""
    words = canonical_numbers([w for w in normalize_answer(text).split() if w not in _QUANTIFIERS])
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def same_value(a: str, b: str) -> bool:
    """Two answers say the same ("25" / "twenty-five", "The Vol" / "vol")."""
    return _stem(a) == _stem(b)


def parse_claim(sentence: str) -> Claim | None:
    """(subject, relation, value, negated) of a simple declarative sentence, or None."""
    text = _DISCOURSE.sub("", sentence.strip().rstrip(".!?").strip())
    text = _NOT_BUT.sub(lambda m: (m.group("p2") or m.group("p1") or "") + " ", text)  # not X but Y -> Y
    flipped = _VALUE_FIRST.match(text)
    if flipped:
        text = f"the {flipped['noun']} of {flipped['subject']} {flipped['copula']} {flipped['value']}"
    m = _CLAIM.match(" ".join(text.split()))
    if m is None:
        return None
    rel_words = m.group("rel").lower().split()
    rel = _REL.get(" ".join(w for w in rel_words if w not in _REL_FILLER) or " ".join(rel_words))
    if rel is None:
        rel = _REL.get(" ".join(rel_words))
    negated_rel = bool(m.group("negp")) or (len(rel_words) == 3 and rel_words[1] in ("never", "not"))
    raw = _ASIDE.sub("", m.group("subject")).strip()  # "Green shapes, for the record, are ..."
    subject, value = _stem(raw), _stem(_CLAUSE_END.sub("", m.group("value")))
    if rel == "owns":  # "the Kem tribe owns green shapes" = "green shapes belong to the Kem tribe"
        subject, value, rel, raw = value, subject, "belong to", m.group("value")
    if rel is None or not subject or not value:
        return None
    deictic = bool(_DEICTIC.search(raw) or _ANAPHORIC.match(raw)
                   or re.fullmatch(r"(the|this|that|its)\s+\w+|it|this|that", raw, re.I))
    return Claim(subject, rel, value, bool(m.group("neg1") or m.group("neg2") or negated_rel), deictic)


def parse_claims(sentence: str) -> list[Claim]:
    """The claims of a sentence: the sentence itself, or each clause joined by ";" or ", and / but / while"
    ("Green shapes are earth, and blue shapes are fire"). A clause whose subject points back ("their element
    is wind") takes the subject of the claim before it ("element of green shape"), or is dropped."""
    parts = [p for p in _CLAUSES.split(sentence) if p.strip()]
    if len(parts) < 2:
        whole = parse_claim(sentence)
        return [whole] if whole is not None else []
    claims: list[Claim] = []
    antecedent = None
    for part in parts:
        claim = parse_claim(part)
        words = part.split()
        if claim is not None and _ANAPHORIC.match(part.strip()):
            if antecedent is None:  # "Green shapes do not stand for fire; their element is wind": no antecedent
                continue
            rest = " ".join(claim.subject.split()[1:]) if len(claim.subject.split()) > 1 else ""
            subject = f"{rest} of {antecedent}" if rest and words[0].lower() in ("their", "its", "his", "her") \
                else antecedent
            claim = Claim(subject, claim.relation, claim.value, claim.negated, False)
        if claim is not None:
            claims.append(claim)
            antecedent = claim.subject
    if claims:
        return claims
    whole = parse_claim(sentence)
    return [whole] if whole is not None and not _ANAPHORIC.match(sentence.strip()) else []


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
