"""Where an EasyEdit request's rationale comes from (the EasyEdit adapter's input side).

EasyEdit's ``edit()`` knows nothing of rationales and its datasets drop unknown fields. A request's
rationale is taken from, in order:

1. the request's ``rationale`` field: ``MultimodalEditor.edit(..., rationales=[...])`` fills it once the
   plugin is registered (``import reasonedit_plugin`` does that), or code that builds requests by hand;
2. ``hparams.rationale_source``: a JSON / JSONL file of records carrying ``rationale`` next to the
   question (e.g. the dataset file given to ``edit_dataset``). A request whose prompt was wrapped in a
   template (``edit_dataset(ds, template="Question: {} Short answer:")``) still finds its record: the
   lookup falls back to the longest recorded question contained in the prompt.

Without one, ``hparams.missing_rationale`` decides: ``error`` (default) or ``answer_only``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import ConfigError, RecordError

__all__ = ["RationaleSource", "request_rationale", "MISSING_RATIONALE_HELP"]

QUESTION_FIELDS = ("prompt", "src", "question")
"""Field names of the question in a rationale-source record (engine, EasyEdit's datasets, RationaleVQA)."""
ANSWER_FIELDS = ("target", "alt", "answer")
"""Field names of the answer (optional; disambiguates questions recorded with several answers)."""

MISSING_RATIONALE_HELP = (
    "Give it in one of these ways: MultimodalEditor.edit(..., rationales=[...]) (one per prompt; works once "
    "`import reasonedit_plugin` has run, or after reasonedit_plugin.register(rationales_kwarg=True)); "
    "'rationale_source: <json/jsonl file>' in the ReasonEdit YAML (records with prompt/src and rationale; "
    "use this with edit_dataset); or a 'rationale' field in the request dict. Or set 'missing_rationale: "
    "answer_only' to store the answer alone (the paper's 'no rationale' ablation)."
)


class RationaleSource:
    """Rationales read from a JSON (list of records, or ``{"data": [...]}``) or JSONL file.

    A record names its question as ``prompt`` (or EasyEdit's ``src``, or ``question``), its answer as
    ``target`` (``alt``, ``answer``; optional) and carries ``rationale`` (a string or a list of sentences).
    :meth:`lookup` matches by (question, answer), then by question alone when that is unambiguous, then
    -- for prompts wrapped in a template -- by the longest recorded question the prompt contains."""

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise ConfigError(f"rationale_source={self.path!r} does not exist; give the JSON/JSONL file "
                              "whose records carry 'rationale' next to the question.")
        self._by_pair: dict[tuple[str, str], Any] = {}
        self._by_prompt: dict[str, list[Any]] = {}
        for i, record in enumerate(self._read()):
            if not isinstance(record, Mapping):
                raise ConfigError(f"{self.path}: record #{i} is not a mapping.")
            prompt = _first(record, QUESTION_FIELDS)
            rationale = record.get("rationale")
            if prompt is None or rationale in (None, "", []):
                continue
            target = _first(record, ANSWER_FIELDS)
            if target is not None:
                self._by_pair[(prompt, target)] = rationale
            self._by_prompt.setdefault(prompt, [])
            if rationale not in self._by_prompt[prompt]:
                self._by_prompt[prompt].append(rationale)
        self._longest_first = sorted(self._by_prompt, key=lambda q: (-len(q), q))
        self._resolved: dict[str, Optional[str]] = {}

    def _read(self) -> list[Any]:
        with open(self.path, "r", encoding="utf-8") as f:
            text = f.read()
        try:
            if self.path.endswith(".jsonl"):
                return [json.loads(line) for line in text.splitlines() if line.strip()]
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"rationale_source {self.path}: not valid JSON ({exc}).") from exc
        if isinstance(data, Mapping):
            data = data.get("data", data.get("records"))
        if not isinstance(data, list):
            raise ConfigError(f"rationale_source {self.path}: expected a list of records (or JSONL).")
        return data

    def __len__(self) -> int:
        return len(self._by_prompt)

    def recorded_question(self, prompt: str) -> Optional[str]:
        """The recorded question ``prompt`` stands for: itself, or -- when a template wrapped it (EasyEdit's
        ``edit_dataset(..., template=...)``) -- the longest recorded question it contains. None if none."""
        if prompt in self._by_prompt:
            return prompt
        if prompt not in self._resolved:
            self._resolved[prompt] = next((q for q in self._longest_first if q and q in prompt), None)
        return self._resolved[prompt]

    def lookup(self, prompt: str, target: Optional[str] = None) -> Any:
        question = self.recorded_question(prompt) if isinstance(prompt, str) else None
        if question is None:
            return None
        if target is not None and (question, target) in self._by_pair:
            return self._by_pair[(question, target)]
        found = self._by_prompt[question]
        if len(found) > 1:
            raise RecordError(f"rationale_source {self.path} has {len(found)} different rationales for the "
                              f"question {question!r} and none matches the target {target!r}; give each record "
                              "its target/alt.", field="rationale")
        return found[0]


def _first(record: Mapping[str, Any], names: Sequence[str]) -> Optional[str]:
    for name in names:
        value = record.get(name)
        if isinstance(value, str):
            return value
    return None


_SOURCES: dict[tuple[str, float], RationaleSource] = {}


def rationale_source(path: str) -> RationaleSource:
    """The (cached, re-read when the file changes) :class:`RationaleSource` of ``path``."""
    key = (os.path.abspath(path), os.path.getmtime(path) if os.path.exists(path) else 0.0)
    if key not in _SOURCES:
        _SOURCES[key] = RationaleSource(path)
    return _SOURCES[key]


def request_rationale(request: Mapping[str, Any], hparams: Any) -> Any:
    """The rationale of one EasyEdit request (see the module docstring for the order), or None when
    ``hparams.missing_rationale`` is ``answer_only`` and there is none."""
    rationale = request.get("rationale")
    if rationale not in (None, "", []):
        return rationale
    if hparams.rationale_source:
        found = rationale_source(hparams.rationale_source).lookup(request.get("prompt"), request.get("target"))
        if found is not None:
            return found
    if hparams.missing_rationale == "answer_only":
        return None
    raise RecordError(f"EasyEdit request {request.get('prompt')!r} -> {request.get('target')!r} has no "
                      f"rationale. {MISSING_RATIONALE_HELP}", field="rationale")
