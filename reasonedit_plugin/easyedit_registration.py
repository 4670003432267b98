"""ReasonEdit's registration with EasyEdit (``alg_name: ReasonEdit``), and the checks it adds.

:func:`register` adds ReasonEdit to EasyEdit's registries at run time (no fork of EasyEdit) and wraps two
``MultimodalEditor`` methods:

* ``_prepare_requests`` copies ``edit(..., rationales=[...])`` into the requests (EasyEdit would drop the
  keyword silently); without ``rationales=`` it behaves exactly as before;
* ``__init__`` first checks ``hparams.model_name`` and turns the two set-up mistakes EasyEdit only reports
  from deep inside (a ``/path/to/...`` placeholder: an ``OSError`` from ``from_pretrained``; a folder name
  EasyEdit cannot map to a loader: ``AttributeError: 'MultimodalEditor' object has no attribute 'model'``)
  into one-line :class:`~reasonedit_plugin.errors.ConfigError` naming the fix. It only raises where EasyEdit
  would have failed anyway, for every method.

``import reasonedit_plugin`` calls :func:`register_on_import`: it registers at once when ``easyeditor`` is
already imported, else right after ``import easyeditor`` completes (a one-shot import hook). This module
imports neither EasyEdit nor torch at import time.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import os
import sys
from typing import Any, Optional

from .errors import ConfigError, RecordError

logger = logging.getLogger(__name__)

__all__ = ["register", "register_if_loaded", "register_on_import", "check_model_name", "easyedit_can_load",
           "LOADER_KEYS"]

ALG_NAME = "ReasonEdit"

LOADER_KEYS = ("qwen2-vl", "qwen2_vl", "qwen2vl", "qwen3-vl", "qwen3_vl", "qwen3vl", "qwen3.5", "qwen3_5",
               "qwen3-5", "qwen35", "llava-onevision")
"""Substrings of ``model_name`` by which EasyEdit's ``MultimodalEditor.__init__`` picks a Hugging Face
loader (``easyeditor/util/vl_utils.py``'s Qwen-VL aliases, and ``llava-onevision``). Used when EasyEdit is
not loaded; when it is, its own ``is_qwen_vl_model`` decides."""

LOADER_HINT = "qwen2-vl, qwen3-vl, qwen3.5, llava-onevision"

NATIVE_MODULE = "easyeditor.models.reasonedit"
"""EasyEdit's own ReasonEdit method folder (``reasonedit upstream``). When EasyEdit carries it, EasyEdit
registers the method itself and the plugin's hook stands down."""

LAVIS_MODELS = ("blip2", "minigpt4")
"""``model_name`` values that select EasyEdit's LAVIS models."""

_PATCH_MARK = "_reasonedit_patch"


# ==================================================================================== model name checks
def easyedit_can_load(model_name: str) -> bool:
    """Whether EasyEdit's ``MultimodalEditor`` has a loader for ``model_name`` (by its substrings)."""
    if model_name in LAVIS_MODELS:
        return True
    lowered = model_name.lower()
    if "llava-onevision" in lowered:
        return True
    vl_utils = sys.modules.get("easyeditor.util.vl_utils")
    if vl_utils is not None and hasattr(vl_utils, "is_qwen_vl_model"):
        return bool(vl_utils.is_qwen_vl_model(model_name))
    return any(key in lowered for key in LOADER_KEYS)


def check_model_name(model_name: Any, field: str = "model_name") -> None:
    """Raise a one-line :class:`ConfigError` when EasyEdit cannot load ``model_name``: the shipped
    ``/path/to/...`` placeholder, or a name without a loader key. A ``(model, tokenizer)`` tuple passes."""
    if not isinstance(model_name, str):
        return
    from .hparams import PLACEHOLDER_PREFIX

    if model_name.startswith(PLACEHOLDER_PREFIX) and not os.path.exists(model_name):
        raise ConfigError(f"{field}={model_name!r} is the shipped placeholder: replace it in the YAML with the "
                          "folder of your local copy of the model (keep the family, e.g. 'qwen2-vl', in the "
                          "folder name).")
    if not easyedit_can_load(model_name):
        name = os.path.basename(os.path.normpath(model_name)) or model_name
        raise ConfigError(f"{field}={model_name!r}: EasyEdit chooses its model loader from the name and finds "
                          f"none of {LOADER_HINT} in {name!r}; rename "
                          f"the folder or link it, e.g. `ln -s {model_name} {model_name.rstrip('/')}-qwen2-vl` "
                          "for a Qwen2-VL model, and use that path.")


# ==================================================================================== registration
def register(rationales_kwarg: bool = True) -> bool:
    """Register ReasonEdit with EasyEdit (idempotent). Imports ``easyeditor``.

    Adds ``'ReasonEdit'`` to ``ALG_MULTIMODAL_DICT`` (mutated in place: ``MultimodalEditor`` imported it
    with ``import *``), ``MULTIMODAL_EDIT_ALGS`` and ``CALLABLE_RESTORE_ALGS``; makes
    ``ReasonEditHyperParams`` a subclass of EasyEdit's ``HyperParams``; adds the model-name check to
    ``MultimodalEditor.__init__``; and (``rationales_kwarg``, the default) lets
    ``MultimodalEditor.edit(..., rationales=[...])`` put each rationale into its request. Returns True."""
    try:
        from easyeditor.editors import multimodal_editor, utils as editor_utils
        from easyeditor.util import alg_dict
    except ImportError as exc:
        raise ImportError(f"register() needs EasyEdit (easyeditor) importable: {exc}. Put an EasyEdit checkout on "
                          "PYTHONPATH (see docs/EASYEDIT.md).") from exc
    from .easyedit_adapter import apply_reasonedit_to_multimodal_model
    from .hparams import adopt_easyedit_base

    alg_dict.ALG_MULTIMODAL_DICT[ALG_NAME] = apply_reasonedit_to_multimodal_model
    alg_dict.MULTIMODAL_EDIT_ALGS.add(ALG_NAME)
    editor_utils.CALLABLE_RESTORE_ALGS.add(ALG_NAME)
    editor_dict = getattr(multimodal_editor, "ALG_MULTIMODAL_DICT", None)
    if editor_dict is not None and editor_dict is not alg_dict.ALG_MULTIMODAL_DICT:
        editor_dict[ALG_NAME] = apply_reasonedit_to_multimodal_model  # in case it was ever copied
    adopt_easyedit_base()
    editor_cls = multimodal_editor.MultimodalEditor
    _patch_init(editor_cls)
    if rationales_kwarg:
        _patch_prepare_requests(editor_cls)
    return True


def _patch_init(editor_cls: type) -> None:
    original = editor_cls.__init__
    if getattr(original, _PATCH_MARK, False):
        return

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):  # noqa: ANN001, N807
        hparams = args[0] if args else kwargs.get("hparams")
        if hparams is not None:
            check_model_name(getattr(hparams, "model_name", None))
        original(self, *args, **kwargs)

    setattr(__init__, _PATCH_MARK, True)
    editor_cls.__init__ = __init__


def _patch_prepare_requests(editor_cls: type) -> None:
    original = editor_cls._prepare_requests
    if getattr(original, _PATCH_MARK, False):
        return

    def _prepare_requests(self, prompts, targets, image, *args, **kwargs):  # noqa: ANN001
        rationales = kwargs.pop("rationales", None)
        requests = original(self, prompts, targets, image, *args, **kwargs)
        if rationales is not None:
            if isinstance(rationales, str):
                rationales = [rationales]
            if len(rationales) != len(requests):
                raise RecordError(f"rationales has {len(rationales)} items for {len(requests)} prompts; give one "
                                  "rationale (a string or a list of sentences) per prompt.", field="rationale")
            for request, rationale in zip(requests, rationales):
                request["rationale"] = rationale
        return requests

    setattr(_prepare_requests, _PATCH_MARK, True)
    _prepare_requests.__wrapped__ = original
    editor_cls._prepare_requests = _prepare_requests


def register_if_loaded() -> bool:
    """Register when ``easyeditor`` is already imported (never imports it). Returns whether it did."""
    if "easyeditor.util.alg_dict" not in sys.modules:
        return False
    return register()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: runs :func:`register` right after ``import easyeditor`` completes."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "easyeditor":
            return None
        _remove_hook()
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            if NATIVE_MODULE in sys.modules:
                return  # this EasyEdit ships ReasonEdit itself
            try:
                register()
            except Exception:  # never break the user's import of EasyEdit
                logger.warning("ReasonEdit: registering with EasyEdit failed; call reasonedit_plugin.register().",
                               exc_info=True)

        loader.exec_module = exec_module
        return spec


_HOOK: Optional[_RegisterAfterImport] = None


def _remove_hook() -> None:
    global _HOOK
    if _HOOK is not None and _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
    _HOOK = None


def register_on_import() -> str:
    """Register now if EasyEdit is loaded, else as soon as it is imported.

    Never imports EasyEdit itself. The hook is installed even when ``easyeditor`` is not findable yet (a
    checkout put on ``sys.path`` later is still registered on import; the hook ignores every other
    import). Does nothing when EasyEdit carries ReasonEdit itself (its ``easyeditor.models.reasonedit``
    imports this package while EasyEdit is being imported). Returns ``"registered"``, ``"deferred"`` or
    ``"native"``."""
    global _HOOK
    if NATIVE_MODULE in sys.modules:
        return "native"
    if "easyeditor" in sys.modules:
        return "registered" if register_if_loaded() else "deferred"
    if _HOOK is None:
        _HOOK = _RegisterAfterImport()
        sys.meta_path.insert(0, _HOOK)
    return "deferred"
