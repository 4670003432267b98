"""The codebook: keys, values, radii, merging, removal, provenance and hubness sigma (METHOD.md §2, §4.2).

An :class:`Entry` is one key with its text values. Every edit that contributed to an entry is kept as a
:class:`Contribution` (its own key, radius and value), so that removing an edit recomputes the entry
from the contributions that remain — a merged entry splits back exactly.

Hubness: every key carries sigma = the median of the L2 distances to its min(k, N-1) nearest other keys,
kept up to date incrementally by ``hubness.HubnessGraph``.

Scale: every entry key is stored once, at key precision (float16 by default), in a
:class:`~.keystore.KeyStore` whose IVF bounds make the scaled top-k exact yet sub-linear; contributions
are kept in columns (``contributions.PartTable``: a single-contribution entry is a numpy row; a merged
entry keeps its records, each later one with its own key copy), entries are built on access
(:class:`EntryView`), edit ids map to their entries by dict, and the gate's key sample is maintained
under edits (:class:`~.gate_sample.GateSample`). Saved codebooks carry the neighbour lists, sigma and the partition,
so loading is O(N) reading (``codebook_state.py``).

Every change is recorded in a bounded journal (:meth:`Codebook.changes_since`): caches built from the
entries (the null-set gate's tables) update only what a change touched instead of rescanning the codebook.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .config import CodebookConfig, RetrievalConfig
from .contributions import ENTRY_KINDS, NO_META, Part, PartTable
from .errors import ReasonEditError
from .hubness import EPS, HubnessGraph
from .gate_sample import GateSample
from .key_search import KeySearch, make_key_search
from .keystore import Hits, KeyStore
from .store_index import StoreIndex

logger = logging.getLogger(__name__)

JOURNAL_LENGTH = 4096
"""How many changes the codebook remembers (``changes_since``); a cache further behind rebuilds."""


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


@dataclass(frozen=True)
class Change:
    """One change of the codebook, as its journal records it (``Codebook.changes_since``)."""

    version: int
    """The codebook version the change produced."""
    edit_id: str
    removed: bool
    """False: ``add_edit``; True: ``remove_edit``."""
    entry_ids: tuple[int, ...]
    """The entries it added, changed or deleted."""


class Entry:
    """A key with its values (a read-only view built on access; ``key`` and ``radius`` follow from
    ``contributions``, see ``_fold``)."""

    __slots__ = ("id", "radius", "_parts", "_book", "_key")

    def __init__(self, entry_id: int, radius: float, parts: Sequence[Part], book: "Codebook"):
        self.id, self.radius, self._parts, self._book, self._key = entry_id, radius, parts, book, None

    @property
    def key(self) -> torch.Tensor:
        """float32 [D] (the stored key, at key precision)."""
        if self._key is None:
            self._key = self._book.keys([self.id])[0]
        return self._key

    @property
    def contributions(self) -> list[Contribution]:
        return [Contribution(p.edit_id, p.kind, p.value,
                             self.key.clone() if p.key is None else torch.from_numpy(p.key.astype(np.float32)),
                             p.radius, p.created, dict(p.meta)) for p in self._parts]

    @property
    def values(self) -> list[str]:
        return list(dict.fromkeys(p.value for p in self._parts))

    @property
    def edit_ids(self) -> list[str]:
        return list(dict.fromkeys(p.edit_id for p in self._parts))

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(p.kind for p in self._parts))

    def __repr__(self) -> str:
        return f"Entry(id={self.id}, radius={self.radius:.4g}, values={self.values!r}, edits={self.edit_ids!r})"


class EntryView(Mapping[int, Entry]):
    """``codebook.entries``: entry id -> :class:`Entry`, in insertion order; read-only (change the codebook
    through ``add_edit`` / ``remove_edit``)."""

    def __init__(self, book: "Codebook"):
        self._book = book

    def __getitem__(self, entry_id: int) -> Entry:
        return self._book._entry(entry_id)

    def __iter__(self) -> Iterator[int]:
        return iter(self._book.entry_ids())

    def __len__(self) -> int:
        return len(self._book)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._book._table


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


def _fold_parts(key: np.ndarray, parts: Sequence[Part]) -> float:
    """The radius of an entry whose first contribution has ``key``: each later one grows it to
    max(r, d + r_new) (see ``_fold``)."""
    radius = parts[0].radius
    for p in parts[1:]:
        radius = max(radius, float(np.linalg.norm(p.key.astype(np.float64) - key)) + p.radius)
    return radius


class Codebook:
    """Entries, their keys (stored once, in the key store), the hubness graph and the gate sample."""

    def __init__(self, dim: int, config: CodebookConfig | None = None,
                 retrieval: RetrievalConfig | None = None):
        if dim < 1:
            raise ReasonEditError(f"codebook dim must be >= 1, got {dim}.")
        self.dim = dim
        self.config = config or CodebookConfig()
        self.retrieval = retrieval or RetrievalConfig()
        self._table = PartTable()
        """Entry id -> its contribution records; edit id -> its entries (``contributions.py``)."""
        self._next_id = 0
        self.version = 0
        """Bumped on every change; caches (the rejection gate) compare it."""
        self._journal: deque[Change] = deque(maxlen=JOURNAL_LENGTH)
        self._journal_from = 0
        """``changes_since(v)`` can answer for every v >= this."""
        self._store, self._graph = self._empty_store()
        self._gate: GateSample | None = None
        self._search: KeySearch = make_key_search(self.retrieval, dim)
        """Where queries run (``retrieval.backend``); told about every change of the entries."""

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._table)

    @property
    def entries(self) -> EntryView:
        """Entry id -> :class:`Entry` (read-only view, built on access)."""
        return EntryView(self)

    @property
    def index(self) -> "StoreIndex":
        """The keys as a read-only :class:`~.index.VectorIndex` (exact L2 search through the backend)."""
        return StoreIndex(self._store, lambda q, k: self._query(q, k, scaled=False))

    @property
    def search_backend(self) -> KeySearch:
        """Where this codebook's queries run (``retrieval.backend``)."""
        return self._search

    @property
    def store(self) -> KeyStore:
        return self._store

    @property
    def num_edits(self) -> int:
        return self._table.num_edits()

    def edit_ids(self) -> list[str]:
        """Distinct edit ids, in order of first appearance."""
        return self._table.edit_ids()

    def edit_ids_of(self, entry_id: int) -> list[str]:
        """The edits an entry came from, in order."""
        return list(dict.fromkeys(p.edit_id for p in self._parts_of(entry_id)))

    def has_edit(self, edit_id: str) -> bool:
        return self._table.has_edit(edit_id)

    def entries_of(self, edit_id: str) -> list[int]:
        """Ids of the entries an edit contributed to."""
        return self._edit_entries(edit_id)

    def _edit_entries(self, edit_id: str) -> list[int]:
        return self._table.edit_entries(edit_id)

    def entry_ids(self) -> list[int]:
        """Entry ids, ascending (the order they were added)."""
        return self._table.ids()

    def edit_parts(self, edit_id: str) -> list[tuple[int, Part]]:
        """(entry id, contribution record) of every contribution of an edit, by entry id. The records are
        read only (a single-contribution entry's is built on access); a record's ``key`` None means the
        entry's key (:meth:`stored_key`)."""
        return [(eid, p) for eid in sorted(self._edit_entries(edit_id)) for p in self._parts_of(eid)
                if p.edit_id == edit_id]

    def entry_parts(self, entry_id: int) -> list[Part]:
        """The contribution records of one entry (read only; no key copies, unlike
        ``entries[i].contributions``); a record's ``key`` None means the entry's key (:meth:`stored_key`)."""
        return self._parts_of(entry_id)

    def stored_key(self, entry_id: int, part: Part | None = None) -> np.ndarray:
        """The key of an entry (or of one of its contribution records) at key precision, in the key dtype."""
        if part is not None and part.key is not None:
            return part.key
        return self._store.matrix[self._store.row(entry_id)].copy()

    def keys(self, ids: Sequence[int] | None = None) -> torch.Tensor:
        """float32 [len(ids), D] keys (all entries, in entry order, by default)."""
        ids = self.entry_ids() if ids is None else ids
        if len(ids) == 0:
            return torch.zeros(0, self.dim)
        return self._graph.keys(ids)

    def sigma_table(self) -> dict[int, float]:
        """Hubness sigma of every entry: the median distance to its min(k, N-1) nearest other keys
        (1.0 for a lone key)."""
        return self._graph.sigma_table()

    def sigma(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(self._graph.sigma(ids).astype(np.float64))

    def scaled_topk(self, query: torch.Tensor, k: int, eps: float = EPS,
                    exact_scan: bool = False) -> list[tuple[float, float, int]]:
        """Exact k best entries by hubness-scaled distance d / (sigma + eps): (score, distance, id), ties by
        id. Runs on ``retrieval.backend`` (the same answer on each); ``exact_scan`` scores every key
        in-process (the reference)."""
        if exact_scan:
            return self._graph.scaled_topk(_as_numpy(query), k, eps, exact_scan=True)
        self._graph.set_eps(eps)
        hits = self._query(_as_numpy(query), k, scaled=True)
        return list(zip(hits.scores.tolist(), hits.distances.astype(np.float64).tolist(), hits.ids.tolist()))

    def nearest(self, query: torch.Tensor, k: int) -> list[tuple[float, int]]:
        """Exact k nearest entries by plain L2: (distance, id), ties by id."""
        hits = self._query(_as_numpy(query), k, scaled=False)
        return list(zip(hits.distances.astype(np.float64).tolist(), hits.ids.tolist()))

    def _query(self, query: np.ndarray, k: int, scaled: bool) -> Hits:
        return self._search.search(self, self._store.round(query), k, scaled)

    def gate_threshold(self, percentile: float, sample: int, seed: int = 0) -> float | None:
        """tau: the ``percentile`` of d_ij / (sigma_j + eps) over pairs i < j (by entry id) of up to
        ``sample`` entries — all of them when there are that few, else a seeded uniform sample that is
        maintained under edits (an edit changes it by at most one entry). None below two entries."""
        if len(self) < 2:
            return None
        if self._gate is None or (self._gate.size, self._gate.seed) != (sample, seed):
            self._gate = GateSample(self._store, self._graph, sample, seed)
        return self._gate.threshold(percentile)

    def changes_since(self, version: int) -> list[Change] | None:
        """The changes after ``version``, oldest first, so that a cache built at ``version`` can update only
        what they touched; None when the journal does not reach back that far (or the codebook was rebuilt
        or reloaded since): the cache then rebuilds."""
        if version == self.version:
            return []
        if not self._journal_from <= version < self.version:
            return None
        out = []
        for change in reversed(self._journal):
            if change.version <= version:
                break
            out.append(change)
        return out[::-1]

    def _record(self, edit_id: str, removed: bool, entry_ids: Sequence[int]) -> None:
        self.version += 1
        if len(self._journal) == self._journal.maxlen:
            self._journal_from = self._journal[0].version
        self._journal.append(Change(self.version, edit_id, removed, tuple(entry_ids)))

    def _reset_journal(self) -> None:
        """After a change the journal does not describe (a bulk build, a reload, a rebuild)."""
        self._journal.clear()
        self._journal_from = self.version

    # ------------------------------------------------------------------ usage and eviction
    def note_retrieved(self, entry_ids: Sequence[int]) -> None:
        """Count that these entries were retrieved (an accepted query); eviction spares them."""
        ids = [i for i in entry_ids if i in self._store]
        if ids:
            np.add.at(self._store.column("hits"), self._store.rows(ids), 1)

    def hits(self, entry_ids: Sequence[int]) -> np.ndarray:
        return self._store.column("hits")[self._store.rows(entry_ids)].copy()

    def unretrieved_edits(self, older_than: float, now: float | None = None) -> list[str]:
        """Edits none of whose entries was ever retrieved and all of whose contributions are older than
        ``older_than`` seconds (what the optional eviction policy removes)."""
        now = time.time() if now is None else now
        hits = self._store.column("hits")
        out = []
        for edit_id in self._table.edit_ids():
            entry_ids = self._edit_entries(edit_id)
            rows = self._store.rows(entry_ids)
            if hits[rows].any():
                continue
            parts = [p for e in entry_ids for p in self._parts_of(e) if p.edit_id == edit_id]
            if all(now - p.created >= older_than for p in parts):
                out.append(edit_id)
        return out

    # ------------------------------------------------------------------ entries
    def _entry(self, entry_id: int) -> Entry:
        return Entry(entry_id, self._table.radius(entry_id), tuple(self._table.parts(entry_id)), self)

    def _parts_of(self, entry_id: int) -> list[Part]:
        return self._table.parts(entry_id)

    # ------------------------------------------------------------------ changes
    def add_edit(self, edit_id: str, pending: Sequence[PendingEntry],
                 meta: dict[str, Any] | None = None) -> list[tuple[int, bool]]:
        """Add an edit's entries (merging where the rule says so). All-or-nothing: every entry is checked
        before anything changes. Returns (entry id, merged?) per pending entry."""
        if self._table.has_edit(edit_id):
            raise ReasonEditError(f"edit {edit_id!r} is already in the codebook; remove it first or use "
                                  "another id.")
        keys = [self._check_pending(p) for p in pending]
        self._search.prepare(self)
        now = time.time()
        shared_meta = dict(meta) if meta else NO_META
        result = []
        for p, key in zip(pending, keys):
            result.append(self._insert(Part(edit_id, p.kind, p.value, float(p.radius), now, shared_meta, None),
                                       key))
        touched = list(dict.fromkeys(eid for eid, _ in result))
        self._record(edit_id, False, touched)
        self._search.changed(self, touched)
        return result

    def remove_edit(self, edit_id: str) -> list[int]:
        """Remove an edit: its own entries go; merged entries are recomputed from what remains.
        Returns the ids of the entries that were deleted or changed."""
        touched = self._edit_entries(edit_id)
        if not touched:
            known = self.edit_ids()
            raise ReasonEditError(f"no edit {edit_id!r} in the codebook; known edits: "
                                  f"{known[:20]}{' ...' if len(known) > 20 else ''}")
        self._search.prepare(self)
        for eid in touched:
            parts = self._parts_of(eid)
            rest = [p for p in parts if p.edit_id != edit_id]
            if not rest:
                self._delete_key(eid)
                self._table.delete(eid)
                continue
            if rest[0] is parts[0]:  # the entry keeps its key: only its contributions and radius change
                key = self._store.vectors(np.array([self._store.row(eid)]))[0]
            else:  # its first contribution goes: the next one's key becomes the entry's key
                key = rest[0].key.astype(np.float32)
                rest[0].key = None
                self._delete_key(eid)
                self._add_key(eid, key)
            self._set_parts(eid, rest, key)
        self._table.drop_edit(edit_id)
        self._record(edit_id, True, touched)
        self._search.changed(self, touched)
        return list(touched)

    def _check_pending(self, p: PendingEntry) -> np.ndarray:
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
        return self._store.round(_as_numpy(p.key))

    def _insert(self, part: Part, key: np.ndarray) -> tuple[int, bool]:
        if self.config.merge and len(self._table):
            hits = self._store.search(key, min(8, len(self)), scaled=False)
            for d, eid in zip(hits.distances.astype(np.float64).tolist(), hits.ids.tolist()):
                old = self._entry(eid)
                if should_merge(d, part.radius, old.radius, self.config):
                    part.key = key.astype(self._store.dtype)
                    self._table.add(eid, self._parts_of(eid) + [part], max(old.radius, d + part.radius))
                    logger.debug("merged a %s entry of edit %s into entry %d (d=%.4f)", part.kind,
                                 part.edit_id, eid, d)
                    return eid, True
        eid = self._next_id
        self._next_id += 1
        self._table.add(eid, [part], part.radius)
        self._add_key(eid, key)
        return eid, False

    def _set_parts(self, entry_id: int, parts: list[Part], key: np.ndarray) -> None:
        self._table.set(entry_id, parts, parts[0].radius if len(parts) == 1 else _fold_parts(key, parts))

    # ------------------------------------------------------------------ key store + hubness bookkeeping
    def _add_key(self, entry_id: int, key: np.ndarray) -> None:
        self._graph.add(entry_id, key)
        if self._gate is not None:
            self._gate.added(entry_id)

    def _empty_store(self) -> tuple[KeyStore, HubnessGraph]:
        """An empty key store (with the retrieval counts column) and its hubness graph."""
        store = KeyStore(self.dim, self.config.key_dtype, self.config.exact_search_below, self.config.ivf_lists,
                         self.config.seed)
        graph = HubnessGraph(store, self.retrieval.hubness_k, EPS, self.config.graph_probe)
        store.add_column("hits", (), np.int32, 0)
        return store, graph

    def _delete_key(self, entry_id: int) -> None:
        if self._gate is not None:
            self._gate.removed(entry_id)
        self._graph.remove(entry_id)

    def rebuild(self) -> None:
        """Recompute the key partition and every neighbour list from the keys (a check, or after the
        hubness k changed): one bulk build, O(N) exact K-NN searches."""
        ids = np.array(self.entry_ids(), np.int64)
        keys = self._store.vectors(self._store.rows(ids)) if len(ids) else np.zeros((0, self.dim), np.float32)
        hits = self.hits(ids.tolist())
        self._store, self._graph = self._empty_store()
        self._graph.build(ids, keys)
        self._store.column("hits")[:] = hits
        self._gate = None
        self.version += 1
        self._reset_journal()
        self._search.attach(self)

    @classmethod
    def bulk(cls, keys: Any, values: Sequence[str], edit_ids: Sequence[str], radius: float | Sequence[float],
             kind: str = "reasoning", config: CodebookConfig | None = None,
             retrieval: RetrievalConfig | None = None, progress: Any = None,
             graph_lists: int | None = None) -> "Codebook":
        """A codebook of one entry per key, built at once (a bulk import; nothing is merged): the neighbour
        lists come from one block-wise exact K-NN pass instead of N incremental adds. ``graph_lists``
        caps the IVF lists each block compares with: an approximate graph (sigma from near-nearest
        neighbours) for imports whose exact graph would cost O(N^2) (say, a million high-dimensional keys);
        searches stay exact for the sigma stored, and later edits keep the lists up to date."""
        keys = _as_numpy_matrix(keys)
        n = len(keys)
        radii = np.broadcast_to(np.asarray(radius, np.float64), (n,))
        if len(values) != n or len(edit_ids) != n:
            raise ReasonEditError(f"bulk: {n} keys but {len(values)} values and {len(edit_ids)} edit ids.")
        if kind not in ENTRY_KINDS:
            raise ReasonEditError(f"entry kind {kind!r} is not one of {list(ENTRY_KINDS)}.")
        if not np.isfinite(keys).all() or not np.isfinite(radii).all() or (radii < 0).any():
            raise ReasonEditError("bulk: keys and radii must be finite (radii >= 0); nothing was built.")
        book = cls(keys.shape[1], config, retrieval)
        edit_code: dict[str, int] = {}
        value_code: dict[str, int] = {}
        codes = np.fromiter((edit_code.setdefault(e, len(edit_code)) for e in edit_ids), np.int64, n)
        vcodes = np.fromiter((value_code.setdefault(v, len(value_code)) for v in values), np.int64, n)
        book._table.fill_rows(np.arange(n), list(edit_code), codes, np.full(n, ENTRY_KINDS.index(kind)),
                              list(value_code), vcodes, radii, np.full(n, time.time()))
        book._next_id = n
        book._graph.build(np.arange(n, dtype=np.int64), keys, progress, graph_lists)
        book.version = 1
        book._reset_journal()
        book._search.attach(book)
        return book

def _as_numpy_matrix(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().reshape(-1).numpy()
    return np.asarray(x, np.float32).reshape(-1)
