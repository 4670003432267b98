"""Exceptions raised by ReasonEdit.

Every error a user can trigger derives from :class:`ReasonEditError` (a ``ValueError``), and its message
names the bad value, the valid choices where there are any, and the fix.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ReasonEditError(ValueError):
    """Base class of all user-facing ReasonEdit errors."""


class ConfigError(ReasonEditError):
    """A hyper-parameter or YAML file is invalid."""


class RecordError(ReasonEditError):
    """An edit record (image, question, answer, rationale) is invalid."""

    def __init__(self, message: str, record_id: str | None = None, field: str | None = None):
        where = []
        if record_id is not None:
            where.append(f"record {record_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.record_id = record_id
        self.field = field


class UnsupportedModelError(ReasonEditError):
    """The model's ``config.model_type`` has no row in the model-spec table."""


class CodebookMismatchError(ReasonEditError):
    """A saved codebook was built for a different model / layer / scale / text encoder."""


class CodebookCorruptError(ReasonEditError):
    """A saved codebook's files do not match their checksums or cannot be parsed."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
