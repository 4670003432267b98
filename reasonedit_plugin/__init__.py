"""ReasonEdit for EasyEdit: edit a vision-language model with human reasoning, without touching its weights.

The public API is importable from here; heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ReasonEditConfig": "config",
    "ReasonEditError": "errors",
    "ConfigError": "errors",
    "RecordError": "errors",
    "UnsupportedModelError": "errors",
    "CodebookMismatchError": "errors",
    "EditRecord": "records",
    "load_records": "records",
    "split_sentences": "records",
    "Codebook": "codebook",
    "Retrieval": "retriever",
    "ReasonEditor": "editor",
    "Answer": "editor",
    "EditReport": "editor",
    "VLM": "vlm",
    "TextEncoder": "text_encoder",
    "register_model_spec": "model_specs",
    "register_fusion": "fusion",
    "ReasonEditHyperParams": "hparams",
    "apply_reasonedit_to_multimodal_model": "easyedit_adapter",
    "register": "easyedit_adapter",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reasonedit_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
