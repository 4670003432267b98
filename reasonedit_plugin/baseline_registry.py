"""What the comparison knows about EasyEdit's baselines without importing them: the method names, the
runner registry (``easyedit_baselines.py`` registers one runner per method when imported), whether
``easyeditor`` imports here, and which EasyEdit commit it is.

``baselines.py`` (the comparison) and ``easyedit_baselines.py`` (EasyEdit's editors as rows) both import
this module; neither imports the other at import time.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .errors import ConfigError, ReasonEditError, did_you_mean

EASYEDIT_METHODS: tuple[str, ...] = ("IKE", "GRACE", "WISE", "LoRA", "MEND")
"""EasyEdit's multimodal methods compared when ``easyeditor`` is importable."""

OWN_BASELINES: tuple[str, ...] = ("FT", "SERAC")
"""Baselines this project implements for Hugging Face VLMs where EasyEdit cannot run them on such models
(``finetune_baseline.py``, ``serac_baseline.py``); they run without EasyEdit."""


class BaselineUnavailable(ReasonEditError):
    """A baseline cannot run here; the message is the exact reason shown in its row."""


# ================================================================================================
# EasyEdit baselines
# ================================================================================================

EasyEditRunner = Callable[..., Any]
"""``runner(model_path=..., hparams_path=..., records=..., reference=..., protocol=..., vlm=...) -> EditMethod``;
raise :class:`BaselineUnavailable` with the reason when the method cannot run on this model."""

_EASYEDIT_RUNNERS: dict[str, EasyEditRunner] = {}


def register_easyedit_runner(name: str, runner: EasyEditRunner, overwrite: bool = False) -> None:
    """Register how one EasyEdit method is set up (an :class:`EditMethod` wrapping ``MultimodalEditor``)."""
    if name not in EASYEDIT_METHODS:
        raise ConfigError(f"unknown EasyEdit method {name!r}; known: {list(EASYEDIT_METHODS)}."
                          f"{did_you_mean(name, EASYEDIT_METHODS)}")
    if not callable(runner):
        raise ConfigError(f"the runner for {name} must be callable.")
    if name in _EASYEDIT_RUNNERS and not overwrite:
        raise ConfigError(f"an EasyEdit runner for {name} is already registered; pass overwrite=True.")
    _EASYEDIT_RUNNERS[name] = runner


def easyedit_runners() -> Mapping[str, EasyEditRunner]:
    """The registered runners (read-only view)."""
    return MappingProxyType(_EASYEDIT_RUNNERS)


def easyedit_status() -> tuple[bool, str | None]:
    """Whether ``easyeditor`` is importable here, and if not the exact reason."""
    try:
        importlib.import_module("easyeditor")
    except Exception as exc:  # noqa: BLE001 - any import failure is a reason to skip, reported verbatim
        return False, (f"easyeditor is not importable in {sys.executable} ({type(exc).__name__}: {exc}); "
                       "install EasyEdit (or put its checkout on PYTHONPATH) to run EasyEdit's baselines")
    return True, None


def easyedit_commit() -> str | None:
    """The git commit of the importable EasyEdit checkout, if it is one (no import when absent)."""
    spec = importlib.util.find_spec("easyeditor") if "easyeditor" not in sys.modules else None
    path = None
    if "easyeditor" in sys.modules:
        path = getattr(sys.modules["easyeditor"], "__file__", None)
    elif spec is not None:
        path = spec.origin
    if not path:
        return None
    root = Path(path).resolve().parent.parent
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = root / ".git" / ref[5:]
            if ref_file.is_file():
                return ref_file.read_text().strip()
            packed = root / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.is_file() else []:
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


def read_baseline_yaml(path: Any, alg_name: str, known: set[str], ignored: frozenset[str]) -> dict[str, Any]:
    """The values of one of this project's baseline YAMLs (FT, SERAC) that its config dataclass takes
    (``known``): the file must exist, say ``alg_name: <alg_name>`` and hold no key outside ``known`` and
    ``ignored`` (EasyEdit's keys the row does not use); each failure is a one-line ``ConfigError``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{alg_name} hparams file {str(path)!r} does not exist.")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if values.get("alg_name") != alg_name:
        raise ConfigError(f"{path}: alg_name is {values.get('alg_name')!r}, expected {alg_name!r}.")
    for key in values:
        if key not in known and key not in ignored:
            raise ConfigError(f"{path}: unknown key {key!r} for {alg_name}.{did_you_mean(key, known | ignored)}")
    return {k: v for k, v in values.items() if k in known}

