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
