"""Benchmark files users compare on, mapped to edit records (``records.py``).

* ``evqa`` -- EasyEdit's E-VQA JSON (what ``easyeditor.VQADataset`` reads): ``src`` (question), ``alt``
  (new answer), ``image``, and for evaluation ``rephrase``, ``image_rephrase``, ``loc``/``loc_ans`` (text
  locality), ``m_loc``/``m_loc_q``/``m_loc_a`` (multimodal locality); ``pred`` (the old answer) is kept
  in ``meta``. Records whose ``alt`` is empty are skipped, as EasyEdit does.
* ``eic`` -- EasyEdit's E-IC JSON (``easyeditor.CaptionDataset``): the same fields, ``src`` being the
  caption prompt and ``alt`` the new caption.
* ``rationalevqa`` -- the ReasonEdit reference implementation's RationaleVQA records (A-OKVQA / FVQA):
  ``question``, ``answer``, ``rationale`` (a string or a list), the image as ``image_path`` / ``image`` or
  an ``image_id`` (resolved under the image root: the name as given, COCO's zero-padded
  ``<12 digits>.jpg``, or ``<id>.jpg`` / ``<id>.png``), optional ``choices`` (with ``idx_choices`` or an
  integer ``answer`` naming the correct one) and ``uid``.

Files are a JSON list (or ``{"data": [...]}``), JSONL, or Parquet (needs pyarrow). Relative image paths
resolve against ``image_root`` (EasyEdit's ``coco_image``), else the file's folder. A missing field is a
:class:`~reasonedit_plugin.errors.RecordError` naming the record, the field, what it means and the format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from .errors import ConfigError, RecordError, did_you_mean
from .records import EditRecord, make_records

logger = logging.getLogger(__name__)

__all__ = ["DATASET_FORMATS", "load_dataset", "read_rows"]

PathLike = Union[str, Path]


@dataclasses.dataclass(frozen=True)
class DatasetFormat:
    """One benchmark file format: its required fields (with what they mean) and how a row maps."""

    name: str
    title: str
    required: Mapping[str, str]
    """field -> meaning, for the error message of a missing field."""
    groups: Sequence[tuple[str, ...]]
    """Fields that must come together (all or none), e.g. multimodal locality's image, question, answer."""
    to_record: Callable[[Mapping[str, Any], int, "Resolver"], dict[str, Any] | None]


class Resolver:
    """Resolves an image reference of one file: relative paths against the image root(s)."""

    def __init__(self, image_root: Path, rephrase_root: Path):
        self.image_root = image_root
        self.rephrase_root = rephrase_root

    def path(self, value: Any, rephrase: bool = False) -> str:
        path = Path(str(value)).expanduser()
        return str(path if path.is_absolute() else (self.rephrase_root if rephrase else self.image_root) / path)

    def image_id(self, value: Any, record_id: str) -> str:
        text = str(value).strip()
        candidates = [text]
        if text.isdigit():
            candidates += [f"{int(text):012d}.jpg", f"COCO_val2014_{int(text):012d}.jpg",
                           f"COCO_train2014_{int(text):012d}.jpg", f"{text}.jpg", f"{text}.png"]
        for name in candidates:
            if (self.image_root / name).is_file():
                return str(self.image_root / name)
        raise RecordError(f"image_id {text!r} names no file under the image root {str(self.image_root)!r} "
                          f"(tried {', '.join(candidates)}); pass --image-root / image_root= with the images.",
                          record_id, "image_id")


# ================================================================================================ EasyEdit
def _easyedit_record(kind: str) -> Callable[[Mapping[str, Any], int, Resolver], dict[str, Any] | None]:
    def convert(row: Mapping[str, Any], index: int, resolve: Resolver) -> dict[str, Any] | None:
        if row["alt"] == "":
            return None  # EasyEdit's VQADataset / CaptionDataset skip these too
        record: dict[str, Any] = {
            "id": str(row.get("case_id", row.get("id", f"{kind}-{index:05d}"))),
            "prompt": row["src"], "target": row["alt"], "image": resolve.path(row["image"]),
            "meta": {"source": kind, "index": index},
        }
        if row.get("pred") is not None:
            record["meta"]["pred"] = row["pred"]
        if row.get("rephrase"):
            record["rephrase_prompt"] = row["rephrase"]
        if row.get("image_rephrase"):
            record["image_rephrase"] = resolve.path(row["image_rephrase"], rephrase=True)
        if row.get("loc") is not None:
            record["locality_prompt"], record["locality_ground_truth"] = row["loc"], row["loc_ans"]
        if row.get("m_loc") is not None:
            record["multimodal_locality_image"] = resolve.path(row["m_loc"])
            record["multimodal_locality_prompt"] = row["m_loc_q"]
            record["multimodal_locality_ground_truth"] = row["m_loc_a"]
        if row.get("rationale") not in (None, "", []):
            record["rationale"] = row["rationale"]
        return record

    return convert


_EASYEDIT_GROUPS = (("loc", "loc_ans"), ("m_loc", "m_loc_q", "m_loc_a"))


# ================================================================================================ RationaleVQA
def _rationalevqa_record(row: Mapping[str, Any], index: int, resolve: Resolver) -> dict[str, Any]:
    record_id = str(row.get("uid", row.get("id", f"rationalevqa-{index:05d}")))
    if row.get("image_path") or row.get("image"):
        image = resolve.path(row.get("image_path") or row.get("image"))
    else:
        image = resolve.image_id(row["image_id"], record_id)
    choices = row.get("choices")
    choices = [str(c) for c in choices] if isinstance(choices, (list, tuple)) else None
    answer = row["answer"]
    correct = row.get("idx_choices")
    if choices and isinstance(answer, int) and not isinstance(answer, bool):
        correct = answer
    if choices and isinstance(correct, int) and not isinstance(correct, bool) and str(answer) not in choices:
        if not 0 <= correct < len(choices):
            raise RecordError(f"answer index {correct} is outside the {len(choices)} choices.", record_id, "answer")
        answer = choices[correct]
    rationale = row["rationale"]
    if hasattr(rationale, "tolist"):  # a Parquet list column
        rationale = rationale.tolist()
    record = {"id": record_id, "prompt": row["question"], "target": str(answer), "image": image,
              "rationale": rationale, "meta": {"source": "rationalevqa", "index": index}}
    if choices:
        record["choices"] = choices
    return record


DATASET_FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    DatasetFormat("evqa", "EasyEdit E-VQA",
                  {"src": "the question", "alt": "the new answer", "image": "the image path"},
                  _EASYEDIT_GROUPS, _easyedit_record("evqa")),
    DatasetFormat("eic", "EasyEdit E-IC",
                  {"src": "the caption prompt", "alt": "the new caption", "image": "the image path"},
                  _EASYEDIT_GROUPS, _easyedit_record("eic")),
    DatasetFormat("rationalevqa", "RationaleVQA",
                  {"question": "the question", "answer": "the answer (text, or its index in choices)",
                   "rationale": "the human rationale (a string or a list of sentences)",
                   "image_path|image|image_id": "the image (a path, or an id under --image-root)"},
                  (), _rationalevqa_record),
)}


def read_rows(path: PathLike) -> list[Any]:
    """The rows of a JSON list / ``{"data": [...]}``, JSONL or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dataset file {str(path)!r} does not exist.")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or convert the file "
                              "to JSONL.") from exc
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg}); one record per line.") from exc
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
    if isinstance(data, Mapping):
        data = data.get("data", data.get("records"))
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of records (or {{\"data\": [...]}}, or JSONL).")
    return data


def _check_fields(fmt: DatasetFormat, row: Any, index: int, path: Path) -> None:
    where = f"{fmt.title} record #{index} of {path.name}"
    if not isinstance(row, Mapping):
        raise RecordError(f"{where} is a {type(row).__name__}, not a mapping of field: value.")
    for spec, meaning in fmt.required.items():
        names = spec.split("|")
        if not any(row.get(n) is not None for n in names):
            close = did_you_mean(names[0], [str(k) for k in row])
            raise RecordError(f"{where} has no {' / '.join(repr(n) for n in names)} ({meaning}).{close} "
                              f"{fmt.title} records need {', '.join(repr(k) for k in fmt.required)}.")
    for group in fmt.groups:
        present = [n for n in group if row.get(n) is not None]
        if present and len(present) < len(group):
            missing = [n for n in group if n not in present]
            raise RecordError(f"{where} has {', '.join(present)} but not {', '.join(missing)}: these fields come "
                              f"together ({', '.join(group)}).")


def load_dataset(kind: str, path: PathLike, image_root: PathLike | None = None,
                 rephrase_root: PathLike | None = None, limit: int | None = None) -> list[EditRecord]:
    """Edit records from a benchmark file of format ``kind`` (``evqa``, ``eic``, ``rationalevqa``).

    ``image_root``: the folder relative image paths (and ``image_id`` s) resolve against (default: the
    file's folder); ``rephrase_root``: that of ``image_rephrase`` (default: ``image_root``)."""
    fmt = DATASET_FORMATS.get(kind)
    if fmt is None:
        raise ConfigError(f"unknown dataset format {kind!r}; choose one of {sorted(DATASET_FORMATS)}."
                          f"{did_you_mean(kind, DATASET_FORMATS)}")
    path = Path(path)
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    if not root.is_dir():
        raise ConfigError(f"image root {str(root)!r} is not a folder; pass --image-root with the benchmark's images.")
    resolve = Resolver(root, Path(rephrase_root).expanduser() if rephrase_root is not None else root)
    out: list[dict[str, Any]] = []
    skipped = 0
    for index, row in enumerate(read_rows(path)):
        if limit is not None and len(out) >= limit:
            break
        _check_fields(fmt, row, index, path)
        record = fmt.to_record(row, index, resolve)
        if record is None:
            skipped += 1
            continue
        out.append(record)
    if skipped:
        logger.info("%s: skipped %d record(s) with an empty 'alt' (as EasyEdit does).", path, skipped)
    if not out:
        raise ConfigError(f"{path}: no {fmt.title} records to edit.")
    return make_records(out)
