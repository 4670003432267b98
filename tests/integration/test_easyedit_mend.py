"""MEND training on the embedded default (``reasonedit_plugin.easyedit_mend``): the edit loss EasyEdit's
``MultimodalTrainer`` optimises must be the model's own next-token NLL of the target.

Needs EasyEdit importable and the easy-vqa images (docs/EASYEDIT.md); skipped with the reason otherwise.
"""

from __future__ import annotations

import copy
import json

import pytest

pytestmark = pytest.mark.easyedit



@pytest.fixture(scope="module")
def batch_and_model(easyedit, tmp_path_factory):
    """EasyEdit's own VQADataset batch for two ShapeRules edits, and the trainer's model (float32)."""
    from reasonedit_plugin.data.shaperules import generate_split
    from reasonedit_plugin.easyedit_mend import training_hparams, vqa_record

    try:
        rows = [vqa_record(r) for r in generate_split("test-mend", 2, 5, image_split="train")]
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")
    from easyeditor.dataset.vqa import VQADataset
    from easyeditor.trainer.models import get_model

    folder, hparams = training_hparams(results_dir=tmp_path_factory.mktemp("mend"))
    path = folder.scratch / "rows.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    dataset = VQADataset(str(path), config=hparams)
    batches = [dataset.collate_fn([dataset[i]]) for i in range(len(dataset))]
    return folder, hparams, batches, get_model(hparams).eval()


def test_aligned_edit_loss_is_the_models_target_nll(batch_and_model):
    import torch

    from reasonedit_plugin.easyedit_mend import aligned_edit_loss

    _, hparams, batches, model = batch_and_model
    for batch in batches:
        for key in ("edit_inner", "edit_outer", "edit_outer_image", "loc_image"):
            inputs = batch[key]
            with torch.no_grad():
                out = model(**inputs)  # Hugging Face shifts the labels itself: its loss is the true NLL
            labels = inputs["labels"][0]
            logp = out.logits[0].float().log_softmax(-1)
            positions = (labels != -100).nonzero().flatten().tolist()
            assert positions and positions[0] > 0
            nll = -sum(float(logp[p - 1, labels[p]]) for p in positions) / len(positions)
            scored = aligned_edit_loss(hparams, out.logits, inputs["labels"])
            assert float(scored["nll"]) == pytest.approx(nll, rel=1e-4, abs=1e-4)
            assert float(scored["nll"]) == pytest.approx(float(out.loss), rel=1e-4, abs=1e-4)
            argmax_hits = [int(logp[p - 1].argmax()) == int(labels[p]) for p in positions]
            assert float(scored["acc"]) == pytest.approx(sum(argmax_hits) / len(argmax_hits))


def test_trainer_model_gets_the_aligned_loss(batch_and_model):
    """EasyEdit's MEND loss for a Hugging Face VLM scores the logit *at* each target token (what comes after
    it); align_edit_loss replaces it with the next-token alignment."""
    import torch
    from easyeditor.trainer.algs.MEND import MEND

    from reasonedit_plugin.easyedit_mend import align_edit_loss

    _, hparams, batches, model = batch_and_model
    mend = MEND(model, hparams, lambda: copy.deepcopy(model))
    inputs = batches[0]["edit_inner"]
    with torch.no_grad():
        out = model(**inputs)
    easyedit_nll = float(mend.edit_loss_fn(hparams, out.logits, inputs["labels"], multimodal=True)["nll"])
    align_edit_loss(mend)
    aligned_nll = float(mend.edit_loss_fn(hparams, out.logits, inputs["labels"], multimodal=True)["nll"])
    assert aligned_nll == pytest.approx(float(out.loss), rel=1e-4, abs=1e-4)
    if abs(easyedit_nll - aligned_nll) < 1e-3:
        pytest.fail("EasyEdit's MEND edit loss is aligned here: align_edit_loss may no longer be needed "
                    "(update docs/BASELINES.md, 'MEND')")
