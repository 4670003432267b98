"""EasyEdit's own multimodal editors as comparison rows (``reasonedit_plugin.easyedit_baselines``), on the
embedded default model and a few ShapeRules edits.

Needs EasyEdit importable (a checkout on PYTHONPATH, with torchvision and EasyEdit's transformers pin;
docs/EASYEDIT.md) and the easy-vqa images; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.easyedit

RUNNABLE = ("IKE", "GRACE", "WISE", "LoRA")




@pytest.fixture(scope="module")
def records():
    try:
        from reasonedit_plugin.data.split_files import load_split
    except ImportError as exc:  # pragma: no cover
        pytest.skip(str(exc))
    try:
        rows = load_split("small")
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")
    from reasonedit_plugin.records import make_records

    return make_records(rows)


@pytest.fixture(scope="module")
def model_path() -> str:
    from reasonedit_plugin.hparams import resolve_model_name

    return resolve_model_name("package://tiny-qwen2-vl-shapes")


def test_shipped_hparams_load(easyedit, model_path):
    from reasonedit_plugin import easyedit_baselines as eb

    for name in ("IKE", "GRACE", "WISE", "LoRA", "MEND"):
        hp = eb.load_hparams(name, eb.hparams_path(name), model_folder=Path(model_path))
        assert hp.alg_name == name and "qwen2-vl" in hp.model_name
        text = eb.hparams_path(name).read_text()
        assert "/work/" not in text and "/home/" not in text  # no machine paths shipped
    grace = eb.load_hparams("GRACE", eb.hparams_path("GRACE"))
    assert (grace.edit_lr, grace.n_iter, grace.eps) == (1e-2, 500, 0.1)  # METHOD.md §7
    assert eb.load_hparams("IKE", eb.hparams_path("IKE")).k == 3


def test_unknown_hparams_key_is_an_error(easyedit, tmp_path):
    from reasonedit_plugin import easyedit_baselines as eb
    from reasonedit_plugin.errors import ConfigError

    bad = tmp_path / "GRACE.yaml"
    bad.write_text(eb.hparams_path("GRACE").read_text() + "n_iters: 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'n_iter'"):
        eb.load_hparams("GRACE", bad)


def test_run_copy_loads_with_autoprocessor(easyedit, model_path, tmp_path):
    """EasyEdit calls AutoProcessor.from_pretrained on the model folder; with torchvision installed a
    Qwen2-VL processor wants a video processor. A folder without its config gets one derived from the
    image processor in the run copy; the source folder is never changed."""
    import shutil

    from transformers import AutoProcessor

    from reasonedit_plugin import easyedit_baselines as eb

    source = tmp_path / Path(model_path).name
    shutil.copytree(model_path, source)
    (source / "video_preprocessor_config.json").unlink(missing_ok=True)
    for folder_source, added in ((Path(model_path), None), (source, ["video_preprocessor_config.json"])):
        folder = eb.ModelFolder(folder_source)
        try:
            assert folder.path.name == folder_source.name
            if added is not None:
                assert folder.added == added
                assert not (source / "video_preprocessor_config.json").exists()  # source untouched
            processor = AutoProcessor.from_pretrained(str(folder.path))  # what EasyEdit calls
            assert processor.image_processor.patch_size == 8
        finally:
            folder.cleanup()


@pytest.mark.parametrize("name", ["SERAC"])
def test_unsupported_methods_are_skipped_with_the_reason(easyedit, model_path, name):
    from reasonedit_plugin.baselines import BaselineUnavailable
    from reasonedit_plugin import easyedit_baselines as eb

    with pytest.raises(BaselineUnavailable) as info:
        eb.make_method(name, model_path)
    assert "EasyEdit" in str(info.value)


@pytest.mark.parametrize("name", RUNNABLE)
def test_baseline_through_multimodal_editor(easyedit, records, model_path, name):
    """Two sequential edits through MultimodalEditor: EasyEdit's native metrics come back for each, the
    edited model answers, and reset gives the unedited model back."""
    from reasonedit_plugin import easyedit_baselines as eb

    method = eb.make_method(name, model_path)
    if name == "GRACE":  # keep the test short: the reference 500 iterations are for the comparison
        method.hparams.n_iter = 20
    r = records[0]
    before = method.teacher_forced(r.image, r.prompt, r.target).logits
    for rec in records[:2]:
        method.apply(rec)
    native = method.extra["easyedit_native"]
    assert native["edits"] == 2
    assert {"rewrite_acc", "rephrase_acc"} <= set(native["post"])
    assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in native["post"].values())
    assert method.predict(r.image, r.prompt, r.choices).text in r.choices
    json.dumps(method.config)  # the report's configuration is plain JSON
    method.reset()
    after = method.teacher_forced(r.image, r.prompt, r.target).logits
    assert (before - after).abs().max() < 1e-5


def test_comparison_rows(easyedit, records, model_path):
    """The comparison's rows: an EasyEdit method, and FT, this project's row with EasyEdit's FT settings
    (SERAC, also ours, is tested in tests/test_serac_baseline.py; EasyEdit's own SERAC is refused above)."""
    from reasonedit_plugin.baselines import run_comparison
    from reasonedit_plugin.config import ReasonEditConfig
    from reasonedit_plugin.evaluation import ProtocolConfig
    from reasonedit_plugin.vlm import VLM
    from reasonedit_plugin import easyedit_baselines as eb

    try:
        vlm = VLM.from_pretrained(model_path)
    except Exception as exc:  # noqa: BLE001 - see docs/BASELINES.md (processor loading with torchvision)
        folder = eb.ModelFolder(model_path)
        vlm = VLM.from_pretrained(folder.path)
    comparison = run_comparison(vlm, records[:3], ReasonEditConfig(), methods=("IKE", "FT"),
                                protocol=ProtocolConfig(eval_every=0, locality_size=5),
                                model_path=model_path, easyedit_hparams_dir=eb.HPARAMS_ROOT)
    rows = {m.name: m for m in comparison.methods}
    assert rows["FT"].status == "ok" and rows["FT"].kind == "baseline", rows["FT"].reason
    assert rows["FT"].label.startswith("FT (ours") and rows["FT"].evaluation.final.reliability is not None
    assert rows["IKE"].status == "ok", rows["IKE"].reason
    assert rows["IKE"].evaluation.final.reliability is not None
