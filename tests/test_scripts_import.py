"""Every script of examples/ and benchmarks/ imports and builds its argument parser against the current library.

Scripts are run by hand, not by the suite, so a renamed library function breaks them silently (session 49 found
examples/compare_fusion.py and calibrate_hidden_fusion.py importing helpers that had moved out of cli.py). This runs
each one's ``--help``: module-level imports and the parser, nothing of its work."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for folder in ("examples", "benchmarks") for p in (ROOT / folder).glob("*.py")
                 if "\ndef main(" in p.read_text(encoding="utf-8"))
"""Scripts only: a module without ``main`` (examples/family_vipllava.py registers a ModelSpec row when imported)
is left to its own test, which unregisters the row afterwards."""


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_and_answers_help(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # sibling imports (benchmarks/entry_copy.py ...)
    spec = importlib.util.spec_from_file_location(f"_script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        module.main()
    assert exc.value.code == 0 and "usage:" in out.getvalue()
