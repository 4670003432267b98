"""Caption edits through EasyEdit itself: E-IC records, EasyEdit's ``CaptionDataset`` and
``MultimodalEditor.edit_dataset`` with ``alg_name: ReasonEdit`` (rationales from ``rationale_source``, the
same E-IC file). Needs EasyEdit importable (docs/EASYEDIT.md); skipped otherwise.

    PYTHONPATH=/path/to/EasyEdit:. pytest -m easyedit tests/integration/test_easyedit_captions.py
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.easyedit

KEYS = {"rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc", "multimodal_locality_acc"}


@pytest.fixture
def easyeditor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MultimodalEditor writes logs/ into the working directory
    try:
        module = importlib.import_module("easyeditor")
    except Exception as exc:  # not installed, or an EasyEdit that does not import here
        pytest.skip(f"easyeditor is not importable ({type(exc).__name__}: {exc}); see docs/EASYEDIT.md")
    from reasonedit_plugin.easyedit_registration import register

    register()
    return module


def test_caption_dataset_through_edit_dataset(easyeditor, tmp_path: Path) -> None:
    from reasonedit_plugin import ReasonEditHyperParams
    from reasonedit_plugin.captioning import caption_split
    from reasonedit_plugin.data import easy_vqa_root

    rows = [{"src": r["prompt"], "alt": r["target"], "pred": "", "rephrase": r["rephrase_prompt"], "image": r["image"],
             "image_rephrase": r["image_rephrase"], "loc": "What is the capital of France?", "loc_ans": "Paris",
             "m_loc": r["multimodal_locality_image"], "m_loc_q": r["multimodal_locality_prompt"],
             "m_loc_a": r["multimodal_locality_ground_truth"], "rationale": r["rationale"]}
            for r in caption_split(2, seed=0)]
    (tmp_path / "eic.json").write_text(json.dumps(rows))
    root = easy_vqa_root()
    (tmp_path / "hp.yaml").write_text(
        f"alg_name: ReasonEdit\nmodel_name: package://tiny-qwen2-vl-shapes\ndevice: cpu\ncoco_image: {root}\n"
        f"rephrase_image: {root}\nrationale_source: eic.json\nonly_edit_errors: false\nguard: {{policy: 'off'}}\n")
    hparams = ReasonEditHyperParams.from_hparams(str(tmp_path / "hp.yaml"))
    dataset = easyeditor.CaptionDataset(str(tmp_path / "eic.json"), config=hparams)
    assert len(dataset) == 2 and dataset[0]["prompt"] == "Describe this image."
    editor = easyeditor.MultimodalEditor.from_hparams(hparams)
    metrics, _, _ = editor.edit_dataset(dataset, keep_original_weight=True, verbose=False)
    assert len(metrics) == 2
    for m in metrics:
        assert KEYS <= set(m["post"]) and {"rewrite_acc", "rephrase_acc", "image_rephrase_acc"} <= set(m["pre"])
        assert all(0.0 <= float(m["post"][k]) <= 1.0 for k in KEYS)
