"""``reasonedit upstream``: the EasyEdit contribution written into a small stand-in checkout (the anchors
EasyEdit's files have), idempotently, with one error per missing anchor. The real EasyEdit checkout is
exercised in tests/integration/test_easyedit_upstream.py."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from reasonedit_plugin import easyedit_registration as registration
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.upstream import write_contribution

ALG_DICT = '''from ..models.grace import GraceHyperParams, apply_grace_to_multimodal_model
from ..models.defer import DeferHyperParams, apply_defer_to_model


MULTIMODAL_EDIT_ALGS = {
    'IKE',
    'GRACE',
}

ALG_MULTIMODAL_DICT = {
    'IKE': apply_ike_to_multimodal_model,
    'GRACE': apply_grace_to_multimodal_model
}
'''
EDITOR = '''class MultimodalEditor:
    def _prepare_requests(self, prompts, targets, image, **kwargs):
        requests = [{'prompt': p} for p in prompts]
        if 'loc_prompts' in kwargs:
            pass

        return requests
'''
README = '''| **Method** | MiniGPT-4 | BLIP-2 | LLaVA-OneVision | Qwen2-VL |
| :-------: | :-------: | :-------: | :-------: | :-------: |
| GRACE |  |  | ✅ | ✅ |
| WISE |  |  | ✅ | ✅ |

More text.
'''


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    files = {"easyeditor/util/alg_dict.py": ALG_DICT, "easyeditor/editors/utils.py":
             'CALLABLE_RESTORE_ALGS = {"KN", "GRACE"}\nPEFT_RESTORE_ALGS = {"LoRA"}\n',
             "easyeditor/editors/multimodal_editor.py": EDITOR, "easyeditor/models/__init__.py": "from .grace import *\n",
             "README.md": README}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_contribution_is_written_where_easyedit_looks(checkout):
    done = write_contribution(checkout)
    assert {"easyeditor/models/reasonedit/__init__.py", "easyeditor/models/reasonedit/reasonedit_main.py",
            "easyeditor/models/reasonedit/reasonedit_hparams.py", "examples/run_reasonedit_editing.py",
            "hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml", "hparams/ReasonEdit/qwen2vl-7b.yaml"} <= set(done.created)
    assert "hparams/ReasonEdit/llava-1.5-7b.yaml" not in done.created  # EasyEdit has no loader for it
    assert sorted(done.changed) == ["README.md", "easyeditor/editors/multimodal_editor.py", "easyeditor/editors/utils.py",
                                    "easyeditor/models/__init__.py", "easyeditor/util/alg_dict.py"]
    ns: dict = {}
    alg = (checkout / "easyeditor/util/alg_dict.py").read_text()
    exec(compile(alg.split("\n\n\n", 1)[1], "alg_dict", "exec"), {"apply_ike_to_multimodal_model": 1,
         "apply_grace_to_multimodal_model": 2, "apply_reasonedit_to_multimodal_model": 3}, ns)
    assert ns["MULTIMODAL_EDIT_ALGS"] == {"IKE", "GRACE", "ReasonEdit"} and ns["ALG_MULTIMODAL_DICT"]["ReasonEdit"] == 3
    assert "from ..models.reasonedit import ReasonEditHyperParams, apply_reasonedit_to_multimodal_model" in alg
    utils = (checkout / "easyeditor/editors/utils.py").read_text()
    assert 'CALLABLE_RESTORE_ALGS = {"KN", "GRACE", "ReasonEdit"}' in utils
    for path in checkout.rglob("*.py"):
        ast.parse(path.read_text())  # everything written is valid Python
    editor_ns: dict = {}
    exec((checkout / "easyeditor/editors/multimodal_editor.py").read_text(), editor_ns)
    requests = editor_ns["MultimodalEditor"]()._prepare_requests(["q1", "q2"], None, None, rationales=["A.", ["B.", "C."]])
    assert [r["rationale"] for r in requests] == ["A.", ["B.", "C."]]
    assert "rationale" not in editor_ns["MultimodalEditor"]()._prepare_requests(["q"], None, None)[0]
    readme = (checkout / "README.md").read_text()
    assert "| WISE |  |  | ✅ | ✅ |\n| ReasonEdit |  |  | ✅ | ✅ |\n\n**ReasonEdit** (multimodal)" in readme
    assert (checkout / "easyeditor/models/__init__.py").read_text().endswith("from .reasonedit import *\n")


def test_writing_twice_changes_nothing(checkout):
    write_contribution(checkout)
    before = {p: p.read_bytes() for p in checkout.rglob("*") if p.is_file()}
    again = write_contribution(checkout)
    assert not again.created and not again.changed
    assert {p: p.read_bytes() for p in checkout.rglob("*") if p.is_file()} == before


def test_missing_anchor_names_the_file(checkout, tmp_path):
    (checkout / "easyeditor/editors/utils.py").write_text("PEFT_RESTORE_ALGS = set()\n")
    with pytest.raises(ConfigError, match="utils.py: no 'CALLABLE_RESTORE_ALGS"):
        write_contribution(checkout)
    with pytest.raises(ConfigError, match="is not an EasyEdit checkout"):
        write_contribution(tmp_path / "nowhere")


def test_plugin_hook_stands_down_when_easyedit_ships_reasonedit(monkeypatch):
    registration._remove_hook()  # the one `import reasonedit_plugin` installed
    monkeypatch.setitem(sys.modules, registration.NATIVE_MODULE, type(sys)(registration.NATIVE_MODULE))
    assert registration.register_on_import() == "native"
    assert not any(isinstance(f, registration._RegisterAfterImport) for f in sys.meta_path)


def test_cli_upstream(checkout, tmp_path, capsys):
    from reasonedit_plugin.cli import main

    assert main(["upstream", "--easyedit", str(checkout)]) == 0
    out = capsys.readouterr().out
    assert "created  easyeditor/models/reasonedit/reasonedit_main.py" in out and "git -C" in out
    assert main(["upstream", "--easyedit", str(tmp_path / "nowhere")]) == 2
    assert "is not an EasyEdit checkout" in capsys.readouterr().err
