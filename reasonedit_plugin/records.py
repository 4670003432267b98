"""Edit records: (image, question, answer, rationale) plus optional evaluation fields (METHOD.md §1, §8).

Field names follow EasyEdit's multimodal requests where one exists (``prompt``, ``target``, ``image``,
``rephrase_prompt``, ``image_rephrase``, ``locality_*``, ``multimodal_locality_*``), plus ``rationale``,
``choices`` and ``id``, and the R-Gen / hard-locality fields of this project.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from PIL import Image, UnidentifiedImageError

from .errors import RecordError, did_you_mean

SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
"""The paper's sentence splitter for rationales (METHOD.md §1)."""

MAX_IMAGE_PIXELS = 64_000_000
"""Images above this many pixels are refused (decompression bombs, accidental raw scans)."""

MAX_ASPECT_RATIO = 100.0
"""Longer side / shorter side. Vision processors refuse extreme strips (Qwen2-VL: 200 after resizing), so
they are refused here, before the model sees them."""

MAX_IMAGE_OVERHEAD_BYTES = 4 << 20
"""An image file may exceed its raw decoded size (8 bytes per pixel) by at most this much (headers,
colour profiles): more means trailing data appended to the image."""

MAX_ID_CHARS = 200
_ID_FORBIDDEN = re.compile(r"[/\\]")

ImageLike = Union[str, Path, Image.Image]


def split_sentences(rationale: Union[str, Sequence[str], None]) -> list[str]:
    """Split a rationale into sentences with the paper's regex; a list is split item by item."""
    if rationale is None:
        return []
    parts = [rationale] if isinstance(rationale, str) else list(rationale)
    sentences: list[str] = []
    for part in parts:
        sentences.extend(s.strip() for s in SENTENCE_BOUNDARY.split(part.strip()) if s.strip())
    return sentences


@dataclass
class EditRecord:
    """One edit and its optional evaluation probes. Images are paths (absolute after loading) or PIL images."""

    id: str
    image: ImageLike
    prompt: str
    target: str
    rationale: list[str] = field(default_factory=list)
    choices: list[str] | None = None
    rephrase_prompt: str | None = None
    image_rephrase: ImageLike | None = None
    rgen_prompt: str | None = None
    rgen_target: str | None = None
    rgen_choices: list[str] | None = None
    locality_prompt: str | None = None
    locality_ground_truth: str | None = None
    multimodal_locality_image: ImageLike | None = None
    multimodal_locality_prompt: str | None = None
    multimodal_locality_ground_truth: str | None = None
    multimodal_locality_choices: list[str] | None = None
    hard_locality_image: ImageLike | None = None
    hard_locality_prompt: str | None = None
    hard_locality_ground_truth: str | None = None
    hard_locality_choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (author, reason, source); copied into the codebook's audit log."""

    @property
    def sentences(self) -> list[str]:
        return list(self.rationale)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Image.Image):
                value = "<PIL.Image>"
            elif isinstance(value, Path):
                value = str(value)
            if value is None or value == {} and f.name == "meta":
                continue
            out[f.name] = value
        return out


_STR_FIELDS = ("prompt", "target", "rephrase_prompt", "rgen_prompt", "rgen_target", "locality_prompt",
               "locality_ground_truth", "multimodal_locality_prompt", "multimodal_locality_ground_truth",
               "hard_locality_prompt", "hard_locality_ground_truth")
IMAGE_FIELDS = ("image", "image_rephrase", "multimodal_locality_image", "hard_locality_image")
_CHOICE_FIELDS = ("choices", "rgen_choices", "multimodal_locality_choices", "hard_locality_choices")
_FIELD_NAMES = {f.name for f in fields(EditRecord)}
_ALIASES = {"src": "prompt", "alt": "target", "pred": None, "loc": "locality_prompt",
            "loc_ans": "locality_ground_truth", "question": "prompt", "answer": "target"}


def _check_text(value: Any, record_id: str, name: str, required: bool, max_chars: int) -> str | None:
    if value is None:
        if required:
            raise RecordError("is missing; give a non-empty string.", record_id, name)
        return None
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__} ({value!r:.60}).", record_id, name)
    if required and not value.strip():
        raise RecordError("is empty; give a non-empty string.", record_id, name)
    if len(value) > max_chars:
        raise RecordError(f"has {len(value)} characters (limit {max_chars}); shorten it.", record_id, name)
    return value


def check_image(image: ImageLike, record_id: str | None = None, name: str = "image") -> ImageLike:
    """Validate an image path or PIL image without keeping the file open: readable, decoded size and aspect
    ratio within limits, no trailing data beyond what the pixels can need."""
    if isinstance(image, Image.Image):
        w, h = image.size
    elif isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise RecordError(f"image file {str(path)!r} does not exist; fix the path or pass image_root=.",
                              record_id, name)
        try:
            with Image.open(path) as im:
                w, h = im.size
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise RecordError(f"image file {str(path)!r} is not a readable image ({exc}); "
                              "replace or re-export it.", record_id, name) from exc
        if w >= 1 and h >= 1:
            size, bound = path.stat().st_size, 8 * w * h + MAX_IMAGE_OVERHEAD_BYTES
            if size > bound:
                raise RecordError(f"image file {str(path)!r} is {size} bytes for a {w}x{h} image (at most {bound} "
                                  "expected): it carries trailing data; re-export the image.", record_id, name)
    else:
        raise RecordError(f"must be a path or a PIL.Image, got {type(image).__name__}.", record_id, name)
    if w < 1 or h < 1 or w * h > MAX_IMAGE_PIXELS:
        raise RecordError(f"image is {w}x{h}; it must have between 1 and {MAX_IMAGE_PIXELS} pixels "
                          "(resize it first).", record_id, name)
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise RecordError(f"image is {w}x{h}, an aspect ratio of {max(w, h) / min(w, h):.0f}:1 (limit "
                          f"{MAX_ASPECT_RATIO:g}:1); crop or pad it first.", record_id, name)
    return image


def load_image(image: ImageLike) -> Image.Image:
    """Open an image as RGB (a PIL image passes through, converted)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


def check_record_id(value: Any, index: int = 0) -> str:
    """A record id: a string (or an integer) of printable characters, at most :data:`MAX_ID_CHARS` long,
    without path separators; None gives ``#<index>``. Ids name files, log lines and terminal output."""
    if value is None:
        return f"#{index}"
    fix = (f"give a printable id of at most {MAX_ID_CHARS} characters without '/', '\\' or control "
           "characters.")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(f"record #{index}: field 'id' must be a string, got {type(value).__name__} "
                          f"({ascii(value)[:40]}); {fix}")
    if isinstance(value, int) and abs(value) >= 10 ** 18:
        raise RecordError(f"record #{index}: field 'id' is a number of more than 18 digits; {fix}")
    text = str(value)
    if not text.strip() or text != text.strip() or text in (".", ".."):
        raise RecordError(f"record #{index}: field 'id' {ascii(text)[:60]} is empty, padded with spaces or a "
                          f"dot path; {fix}")
    if len(text) > MAX_ID_CHARS:
        raise RecordError(f"record #{index}: field 'id' has {len(text)} characters (limit {MAX_ID_CHARS}); {fix}")
    if not text.isprintable() or _ID_FORBIDDEN.search(text):
        raise RecordError(f"record #{index}: field 'id' {ascii(text)[:60]} contains a control character or a "
                          f"path separator; {fix}")
    return text


def make_record(values: Union[EditRecord, Mapping[str, Any]], image_root: Union[str, Path, None] = None,
                index: int = 0, max_rationale_chars: int = 4000, max_sentences: int = 32) -> EditRecord:
    """Validate one record (a mapping with EasyEdit field names, or an EditRecord) and resolve image paths."""
    if isinstance(values, EditRecord):
        values = {f.name: getattr(values, f.name) for f in fields(EditRecord)}
    if not isinstance(values, Mapping):
        raise RecordError(f"record #{index} must be a mapping of field: value, got {type(values).__name__}.")
    data = dict(values)
    record_id = check_record_id(data.get("id", data.get("case_id")), index)
    data.pop("case_id", None)
    for alias, name in _ALIASES.items():
        if alias in data and name is not None and name not in data:
            data[name] = data.pop(alias)
        elif alias in data and name is None:
            data.pop(alias)
    unknown = [k for k in data if k not in _FIELD_NAMES]
    if unknown:
        raise RecordError(f"unknown field {unknown[0]!r}.{did_you_mean(unknown[0], _FIELD_NAMES)} "
                          "Put free-form data under 'meta'.", record_id)
    data["id"] = record_id
    for name in _STR_FIELDS:
        required = name in ("prompt", "target")
        data[name] = _check_text(data.get(name), record_id, name, required, 2000)

    rationale = data.get("rationale")
    if rationale is None:
        rationale = []
    if isinstance(rationale, str):
        rationale = [rationale]
    if not isinstance(rationale, list) or not all(isinstance(s, str) for s in rationale):
        raise RecordError("must be a string or a list of strings.", record_id, "rationale")
    if sum(len(s) for s in rationale) > max_rationale_chars:
        raise RecordError(f"is longer than {max_rationale_chars} characters; keep the reasoning to a few "
                          "sentences.", record_id, "rationale")
    sentences = split_sentences(rationale)
    if len(sentences) > max_sentences:
        raise RecordError(f"has {len(sentences)} sentences (limit {max_sentences}).", record_id, "rationale")
    data["rationale"] = sentences

    for name in _CHOICE_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if (not isinstance(value, list) or len(value) < 2
                or not all(isinstance(c, str) and c.strip() for c in value)):
            raise RecordError("must be a list of at least two non-empty strings.", record_id, name)
    if data.get("choices") is not None:
        lowered = [c.lower() for c in data["choices"]]
        if data["target"].lower() not in lowered:
            raise RecordError(f"target {data['target']!r} is not among the choices {data['choices']}.",
                              record_id, "choices")
    root = Path(image_root) if image_root is not None else None
    for name in IMAGE_FIELDS:
        value = data.get(name)
        if value is None:
            if name == "image":
                raise RecordError("is missing; give an image path or a PIL image.", record_id, name)
            continue
        if isinstance(value, (str, Path)):
            path = Path(value).expanduser()
            if not path.is_absolute() and root is not None:
                path = root / path
            value = str(path)
        data[name] = check_image(value, record_id, name)
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError("must be a mapping.", record_id, "meta")
    _check_json_safe(meta, record_id)
    data["meta"] = meta
    return EditRecord(**data)


def _check_json_safe(value: Any, record_id: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"must be JSON-serialisable without NaN/inf ({exc}).", record_id, "meta") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("contains NaN/inf.", record_id, "meta")


def make_records(values: Union[EditRecord, Mapping[str, Any], Iterable[Any]],
                 image_root: Union[str, Path, None] = None, **limits: int) -> list[EditRecord]:
    """Validate one record or a sequence of them; duplicate ids are an error."""
    if isinstance(values, (EditRecord, Mapping)):
        values = [values]
    records = [make_record(v, image_root, i, **limits) for i, v in enumerate(values)]
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise RecordError("appears twice in this batch; ids must be unique.", r.id, "id")
        seen.add(r.id)
    return records


def load_records(path: Union[str, Path], image_root: Union[str, Path, None] = None,
                 limit: int | None = None, **limits: int) -> list[EditRecord]:
    """Load a JSONL (or JSON list) file of edit records. Relative image paths resolve against
    ``image_root``, else the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"edit file {str(path)!r} does not exist.")
    root = Path(image_root) if image_root is not None else path.parent
    text = read_text_file(path, "edit file")
    rows: list[Any]
    if path.suffix == ".json":
        rows = _parse_json(text, f"{path}")
        if not isinstance(rows, list):
            raise RecordError(f"{path}: a .json edit file must hold a list of records.")
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            rows.append(_parse_json(line, f"{path}:{lineno}"))
    if limit is not None:
        rows = rows[:limit]
    return make_records(rows, root, **limits)


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file, or a RecordError naming the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecordError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}, line {line}: "
                          f"{data[exc.start:exc.start + 1]!r}); save it as UTF-8.") from None


def _parse_json(text: str, where: str) -> Any:
    """One JSON value; syntax errors, numbers beyond Python's digit limit and deep nesting are RecordErrors."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); one record per line.") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise RecordError(f"{where}: a number is too large to read ({str(exc)[:80]}); use shorter numbers.") from None
    except RecursionError:
        raise RecordError(f"{where}: the JSON is nested too deeply; records are flat objects.") from None


def replace(record: EditRecord, **changes: Any) -> EditRecord:
    return dataclasses.replace(record, **changes)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """Normalised form for exact-match scoring of open answers: lower case, no punctuation or articles,
    single spaces."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def check_question(question: Any, choices: Any = None) -> None:
    """A query's question (a non-empty string) and, if given, its choices (a list of strings)."""
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"the question must be a non-empty string, got {question!r:.80}.", field="prompt")
    if choices is not None and (isinstance(choices, str) or not all(isinstance(c, str) for c in choices)):
        raise RecordError(f"choices must be a list of strings, got {choices!r:.80}.", field="choices")


def open_image(image: Any, record_id: str | None = None) -> Image.Image:
    """Validate and open an image as RGB; unreadable or truncated files become a RecordError."""
    check_image(image, record_id, "image")
    try:
        return load_image(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise RecordError(f"image {image if isinstance(image, (str, Path)) else 'object'} cannot be decoded "
                          f"({exc}); replace or re-export it.", record_id, "image") from exc


def check_batch(records: Any, meta: Mapping[str, Any]) -> None:
    """Boundary checks ``make_records`` does not do: the batch's type and JSON-safe provenance."""
    if records is None or isinstance(records, (str, bytes)) or not (
            isinstance(records, (EditRecord, Mapping)) or hasattr(records, "__iter__")):
        raise RecordError(f"edit() takes a record (dict or EditRecord) or a list of them, got "
                          f"{type(records).__name__}.")
    try:
        json.dumps(dict(meta), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"provenance keywords {sorted(meta)} must be JSON-serialisable without NaN/inf "
                          f"({exc}).", field="meta") from exc
