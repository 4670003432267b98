"""EasyEdit's multimodal editors behind the comparison's :class:`~reasonedit_plugin.evaluation.EditMethod`
interface: records become ``MultimodalEditor.edit`` arguments, edits accumulate as in EasyEdit's sequential
mode, and answers come from the model EasyEdit edited, through the comparison's processor, scored by the
same protocol as every row. EasyEdit's own per-edit pre/post metrics are kept as well (``extra``).
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from .baseline_registry import BaselineUnavailable, easyedit_commit
from .easyedit_mend import vqa_record
from .easyedit_setup import ALGORITHMS, LIST_REQUEST_ALGS, ModelFolder, apply_fix, hparams_to_dict, multimodal_editor_class
from .edit_methods import DirectAnswers, Prediction, TeacherForced
from .metrics import EASYEDIT_KEYS
from .records import EditRecord, ImageLike, load_image

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


class EasyEditMethod(DirectAnswers):
    """One EasyEdit multimodal method behind :class:`~reasonedit_plugin.evaluation.EditMethod`.

    ``apply`` edits through ``MultimodalEditor.edit(..., sequential_edit=True)`` (edits accumulate in the
    editor's model, as in EasyEdit's sequential mode); ``predict``/``teacher_forced`` query the edited
    model with the comparison's processor (EasyEdit's weight editors change the model in place: GRACE and
    WISE swap in their adapter layer, LoRA injects its adapters, MEND writes the weights). ``reset``
    restores a pristine copy of the model loaded by EasyEdit. Where EasyEdit's apply function has a bug the
    plugin fixes (``EasyEditAlgorithm.apply_fix``: GRACE, ``easyedit_grace.py``), the fixed one is used and
    named in ``config["apply_fix"]``."""

    def __init__(self, name: str, hparams: Any, processor: Any, folder: ModelFolder,
                 max_new_tokens: int = 16, hparams_file: str | None = None):
        from .vlm import VLM

        editor_cls = multimodal_editor_class()
        self.name = name
        self.hparams = hparams
        self.folder = folder
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        # not ``editor``: the protocol reads ``method.editor`` as a ReasonEditor (codebook, retriever)
        self.mm_editor = editor_cls.from_hparams(hparams)
        fixed = apply_fix(name)
        if fixed is not None:  # e.g. GRACE: easyedit_grace.py
            self.mm_editor.apply_algo = fixed
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
            "apply_fix": ALGORITHMS[name].apply_fix if name in ALGORITHMS else None,
        }

    @property
    def extra(self) -> dict[str, Any]:
        """EasyEdit's own metrics of the edits so far (``MultimodalEditor.edit``'s pre/post, per edit
        right after it; means), and its pure edit time (``time``, without its evaluation passes)."""
        return {"easyedit_native": _native_summary(self.native_metrics)}

    def _edit_kwargs(self) -> dict[str, Any]:
        return {}

    def query_image(self, image: ImageLike) -> Any:
        """The image as EasyEdit prepares it for an edit (``MultimodalEditor.vis_tok``; for Qwen2-VL,
        qwen_vl_utils' resize to multiples of 28, so a 64-pixel image arrives resized), so that a probe reaches
        the model as the edit did. GRACE needs it: its codebook answers a query within ``eps`` of the edit's
        own activation, and with the comparison's image preparation instead the edit's own question missed
        it (docs/BASELINES.md "Session 56"). Preparations that give no PIL image keep the comparison's."""
        loaded = load_image(image)
        prepared = self.mm_editor.vis_tok(loaded, file_type="image")
        if isinstance(prepared, list) and len(prepared) == 1 and isinstance(prepared[0], Image.Image):
            return prepared[0].convert("RGB")
        return loaded

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
