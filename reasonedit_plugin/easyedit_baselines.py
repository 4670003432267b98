"""EasyEdit's own multimodal editors as baselines of the comparison (``baselines.py``), on the same model
and the same records as ReasonEdit.

Each baseline is EasyEdit's real ``MultimodalEditor`` with EasyEdit's hparams class for the method, loaded
from ``hparams/<METHOD>/<model>.yaml``. It is wrapped in the :class:`~reasonedit_plugin.evaluation.EditMethod`
interface so the shared protocol scores it like every other row (``evaluation.py``: paper metrics and
EasyEdit's keys from teacher-forced logits). Every edit goes through ``MultimodalEditor.edit(...,
sequential_edit=True)``; EasyEdit's own per-edit pre/post metrics are kept as well (``native_metrics``,
summarised in ``extra``).

Nothing here is imported by the engine; ``easyeditor`` is imported lazily, when a runner runs.
Runners are registered with :func:`reasonedit_plugin.baselines.register_easyedit_runner` when this module
is imported (``baselines.py`` imports it on demand). A method that cannot run raises
:class:`~reasonedit_plugin.baselines.BaselineUnavailable` with the exact reason.

The model
---------
EasyEdit loads the model itself, by path, choosing its loader from substrings of ``model_name``
(``qwen2-vl``, ...). The model folder is copied to a temporary run folder of the same name. When the
folder's processor needs a video sub-processor that the folder does not configure (the shipped
``tiny-qwen2-vl-shapes`` has an image-only processor, but ``AutoProcessor.from_pretrained`` of a
Qwen2-VL processor loads a video processor whenever torchvision is installed, which EasyEdit requires),
the copy gets a ``video_preprocessor_config.json`` derived from the image processor's settings (no video
is ever processed). The shipped asset folder itself is never changed.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import logging
import pickle
import shutil
import statistics
import tempfile
import time
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml

from .baselines import EASYEDIT_METHODS, BaselineUnavailable, easyedit_commit, register_easyedit_runner
from .errors import ConfigError, did_you_mean
from .evaluation import EASYEDIT_KEYS, Prediction, TeacherForced, _pick, vlm_teacher_forced
from .hparams import PACKAGE_SCHEME, resolve_model_name
from .records import EditRecord, ImageLike, load_image

logger = logging.getLogger(__name__)

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


ALGORITHMS: dict[str, EasyEditAlgorithm] = {a.name: a for a in (
    EasyEditAlgorithm("IKE", "easyeditor.models.ike.ike_hparams", "IKEMultimodalHyperParams"),
    EasyEditAlgorithm("GRACE", "easyeditor.models.grace.grace_hparams", "GraceHyperParams"),
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

LOADER_KEYS = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3.5", "llava-onevision")
"""Substrings of ``model_name`` by which EasyEdit's MultimodalEditor picks a Hugging Face loader."""

SERAC_REASON = (
    "EasyEdit's multimodal SERAC supports only its LAVIS BLIP-2/MiniGPT-4 models: "
    "SeracMultimodalRewriteExecutor.apply_to_model builds a LAVIS batch (torch.stack of request['image'] "
    "tensors, text_input, prompts_len), and trainer/algs/SERAC.py's image-aware branches are written for "
    "model_name 'blip2'/'minigpt4' only (any other model takes the text-only path: input_ids into a text "
    "replacement model, no image); there is no hparams/TRAINING/SERAC for any Hugging Face VLM")

NOT_SUPPORTED: dict[str, str] = {
    "SERAC": SERAC_REASON,
    "FT": ("EasyEdit has no multimodal FT: 'FT' is not in easyeditor.util.alg_dict.ALG_MULTIMODAL_DICT "
           "(nor MULTIMODAL_EDIT_ALGS), so MultimodalEditor cannot run it; EasyEdit's FT "
           "(apply_ft_to_model) is text-only (it tokenises prompt + target_new with a text tokenizer, no "
           "image). Its multimodal fine-tuning baseline is LoRA."),
}


# ================================================================================================
# EasyEdit import
# ================================================================================================

def _easyeditor() -> Any:
    try:
        return importlib.import_module("easyeditor")
    except Exception as exc:  # noqa: BLE001 - reported verbatim as the row's reason
        raise BaselineUnavailable(f"easyeditor is not importable ({type(exc).__name__}: {exc})") from exc


def _multimodal_editor_class() -> Any:
    _easyeditor()
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
        if not any(key in source.name.lower() for key in LOADER_KEYS):
            raise BaselineUnavailable(
                f"EasyEdit picks its model loader from substrings of model_name ({', '.join(LOADER_KEYS)}); "
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


# ================================================================================================
# Records -> EasyEdit requests
# ================================================================================================

def _image_path(image: ImageLike | None) -> str | None:
    if image is None:
        return None
    if isinstance(image, (str, Path)):
        return str(image)
    raise BaselineUnavailable("EasyEdit's MultimodalEditor reads images from paths; this record holds an "
                              f"in-memory {type(image).__name__}")


def edit_arguments(records: Sequence[EditRecord]) -> dict[str, Any]:
    """Keyword arguments of ``MultimodalEditor.edit`` for ``records``: prompts, targets, image,
    rephrase_prompts, rephrase_image and locality_inputs (text and vision; only when every record has
    them, as EasyEdit needs one locality input per edit). A record without a rephrasing uses its own
    question / image there (EasyEdit always evaluates both)."""
    if not records:
        raise ValueError("edit_arguments needs at least one record.")
    args: dict[str, Any] = {
        "prompts": [r.prompt for r in records],
        "targets": [r.target for r in records],
        "image": [_image_path(r.image) for r in records],
        "rephrase_prompts": [r.rephrase_prompt or r.prompt for r in records],
        "rephrase_image": [_image_path(r.image_rephrase if r.image_rephrase is not None else r.image)
                           for r in records],
    }
    locality: dict[str, Any] = {}
    if all(r.locality_prompt and r.locality_ground_truth is not None for r in records):
        locality["text"] = {"prompt": [r.locality_prompt for r in records],
                            "ground_truth": [r.locality_ground_truth for r in records]}
    if all(r.multimodal_locality_image is not None and r.multimodal_locality_prompt
           and r.multimodal_locality_ground_truth is not None for r in records):
        locality["vision"] = {"image": [_image_path(r.multimodal_locality_image) for r in records],
                              "prompt": [r.multimodal_locality_prompt for r in records],
                              "ground_truth": [r.multimodal_locality_ground_truth for r in records]}
    if locality:
        args["locality_inputs"] = locality
    return args


def train_request(record: EditRecord) -> dict[str, Any]:
    """The fields EasyEdit's IKE demonstration encoder reads from a training example."""
    return {"prompt": record.prompt, "target": record.target,
            "rephrase_prompt": record.rephrase_prompt or record.prompt,
            "locality_prompt": record.locality_prompt or record.prompt,
            "locality_ground_truth": record.locality_ground_truth or record.target}


# ================================================================================================
# The EditMethod
# ================================================================================================

def _native_summary(native: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means of EasyEdit's own per-edit post (and pre) metrics."""
    out: dict[str, Any] = {"edits": len(native)}
    for phase in ("pre", "post"):
        values: dict[str, list[float]] = {}
        for m in native:
            for key in EASYEDIT_KEYS:
                v = m.get(phase, {}).get(key)
                if v is None:
                    continue
                v = statistics.fmean(v) if isinstance(v, (list, tuple)) else float(v)
                values.setdefault(key, []).append(float(v))
        out[phase] = {k: statistics.fmean(v) for k, v in values.items()}
    times = [float(m["time"]) for m in native if "time" in m]
    out["apply_seconds_mean"] = statistics.fmean(times) if times else None
    return out


class EasyEditMethod:
    """One EasyEdit multimodal method behind :class:`~reasonedit_plugin.evaluation.EditMethod`.

    ``apply`` edits through ``MultimodalEditor.edit(..., sequential_edit=True)`` (edits accumulate in the
    editor's model, as in EasyEdit's sequential mode); ``predict``/``teacher_forced`` query the edited
    model with the comparison's processor (EasyEdit's weight editors change the model in place: GRACE and
    WISE swap in their adapter layer, LoRA injects its adapters, MEND writes the weights). ``reset``
    restores a pristine copy of the model loaded by EasyEdit."""

    def __init__(self, name: str, hparams: Any, processor: Any, folder: ModelFolder,
                 max_new_tokens: int = 16, hparams_file: str | None = None):
        from .vlm import VLM

        editor_cls = _multimodal_editor_class()
        self.name = name
        self.hparams = hparams
        self.folder = folder
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        # not ``editor``: the protocol reads ``method.editor`` as a ReasonEditor (codebook, retriever)
        self.mm_editor = editor_cls.from_hparams(hparams)
        if name in LIST_REQUEST_ALGS:
            self.mm_editor.apply_algo = _list_request(self.mm_editor.apply_algo)
        self.mm_editor.model.eval()
        self._pristine = copy.deepcopy(self.mm_editor.model)
        self._vlm_cls = VLM
        self.vlm = VLM(self.mm_editor.model, processor)
        self.native_metrics: list[dict[str, Any]] = []
        self.applied: list[EditRecord] = []
        self.last_apply_seconds: float | None = None
        """EasyEdit's own ``time`` of the last edit (the apply function alone, without the pre/post
        evaluation ``MultimodalEditor.edit`` runs around it)."""
        self.config: dict[str, Any] = {
            "alg_name": name, "hparams_file": hparams_file, "hparams": hparams_to_dict(hparams),
            "easyedit_commit": easyedit_commit(), "model_folder_added": list(folder.added),
        }

    @property
    def extra(self) -> dict[str, Any]:
        """EasyEdit's own metrics of the edits so far (``MultimodalEditor.edit``'s pre/post, per edit
        right after it; means), and its pure edit time (``time``, without its evaluation passes)."""
        return {"easyedit_native": _native_summary(self.native_metrics)}

    def _edit_kwargs(self) -> dict[str, Any]:
        return {}

    def reset(self) -> None:
        self.mm_editor.model = copy.deepcopy(self._pristine)
        algo = getattr(self.mm_editor.apply_algo, "__self__", None)
        if algo is not None and hasattr(algo, "is_init"):  # MEND's executor caches the model it wraps
            algo.is_init = False
        self.vlm = self._vlm_cls(self.mm_editor.model, self.processor)
        self.native_metrics = []
        self.applied = []

    def apply(self, record: EditRecord) -> None:
        self.applied.append(record)
        metrics, _, _ = self.mm_editor.edit(**edit_arguments([record]), sequential_edit=True, verbose=False,
                                         **self._edit_kwargs())
        self.native_metrics.extend(_plain(m) for m in metrics)
        self.last_apply_seconds = self.native_metrics[-1].get("time") if self.native_metrics else None
        self.mm_editor.model.eval()

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        img = load_image(image) if image is not None else None
        if choices:
            return Prediction(_pick(list(choices), self.vlm.option_nll(img, question, list(choices))))
        return Prediction(self.vlm.generate(img, question, self.max_new_tokens))

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        return vlm_teacher_forced(self.vlm, image, question, target)


def _list_request(apply_algo: Any) -> Any:
    """``apply_algo`` called with ``[request]`` where EasyEdit's sequential mode passes ``request``."""

    def apply(model: Any, tok: Any, requests: Any, hparams: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(requests, Mapping):
            requests = [requests]
        return apply_algo(model, tok, requests, hparams, *args, **kwargs)

    apply.__wrapped__ = apply_algo  # type: ignore[attr-defined]
    return apply


def _plain(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """EasyEdit's metric dict without tensors and token lists (JSON-able numbers only)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out[key] = {k: v for k, v in ((k, _number(v)) for k, v in value.items()) if v is not None}
        else:
            v = _number(value)
            if v is not None:
                out[key] = v
    return out


def _number(value: Any) -> Any:
    try:
        import torch

        if torch.is_tensor(value):
            value = value.detach().float().mean().item() if value.numel() else None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return statistics.fmean(value)
    return None


@lru_cache(maxsize=4)
def _sentence_model(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


class IKEMethod(EasyEditMethod):
    """IKE: no weights change; the edit memory is the applied facts ("<question> <answer>").

    Each edit still runs through ``MultimodalEditor.edit`` (EasyEdit's IKE retrieves its demonstrations
    from the facts applied so far, encoded by EasyEdit's ``encode_ike_facts_multimodal``). A question is
    answered with the ``k`` facts nearest to it (sentence model, cosine), as METHOD.md §7's reference:
    ``"New Fact: <facts, one a line>"`` then the question."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.encoder = _sentence_model(str(self.hparams.sentence_model_name))
        self._facts: list[str] = []
        self._fact_embeddings: Any = None

    def reset(self) -> None:
        super().reset()
        self._facts, self._fact_embeddings = [], None

    def _edit_kwargs(self) -> dict[str, Any]:
        from easyeditor.models.ike.util import encode_ike_facts_multimodal

        train_ds = [train_request(r) for r in self.applied]
        encode_ike_facts_multimodal(self.encoder, train_ds, self.hparams)
        return {"train_ds": train_ds}

    def apply(self, record: EditRecord) -> None:
        super().apply(record)
        self._facts.append(f"{record.prompt} {record.target}")
        self._fact_embeddings = self.encoder.encode(self._facts, convert_to_tensor=True,
                                                    normalize_embeddings=True, show_progress_bar=False)

    def prompt_for(self, question: str) -> str:
        if not self._facts:
            return question
        query = self.encoder.encode([question], convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        scores = (query @ self._fact_embeddings.T)[0].tolist()
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: int(self.hparams.k)]
        return "New Fact: " + "\n".join(self._facts[i] for i in order) + "\n" + question

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        return super().predict(image, self.prompt_for(question), choices)

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        return super().teacher_forced(image, self.prompt_for(question), target)


class MENDMethod(EasyEditMethod):
    """MEND with weights trained by EasyEdit's ``MultimodalTrainer``.

    EasyEdit's MultimodalEditor cannot apply MEND to a Hugging Face VLM at this commit:
    ``MendMultimodalRewriteExecutor.apply_to_model`` builds a LAVIS batch (``torch.stack`` of
    ``request['image']``, ``text_input``, ``prompts_len``) while the trained ``MEND.edit`` calls
    ``model(**batch)`` for Qwen2-VL. So an edit is made the way EasyEdit's own trainer makes it: the batch
    from ``VQADataset.collate_fn`` (``edit_inner``), ``executor.alg.edit(batch)`` with the executor's
    ``init_model`` (which loads ``archive``), and the edited inner parameters copied into the model as
    ``apply_to_model`` does. EasyEdit's native per-edit metrics are therefore not produced for MEND."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._dataset: Any = None

    def _item(self, record: EditRecord) -> dict[str, Any]:
        if self._dataset is None:
            from easyeditor.dataset.vqa import VQADataset

            path = self.folder.scratch / "mend_edit.json"
            path.write_text(json.dumps([vqa_record(record)]), encoding="utf-8")
            self._dataset = VQADataset(str(path), config=self.hparams)
        ds = self._dataset
        row = vqa_record(record)

        def image(p: str) -> Any:
            return ds.vis_processor(str(Path(p)), file_type="image")

        return {"prompt": row["src"], "pred": row["pred"], "target": row["alt"], "rephrase_prompt": row["rephrase"],
                "image": image(row["image"]), "image_rephrase": image(row["image_rephrase"]),
                "cond": f"{row['pred']} >> {row['alt']} || {row['src']}",
                "locality_prompt": row["loc"], "locality_ground_truth": row["loc_ans"],
                "multimodal_locality_image": image(row["m_loc"]), "multimodal_locality_prompt": row["m_loc_q"],
                "multimodal_locality_ground_truth": row["m_loc_a"], "file_type": "image"}

    def apply(self, record: EditRecord) -> None:
        import torch

        self.applied.append(record)
        executor = self.mm_editor.apply_algo.__self__
        if not getattr(executor, "is_init", False):
            executor.init_model(self.mm_editor.model, self.mm_editor.tok, self.hparams)
        item = self._item(record)  # creates the VQADataset on first use
        batch = self._dataset.collate_fn([item])
        start = time.perf_counter()
        executor.alg.eval()
        edited, _ = executor.alg.edit(batch["edit_inner"], return_factors=True)
        inner = set(self.hparams.inner_params)
        state = edited.model.state_dict()
        with torch.no_grad():
            for n, p in self.mm_editor.model.named_parameters():
                if n in inner:
                    p.copy_(state[n])
        self.native_metrics.append({"time": time.perf_counter() - start})
        self.last_apply_seconds = self.native_metrics[-1]["time"]
        self.mm_editor.model.eval()

    @property
    def extra(self) -> dict[str, Any]:
        out = super().extra
        out["easyedit_native"]["note"] = ("MultimodalEditor's MEND apply does not support Hugging Face VLMs; "
                                          "edits made with EasyEdit's trained MEND.edit directly (no native "
                                          "pre/post metrics)")
        return out


# ================================================================================================
# MEND training (EasyEdit's MultimodalTrainer on ShapeRules)
# ================================================================================================

EASY_VQA_ROOT = "easy-vqa"
"""``coco_image``/``rephrase_image`` value meaning the easy-vqa image root (ShapeRules' image paths)."""


def vqa_record(record: Union[EditRecord, Mapping[str, Any]]) -> dict[str, Any]:
    """A ShapeRules record in EasyEdit's VQA JSON format (``src``, ``alt``, ``pred``, ``rephrase``,
    ``image``, ``image_rephrase``, ``loc``, ``loc_ans``, ``m_loc``, ``m_loc_q``, ``m_loc_a``). ``pred``
    (the unedited answer, used only in SERAC's condition string) is the first other choice."""
    r = record if isinstance(record, Mapping) else dataclasses.asdict(record)
    choices = [c for c in (r.get("choices") or []) if c != r["target"]]
    return {"src": r["prompt"], "alt": r["target"], "pred": choices[0] if choices else "unknown",
            "rephrase": r.get("rephrase_prompt") or r["prompt"], "image": str(r["image"]),
            "image_rephrase": str(r.get("image_rephrase") or r["image"]),
            "loc": r.get("locality_prompt") or r["prompt"], "loc_ans": r.get("locality_ground_truth") or r["target"],
            "m_loc": str(r.get("multimodal_locality_image") or r["image"]),
            "m_loc_q": r.get("multimodal_locality_prompt") or r["prompt"],
            "m_loc_a": r.get("multimodal_locality_ground_truth") or r["target"]}


@dataclasses.dataclass
class MendTraining:
    archive: str
    seconds: float
    iterations: int
    """Steps EasyEdit trained (it bounds max_iters by whole epochs: round(max_iters / len(train)) epochs)."""
    train_records: int
    val_records: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_hparams_path(model: str = DEFAULT_MODEL) -> Path:
    return HPARAMS_ROOT / "TRAINING" / "MEND" / f"{model}.yaml"


def train_mend(results_dir: Union[str, Path] = "runs/easyedit", hparams_file: Union[str, Path, None] = None,
               train_n: int = 200, val_n: int = 20, seed: int = 1, max_iters: int | None = None) -> MendTraining:
    """Train MEND for the embedded default with EasyEdit's ``MultimodalTrainer`` on ShapeRules edits over
    easy-vqa's TRAIN images (the comparison edits use its test images). The archive is written by
    EasyEdit to ``<results_dir>/models/MEND/<model folder name>``."""
    from .data.shaperules import easy_vqa_root, generate_split

    _easyeditor()
    from easyeditor.dataset.vqa import VQADataset
    from easyeditor.trainer import MultimodalTrainer
    from easyeditor.trainer.training_hparams.mend_multimodal_training_hparams import (
        MENDMultimodalTrainingHparams,
    )
    from easyeditor.util.hparams import HyperParams

    path = Path(hparams_file) if hparams_file else training_hparams_path()
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    folder = ModelFolder(resolve_model_name(config["model_name"]))
    config["model_name"] = config["name"] = str(folder.path)
    root = str(easy_vqa_root()) + "/"
    for key in ("coco_image", "rephrase_image"):
        if config.get(key) == EASY_VQA_ROOT:
            config[key] = root
    config["results_dir"] = str(results_dir)
    if max_iters is not None:
        config["max_iters"] = int(max_iters)
    hparams = MENDMultimodalTrainingHparams(**HyperParams.construct_float_from_scientific_notation(config))
    # easyeditor/trainer/models.py reads config.dtype for Qwen-VL models, a field the training hparams
    # class does not declare (AttributeError otherwise); BaseTrainer then casts Qwen-VL models to bfloat16
    import torch

    hparams.dtype = torch.float32
    train = [vqa_record(r) for r in generate_split("easyedit-mend-train", train_n, seed, image_split="train")]
    val = [vqa_record(r) for r in generate_split("easyedit-mend-val", val_n, seed + 1, image_split="train")]
    files = {}
    for name, rows in (("train", train), ("val", val)):
        files[name] = folder.scratch / f"mend_{name}.json"
        files[name].write_text(json.dumps(rows), encoding="utf-8")
    train_ds = VQADataset(str(files["train"]), config=hparams)
    val_ds = VQADataset(str(files["val"]), config=hparams)
    start = time.perf_counter()
    trainer = MultimodalTrainer(config=hparams, train_set=train_ds, val_set=val_ds)
    note = None
    try:
        trainer.run()
    except pickle.UnpicklingError as exc:
        # BaseTrainer.run's final evaluation re-reads the archive with torch.load's default
        # weights_only=True (torch >= 2.6), which refuses the pickled model config EasyEdit saves in it.
        # Training and the archive are complete at that point; editing loads it with weights_only=False.
        if not Path(trainer.save_path).is_file():
            raise
        note = f"EasyEdit's final evaluation skipped: it cannot reload its own archive ({str(exc).splitlines()[0]})"
        logger.warning(note)
    seconds = time.perf_counter() - start
    return MendTraining(str(trainer.save_path), seconds, int(getattr(trainer, "global_iter", 0) or 0),
                        len(train_ds), len(val_ds), note)


# ================================================================================================
# Runners
# ================================================================================================

def _source_folder(model_path: str | None, hparams: Mapping[str, Any]) -> Path:
    if model_path:
        return Path(model_path)
    value = hparams.get("model_name")
    if isinstance(value, str) and value.startswith(PACKAGE_SCHEME):
        return Path(resolve_model_name(value))
    if isinstance(value, str):
        return Path(value)
    raise BaselineUnavailable("no model: give model_path (EasyEdit loads models by path)")


def _check_archive(name: str, hparams: Any, path: Path) -> None:
    archive = getattr(hparams, "archive", None)
    if archive in (None, "", "."):
        raise BaselineUnavailable(
            f"{name} needs weights trained by EasyEdit's MultimodalTrainer and {path} sets no archive; "
            f"train them with `python -m reasonedit_plugin.easyedit_baselines train-{name.lower()}` "
            "(see docs/BASELINES.md) and set archive:")
    if not Path(archive).is_file():
        raise BaselineUnavailable(f"{name}: the trained weights {archive} do not exist; train them with "
                                  f"`python -m reasonedit_plugin.easyedit_baselines train-{name.lower()}` "
                                  "(docs/BASELINES.md)")


def make_method(name: str, model_path: Union[str, Path, None] = None,
                hparams_file: Union[str, Path, None] = None, *, vlm: Any = None,
                max_new_tokens: int = 16) -> EasyEditMethod:
    """Build the :class:`EasyEditMethod` for ``name`` (raises :class:`BaselineUnavailable` with the reason
    when it cannot run here)."""
    if name in NOT_SUPPORTED:
        raise BaselineUnavailable(NOT_SUPPORTED[name])
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown EasyEdit method {name!r}.{did_you_mean(name, EASYEDIT_METHODS)}")
    _easyeditor()
    path = Path(hparams_file) if hparams_file else hparams_path(name, Path(model_path).name if model_path
                                                                  else DEFAULT_MODEL)
    if not path.is_file():
        raise BaselineUnavailable(f"no EasyEdit hparams for {name}: {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    folder = ModelFolder(_source_folder(str(model_path) if model_path else None, raw))
    overrides: dict[str, Any] = {}
    if name == "IKE":
        from .text_encoder import resolve_text_encoder_path

        overrides["sentence_model_name"] = str(resolve_text_encoder_path(str(raw.get("sentence_model_name")
                                                                           or "all-MiniLM-L6-v2")))
        if raw.get("results_dir") in (None, "", "."):
            overrides["results_dir"] = str(folder.scratch)
    hparams = load_hparams(name, path, folder.path, overrides)
    if ALGORITHMS[name].training:
        _check_archive(name, hparams, path)
    processor = vlm.processor if vlm is not None else None
    if processor is None:
        from .vlm import load_processor
        from .model_specs import get_model_spec
        import transformers

        processor = load_processor(folder.path, get_model_spec(transformers.AutoConfig.from_pretrained(
            str(folder.path), local_files_only=True)))
    if name == "MEND":
        for key in ("coco_image", "rephrase_image"):
            if getattr(hparams, key, None) == EASY_VQA_ROOT:
                from .data.shaperules import easy_vqa_root

                setattr(hparams, key, str(easy_vqa_root()) + "/")
    cls = {"IKE": IKEMethod, "MEND": MENDMethod}.get(name, EasyEditMethod)
    return cls(name, hparams, processor, folder, max_new_tokens=max_new_tokens, hparams_file=str(path))


def _runner(name: str) -> Any:
    def run(*, model_path: str | None = None, hparams_path: str | None = None, records: Any = None,
            reference: Any = None, protocol: Any = None, vlm: Any = None, **_: Any) -> EasyEditMethod:
        return make_method(name, model_path, hparams_path, vlm=vlm)

    run.__name__ = f"run_easyedit_{name.lower()}"
    return run


for _name in EASYEDIT_METHODS:
    register_easyedit_runner(_name, _runner(_name), overwrite=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reasonedit_plugin.easyedit_baselines train-mend [--results-dir runs/easyedit] ...``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m reasonedit_plugin.easyedit_baselines",
                                     description="Train EasyEdit's MEND for the embedded default model.")
    sub = parser.add_subparsers(dest="command", required=True)
    tm = sub.add_parser("train-mend", help="EasyEdit's MultimodalTrainer on ShapeRules (easy-vqa train images)")
    tm.add_argument("--results-dir", default="runs/easyedit", help="EasyEdit's results_dir (archive under models/MEND)")
    tm.add_argument("--hparams", default=None, help="training YAML (default hparams/TRAINING/MEND/tiny-qwen2-vl-shapes.yaml)")
    tm.add_argument("--train-n", type=int, default=200)
    tm.add_argument("--val-n", type=int, default=20)
    tm.add_argument("--seed", type=int, default=1)
    tm.add_argument("--max-iters", type=int, default=None, help="override the YAML's max_iters")
    args = parser.parse_args(argv)
    result = train_mend(args.results_dir, args.hparams, args.train_n, args.val_n, args.seed, args.max_iters)
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
