"""Text the rationale guard reads (issue 14): Unicode normalisation, de-obfuscation and obfuscation signals.

Instructions hidden from a word list are usually hidden *structurally*: look-alike letters from another
script, full-width or invisible characters, letters split by dots or spaces, digits for letters (leetspeak),
encoded payloads (base64, hex,
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
_LOOKALIKE_NAME = re.compile(r"^(?:LATIN LETTER SMALL CAPITAL|MODIFIER LETTER (?:SMALL|CAPITAL)|LATIN SUBSCRIPT SMALL LETTER|"
                             r"SUPERSCRIPT LATIN SMALL LETTER|LATIN SMALL CAPITAL LETTER) ([A-Z])$")
LOOKALIKE_LETTERS = {chr(cp): m.group(1).lower() for cp in (*range(0x0250, 0x0300), *range(0x1D00, 0x1DC0),
                                                            *range(0x2070, 0x20A0), *range(0xA720, 0xA800))
                     if (m := _LOOKALIKE_NAME.match(unicodedata.name(chr(cp), "")))}
"""Small capitals, modifier, superscript and subscript Latin letters ("ᴀɴsᴡᴇʀ", "ʀᴜʟᴇ") that NFKC leaves as they
are, mapped to the letter they imitate (from their Unicode names)."""
_LOOKALIKE_TABLE = str.maketrans(LOOKALIKE_LETTERS)
RESPELL_WORDS = ("answer", "always", "respond", "ignore", "disregard", "instructions", "previous", "output")
"""Key words of an order, read through one wrong letter ("ansver", "alvays", "ignor3" is leetspeak)."""
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u206f\ufeff\ufe00-\ufe0f\U000e0000-\U000e007f]")
_TAG_CHARS = re.compile("[\U000e0020-\U000e007e]+")
"""Unicode tag characters: invisible, but each one shadows an ASCII character (a hidden message)."""
_SNAKE = re.compile(r"(?<=[A-Za-z])_(?=[A-Za-z])")
_SPLIT_LETTERS = re.compile(r"(?<![\w])[A-Za-z](?P<sep>[ .\-_*])(?:[A-Za-z](?P=sep)){1,}[A-Za-z](?![\w])")
"""Three or more single letters with one separator ("i g n o r e", "R.e.s.p.o.n.d w.i.t.h"): a word per run."""
_HYPHEN_IN_WORD = re.compile(r"(?<=[a-z])-(?=[a-z])")
_BASE64 = re.compile(r"(?<![\w+/])[A-Za-z0-9+/]{16,}={0,2}(?![\w+/=])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}\s?){8,}\b")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}){3,}")
_ROT13_HINT = re.compile(r"\b(rot-?13|base-?64|hex(?:adecimal)?|decode|decrypt|cipher)\b", re.I)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_TOKEN = re.compile(r"(?<![\w@$])[A-Za-z0-9@$]*[A-Za-z][A-Za-z0-9@$]*(?![\w@$])")
_NOT_LEET = re.compile(r"^\d+(?:st|nd|rd|th|s|am|pm|px|pts?|kg|km|cm|mm|ml|mb|gb|kb|hz|min|sec|hrs?|m|g|x|d|k|h)$|"
                       r"^[A-Za-z]{1,3}\d+$", re.I)
LEET_MIN_WORDS = 2
"""Words spelled with digits for letters ("1gn0r3") needed before a text counts as leetspeak: one such token is
often a code or a model name ("R2D2", "A4"), two in one sentence are not."""
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
    """Readable text hidden in base64, hex or percent-encoded runs or in Unicode tag characters (to be checked
    like the text itself)."""
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
    for m in _TAG_CHARS.finditer(text):
        found.append("".join(chr(ord(c) - 0xE0000) for c in m.group(0)))
    return found


def leet_words(text: str, min_letters: int = 2) -> list[str]:
    """Words that mix letters with digits or ``@ $`` standing for letters ("1gn0r3", "qu3st10n", "@nswer"): every
    digit is one of 0 1 3 4 5 7, at least two letters, not an ordinal, unit or code ("3rd", "5pm", "A4")."""
    found = []
    for m in _LEET_TOKEN.finditer(text):
        token = m.group(0)
        digits = [c for c in token if not c.isalpha()]
        if not digits or sum(c.isalpha() for c in token) < min_letters or _NOT_LEET.match(token):
            continue
        if all(c in "013457@$" for c in digits):
            found.append(token)
    return found


def unleet(text: str) -> str:
    """Leetspeak words read as letters ("1gn0r3" -> "ignore"); other words and numbers are left alone."""
    if len(set(leet_words(text))) < LEET_MIN_WORDS:
        return text
    words = set(leet_words(text, min_letters=1))  # in a leetspeak text, "t0" is "to" too
    return _LEET_TOKEN.sub(lambda m: m.group(0).translate(_LEET) if m.group(0) in words else m.group(0), text)


def normalize(text: str) -> str:
    """NFKC, confusable letters (Greek, Cyrillic, small capitals, modifier letters) mapped to Latin, invisible characters
    removed, split letters joined
    ("i.g.n.o.r.e" -> "ignore", "dis-regard" -> "disregard"), words joined by underscores split
    ("answer_override" -> "answer override"), leetspeak read as letters ("1gn0r3" -> "ignore")."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).translate(CONFUSABLES).translate(_LOOKALIKE_TABLE)
    text = _SPLIT_LETTERS.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)
    return unleet(_SNAKE.sub(" ", _HYPHEN_IN_WORD.sub("", text)))


def respell(text: str) -> str:
    """Words one letter away from a key word of an order (same length, five letters or more) read as it:
    "Ansver Vol alvays" -> "answer Vol always". Other words are left alone."""
    def fix(m: re.Match) -> str:
        word = m.group(0)
        low = word.lower()
        for key in RESPELL_WORDS:
            if len(low) == len(key) and low != key and sum(a != b for a, b in zip(low, key)) == 1:
                return key
        return word
    return re.sub(r"[A-Za-z]{5,}", fix, text)


_FUNCTION_WORDS = frozenset("the and to of a an is are you your it in on that this for with not or all be as".split())


def _function_words(text: str) -> int:
    return sum(w in _FUNCTION_WORDS for w in re.findall(r"[a-z]+", text.lower()))


def variants(text: str) -> list[str]:
    """What the guard reads: the text, its normalised form, decoded payloads, the text read backwards
    (characters reversed: "erongi" -> "ignore"; a plain text read backwards matches no rule), key words read
    through one wrong letter (:func:`respell`) and a rot13
    reading when the text mentions an encoding. The backwards reading is added only when it holds more English
    function words ("the", "and", "to", ...) than the text itself."""
    norm = normalize(text)
    out = [text, norm, respell(norm)]
    if _function_words(norm[::-1]) > _function_words(norm):  # reads better backwards: a reversed text
        out.append(norm[::-1])
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
    if sum(c in LOOKALIKE_LETTERS for c in text) >= 2:
        signals.append(Signal("lookalike_letters", "small-capital, modifier or superscript letters imitating Latin "
                              "ones", 1.0))
    if _INVISIBLE.search(text):
        signals.append(Signal("invisible", "invisible or bidi-control characters", 1.0))
    if _SPLIT_LETTERS.search(unicodedata.normalize("NFKC", text)):
        signals.append(Signal("split_letters", "a word spelled out letter by letter", 0.6))
    if len(set(leet_words(nfkc))) >= LEET_MIN_WORDS:
        signals.append(Signal("leetspeak", "words spelled with digits for letters ('1gn0r3')", 1.0))
    if decoded_payloads(text):
        signals.append(Signal("encoded", "an encoded payload (base64, hex or percent-encoding)", 1.0))
    if _ROT13_HINT.search(text):
        signals.append(Signal("encoding_hint", "asks to decode or names an encoding", 0.6))
    return signals
