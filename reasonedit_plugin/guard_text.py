"""Text the rationale guard reads (issue 14): Unicode normalisation, de-obfuscation and obfuscation signals.

Instructions hidden from a word list are usually hidden *structurally*: look-alike letters from another
script, full-width or invisible characters, letters split by dots or spaces, encoded payloads (base64, hex,
percent-encoding, rot13). :func:`normalize` undoes these so the guard's rules read what a model would read,
and :func:`obfuscation_signals` reports them, because a plain rationale about an image has no reason to
use any of them.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

CONFUSABLES = str.maketrans({
    # Cyrillic and Greek letters that look like Latin ones (Unicode confusables, the common subset)
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ԛ": "q",
    "ԝ": "w", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H",
    "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
})
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u206f\ufeff\ufe00-\ufe0f]")
_SPLIT_LETTERS = re.compile(r"(?<![\w])(?:[A-Za-z][ .\-_*]){3,}[A-Za-z](?![\w])")
_HYPHEN_IN_WORD = re.compile(r"(?<=[a-z])-(?=[a-z])")
_BASE64 = re.compile(r"(?<![\w+/])[A-Za-z0-9+/]{16,}={0,2}(?![\w+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}\s?){8,}\b")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){3,}")
_ROT13_HINT = re.compile(r"\b(rot-?13|base-?64|hex(?:adecimal)?|decode|decrypt|cipher)\b", re.I)
_LATIN = re.compile(r"[A-Za-z]")
_OTHER_SCRIPT_LETTER = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")


@dataclass(frozen=True)
class Signal:
    name: str
    why: str
    weight: float


def _printable_ratio(data: bytes) -> float:
    if not data:
        return 0.0
    return sum(32 <= b < 127 for b in data) / len(data)


def decoded_payloads(text: str) -> list[str]:
    """Readable text hidden in base64, hex or percent-encoded runs (to be checked like the text itself)."""
    found = []
    for m in _BASE64.finditer(text):
        token = m.group(0)
        if token.isalpha() and (token.islower() or token.isupper()):
            continue  # a long word, not base64
        try:
            data = base64.b64decode(token + "=" * (-len(token) % 4), validate=False)
        except (binascii.Error, ValueError):
            continue
        if _printable_ratio(data) > 0.9:
            found.append(data.decode("ascii", "replace"))
    for m in _HEX.finditer(text):
        try:
            data = bytes.fromhex(re.sub(r"\s", "", m.group(0)))
        except ValueError:
            continue
        if _printable_ratio(data) > 0.9:
            found.append(data.decode("ascii", "replace"))
    for m in _PERCENT.finditer(text):
        found.append(urllib.parse.unquote(m.group(0)))
    return found


def normalize(text: str) -> str:
    """NFKC, confusable letters mapped to Latin, invisible characters removed, split letters joined
    ("i.g.n.o.r.e" -> "ignore", "dis-regard" -> "disregard")."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).translate(CONFUSABLES)
    text = _SPLIT_LETTERS.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)
    return _HYPHEN_IN_WORD.sub("", text)


def variants(text: str) -> list[str]:
    """What the guard reads: the text, its normalised form, decoded payloads and a rot13 reading when the
    text mentions an encoding."""
    out = [text, normalize(text)]
    out += [normalize(p) for p in decoded_payloads(text)]
    if _ROT13_HINT.search(text):
        out.append(codecs.decode(text, "rot13"))
    return list(dict.fromkeys(out))


def obfuscation_signals(text: str) -> list[Signal]:
    """Structural reasons to distrust a text, independent of what its words say."""
    signals = []
    words = re.findall(r"\w+", text)
    if any(_LATIN.search(w) and _OTHER_SCRIPT_LETTER.search(w) for w in words):
        signals.append(Signal("mixed_script", "letters of two scripts inside one word (look-alike characters)", 1.0))
    nfkc = unicodedata.normalize("NFKC", text)
    if sum(1 for a in text if unicodedata.normalize("NFKC", a) != a and unicodedata.normalize("NFKC", a).isascii()
           and unicodedata.normalize("NFKC", a).isalnum()) >= 3 and nfkc != text:
        signals.append(Signal("fullwidth", "full-width or compatibility letters", 1.0))
    if _INVISIBLE.search(text):
        signals.append(Signal("invisible", "invisible or bidi-control characters", 1.0))
    if _SPLIT_LETTERS.search(unicodedata.normalize("NFKC", text)):
        signals.append(Signal("split_letters", "a word spelled out letter by letter", 0.6))
    if decoded_payloads(text):
        signals.append(Signal("encoded", "an encoded payload (base64, hex or percent-encoding)", 1.0))
    if _ROT13_HINT.search(text):
        signals.append(Signal("encoding_hint", "asks to decode or names an encoding", 0.6))
    return signals
