"""Whether a saved codebook's keys are comparable with the current key setup (model, vision layer, λ,
text encoder, dimensions): the fields that define a key, the differences between two setups, and the
one-line error naming them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Union

from .errors import CodebookMismatchError, ReasonEditError

SETUP_FIELDS = ("model_type", "model_fingerprint", "vision_module", "scale", "text_encoder", "vision_dim",
                "text_dim")
"""The key-defining fields saved with a codebook."""


def setup_dict(setup: Any) -> dict[str, Any]:
    values = setup.to_dict() if hasattr(setup, "to_dict") else dict(setup)
    missing = [k for k in SETUP_FIELDS if k not in values]
    if missing:
        raise ReasonEditError(f"key setup lacks {missing}; pass editor.keys.setup.")
    return {k: values[k] for k in SETUP_FIELDS}


def setup_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two key setups (empty when keys are comparable)."""
    diffs = []
    for name in SETUP_FIELDS:
        a, b = saved.get(name), current.get(name)
        if name == "scale":
            same = a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
        elif name == "text_encoder":  # "<name or path>:<weights hash>": the same weights under another path match
            same = str(a).rsplit(":", 1)[-1] == str(b).rsplit(":", 1)[-1]
        else:
            same = a == b
        if not same:
            diffs.append(f"{name}: saved {a!r}, current {b!r}")
    return diffs


def check_setup(saved: Mapping[str, Any], current: Any, where: Union[str, Path]) -> None:
    """Raise :class:`CodebookMismatchError` when ``current`` differs from the setup a codebook was saved with."""
    diffs = setup_differences(saved, setup_dict(current))
    if diffs:
        raise CodebookMismatchError(
            f"the codebook at {str(where)!r} was built with a different key setup, so its keys are not "
            f"comparable with this model's: {'; '.join(diffs)}. Either load the model, vision layer, scale "
            f"and text encoder it was built with (saved setup: {dict(saved)}), or re-embed its edits into "
            "this setup with editor.import_edits(path) (it uses the raw edit records kept in the codebook).")
