"""ShapeRules split files: JSON lines of edit records whose image paths are relative to easy-vqa's data
folder (the shipped splits ``shaperules_<name>.jsonl`` live next to this module; ``python -m
reasonedit_plugin.data.shaperules`` writes new ones)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..records import IMAGE_FIELDS  # noqa: F401 - the record fields holding image paths
from .easyvqa import easy_vqa_root

DATA_DIR = Path(__file__).resolve().parent

def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def load_jsonl(path: str | Path, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Read a ShapeRules JSONL file; relative image paths are resolved against ``image_root``
    (default: :func:`easy_vqa_root`)."""
    root = Path(image_root) if image_root is not None else easy_vqa_root()
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            for name in IMAGE_FIELDS:
                if record.get(name) is not None and not Path(record[name]).is_absolute():
                    record[name] = str(root / record[name])
            records.append(record)
    return records


def shipped_splits() -> list[str]:
    return sorted(p.stem[len("shaperules_"):] for p in DATA_DIR.glob("shaperules_*.jsonl"))


def split_path(name: str) -> Path:
    return DATA_DIR / f"shaperules_{name}.jsonl"


def load_split(name: str = "small") -> list[dict[str, Any]]:
    """A shipped split (``reasonedit_plugin/data/shaperules_<name>.jsonl``) with absolute image paths."""
    path = split_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped ShapeRules split {name!r} (shipped: {shipped_splits()}). Generate one with "
            f"`python -m reasonedit_plugin.data.shaperules --split {name} --n 500 --seed 0 --out FILE` "
            "and load it with load_jsonl(FILE)."
        )
    return load_jsonl(path)
