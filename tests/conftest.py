"""Shared fixtures. Engineers: add fixtures here, keep them cheap; heavy ones are session-scoped."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def benchmark_script():
    """Import a script of ``benchmarks/`` by name (``benchmark_script("trajectory")``), its sibling imports found."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    loaded = {}

    def load(name: str):
        if name not in loaded:
            sys.path.insert(0, str(folder))
            try:
                spec = importlib.util.spec_from_file_location(f"{name}_script", folder / f"{name}.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(folder))
            loaded[name] = module
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def text_encoder():
    """The packaged MiniLM-L6 sentence encoder, loaded once per test session."""
    from reasonedit_plugin.text_encoder import shared_text_encoder

    return shared_text_encoder()


@pytest.fixture(autouse=True)
def _restore_package_logger():
    """``cli.main`` configures the package logger (own handler, no propagation); tests that call it in-process
    must not hide later tests' log records from ``caplog``."""
    import logging

    logger = logging.getLogger("reasonedit_plugin")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
