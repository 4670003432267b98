"""Setting up EasyEdit's own multimodal editors for this project: which hyper-parameter class each method
uses, loading a shipped ``hparams/<METHOD>/<model>.yaml`` into it, and the model folder EasyEdit loads.

EasyEdit loads the model itself, by path, choosing its loader from substrings of ``model_name``
(``qwen2-vl``, ...). The model folder is copied to a temporary run folder of the same name. When the
folder's processor needs a video sub-processor that the folder does not configure (``AutoProcessor`` of
a Qwen2-VL processor loads a video processor whenever torchvision is installed, which EasyEdit requires),
the copy gets a ``video_preprocessor_config.json`` derived from the image processor's settings (no video
is ever processed). The source folder itself is never changed.

``easyeditor`` is imported lazily, when a method is set up. Writing YAMLs EasyEdit's own
``from_hparams`` can read (``reasonedit hparams --materialize``) is ``easyedit_materialize.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from .baseline_registry import BaselineUnavailable
from .easyedit_registration import LOADER_HINT, easyedit_can_load
from .errors import ConfigError, did_you_mean
from .hparams import PACKAGE_SCHEME, resolve_model_name

HPARAMS_ROOT = Path(__file__).resolve().parent.parent / "hparams"
"""The repository's ``hparams`` folder (``hparams/<METHOD>/<model>.yaml``)."""

DEFAULT_MODEL = "tiny-qwen2-vl-shapes"


@dataclasses.dataclass(frozen=True)
class EasyEditAlgorithm:
    """Where EasyEdit keeps one multimodal method's hyper-parameter class."""

    name: str
    hparams_module: str
    hparams_class: str
    training: bool = False
    """Needs weights trained by EasyEdit's trainer (``archive``)."""
    apply_fix: str | None = None
    """``module:function`` of the plugin's replacement for EasyEdit's apply function of this method, where
    EasyEdit's has a bug the comparison works around (the module says which); None: EasyEdit's own."""


ALGORITHMS: dict[str, EasyEditAlgorithm] = {a.name: a for a in (
    EasyEditAlgorithm("IKE", "easyeditor.models.ike.ike_hparams", "IKEMultimodalHyperParams"),
    EasyEditAlgorithm("GRACE", "easyeditor.models.grace.grace_hparams", "GraceHyperParams",
                      apply_fix="reasonedit_plugin.easyedit_grace:apply_grace_to_multimodal_model"),
    EasyEditAlgorithm("WISE", "easyeditor.models.wise.wise_multimodal_hparams", "WISEMultimodalHyperParams"),
    EasyEditAlgorithm("LoRA", "easyeditor.models.lora.lora_multimodal_hparams", "LoRAMultimodalHyperParams"),
    EasyEditAlgorithm("MEND", "easyeditor.models.mend.mend_multimodal_hparams", "MENDMultimodalHparams",
                      training=True),
    EasyEditAlgorithm("SERAC", "easyeditor.models.serac.serac_multimodal_hparams", "SERACMultimodalHparams",
                      training=True),
)}

LIST_REQUEST_ALGS = frozenset({"GRACE", "WISE", "LoRA"})
"""Methods whose multimodal apply function takes a LIST of requests. EasyEdit's sequential mode
(``MultimodalEditor.edit(sequential_edit=True)``, easyeditor/editors/multimodal_editor.py) passes the
single request dict instead, and these functions then iterate over the dict's keys (``TypeError: string
indices must be integers``); :class:`EasyEditMethod` wraps its editor's ``apply_algo`` to pass ``[request]``."""

SERAC_REASON = (
    "EasyEdit's multimodal SERAC supports only its LAVIS BLIP-2/MiniGPT-4 models: "
    "SeracMultimodalRewriteExecutor.apply_to_model builds a LAVIS batch (torch.stack of request['image'] "
    "tensors, text_input, prompts_len), and trainer/algs/SERAC.py's image-aware branches are written for "
    "model_name 'blip2'/'minigpt4' only (any other model takes the text-only path: input_ids into a text "
    "replacement model, no image); there is no hparams/TRAINING/SERAC for any Hugging Face VLM")

NOT_SUPPORTED: dict[str, str] = {
    "SERAC": SERAC_REASON,
}


# ================================================================================================
# EasyEdit import
# ================================================================================================

def easyeditor() -> Any:
    try:
        return importlib.import_module("easyeditor")
    except Exception as exc:  # noqa: BLE001 - reported verbatim as the row's reason
        raise BaselineUnavailable(f"easyeditor is not importable ({type(exc).__name__}: {exc})") from exc


def apply_fix(name: str) -> Any | None:
    """The plugin's fixed apply function for EasyEdit method ``name`` (``EasyEditAlgorithm.apply_fix``), or
    None where EasyEdit's own is used."""
    algorithm = ALGORITHMS.get(name)
    if algorithm is None or algorithm.apply_fix is None:
        return None
    module, function = algorithm.apply_fix.split(":")
    return getattr(importlib.import_module(module), function)


def multimodal_editor_class() -> Any:
    easyeditor()
    return importlib.import_module("easyeditor.editors.multimodal_editor").MultimodalEditor


# ================================================================================================
# Hyper-parameters
# ================================================================================================

def hparams_path(name: str, model: str = DEFAULT_MODEL, root: Union[str, Path, None] = None) -> Path:
    """``<root>/<name>/<model>.yaml`` (``root``: the repository's ``hparams`` folder)."""
    return Path(root or HPARAMS_ROOT) / name / f"{model}.yaml"


def _resolve_relative(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value or value in (".", "..") or value.startswith(PACKAGE_SCHEME):
        return value
    path = Path(value)
    if path.is_absolute() or path.exists():
        return value
    for folder in (base, HPARAMS_ROOT.parent):  # the YAML's folder, then the repository root
        if (folder / path).exists():
            return str(folder / path)
    return value


def load_hparams(name: str, path: Union[str, Path], model_folder: Union[str, Path, None] = None,
                 overrides: Mapping[str, Any] | None = None) -> Any:
    """EasyEdit's hparams object for method ``name`` from a YAML.

    ``package://<folder>`` in ``model_name``/``name`` resolves to the packaged model (or to
    ``model_folder`` when given: the run copy EasyEdit loads); ``dtype`` strings become ``torch.dtype``;
    a relative ``archive`` resolves against the working directory, the YAML's folder, then the repository root.
    Unknown keys are an error with a did-you-mean (EasyEdit's own ``from_hparams`` would raise a bare
    ``TypeError``)."""
    import torch

    algo = ALGORITHMS.get(name)
    if algo is None:
        raise ConfigError(f"no EasyEdit multimodal hparams class for {name!r}; known: {list(ALGORITHMS)}."
                          f"{did_you_mean(name, ALGORITHMS)}")
    path = Path(path)
    if not path.is_file():
        raise BaselineUnavailable(f"no EasyEdit hparams file {path} for {name}")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of hyper-parameters, got {type(config).__name__}.")
    config.update(overrides or {})
    if config.get("alg_name") != name:
        raise ConfigError(f"{path}: alg_name is {config.get('alg_name')!r}, expected {name!r}.")
    if "act_margin" in config:  # EasyEdit's positional form of WISE's margins
        margin = config.pop("act_margin")
        if not (isinstance(margin, (list, tuple)) and len(margin) == 3):
            raise ConfigError(f"{path}: act_margin must be [alpha, beta, gamma], got {margin!r}.")
        config.update(alpha=margin[0], beta=margin[1], gamma=margin[2])
    for key in ("model_name", "name"):
        value = config.get(key)
        if isinstance(value, str) and value.startswith(PACKAGE_SCHEME):
            config[key] = str(model_folder) if model_folder is not None else str(resolve_model_name(value))
    if model_folder is not None and "model_name" in config:
        config["model_name"] = str(model_folder)
    if isinstance(config.get("dtype"), str):
        dtype = config["dtype"].removeprefix("torch.")
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"{path}: dtype={config['dtype']!r} is not a torch dtype (float32, bfloat16, ...).")
        config["dtype"] = getattr(torch, dtype)
    if "archive" in config:
        config["archive"] = _resolve_relative(config["archive"], path.parent)
    from easyeditor.util.hparams import HyperParams

    config = HyperParams.construct_float_from_scientific_notation(config)  # as EasyEdit's from_hparams
    cls = getattr(importlib.import_module(algo.hparams_module), algo.hparams_class)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} for EasyEdit's {algo.hparams_class}."
                          f"{did_you_mean(unknown[0], known)} Known: {sorted(known)}.")
    try:
        return cls(**config)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc} (EasyEdit's {algo.hparams_class}).") from exc


def hparams_to_dict(hparams: Any) -> dict[str, Any]:
    """Plain JSON values of an hparams object (for the report's configuration)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(hparams):
        value = getattr(hparams, f.name)
        if not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out[f.name] = value
    return out


# ================================================================================================
# The model folder EasyEdit loads
# ================================================================================================

def _needs_video_config(folder: Path) -> tuple[bool, dict[str, Any] | None]:
    """Whether AutoProcessor will want a video processor config the folder does not have, and the image
    processor settings to derive one from."""
    if (folder / "video_preprocessor_config.json").is_file():
        return False, None
    proc_file = folder / "processor_config.json"
    proc = json.loads(proc_file.read_text(encoding="utf-8")) if proc_file.is_file() else {}
    if "video_processor" in proc:
        return False, None
    image = proc.get("image_processor")
    if image is None and (folder / "preprocessor_config.json").is_file():
        image = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    return config.get("model_type") in VIDEO_PROCESSOR_MAPPING_NAMES and image is not None, image


def video_processor_config(model_type: str, image: Mapping[str, Any]) -> dict[str, Any]:
    """A video processor config for ``model_type`` carrying the image processor's settings."""
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING_NAMES

    cls_name = VIDEO_PROCESSOR_MAPPING_NAMES[model_type]
    keep = {k: v for k, v in image.items() if not k.endswith("_type") and k != "processor_class"}
    return {**keep, "video_processor_type": cls_name}


class ModelFolder:
    """A temporary copy of a model folder, with the same folder name, ready for EasyEdit's loader."""

    def __init__(self, source: Union[str, Path]):
        source = Path(source)
        if not (source / "config.json").is_file():
            raise BaselineUnavailable(f"{source} is not a model folder with a config.json (EasyEdit loads "
                                      "models by path)")
        if not easyedit_can_load(source.name):
            raise BaselineUnavailable(
                f"EasyEdit picks its model loader from substrings of model_name ({LOADER_HINT}); "
                f"the folder name {source.name!r} has none. Rename the folder (e.g. my-qwen2-vl-model)")
        self._tmp = tempfile.TemporaryDirectory(prefix="reasonedit-easyedit-")
        self._finalizer = weakref.finalize(self, self._tmp.cleanup)
        self.path = Path(self._tmp.name) / source.name
        shutil.copytree(source, self.path)
        self.added: list[str] = []
        needs, image = _needs_video_config(self.path)
        if needs:
            model_type = json.loads((self.path / "config.json").read_text(encoding="utf-8"))["model_type"]
            (self.path / "video_preprocessor_config.json").write_text(
                json.dumps(video_processor_config(model_type, image or {}), indent=2), encoding="utf-8")
            self.added.append("video_preprocessor_config.json")

    @property
    def scratch(self) -> Path:
        """A folder for EasyEdit's own files (IKE's embedding cache)."""
        path = Path(self._tmp.name) / "scratch"
        path.mkdir(exist_ok=True)
        return path

    def cleanup(self) -> None:
        self._finalizer()
