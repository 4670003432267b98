"""Shared fixtures. Engineers: add fixtures here, keep them cheap; heavy ones are session-scoped."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
