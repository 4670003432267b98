"""``reasonedit hparams --materialize``: copies of the shipped YAMLs in the form EasyEdit's own
``from_hparams`` reads (checked without EasyEdit here; with it in tests/integration/test_easyedit_user_path.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reasonedit_plugin.cli import main
from reasonedit_plugin.easyedit_materialize import materialize
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.hparams import ReasonEditHyperParams, resolve_model_name

REPO = Path(__file__).resolve().parents[1]
TINY = resolve_model_name("package://tiny-qwen2-vl-shapes")


def shipped(method: str, model: str = "tiny-qwen2-vl-shapes") -> Path:
    return REPO / "hparams" / method / f"{model}.yaml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("method", ["IKE", "GRACE", "WISE", "LoRA", "MEND", "FT", "ReasonEdit"])
def test_no_package_scheme_or_relative_path_survives(method, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = materialize(shipped(method), tmp_path / "out")
    assert done.path == tmp_path / "out" / method / "tiny-qwen2-vl-shapes.yaml"
    config = load(done.path)
    assert config["model_name"] == TINY and config.get("name", TINY) == TINY
    text = done.path.read_text(encoding="utf-8")
    assert "package://" not in text.split("\n", 2)[2]  # only the header names the source
    for key in ("archive", "results_dir", "sentence_model_name", "coco_image", "rephrase_image"):
        value = config.get(key)
        if isinstance(value, str) and value not in (".", ""):
            assert Path(value).is_absolute(), (key, value)
    original = load(shipped(method))
    changed = {line.split(":")[0].split(".")[0] for line in done.changes}  # a nested key changes its section
    for key, value in config.items():  # nothing else changes
        if key not in changed and key != "act_margin":
            assert original.get(key) == value, key


def test_wise_margins_in_easyedit_form(tmp_path):
    config = load(materialize(shipped("WISE"), tmp_path).path)
    original = load(shipped("WISE"))
    assert config["act_margin"] == [original["alpha"], original["beta"], original["gamma"]]
    assert not {"alpha", "beta", "gamma"} & set(config)


def test_ike_gets_a_local_encoder_and_a_cache_folder(tmp_path):
    config = load(materialize(shipped("IKE"), tmp_path / "hp").path)
    assert (Path(config["sentence_model_name"]) / "config.json").is_file()
    assert config["results_dir"] == str((tmp_path / "hp" / "IKE-cache").resolve())


def test_mend_archive_is_absolute_and_missing_archive_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = materialize(shipped("MEND"), tmp_path / "hp")
    assert load(done.path)["archive"] == str(tmp_path / "runs/easyedit/models/MEND/tiny-qwen2-vl-shapes")
    assert any("train-mend" in w for w in done.warnings)


def test_reasonedit_copy_still_loads(tmp_path):
    done = materialize(shipped("ReasonEdit"), tmp_path / "one.yaml")
    assert done.path == tmp_path / "one.yaml"
    assert ReasonEditHyperParams.from_hparams(done.path).model_name == TINY


def test_placeholder_unmappable_and_serac_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="placeholder: replace it") as info:
        materialize(shipped("ReasonEdit", "qwen2vl-7b"), tmp_path)
    assert "\n" not in str(info.value)
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ConfigError, match="ln -s .*my-model-qwen2-vl"):
        materialize(shipped("GRACE"), tmp_path, model=folder)
    with pytest.raises(ConfigError, match="SERAC.*BLIP-2/MiniGPT-4"):
        materialize(shipped("SERAC"), tmp_path)
    good = tmp_path / "mine-qwen2-vl"
    good.mkdir()
    assert load(materialize(shipped("GRACE"), tmp_path, model=good).path)["model_name"] == str(good)


def test_cli_materialize(tmp_path, capsys):
    assert main(["hparams", "--materialize", str(shipped("GRACE")), str(shipped("LoRA")), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "GraceHyperParams.from_hparams" in out and "LoRAMultimodalHyperParams.from_hparams" in out
    assert (tmp_path / "GRACE" / "tiny-qwen2-vl-shapes.yaml").is_file()
    assert main(["hparams", "--materialize", str(shipped("SERAC"))]) == 2
    assert "BLIP-2/MiniGPT-4" in capsys.readouterr().err


def test_reasonedit_null_images_become_absolute(tmp_path):
    config = load(materialize(shipped("ReasonEdit"), tmp_path).path)
    images = config["retrieval"]["nullset"]["null_images"]
    assert images and all(Path(p).is_absolute() and Path(p).is_dir() for p in images)
