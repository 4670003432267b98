"""Shipped hparams YAMLs -> copies EasyEdit's own ``<Method>HyperParams.from_hparams(path)`` reads as they are.

The shipped YAMLs are portable: ``model_name: package://tiny-qwen2-vl-shapes`` names the packaged model,
IKE names the packaged sentence encoder, MEND's ``archive`` is relative, WISE's margins are named fields,
``results_dir: null`` means "a temporary folder". Only this project's loaders understand that. A
materialised copy (``reasonedit hparams --materialize``) has this machine's real paths and EasyEdit's own
forms, so an EasyEdit user runs it with ``MultimodalEditor.from_hparams(<EasyEdit class>.from_hparams(copy))``.

Every change is listed in :attr:`Materialized.changes`; nothing else in the file changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import yaml

from .easyedit_registration import check_model_name
from .errors import ConfigError
from .hparams import PACKAGE_SCHEME, resolve_model_name

logger = logging.getLogger(__name__)

__all__ = ["Materialized", "materialize", "EASYEDIT_CLASSES"]

REPO_ROOT = Path(__file__).resolve().parent.parent

EASYEDIT_CLASSES: dict[str, tuple[str, str]] = {
    "IKE": ("easyeditor.models.ike.ike_hparams", "IKEMultimodalHyperParams"),
    "GRACE": ("easyeditor.models.grace.grace_hparams", "GraceHyperParams"),
    "WISE": ("easyeditor.models.wise.wise_multimodal_hparams", "WISEMultimodalHyperParams"),
    "LoRA": ("easyeditor.models.lora.lora_multimodal_hparams", "LoRAMultimodalHyperParams"),
    "MEND": ("easyeditor.models.mend.mend_multimodal_hparams", "MENDMultimodalHparams"),
    "FT": ("easyeditor.models.ft.ft_hparams", "FTHyperParams"),
    "ReasonEdit": ("reasonedit_plugin.hparams", "ReasonEditHyperParams"),
}
"""alg_name -> (module, class) whose ``from_hparams`` reads the materialised copy."""

NOT_MATERIALIZABLE = {
    "SERAC": ("hparams/SERAC configures this project's SERAC for Hugging Face VLMs; EasyEdit's multimodal SERAC "
              "(alg_name SERAC_MULTI) runs only its LAVIS BLIP-2/MiniGPT-4 models, so there is no EasyEdit SERAC "
              "configuration for this model to write (docs/BASELINES.md)"),
}

PATH_KEYS = ("archive", "results_dir", "rationale_source")
"""Keys holding a path that must stay valid when the file moves (made absolute)."""


@dataclasses.dataclass
class Materialized:
    """One written copy."""

    source: Path
    path: Path
    alg_name: str
    easyedit_class: str
    """``module:Class`` whose ``from_hparams`` reads ``path``."""
    changes: list[str]
    """What was changed, one line per key."""
    warnings: list[str]
    """Things to do before running (e.g. train MEND's archive)."""


def _absolute(value: str, bases: list[Path]) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).exists():
            return (base / path).resolve()
    return (bases[0] / path).resolve()


def materialize(source: Union[str, os.PathLike], out: Union[str, os.PathLike, None] = None,
                model: Union[str, os.PathLike, None] = None) -> Materialized:
    """Write an EasyEdit-readable copy of the hparams YAML ``source``.

    ``out``: a file, or a folder (``<out>/<METHOD>/<name>.yaml``); default ``runs/hparams`` under the
    working directory. ``model``: a local model folder replacing ``model_name`` / ``name``. Raises
    :class:`ConfigError` (one line, with the fix) for a placeholder or unloadable model name, an unknown
    method, or a YAML that has no EasyEdit form."""
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"hparams file {str(source)!r} does not exist.")
    try:
        config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())}).") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping of hyper-parameters, got {type(config).__name__}.")
    alg = str(config.get("alg_name"))
    if alg in NOT_MATERIALIZABLE:
        raise ConfigError(f"{source}: {NOT_MATERIALIZABLE[alg]}.")
    if alg not in EASYEDIT_CLASSES:
        raise ConfigError(f"{source}: alg_name={alg!r} has no EasyEdit hyper-parameter class here; known: "
                          f"{sorted(EASYEDIT_CLASSES)}.")
    changes: list[str] = []
    warnings: list[str] = []
    bases = [Path.cwd(), source.resolve().parent, REPO_ROOT]

    for key in ("model_name", "name"):
        value = config.get(key)
        if model is not None and (key == "model_name" or isinstance(value, str)):
            new = str(Path(model).expanduser().resolve())
        elif isinstance(value, str) and value.startswith(PACKAGE_SCHEME):
            new = resolve_model_name(value)
        else:
            continue
        if new != value:
            config[key] = new
            changes.append(f"{key}: {value} -> {new}")
    check_model_name(config.get("model_name"))

    nullset = (config.get("retrieval") or {}).get("nullset") if alg == "ReasonEdit" else None
    if isinstance(nullset, dict) and isinstance(nullset.get("null_images"), list):
        images = nullset["null_images"]
        resolved = [resolve_model_name(v) if isinstance(v, str) and v.startswith(PACKAGE_SCHEME) else v
                    for v in images]
        if resolved != images:
            nullset["null_images"] = resolved
            changes.append(f"retrieval.nullset.null_images: {images} -> {resolved}")

    if alg == "WISE" and all(k in config for k in ("alpha", "beta", "gamma")):
        margin = [config.pop("alpha"), config.pop("beta"), config.pop("gamma")]
        config["act_margin"] = margin
        changes.append(f"alpha, beta, gamma -> act_margin: {margin} (EasyEdit's WISE form)")

    if alg == "IKE":
        from .text_encoder import resolve_text_encoder_path

        value = str(config.get("sentence_model_name") or "all-MiniLM-L6-v2")
        new = str(resolve_text_encoder_path(value).resolve())
        if new != value:
            config["sentence_model_name"] = new
            changes.append(f"sentence_model_name: {value} -> {new} (local folder; EasyEdit loads it offline)")
        old = config.get("results_dir")
        if old in (None, "", "."):
            target = Path(out) if out is not None and Path(out).suffix not in (".yaml", ".yml") else \
                (Path(out).parent if out is not None else Path.cwd() / "runs" / "hparams")
            new_dir = (target / "IKE-cache").resolve()
            config["results_dir"] = str(new_dir)
            changes.append(f"results_dir: {old} -> {new_dir} (IKE's embedding cache)")

    for key in PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value not in ("", ".") and not Path(value).is_absolute():
            new = str(_absolute(value, bases))
            config[key] = new
            changes.append(f"{key}: {value} -> {new}")
    if alg == "MEND" and isinstance(config.get("archive"), str) and not Path(config["archive"]).is_file():
        warnings.append(f"MEND's archive {config['archive']} does not exist yet: train it with `python -m "
                        "reasonedit_plugin.easyedit_baselines train-mend` (docs/BASELINES.md).")

    for key in ("coco_image", "rephrase_image"):
        if config.get(key) == "easy-vqa":
            from .data.shaperules import easy_vqa_root

            new = str(easy_vqa_root()) + "/"
            config[key] = new
            changes.append(f"{key}: easy-vqa -> {new}")

    destination = _destination(source, out, alg)
    destination.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Materialised from {source} by `reasonedit hparams --materialize` for EasyEdit's own\n"
              f"# {EASYEDIT_CLASSES[alg][1]}.from_hparams: this machine's paths; do not commit.\n")
    destination.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    module, cls = EASYEDIT_CLASSES[alg]
    return Materialized(source, destination, alg, f"{module}:{cls}", changes, warnings)


def _destination(source: Path, out: Union[str, os.PathLike, None], alg: str) -> Path:
    if out is not None and Path(out).suffix in (".yaml", ".yml"):
        return Path(out)
    folder = Path(out) if out is not None else Path.cwd() / "runs" / "hparams"
    return folder / alg / source.name


def load_with_easyedit(path: Union[str, os.PathLike], alg_name: str) -> Any:
    """``<EasyEdit class>.from_hparams(path)`` for ``alg_name`` (imports EasyEdit)."""
    import importlib

    module, cls = EASYEDIT_CLASSES[alg_name]
    return getattr(importlib.import_module(module), cls).from_hparams(str(path))


def materialize_command(sources: Sequence[str], out: str | None, model: str | None, check: bool,
                        say: Callable[..., None] = print) -> int:
    """``reasonedit hparams --materialize YAML... [--out DIR] [--model PATH] [--check]``."""
    for source in sources:
        done = materialize(source, out, model=model)
        say(f"{done.source} -> {done.path}   ({done.easyedit_class}.from_hparams)")
        for line in done.changes:
            say(f"  {line}")
        for line in done.warnings:
            print(f"  warning: {line}", file=sys.stderr)
        if check:
            load_with_easyedit(done.path, done.alg_name)
            say(f"  loaded with {done.easyedit_class.split(':')[1]}.from_hparams: ok")
    return 0
