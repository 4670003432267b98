"""ShapeRules: rationale-VQA edits on the real easy-vqa images (``shaperules.py``), and the script
that trains the embedded default VLM on them (``train_default_model.py``)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PROPERTIES",
    "ImageInfo",
    "Property",
    "RuleWorld",
    "easy_vqa_root",
    "generate_split",
    "load_split",
    "rule_world",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m reasonedit_plugin.data.shaperules`` does not import the module twice.
    if name in __all__:
        module = ".split_files" if name == "load_split" else ".shaperules"
        return getattr(importlib.import_module(module, __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
