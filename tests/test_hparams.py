"""ReasonEditHyperParams: YAML loading, validation, the engine config view, and every shipped YAML."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.hparams import (
    ASSETS_DIR,
    HyperParamsCompat,
    ReasonEditHyperParams,
    adopt_easyedit_base,
    parse_dtype,
)

HPARAMS_DIR = Path(__file__).resolve().parents[1] / "hparams" / "ReasonEdit"
SHIPPED = sorted(HPARAMS_DIR.glob("*.yaml"))
TINY = "tiny-qwen2-vl-shapes"

# The paper's reference settings (METHOD.md §3): yaml -> (block, lambda, cap_keys).
REFERENCE = {
    "qwen3vl-8b.yaml": (24, 18.0, 7),
    "qwen3vl-4b.yaml": (21, 42.0, 7),
    "llava-1.5-7b.yaml": (19, 7.0, 5),
    "instructblip-vicuna-7b.yaml": (38, 8.0, 5),
}


def write_yaml(tmp_path: Path, values: dict, name: str = "h.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def minimal(**extra) -> dict:
    return {"alg_name": "ReasonEdit", "model_name": "/models/qwen2-vl-tiny", **extra}


def test_the_expected_yamls_are_shipped():
    names = {p.name for p in SHIPPED}
    assert names >= {
        "qwen3vl-8b.yaml", "qwen3vl-4b.yaml", "llava-1.5-7b.yaml", "instructblip-vicuna-7b.yaml",
        "qwen2vl-7b.yaml", "llavaov-7b.yaml", f"{TINY}.yaml",
    }


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_loads_and_validates(path: Path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["alg_name"] == "ReasonEdit"
    # No machine paths and no device numbers in shipped files.
    assert raw["model_name"].startswith(("/path/to/", "package://")), raw["model_name"]
    assert raw.get("device") in (None, "cpu", "cuda")
    if raw["model_name"].startswith("package://") and not (ASSETS_DIR / TINY).is_dir():
        pytest.skip(f"the packaged model {ASSETS_DIR / TINY} is not built yet")
    hp = ReasonEditHyperParams.from_hparams(path)
    assert hp.alg_name == "ReasonEdit" and hp.batch_size == 1
    assert isinstance(hp.dtype, torch.dtype)
    config = hp.to_config()
    assert isinstance(config, ReasonEditConfig)
    assert config.to_dict() == ReasonEditConfig.from_dict(config.to_dict()).to_dict()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_paper_reference_settings(name: str):
    block, scale, cap = REFERENCE[name]
    hp = ReasonEditHyperParams.from_hparams(HPARAMS_DIR / name)
    assert hp.embedding.layer == block
    assert hp.embedding.scale == scale
    assert hp.retrieval.cap_keys == cap
    assert hp.is_placeholder


def test_models_without_reference_use_paper_default_lambda():
    for name in ("qwen2vl-7b.yaml", "llavaov-7b.yaml"):
        hp = ReasonEditHyperParams.from_hparams(HPARAMS_DIR / name)
        assert hp.embedding.scale == 30.0 and hp.embedding.layer is None


def test_easyedit_dispatch_substrings_survive_in_placeholders():
    # EasyEdit picks the loader from substrings of model_name.
    expected = {"qwen3vl-8b.yaml": "qwen3-vl", "qwen3vl-4b.yaml": "qwen3-vl",
                "qwen2vl-7b.yaml": "qwen2-vl", "llavaov-7b.yaml": "llava-onevision"}
    for name, needle in expected.items():
        assert needle in ReasonEditHyperParams.from_hparams(HPARAMS_DIR / name).model_name.lower()


def test_package_scheme_resolves_to_the_installed_asset(tmp_path):
    if not (ASSETS_DIR / TINY).is_dir():
        pytest.skip(f"the packaged model {ASSETS_DIR / TINY} is not built yet")
    hp = ReasonEditHyperParams.from_hparams(HPARAMS_DIR / f"{TINY}.yaml")
    assert Path(hp.model_name) == ASSETS_DIR / TINY
    assert hp.name == hp.model_name
    assert "qwen2-vl" in hp.model_name.lower()


def test_portable_model_name_is_the_inverse_for_reports(tmp_path):
    from reasonedit_plugin.hparams import portable_model_name, resolve_model_name

    name = f"package://{TINY}"
    assert portable_model_name(resolve_model_name(name)) == name
    assert portable_model_name(tmp_path) == str(tmp_path)
    assert portable_model_name(None) == "none"


def test_unknown_package_folder_is_a_clear_error():
    with pytest.raises(ConfigError, match="no packaged model folder 'nope'"):
        ReasonEditHyperParams(model_name="package://nope")


def test_to_config_carries_every_engine_field(tmp_path):
    path = write_yaml(tmp_path, minimal(
        seed=7, only_edit_errors=False, max_new_tokens=5,
        embedding={"layer": "12", "scale": 18}, retrieval={"cap_keys": 7, "gate": False},
        fusion={"template": "{facts}\n{question}"}, guard={"policy": "reject"},
    ))
    config = ReasonEditHyperParams.from_hparams(path).to_config()
    assert (config.seed, config.only_edit_errors, config.max_new_tokens) == (7, False, 5)
    assert config.embedding.layer == 12 and config.embedding.scale == 18.0
    assert config.retrieval.cap_keys == 7 and config.retrieval.gate == "off"
    assert config.fusion.template == "{facts}\n{question}"
    assert config.guard.policy == "reject"


def test_to_config_is_an_independent_copy():
    hp = ReasonEditHyperParams(**minimal())
    config = hp.to_config()
    config.retrieval.cap_keys = 99
    assert hp.retrieval.cap_keys == 5


def test_hparams_are_the_engine_config_plus_easyedit_fields():
    from dataclasses import fields

    hp = ReasonEditHyperParams(**minimal())
    assert isinstance(hp, ReasonEditConfig)
    engine = {f.name for f in fields(ReasonEditConfig)}
    assert engine < {f.name for f in fields(ReasonEditHyperParams)}
    config = hp.to_config()
    assert type(config) is ReasonEditConfig and config.to_dict() == {k: v for k, v in hp.to_dict().items() if k in engine}
    with pytest.raises(ConfigError, match="max_new_tokens"):  # the engine's own checks run on hparams too
        ReasonEditHyperParams(**minimal(max_new_tokens=0))


def test_an_editor_given_hparams_keeps_its_own_copy():
    from reasonedit_plugin.editor import ReasonEditor
    from fakes import FakeVLM

    hp = ReasonEditHyperParams(**minimal())
    editor = ReasonEditor(FakeVLM(), hp)
    assert type(editor.config) is ReasonEditConfig
    editor.config.retrieval.cap_keys = 99
    assert hp.retrieval.cap_keys == 5


def test_path_without_suffix_as_in_easyedit(tmp_path):
    write_yaml(tmp_path, minimal())
    assert ReasonEditHyperParams.from_hparams(tmp_path / "h").model_name == "/models/qwen2-vl-tiny"


def test_unknown_top_level_key_has_did_you_mean(tmp_path):
    path = write_yaml(tmp_path, minimal(only_edit_error=True))
    with pytest.raises(ConfigError, match=r"unknown key 'only_edit_error'.*Did you mean 'only_edit_errors'"):
        ReasonEditHyperParams.from_hparams(path)


def test_unknown_section_key_has_did_you_mean(tmp_path):
    path = write_yaml(tmp_path, minimal(retrieval={"cap_key": 7}))
    with pytest.raises(ConfigError, match=r"'cap_key' in section 'retrieval'.*Did you mean 'cap_keys'"):
        ReasonEditHyperParams.from_hparams(path)


@pytest.mark.parametrize("values, message", [
    (minimal(alg_name="GRACE"), "only loads alg_name: 'ReasonEdit'"),
    ({"alg_name": "ReasonEdit"}, "need model_name"),
    ({"model_name": "/m/qwen2-vl"}, "need alg_name"),
    (minimal(batch_size=4), "set batch_size: 1"),
    (minimal(dtype="float8"), "dtype='float8' is not supported"),
    (minimal(device=True), "device=True"),
    (minimal(missing_rationale="skip"), "missing_rationale='skip'"),
    (minimal(embedding={"scale": -1}), "embedding.scale=-1"),
    (minimal(retrieval={"gate": "percentile", "hubness": False}), "percentile needs retrieval.hubness"),
        (minimal(retrieval={"gate": "nulset"}), "retrieval.gate='nulset' is not one of"),
        (minimal(retrieval={"nullset": {"text_min_cos": 2}}), "text_min_cos=2 must be in"),
    (minimal(embedding=[1, 2]), "section 'embedding' must be a mapping"),
    (minimal(max_new_tokens=0), "max_new_tokens must be >= 1"),
])
def test_validation_errors_name_the_fix(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        ReasonEditHyperParams.from_hparams(write_yaml(tmp_path, values))


def test_error_names_the_file(tmp_path):
    path = write_yaml(tmp_path, minimal(batch_size=2))
    with pytest.raises(ConfigError, match=str(path)):
        ReasonEditHyperParams.from_hparams(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ReasonEditHyperParams.from_hparams(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        ReasonEditHyperParams.from_hparams(tmp_path / "empty.yaml")


@pytest.mark.parametrize("text, dtype", [
    ("float32", torch.float32), ("torch.bfloat16", torch.bfloat16), ("float16", torch.float16),
    (torch.bfloat16, torch.bfloat16),
])
def test_dtype_parsing(text, dtype):
    assert parse_dtype(text) is dtype


def test_rationale_source_is_relative_to_the_yaml(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_yaml(tmp_path / "sub", minimal(rationale_source="data.jsonl"))
    hp = ReasonEditHyperParams.from_hparams(path)
    assert Path(hp.rationale_source) == tmp_path / "sub" / "data.jsonl"


def test_easyedit_surface_without_easyedit(tmp_path):
    hp = ReasonEditHyperParams(**minimal(dtype="bfloat16"))
    # What EasyEdit reads from any multimodal hparams object.
    for attr in ("alg_name", "model_name", "name", "device", "dtype", "batch_size", "max_length",
                 "exact_match", "coco_image", "rephrase_image", "tokenizer_class", "tokenizer_name",
                 "qformer_checkpoint", "qformer_name_or_path", "state_dict_file", "pretrained_ckpt"):
        assert hasattr(hp, attr), attr
    assert hp.name == hp.model_name
    assert isinstance(hp, HyperParamsCompat)
    # to_dict is YAML-safe and round-trips.
    values = hp.to_dict()
    assert values["dtype"] == "bfloat16"
    again = ReasonEditHyperParams.from_dict(yaml.safe_load(yaml.safe_dump(values)))
    assert again.to_dict() == values
    # EasyEdit's from_json class method works too.
    (tmp_path / "h.json").write_text(__import__("json").dumps(values), encoding="utf-8")
    assert ReasonEditHyperParams.from_json(tmp_path / "h.json").to_dict() == values


def test_core_import_does_not_import_easyeditor():
    if "easyeditor" in sys.modules:
        pytest.skip("easyeditor was imported by another test in this session")
    import reasonedit_plugin.hparams  # noqa: F401

    assert "easyeditor" not in sys.modules
    assert adopt_easyedit_base() is False
