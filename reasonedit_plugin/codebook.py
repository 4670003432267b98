"""The codebook: keys, values, radii, merging, removal, provenance and hubness sigma (METHOD.md §2, §4.2).

An :class:`Entry` is one key with its text values. Every edit that contributed to an entry is kept as a
:class:`Contribution` (its own key, radius and value), so that removing an edit recomputes the entry
from the contributions that remain — a merged entry splits back exactly.

Hubness: every key carries sigma = the median of the L2 distances to its min(k, N-1) nearest other keys,
kept up to date incrementally by ``hubness.HubnessTable``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .config import CodebookConfig, RetrievalConfig
from .errors import ReasonEditError
from .hubness import HubnessTable
from .index import VectorIndex, make_index

logger = logging.getLogger(__name__)

ENTRY_KINDS = ("answer", "reasoning", "patch")


@dataclass
class Contribution:
    """One edit's part of an entry: its original key, radius and value."""

    edit_id: str
    kind: str
    value: str
    key: torch.Tensor
    radius: float
    created: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"edit_id": self.edit_id, "kind": self.kind, "value": self.value, "radius": self.radius,
                "created": self.created, "meta": self.meta}


@dataclass
class Entry:
    """A key with its values. ``key`` and ``radius`` follow from ``contributions`` (see ``_fold``)."""

    id: int
    key: torch.Tensor
    radius: float
    contributions: list[Contribution]

    @property
    def values(self) -> list[str]:
        return list(dict.fromkeys(c.value for c in self.contributions))

    @property
    def edit_ids(self) -> list[str]:
        return list(dict.fromkeys(c.edit_id for c in self.contributions))

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(c.kind for c in self.contributions))


@dataclass(frozen=True)
class PendingEntry:
    """An entry an edit wants to add, before merging."""

    kind: str
    value: str
    key: torch.Tensor
    radius: float


def should_merge(d: float, r_new: float, r_old: float, config: CodebookConfig) -> bool:
    """METHOD.md §2: the balls intersect AND (both centres are deep inside: d < ratio * r for both radii,
    OR the overlap covers more than ``merge_overlap`` of both balls). The overlap of two balls is measured
    along the line joining their centres (interval overlap / diameter), the reference's 1-D measure."""
    if not d < r_new + r_old:
        return False
    ratio = config.merge_center_ratio
    if d < ratio * r_new and d < ratio * r_old:
        return True
    overlap = min(r_new + r_old - d, 2 * min(r_new, r_old))
    return overlap / (2 * r_new) > config.merge_overlap and overlap / (2 * r_old) > config.merge_overlap


def _fold(contributions: Sequence[Contribution]) -> tuple[torch.Tensor, float]:
    """The key and radius of an entry built by merging ``contributions`` in order: the first key is kept;
    each later one grows the radius to max(r, d + r_new)."""
    key = contributions[0].key
    radius = contributions[0].radius
    for c in contributions[1:]:
        d = float(torch.linalg.vector_norm(c.key - key))
        radius = max(radius, d + c.radius)
    return key, radius


class Codebook:
    """Entries, their index, and incrementally maintained hubness sigma."""

    def __init__(self, dim: int, config: CodebookConfig | None = None,
                 retrieval: RetrievalConfig | None = None):
        if dim < 1:
            raise ReasonEditError(f"codebook dim must be >= 1, got {dim}.")
        self.dim = dim
        self.config = config or CodebookConfig()
        self.retrieval = retrieval or RetrievalConfig()
        self.entries: dict[int, Entry] = {}
        self.index: VectorIndex = make_index(self.retrieval.backend, dim)
        self._next_id = 0
        self.version = 0
        """Bumped on every change; caches (the rejection gate) compare it."""
        self._hubness = HubnessTable(dim, self.retrieval.hubness_k)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.entries)

    def edit_ids(self) -> list[str]:
        """Distinct edit ids, in order of first appearance."""
        seen: dict[str, None] = {}
        for entry in self.entries.values():
            for c in entry.contributions:
                seen.setdefault(c.edit_id, None)
        return list(seen)

    def entry_ids(self) -> list[int]:
        return list(self.entries)

    def keys(self, ids: Sequence[int] | None = None) -> torch.Tensor:
        ids = self.entry_ids() if ids is None else ids
        if not ids:
            return torch.zeros(0, self.dim)
        return self._hubness.keys(ids)

    def sigma_table(self) -> dict[int, float]:
        """Hubness sigma of every entry: the median distance to its min(k, N-1) nearest other keys
        (1.0 for a lone key)."""
        return self._hubness.sigma_table()

    def scaled_topk(self, query: torch.Tensor, k: int, eps: float) -> list[tuple[float, float, int]]:
        """Exact k best entries by hubness-scaled distance d / (sigma + eps): (score, distance, id)."""
        return self._hubness.scaled_topk(query, k, eps)

    def sigma(self, ids: Sequence[int]) -> torch.Tensor:
        table = self.sigma_table()
        return torch.tensor([table[i] for i in ids], dtype=torch.float64)

    # ------------------------------------------------------------------ changes
    def add_edit(self, edit_id: str, pending: Sequence[PendingEntry],
                 meta: dict[str, Any] | None = None) -> list[tuple[int, bool]]:
        """Add an edit's entries (merging where the rule says so). All-or-nothing: every entry is checked
        before anything changes. Returns (entry id, merged?) per pending entry."""
        if edit_id in set(self.edit_ids()):
            raise ReasonEditError(f"edit {edit_id!r} is already in the codebook; remove it first or use "
                                  "another id.")
        for p in pending:
            self._check_pending(p)
        now = time.time()
        result = []
        for p in pending:
            contribution = Contribution(edit_id, p.kind, p.value, p.key.detach().float().cpu().clone(),
                                        float(p.radius), now, dict(meta or {}))
            result.append(self._insert(contribution))
        self.version += 1
        return result

    def remove_edit(self, edit_id: str) -> list[int]:
        """Remove an edit: its own entries go; merged entries are recomputed from what remains.
        Returns the ids of the entries that were deleted or changed."""
        touched = [e for e in self.entries.values() if any(c.edit_id == edit_id for c in e.contributions)]
        if not touched:
            raise ReasonEditError(f"no edit {edit_id!r} in the codebook; known edits: "
                                  f"{self.edit_ids()[:20]}{' ...' if len(self.edit_ids()) > 20 else ''}")
        for entry in touched:
            rest = [c for c in entry.contributions if c.edit_id != edit_id]
            self._delete(entry.id)
            if rest:
                self._restore(entry.id, rest)
        self.version += 1
        return [e.id for e in touched]

    def _check_pending(self, p: PendingEntry) -> None:
        if p.kind not in ENTRY_KINDS:
            raise ReasonEditError(f"entry kind {p.kind!r} is not one of {list(ENTRY_KINDS)}.")
        if not isinstance(p.value, str) or not p.value.strip():
            raise ReasonEditError("an entry's value must be a non-empty string.")
        if p.key.shape != (self.dim,):
            raise ReasonEditError(f"key has shape {tuple(p.key.shape)}, the codebook expects ({self.dim},); "
                                  "was it built with another model, layer or text encoder?")
        if not torch.isfinite(p.key).all():
            raise ReasonEditError("key has NaN/inf values; nothing was added.")
        if not (p.radius >= 0 and p.radius < float("inf")):
            raise ReasonEditError(f"radius {p.radius!r} must be finite and >= 0.")

    def _insert(self, c: Contribution) -> tuple[int, bool]:
        if self.config.merge and self.entries:
            res = self.index.search(c.key[None].numpy(), min(8, len(self.entries)))
            for d, eid in zip(res.distances[0].tolist(), res.ids[0].tolist()):
                old = self.entries[int(eid)]
                if should_merge(float(d), c.radius, old.radius, self.config):
                    old.contributions.append(c)
                    old.radius = max(old.radius, float(d) + c.radius)
                    logger.debug("merged a %s entry of edit %s into entry %d (d=%.4f)", c.kind, c.edit_id,
                                 old.id, d)
                    return old.id, True
        eid = self._next_id
        self._next_id += 1
        self._restore(eid, [c])
        return eid, False

    def _restore(self, entry_id: int, contributions: list[Contribution]) -> None:
        key, radius = _fold(contributions)
        self.entries[entry_id] = Entry(entry_id, key, radius, contributions)
        self._next_id = max(self._next_id, entry_id + 1)
        self._add_key(entry_id, key)

    # ------------------------------------------------------------------ index + hubness bookkeeping
    def _add_key(self, entry_id: int, key: torch.Tensor) -> None:
        self._hubness.add(entry_id, key)
        self.index.add(torch.tensor([entry_id], dtype=torch.int64).numpy(), key[None].numpy())

    def _delete(self, entry_id: int) -> None:
        self.index.remove(torch.tensor([entry_id], dtype=torch.int64).numpy())
        self._hubness.remove(entry_id)
        del self.entries[entry_id]

    def rebuild(self) -> None:
        """Recompute the index and every neighbour list from the entries (after loading)."""
        self.index = make_index(self.retrieval.backend, self.dim)
        self._hubness = HubnessTable(self.dim, self.retrieval.hubness_k)
        for entry_id, entry in self.entries.items():
            self._add_key(entry_id, entry.key)
        self.version += 1
