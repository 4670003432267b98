"""The upstream contribution on a copy of the importable EasyEdit checkout: after ``reasonedit upstream``,
EasyEdit's own example runs ReasonEdit with EasyEdit's native registration (the plugin's hook and patches
stand down) and the edits work (EasyEdit's own metrics: post rewrite_acc above pre)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.easyedit

REPO = Path(__file__).resolve().parents[2]

CHECK = '''
import json, runpy, sys
import easyeditor
from easyeditor.editors.multimodal_editor import MultimodalEditor
from easyeditor.util.alg_dict import ALG_MULTIMODAL_DICT
from easyeditor.editors.utils import CALLABLE_RESTORE_ALGS
state = {"apply_module": ALG_MULTIMODAL_DICT["ReasonEdit"].__module__,
         "restore": "ReasonEdit" in CALLABLE_RESTORE_ALGS,
         "plugin_patched": any(getattr(f, "_reasonedit_patch", False)
                               for f in (MultimodalEditor.__init__, MultimodalEditor._prepare_requests)),
         "plugin_hook": any(type(f).__name__ == "_RegisterAfterImport" for f in sys.meta_path)}
print("STATE " + json.dumps(state))
sys.argv = ["run_reasonedit_editing.py"] + sys.argv[1:]
runpy.run_path("examples/run_reasonedit_editing.py", run_name="__main__")
'''


@pytest.fixture(scope="module")
def easyedit_root() -> Path:
    spec = importlib.util.find_spec("easyeditor")
    if spec is None or spec.origin is None:
        pytest.skip("easyeditor is not importable; put an EasyEdit checkout on PYTHONPATH (docs/EASYEDIT.md)")
    root = Path(spec.origin).resolve().parent.parent
    if not (root / "README.md").is_file():
        pytest.skip(f"{root} is not an EasyEdit checkout (an installed package has no README/examples)")
    return root


def test_easyedit_example_runs_reasonedit_natively(easyedit_root, tmp_path):
    from reasonedit_plugin.upstream import write_contribution

    checkout = tmp_path / "EasyEdit"
    shutil.copytree(easyedit_root, checkout, ignore=shutil.ignore_patterns(".git", "logs", "__pycache__", "data"))
    done = write_contribution(checkout)
    assert "easyeditor/models/reasonedit/reasonedit_main.py" in done.created
    assert not write_contribution(checkout).changed  # idempotent on the real files too

    # the engine is "pip-installed": only the plugin is on the path; EasyEdit comes from the patched copy
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", CHECK, "--hparams", "hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml",
                          "--size", "8", "--output_dir", str(tmp_path / "out")],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads(next(l for l in run.stdout.splitlines() if l.startswith("STATE "))[6:])
    assert state == {"apply_module": "easyeditor.models.reasonedit.reasonedit_main", "restore": True,
                     "plugin_patched": False, "plugin_hook": False}
    summary = json.loads((tmp_path / "out" / "ReasonEdit_results.json").read_text())
    assert summary["edits"] == 8 and summary["apply_function"] == "easyeditor.models.reasonedit.reasonedit_main"
    assert summary["post"]["rewrite_acc"] > summary["pre"]["rewrite_acc"]
    assert summary["post"]["locality_acc"] == 1.0  # text-only locality passes through unchanged
