"""How retrieved facts enter the model (METHOD.md §4.5).

A fusion turns (question, facts) into the text of the single user turn. The paper's fusion, ``prompt``,
joins the facts with single spaces, adds one space, then the question, with no header; with nothing
retrieved the question is returned unchanged, so the model's input is byte-identical to the unedited one.
Other fusions register here and must be measured against ``prompt`` first. The hidden-state kinds
(``hidden_bias``, ``gated``; :mod:`reasonedit_plugin.hidden_fusion`) leave the text as the bare question
(the sequence length does not change) and act on the hidden states through a hook instead.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .config import FusionConfig
from .errors import ConfigError, did_you_mean

Fusion = Callable[[str, Sequence[str], FusionConfig], str]

_FUSIONS: dict[str, Fusion] = {}


def register_fusion(name: str, fn: Fusion, overwrite: bool = False) -> None:
    """Register a fusion under ``name``; re-registering an existing name needs ``overwrite=True``."""
    if not name or not callable(fn):
        raise ConfigError("register_fusion needs a non-empty name and a callable.")
    if name in _FUSIONS and not overwrite:
        raise ConfigError(f"fusion {name!r} is already registered; pass overwrite=True to replace it.")
    _FUSIONS[name] = fn


def get_fusion(name: str) -> Fusion:
    if name not in _FUSIONS:
        raise ConfigError(f"unknown fusion {name!r}; registered: {sorted(_FUSIONS)}.{did_you_mean(name, _FUSIONS)}")
    return _FUSIONS[name]


def fuse_prompt(question: str, facts: Sequence[str], config: FusionConfig) -> str:
    """The paper's fusion: ``"<fact> <fact> ... <question>"``; the question alone when there are no facts."""
    if not facts:
        return question
    return config.template.format(facts=config.fact_separator.join(facts), question=question)


def fuse(question: str, facts: Sequence[str], config: FusionConfig) -> str:
    return get_fusion(config.kind)(question, facts, config)


def question_only(question: str, facts: Sequence[str], config: FusionConfig) -> str:
    """Hidden-state fusions: the user turn is the question itself; the facts enter as a bias."""
    return question


register_fusion("prompt", fuse_prompt)
register_fusion("hidden_bias", question_only)
register_fusion("gated", question_only)
