"""Registration with EasyEdit without EasyEdit (``easyedit_registration``): a stand-in ``easyeditor`` package
with its registries, so that ``register`` / ``register_on_import`` are checked for what they change there (the
algorithm tables, the restore list, the ``rationales`` keyword of ``_prepare_requests``, the model-name checks)
and for what they leave alone."""

from __future__ import annotations

import sys
import types

import pytest

from reasonedit_plugin import easyedit_registration as registration
from reasonedit_plugin.easyedit_adapter import apply_reasonedit_to_multimodal_model
from reasonedit_plugin.easyedit_registration import check_model_name, register, register_on_import
from reasonedit_plugin.errors import ConfigError, RecordError
from reasonedit_plugin.hparams import ReasonEditHyperParams


@pytest.fixture(autouse=True)
def _restore_hparams_bases():
    bases = ReasonEditHyperParams.__bases__  # register() rebases it onto the stand-in's HyperParams
    yield
    ReasonEditHyperParams.__bases__ = bases


def _fake_easyeditor(monkeypatch) -> types.SimpleNamespace:
    from dataclasses import dataclass

    @dataclass
    class HyperParams:
        pass

    class MultimodalEditor:
        def __init__(self, hparams=None):
            self.hparams = hparams
            self.loaded = True

        def _prepare_requests(self, prompts, targets, image, rephrase_prompts=None, rephrase_image=None,
                              locality_inputs=None, file_type=None, **kwargs):
            return [{"prompt": p, "target": t, "image": i} for p, t, i in zip(prompts, targets, image)]

    mods = {name: types.ModuleType(name) for name in (
        "easyeditor", "easyeditor.util", "easyeditor.util.alg_dict", "easyeditor.util.hparams",
        "easyeditor.editors", "easyeditor.editors.utils", "easyeditor.editors.multimodal_editor")}
    mods["easyeditor.util.alg_dict"].ALG_MULTIMODAL_DICT = {"GRACE": object()}
    mods["easyeditor.util.alg_dict"].MULTIMODAL_EDIT_ALGS = {"GRACE"}
    mods["easyeditor.util.hparams"].HyperParams = HyperParams
    mods["easyeditor.editors.utils"].CALLABLE_RESTORE_ALGS = {"GRACE"}
    mods["easyeditor.editors.multimodal_editor"].MultimodalEditor = MultimodalEditor
    mods["easyeditor.editors.multimodal_editor"].ALG_MULTIMODAL_DICT = mods["easyeditor.util.alg_dict"].ALG_MULTIMODAL_DICT
    mods["easyeditor"].util, mods["easyeditor"].editors = mods["easyeditor.util"], mods["easyeditor.editors"]
    mods["easyeditor.util"].alg_dict = mods["easyeditor.util.alg_dict"]
    mods["easyeditor.util"].hparams = mods["easyeditor.util.hparams"]
    mods["easyeditor.editors"].utils = mods["easyeditor.editors.utils"]
    mods["easyeditor.editors"].multimodal_editor = mods["easyeditor.editors.multimodal_editor"]
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(HyperParams=HyperParams, MultimodalEditor=MultimodalEditor, **{
        "alg_dict": mods["easyeditor.util.alg_dict"], "utils": mods["easyeditor.editors.utils"]})


def test_register_mutates_easyedit_registries_idempotently(monkeypatch):
    ee = _fake_easyeditor(monkeypatch)
    table = ee.alg_dict.ALG_MULTIMODAL_DICT
    assert register() is True and register() is True
    assert ee.alg_dict.ALG_MULTIMODAL_DICT is table  # mutated, not rebound
    assert table["ReasonEdit"] is apply_reasonedit_to_multimodal_model and "GRACE" in table
    assert ee.alg_dict.MULTIMODAL_EDIT_ALGS == {"GRACE", "ReasonEdit"}
    assert ee.utils.CALLABLE_RESTORE_ALGS == {"GRACE", "ReasonEdit"}
    assert isinstance(ReasonEditHyperParams.from_dict({"alg_name": "ReasonEdit", "model_name": "/models/tiny-qwen2-vl"}),
                      ee.HyperParams)  # subclass of EasyEdit's HyperParams once it is loaded
    # edit(..., rationales=[...]) works by default (the wrapper is applied once)
    assert not hasattr(ee.MultimodalEditor._prepare_requests.__wrapped__, "__wrapped__")


def test_register_can_leave_prepare_requests_alone(monkeypatch):
    ee = _fake_easyeditor(monkeypatch)
    original = ee.MultimodalEditor._prepare_requests
    register(rationales_kwarg=False)
    assert ee.MultimodalEditor._prepare_requests is original


def test_rationales_kwarg_patch(monkeypatch):
    ee = _fake_easyeditor(monkeypatch)
    register(rationales_kwarg=True)
    register(rationales_kwarg=True)  # idempotent: wrapped once
    prepare = ee.MultimodalEditor._prepare_requests
    assert not hasattr(prepare.__wrapped__, "__wrapped__")
    editor = ee.MultimodalEditor()
    requests = editor._prepare_requests(["q1", "q2"], ["a1", "a2"], ["i1", "i2"], None, None, None, None,
                                        rationales=["R1.", ["R2a.", "R2b."]])
    assert [r["rationale"] for r in requests] == ["R1.", ["R2a.", "R2b."]]
    assert "rationale" not in editor._prepare_requests(["q"], ["a"], ["i"])[0]
    with pytest.raises(RecordError, match="one rationale"):
        editor._prepare_requests(["q1", "q2"], ["a1", "a2"], ["i1", "i2"], rationales=["only one"])


def test_register_on_import_registers_at_once_when_easyedit_is_loaded(monkeypatch):
    ee = _fake_easyeditor(monkeypatch)
    assert register_on_import() == "registered"
    assert "ReasonEdit" in ee.alg_dict.ALG_MULTIMODAL_DICT
    requests = ee.MultimodalEditor()._prepare_requests(["q"], ["a"], ["i"], rationales=["Because."])
    assert requests[0]["rationale"] == "Because."  # the README's rationales=[...] needs nothing else


def test_multimodal_editor_refuses_placeholder_and_unmappable_model_names(monkeypatch, tmp_path):
    ee = _fake_easyeditor(monkeypatch)
    register()
    with pytest.raises(ConfigError, match="placeholder: replace it"):
        ee.MultimodalEditor(types.SimpleNamespace(model_name="/path/to/Qwen2-VL-7B-Instruct"))
    folder = tmp_path / "my-finetuned-model"
    with pytest.raises(ConfigError, match=r"ln -s .*my-finetuned-model-qwen2-vl") as info:
        ee.MultimodalEditor(types.SimpleNamespace(model_name=str(folder)))
    assert "\n" not in str(info.value)
    assert ee.MultimodalEditor(types.SimpleNamespace(model_name=str(tmp_path / "tiny-qwen2-vl"))).loaded
    assert ee.MultimodalEditor(types.SimpleNamespace(model_name="blip2")).loaded


@pytest.mark.parametrize("name, ok", [("/m/Qwen2-VL-7B-Instruct", True), ("/m/qwen3_vl_8b", True),
                                      ("/m/Qwen3.5-9B", True), ("/m/llava-onevision-qwen2-7b-ov-hf", True),
                                      ("minigpt4", True), ("/m/Qwen2.5-VL-7B", False), ("/m/llava-1.5-7b-hf", False),
                                      ("/path/to/Qwen2-VL-7B-Instruct", False)])
def test_check_model_name_mirrors_easyedit_loaders(name, ok):
    if ok:
        check_model_name(name)
    else:
        with pytest.raises(ConfigError, match="model_name="):
            check_model_name(name)
    check_model_name((object(), object()))  # a (model, tokenizer) pair is EasyEdit's other form


def test_register_without_easyedit_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "easyeditor", None)  # makes `import easyeditor` fail
    with pytest.raises(ImportError, match="PYTHONPATH"):
        register()


def test_register_on_import_waits_for_easyedit(tmp_path, monkeypatch):
    package = tmp_path / "easyeditor"
    (package / "util").mkdir(parents=True)
    (package / "editors").mkdir()
    (package / "__init__.py").write_text("from .util import alg_dict\nfrom .editors import utils, multimodal_editor\n")
    (package / "util" / "__init__.py").write_text("")
    (package / "util" / "alg_dict.py").write_text("ALG_MULTIMODAL_DICT = {}\nMULTIMODAL_EDIT_ALGS = set()\n")
    (package / "util" / "hparams.py").write_text("class HyperParams:\n    pass\n")
    (package / "editors" / "__init__.py").write_text("")
    (package / "editors" / "utils.py").write_text("CALLABLE_RESTORE_ALGS = set()\n")
    (package / "editors" / "multimodal_editor.py").write_text(
        "from ..util.alg_dict import *\nclass MultimodalEditor:\n    pass\n")
    for name in [n for n in sys.modules if n == "easyeditor" or n.startswith("easyeditor.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert register_on_import() == "deferred"
        assert register_on_import() == "deferred"  # one hook only
        assert sum(isinstance(f, registration._RegisterAfterImport) for f in sys.meta_path) == 1
        import easyeditor  # noqa: F401  -- the hook registers right after this import

        assert sys.modules["easyeditor.util.alg_dict"].ALG_MULTIMODAL_DICT["ReasonEdit"] \
            is apply_reasonedit_to_multimodal_model
        assert "ReasonEdit" in sys.modules["easyeditor.editors.utils"].CALLABLE_RESTORE_ALGS
        assert not any(isinstance(f, registration._RegisterAfterImport) for f in sys.meta_path)
    finally:
        registration._remove_hook()
        for name in [n for n in sys.modules if n == "easyeditor" or n.startswith("easyeditor.")]:
            del sys.modules[name]


def test_register_on_import_without_easyedit_leaves_other_imports_alone(monkeypatch):
    for name in [n for n in sys.modules if n == "easyeditor" or n.startswith("easyeditor.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (p and __import__("os").path.isdir(
        __import__("os").path.join(p, "easyeditor")))])
    try:
        assert register_on_import() == "deferred"  # a checkout put on sys.path later still registers
        with pytest.raises(ImportError):
            import easyeditor  # noqa: F401
        import json as again  # noqa: F401  -- every other import is untouched
    finally:
        registration._remove_hook()
