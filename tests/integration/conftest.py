"""Fixtures shared by the EasyEdit integration tests (``-m easyedit``)."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """MultimodalEditor writes logs/run.log into the working directory: keep it out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def easyedit():
    """The ``easyeditor`` package; the test is skipped where it does not import."""
    try:
        return importlib.import_module("easyeditor")
    except Exception as exc:  # not installed, or an EasyEdit that does not import here
        pytest.skip(f"easyeditor is not importable ({type(exc).__name__}: {exc}); put an EasyEdit checkout on "
                    "PYTHONPATH in an environment with torchvision (docs/EASYEDIT.md)")
