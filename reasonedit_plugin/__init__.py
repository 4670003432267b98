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
    "Answer": "answering",
    "EditReport": "editor",
    "VLM": "vlm",
    "TextEncoder": "text_encoder",
    "ModelSpec": "model_spec",
    "TokenInput": "model_spec",
    "KnownDefault": "model_spec",
    "register_model_spec": "model_specs",
    "get_model_spec": "model_specs",
    "load_model_specs": "model_specs",
    "register_fusion": "fusion",
    "RationaleGuard": "guards",
    "GuardFlag": "guards",
    "save_codebook": "storage",
    "load_codebook": "storage",
    "CodebookCorruptError": "errors",
    "codebook_lock": "locking",
    "CodebookBusyError": "locking",
    "CodebookChangedError": "locking",
    "CodebookWriteError": "locking",
    "verify_codebook": "manifest",
    "repair_codebook": "manifest",
    "AuditLog": "audit",
    "EditInfo": "audit",
    "ReasonEditHyperParams": "hparams",
    "apply_reasonedit_to_multimodal_model": "easyedit_adapter",
    "register": "easyedit_registration",
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


def _register_with_easyedit() -> None:
    """Register ReasonEdit with EasyEdit without importing it here: at once if ``easyeditor`` is already
    imported, else right after ``import easyeditor`` (a one-shot import hook; see docs/EASYEDIT.md).
    ``reasonedit_plugin.register()`` does it explicitly."""
    from .easyedit_registration import register_on_import

    register_on_import()


_register_with_easyedit()
