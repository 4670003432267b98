"""The metric names and arithmetic of the evaluation (METHOD.md §7): the true harmonic mean, answer matching,
EasyEdit's teacher-forced token accuracy and top-k agreement, percentiles, checkpoint steps."""

from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import torch

from .records import normalize_answer


logger = logging.getLogger(__name__)

EDIT_KINDS = ("reliability", "t_gen", "i_gen", "r_gen")
"""Probes built from the edited record itself (they should change)."""
UNRELATED_KINDS = ("locality", "hard_locality")
"""Probes that should not change."""
PAPER_METRICS = EDIT_KINDS + UNRELATED_KINDS + ("gen", "overall", "overall_no_hard")
EASYEDIT_KEYS = ("rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc",
                 "multimodal_locality_acc")
LOCALITY_TOPK = {"locality_acc": 1, "multimodal_locality_acc": 10}
"""EasyEdit compares the top-1 token ids for text locality and the top-10 for multimodal locality."""

def harmonic_mean(values: Iterable[float | None]) -> float | None:
    """The true harmonic mean of the values that are present (None is skipped).

    0 if any present value is <= 0; None if no value is present.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    if any(v <= 0 for v in present):
        return 0.0
    return len(present) / sum(1.0 / v for v in present)


def is_correct(predicted: str, expected: str, multiple_choice: bool) -> bool:
    """Multiple choice: case-insensitive exact match of the option; open: normalised exact match."""
    if multiple_choice:
        return predicted.strip().lower() == expected.strip().lower()
    return normalize_answer(predicted) == normalize_answer(expected)


def accuracy(flags: Sequence[bool]) -> float | None:
    return sum(bool(f) for f in flags) / len(flags) if flags else None


def retrieval_breakdown(outcomes: Iterable) -> dict[str, dict[str, float | int | None]]:
    """Per probe kind, how often retrieval accepted an entry and how often the answer was right with and
    without one: {kind: {"n", "retrieved", "right_retrieved", "right_not_retrieved"}} (shares; None where no
    probe falls in the group). Tells a retrieval miss (the gate rejected an edit probe) from a reading miss
    (the facts were fused and the model still answered wrong). ``outcomes``: objects with ``kind``,
    ``accepted`` (None: the method does not retrieve; such probes are left out) and ``correct``."""
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for o in outcomes:
        if o.accepted is not None:
            groups.setdefault(o.kind, []).append((bool(o.accepted), bool(o.correct)))
    out: dict[str, dict[str, float | int | None]] = {}
    known = EDIT_KINDS + UNRELATED_KINDS
    for kind in [k for k in known if k in groups] + sorted(set(groups) - set(known)):
        pairs = groups[kind]
        out[kind] = {"n": len(pairs), "retrieved": accuracy([a for a, _ in pairs]),
                     "right_retrieved": accuracy([c for a, c in pairs if a]),
                     "right_not_retrieved": accuracy([c for a, c in pairs if not a])}
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """EasyEdit's teacher-forced token accuracy: logits [L, V] (or [1, L, V]) of prompt+target, labels [L]
    with -100 outside the target. Position t predicts label t+1; the score is the fraction of target
    tokens whose argmax is right (``compute_multimodal_hf_edit_quality``, exact_match=False)."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels)
    if logits.dim() == 3:
        logits, labels = logits[0], labels.reshape(-1)
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"token_accuracy needs logits [L, V] and labels [L], got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}.")
    pred = logits[:-1].argmax(-1)
    targ = labels[1:]
    mask = targ != -100
    if not bool(mask.any()):
        raise ValueError("token_accuracy: the labels mark no target token.")
    return float(((pred == targ) & mask).sum()) / float(mask.sum())


def topk_ids(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k token ids per position, [L, k] (k clipped to the vocabulary)."""
    logits = torch.as_tensor(logits)
    if logits.dim() == 3:
        logits = logits[0]
    return torch.topk(logits.float(), k=min(k, logits.shape[-1]), dim=-1).indices


def topk_token_match(pre_ids: torch.Tensor, post_ids: torch.Tensor) -> float:
    """EasyEdit's locality: fraction of equal entries of the pre- and post-edit top-k id lists [L, k],
    the longer sequence cut to the shorter one's last positions (``topk_token_match`` in vl_utils)."""
    pre_ids, post_ids = torch.as_tensor(pre_ids), torch.as_tensor(post_ids)
    n = min(pre_ids.shape[0], post_ids.shape[0])
    k = min(pre_ids.shape[1], post_ids.shape[1])
    a, b = pre_ids[-n:, :k], post_ids[-n:, :k]
    return float((a.reshape(-1) == b.reshape(-1)).float().mean())


def checkpoint_steps(num_edits: int, every: int | None) -> list[int]:
    """After which edit counts the sequential protocol evaluates: every ``every`` edits and at the end."""
    if num_edits <= 0:
        return []
    if not every or every <= 0 or every >= num_edits:
        return [num_edits]
    steps = list(range(every, num_edits + 1, every))
    if steps[-1] != num_edits:
        steps.append(num_edits)
    return steps
