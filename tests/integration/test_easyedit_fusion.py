"""The hidden-state fusions and contrastive tuning through EasyEdit's real ``MultimodalEditor.edit`` on the
shipped default model (the variant YAMLs of hparams/ReasonEdit/). Skipped without EasyEdit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.test_easyedit import (assert_metrics, base_state, easyedit,  # noqa: F401
                                             edit_kwargs, images)

pytestmark = pytest.mark.easyedit

HPARAMS = Path(__file__).resolve().parents[2] / "hparams" / "ReasonEdit"


@pytest.mark.parametrize("variant", ["hidden-bias", "gated", "contrastive"])
def test_variant_yaml_through_multimodal_editor(easyedit, images, variant):  # noqa: F811
    from reasonedit_plugin import easyedit_adapter
    from reasonedit_plugin.hooks import hook_count
    from reasonedit_plugin.hparams import ReasonEditHyperParams

    hparams = ReasonEditHyperParams.from_hparams(HPARAMS / f"tiny-qwen2-vl-shapes-{variant}.yaml")
    hparams.only_edit_errors = False
    editor = easyedit.MultimodalEditor.from_hparams(hparams)
    before = base_state(editor.model)
    metrics, edited_model, weights_copy = editor.edit(sequential_edit=True, **edit_kwargs(images))
    assert_metrics(metrics, 2)
    assert len(edited_model.editor.edit_ids()) == 2
    assert hook_count(editor.model) == 0
    if variant != "contrastive":
        from easyeditor.evaluate.multimodal_evaluate import prepare_multimodal_hf_edit

        image = editor.vis_tok(images["red"], file_type="image")
        batch = prepare_multimodal_hf_edit(editor.hparams, editor.tok, "circle", "What shape is this?", image, "image")
        with torch.no_grad():
            edited = edited_model(**batch["multimodal_inputs"]).logits
            base = editor.model(**batch["multimodal_inputs"]).logits
        assert edited_model.last_retrieval.accepted
        assert edited.shape == base.shape and not torch.equal(edited, base)
    weights_copy()
    after = base_state(editor.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    easyedit_adapter._SESSIONS.clear()
