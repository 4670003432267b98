"""Training EasyEdit's MEND for the embedded default model with EasyEdit's ``MultimodalTrainer``, and the
ShapeRules -> EasyEdit VQA JSON mapping it (and the MEND row) uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import time
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from .easyedit_setup import DEFAULT_MODEL, HPARAMS_ROOT, ModelFolder, easyeditor
from .hparams import resolve_model_name
from .records import EditRecord

logger = logging.getLogger(__name__)

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


def aligned_edit_loss(config: Any, pred: Any, targ: Any, **kwargs: Any) -> dict[str, Any]:
    """EasyEdit's edit loss/accuracy (``masked_log_probs``) with the logits at position i scored against the
    label at i + 1, as a causal LM predicts: what ``EditableModel.edit_loss_fn`` should give Hugging Face VLMs.

    EasyEdit's ``EditableModel._edit_loss_fn`` (easyeditor/trainer/algs/editable_model.py) calls
    ``masked_log_probs(..., shift=False)`` for ``is_hf_multimodal_model`` (Qwen2-VL, LLaVA-OneVision), while
    ``VQADataset.collate_fn`` builds those models' labels aligned with ``input_ids`` (Hugging Face's
    convention: the model shifts them itself). So the trainer scored the logits *at* the target token (which
    predict the token after it) against the target: on the embedded default the unedited model's NLL reads
    17.7 nats instead of 6.0, accuracy 0, and MEND was trained to put the target after itself
    (docs/BASELINES.md, "MEND"). ``shift=True`` with the ``multimodal`` flag drops the last logit and the
    first label, the alignment ``MEND.edit``'s own inner loss (Hugging Face's ``outputs.loss``) uses."""
    from easyeditor.trainer.losses import masked_log_probs

    kwargs.pop("shift", None)
    kwargs.setdefault("multimodal", True)
    return masked_log_probs(config, pred, targ, shift=True, **kwargs)


def align_edit_loss(editable: Any) -> None:
    """Give an EasyEdit ``EditableModel`` (the trainer's ``MEND``) :func:`aligned_edit_loss` when its model is
    a Hugging Face VLM (the case EasyEdit misaligns); other models keep EasyEdit's loss."""
    from easyeditor.util.vl_utils import is_hf_multimodal_model

    if is_hf_multimodal_model(editable.config.model_name):
        editable.edit_loss_fn = aligned_edit_loss


def training_hparams_path(model: str = DEFAULT_MODEL) -> Path:
    return HPARAMS_ROOT / "TRAINING" / "MEND" / f"{model}.yaml"


def training_hparams(hparams_file: Union[str, Path, None] = None, results_dir: Union[str, Path] = "runs/easyedit",
                     max_iters: int | None = None) -> tuple[ModelFolder, Any]:
    """The run copy of the model folder and EasyEdit's ``MENDMultimodalTrainingHparams`` for a training YAML
    (default: the shipped one), with ``package://`` and the easy-vqa image root resolved."""
    from .data.shaperules import easy_vqa_root

    easyeditor()
    import torch
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
    hparams.dtype = torch.float32
    return folder, hparams


def train_mend(results_dir: Union[str, Path] = "runs/easyedit", hparams_file: Union[str, Path, None] = None,
               train_n: int = 200, val_n: int = 20, seed: int = 1, max_iters: int | None = None) -> MendTraining:
    """Train MEND for the embedded default with EasyEdit's ``MultimodalTrainer`` on ShapeRules edits over
    easy-vqa's TRAIN images (the comparison edits use its test images). The archive is written by
    EasyEdit to ``<results_dir>/models/MEND/<model folder name>``."""
    from .data.shaperules import generate_split

    easyeditor()
    from easyeditor.dataset.vqa import VQADataset
    from easyeditor.trainer import MultimodalTrainer

    folder, hparams = training_hparams(hparams_file, results_dir, max_iters)
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
    align_edit_loss(trainer.model)  # EasyEdit's loss misaligns labels and logits for HF VLMs
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
