"""EasyEdit hyper-parameters of ReasonEdit (``alg_name: ReasonEdit``).

:class:`ReasonEditHyperParams` is :class:`~reasonedit_plugin.config.ReasonEditConfig` (seed, switches and
the nested component sections) plus the bookkeeping fields EasyEdit's ``MultimodalEditor``,
``VQADataset`` and evaluation code read from any hparams object (``model_name``, ``name``, ``device``,
``dtype``, ``batch_size``, ``max_length``, ``exact_match``, image roots, ...).

Relation to EasyEdit's ``HyperParams``
--------------------------------------
EasyEdit has no release that imports on current transformers, so ``easyeditor`` is an optional
integration and importing this module must not import it: ``import easyeditor`` loads every editing
method, needs torchvision and calls ``logging.basicConfig``. The class therefore derives from
:class:`HyperParamsCompat`, a copy of the (tiny) public surface of
``easyeditor.util.hparams.HyperParams`` (``from_json``, ``construct_float_from_scientific_notation``,
``to_dict``), and becomes a real subclass of EasyEdit's class as soon as EasyEdit is around:

* if ``easyeditor.util.hparams`` is already imported when this module is imported, it is a base
  from the start;
* otherwise :func:`adopt_easyedit_base` (called by ``easyedit_registration.register()``, which runs
  when ``reasonedit_plugin`` is imported after ``easyeditor``, or right after ``import easyeditor``)
  inserts it into the bases. EasyEdit itself only reads
  attributes (it never type-checks hparams), so both states behave the same; the rebase only makes
  ``isinstance(hparams, HyperParams)`` true for code that asks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import yaml

from .config import SECTIONS, ReasonEditConfig
from .config_types import build_section, check_types
from .errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

ALG_NAME = "ReasonEdit"

PACKAGE_SCHEME = "package://"
"""``model_name: package://<folder>`` names a model shipped in ``reasonedit_plugin/assets/<folder>``;
it is resolved to the installed folder when the hparams are loaded, so no machine path is shipped."""

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

PLACEHOLDER_PREFIX = "/path/to/"
"""Shipped YAMLs for large models use ``/path/to/<model folder>``; replace it with your local copy."""

MISSING_RATIONALE_POLICIES = ("error", "answer_only")

DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps)(:\d{1,3})?")
"""Devices a YAML may name (whether it exists on this machine is checked when the model is loaded)."""

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}


class HyperParamsCompat:
    """The public surface of ``easyeditor.util.hparams.HyperParams`` (used while EasyEdit is not loaded)."""

    @classmethod
    def from_json(cls, fpath: Union[str, os.PathLike]):
        with open(fpath, "r", encoding="utf-8") as f:
            data = json.load(f)
        return cls(**data)

    @staticmethod
    def construct_float_from_scientific_notation(config: dict) -> dict:
        for key, value in config.items():
            if isinstance(value, str):
                try:
                    config[key] = float(value)
                except ValueError:
                    pass
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def _easyedit_hyperparams_class() -> Optional[type]:
    """EasyEdit's ``HyperParams`` if (and only if) ``easyeditor`` is already imported."""
    module = sys.modules.get("easyeditor.util.hparams")
    return getattr(module, "HyperParams", None) if module is not None else None


def parse_dtype(value: Any) -> torch.dtype:
    """``"bfloat16"``, ``"torch.bfloat16"`` or a ``torch.dtype`` -> ``torch.dtype``.

    EasyEdit passes ``hparams.dtype`` to ``from_pretrained(torch_dtype=...)`` and to
    ``BatchFeature.to(device, dtype=...)``, so it must be a real ``torch.dtype`` at run time."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.strip().removeprefix("torch.")
        if name in _DTYPES:
            return _DTYPES[name]
    raise ConfigError(
        f"dtype={value!r} is not supported.{did_you_mean(str(value), _DTYPES)} "
        f"Use one of {sorted(set(_DTYPES) - {'float', 'half'})} (optionally prefixed 'torch.')."
    )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def package_path(value: str) -> Path | None:
    """``package://<path>`` -> that path inside the packaged assets; None for any other value."""
    return ASSETS_DIR / value[len(PACKAGE_SCHEME):].strip("/") if value.startswith(PACKAGE_SCHEME) else None


def resolve_model_name(model_name: str) -> str:
    """Resolve ``package://<folder>`` to the packaged asset folder; other values pass unchanged."""
    path = package_path(model_name)
    if path is None:
        return model_name
    folder = model_name[len(PACKAGE_SCHEME):].strip("/")
    if not folder or not path.is_dir():
        shipped = sorted(p.name for p in ASSETS_DIR.iterdir() if p.is_dir()) if ASSETS_DIR.is_dir() else []
        raise ConfigError(
            f"model_name={model_name!r}: no packaged model folder {folder!r} in {ASSETS_DIR}."
            f"{did_you_mean(folder, shipped)} Packaged models: {shipped or 'none installed'}."
        )
    return str(path)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def resolve_image_paths(specs: Any, field: str = "retrieval.nullset.null_images") -> list[Path]:
    """Image files named by ``specs`` (files, folders of images, ``package://<folder>``), folders expanded
    in name order. A missing path is a ConfigError naming ``field``."""
    out: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = package_path(text) or Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{field}: folder {text!r} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise ConfigError(f"{field}: {text!r} is neither an image file nor a folder ({path}); give a path or "
                              "package://<folder> for a packaged one.")
    return out


def portable_model_name(path: Union[str, Path, None]) -> str:
    """The inverse of :func:`resolve_model_name` for reports: a packaged folder as ``package://<folder>``
    (so a committed report names no machine's path); anything else unchanged."""
    if path is None:
        return "none"
    try:
        relative = Path(path).resolve().relative_to(ASSETS_DIR)
    except ValueError:
        return str(path)
    return PACKAGE_SCHEME + relative.as_posix()


@dataclass(kw_only=True)
class ReasonEditHyperParams(ReasonEditConfig, HyperParamsCompat):
    """EasyEdit hyper-parameters of ReasonEdit: the engine's :class:`ReasonEditConfig` (its fields and
    checks) plus the fields below, which EasyEdit reads; ``to_config()`` gives an independent engine config.

    Load with :meth:`from_hparams` (``hparams/ReasonEdit/<model>.yaml``). Top-level keys are the fields
    below and ReasonEditConfig's (``seed``, ``only_edit_errors``, ``max_new_tokens`` and the sections
    ``embedding``, ``augment``, ``codebook``, ``retrieval``, ``fusion``, ``patches``, ``topology``,
    ``guard`` and ``key_tuning``: mappings onto the dataclasses of ``config.py``). Unknown keys are an error.
    """

    model_name: str
    """Local model folder. EasyEdit picks the loader from substrings of this path ('qwen2-vl',
    'qwen3-vl', 'llava-onevision', ...), so keep the model's name in the folder name.
    ``package://tiny-qwen2-vl-shapes`` is the shipped default model."""
    alg_name: str = ALG_NAME
    name: Optional[str] = None
    """Processor/tokenizer folder read by EasyEdit's datasets (``config.name``); defaults to model_name."""
    device: Union[int, str, None] = None
    """``cpu``, ``cuda``, ``cuda:1`` or a GPU number; null: CUDA when available, else CPU (EasyEdit's rule)."""
    dtype: Any = "float32"
    """Model and input dtype: float32, bfloat16 or float16 (``torch.`` prefix accepted)."""
    batch_size: int = 1
    """EasyEdit edits one request at a time; must be 1."""
    max_length: int = 30
    model_parallel: bool = False
    exact_match: bool = False
    file_type: str = "image"
    coco_image: Optional[str] = None
    """Image root of EasyEdit's VQADataset / CaptionDataset (``edit_dataset``)."""
    rephrase_image: Optional[str] = None
    """Root of the rephrased images of EasyEdit's datasets."""
    tokenizer_class: Optional[str] = None
    tokenizer_name: Optional[str] = None
    qformer_checkpoint: Optional[str] = None
    qformer_name_or_path: Optional[str] = None
    state_dict_file: Optional[str] = None
    pretrained_ckpt: Optional[str] = None

    rationale_source: Optional[str] = None
    """JSON / JSONL file whose records carry ``rationale`` next to the question (``prompt`` or EasyEdit's
    ``src``) and optionally the answer (``target`` / ``alt``): consulted for every EasyEdit request that
    has no ``rationale`` field (EasyEdit's datasets drop unknown fields). Relative to the YAML's folder."""
    missing_rationale: str = "error"
    """``error``: an edit without a rationale raises (names the ways to give one); ``answer_only``: store
    the answer entry alone (the paper's 'no rationale' ablation)."""

    model_specs: list = field(default_factory=list)
    """Python modules that register ModelSpec rows for families not in the table (``[my_pkg.specs]``),
    imported when the hparams load; see docs/ADDING_A_FAMILY.md."""

    def __post_init__(self) -> None:
        if self.alg_name != ALG_NAME:
            raise ConfigError(
                f"alg_name={self.alg_name!r}: ReasonEditHyperParams only loads alg_name: {ALG_NAME!r}. "
                f"Load this file with the hyper-parameter class of {self.alg_name!r} instead."
            )
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ConfigError(
                "model_name must be a model folder (or package://tiny-qwen2-vl-shapes), got "
                f"{self.model_name!r}."
            )
        self.model_name = resolve_model_name(self.model_name)
        if self.name is None:
            self.name = self.model_name
        else:
            self.name = resolve_model_name(self.name)
        if isinstance(self.device, bool) or not isinstance(self.device, (int, str, type(None))) or (
                isinstance(self.device, int) and not 0 <= self.device < 1024) or (
                isinstance(self.device, str) and not DEVICE_PATTERN.fullmatch(self.device)):
            raise ConfigError(f"device={str(self.device)[:40]!r}: give cpu, cuda, cuda:N, mps, a GPU number or null.")
        self.dtype = parse_dtype(self.dtype)
        if self.batch_size != 1:
            raise ConfigError(
                f"batch_size={self.batch_size}: EasyEdit's MultimodalEditor edits one request at a time; "
                "set batch_size: 1."
            )
        if self.max_length < 1:
            raise ConfigError(f"max_length={self.max_length} must be >= 1.")
        if self.missing_rationale not in MISSING_RATIONALE_POLICIES:
            raise ConfigError(
                f"missing_rationale={self.missing_rationale!r} is not one of "
                f"{list(MISSING_RATIONALE_POLICIES)}.{did_you_mean(self.missing_rationale, MISSING_RATIONALE_POLICIES)}"
            )
        if isinstance(self.model_specs, str) or not all(isinstance(m, str) for m in self.model_specs):
            raise ConfigError(f"model_specs={self.model_specs!r}: give a list of module names, e.g. [my_pkg.specs].")
        if self.model_specs:
            from .model_specs import load_model_specs

            load_model_specs(list(self.model_specs))
        super().__post_init__()  # the engine's checks: its fields and the nested sections

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base_dir: Union[str, os.PathLike, None] = None
                  ) -> "ReasonEditHyperParams":
        """Build from a mapping, rejecting unknown keys with a did-you-mean.

        ``base_dir`` (the YAML's folder) resolves a relative ``rationale_source``."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"hparams must be a mapping of field: value, got {type(values).__name__}.")
        values = dict(values)
        known = [f.name for f in fields(cls) if f.init]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown key {key!r} in ReasonEdit hparams.{did_you_mean(str(key), known)} "
                    f"Valid top-level keys: {sorted(known)}."
                )
        if "model_name" not in values:
            raise ConfigError("ReasonEdit hparams need model_name (a local model folder).")
        if "alg_name" not in values:
            raise ConfigError(f"ReasonEdit hparams need alg_name: {ALG_NAME}.")
        check_types(cls, {k: v for k, v in values.items() if k not in SECTIONS}, "")
        for name, cls_ in SECTIONS.items():
            if name in values:
                values[name] = build_section(cls_, values[name], name)
        source = values.get("rationale_source")
        if source is not None and base_dir is not None and not os.path.isabs(str(source)):
            values["rationale_source"] = str(Path(base_dir) / str(source))
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"ReasonEdit hparams: {exc}") from exc

    @classmethod
    def from_hparams(cls, hparams_name_or_path: Union[str, os.PathLike]) -> "ReasonEditHyperParams":
        """Load a YAML (``.yaml`` is appended when missing, as in EasyEdit)."""
        path = str(hparams_name_or_path)
        if not path.endswith((".yaml", ".yml")):
            path += ".yaml"
        if not os.path.isfile(path):
            raise ConfigError(f"hparams file {path!r} does not exist.")
        with open(path, "rb") as stream:
            data = stream.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8.") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        except ValueError as exc:  # a number beyond Python's digit limit
            raise ConfigError(f"{path}: a value cannot be read ({str(exc)[:80]}); use shorter numbers.") from None
        except RecursionError:
            raise ConfigError(f"{path}: the YAML is nested too deeply; hparams are flat sections.") from None
        if values is None:
            raise ConfigError(f"{path} is empty.")
        try:
            return cls.from_dict(values, base_dir=os.path.dirname(os.path.abspath(path)))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    # -- views -----------------------------------------------------------------------------------

    def to_config(self) -> ReasonEditConfig:
        """The engine configuration alone (an independent copy: sections copied, EasyEdit's fields dropped)."""
        return ReasonEditConfig(**{f.name: getattr(self, f.name) if f.name not in SECTIONS
                                   else dataclasses.replace(getattr(self, f.name)) for f in fields(ReasonEditConfig)})

    def to_dict(self) -> dict:
        """Plain, YAML-safe values (``dtype`` as its name)."""
        values = asdict(self)
        values["dtype"] = dtype_name(self.dtype)
        return values

    @property
    def is_placeholder(self) -> bool:
        """True while ``model_name`` is still the shipped ``/path/to/...`` placeholder."""
        return self.model_name.startswith(PLACEHOLDER_PREFIX)


def adopt_easyedit_base() -> bool:
    """Make :class:`ReasonEditHyperParams` a subclass of EasyEdit's ``HyperParams`` if it is loaded.

    Idempotent; returns whether the class now subclasses it."""
    base = _easyedit_hyperparams_class()
    if base is None:
        return False
    if not issubclass(ReasonEditHyperParams, base):
        ReasonEditHyperParams.__bases__ = (ReasonEditConfig, base, HyperParamsCompat)
    return True


adopt_easyedit_base()
