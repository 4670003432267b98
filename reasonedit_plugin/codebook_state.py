"""A codebook's state as arrays and a JSON table, and back (what ``storage.py`` writes and reads).

The keys (at key precision), the hubness graph (neighbour lists, sigma, reach) and the IVF partition are
saved as arrays, rows in entry order, so that a load is O(N) reading; the contributions are columns
(numbers in arrays, each distinct string once in the table), so that a load builds the final records
directly. This module is the codebook's persistence half: it reads and fills the codebook's own tables.
"""

from __future__ import annotations

import json
import logging
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .codebook import ENTRY_KINDS, NO_META, Codebook, Part
from .config import CodebookConfig, RetrievalConfig
from .errors import ReasonEditError

logger = logging.getLogger(__name__)


def export_state(book: Codebook) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A codebook as arrays (keys at key precision, graph, partition; rows in entry order) and the entry
    table (JSON), what ``storage.py`` writes."""
    ids = np.array(book.entry_ids(), np.int64)
    s = book._store
    rows = s.rows(ids)
    arrays: dict[str, np.ndarray] = {
        "entry_ids": ids,
        "entry_keys": s.matrix[rows] if len(rows) else np.zeros((0, book.dim), s.dtype),
        "nbr": s.column("nbr")[rows], "nlen": s.column("nlen")[rows].astype(np.int16),
        "sigma": s.column("sigma")[rows], "reach": s.column("reach")[rows],
        "hits": s.column("hits")[rows],
    }
    part = s.partition_state()
    if part:
        arrays.update(centroids=part["centroids"], assign=part["assign"][rows], rad=part["rad"][rows])
    # contributions as columns (numbers here, strings once each in the JSON table): a load builds the
    # final objects directly instead of a million transient dicts
    edits = book.edit_ids()
    edit_index = {e: i for i, e in enumerate(edits)}
    values: dict[str, int] = {}
    metas: dict[int, int] = {}
    meta_list: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("c_entry", "c_edit", "c_value", "c_kind", "c_radius",
                                                  "c_created", "c_meta", "c_key_row")}
    extra_keys: list[np.ndarray] = []
    e_radius = np.empty(len(ids), np.float64)
    for n, eid in enumerate(ids.tolist()):
        parts = book._parts_of(eid)
        e_radius[n] = book._radius.get(eid, parts[0].radius)
        for p in parts:
            cols["c_entry"].append(eid)
            cols["c_edit"].append(edit_index[p.edit_id])
            cols["c_value"].append(values.setdefault(p.value, len(values)))
            cols["c_kind"].append(ENTRY_KINDS.index(p.kind))
            cols["c_radius"].append(p.radius)
            cols["c_created"].append(p.created)
            if p.meta:
                if id(p.meta) not in metas:
                    metas[id(p.meta)] = len(meta_list)
                    meta_list.append(dict(p.meta))
                cols["c_meta"].append(metas[id(p.meta)])
            else:
                cols["c_meta"].append(-1)
            if p.key is not None:
                cols["c_key_row"].append(len(extra_keys))
                extra_keys.append(p.key)
            else:
                cols["c_key_row"].append(-1)
    dtypes = {"c_entry": np.int64, "c_edit": np.int32, "c_value": np.int32, "c_kind": np.int8,
              "c_radius": np.float64, "c_created": np.float64, "c_meta": np.int32, "c_key_row": np.int32}
    arrays.update({k: np.asarray(v, dtypes[k]) for k, v in cols.items()})
    arrays["e_radius"] = e_radius
    arrays["contribution_keys"] = (np.stack(extra_keys).astype(s.dtype) if extra_keys
                                   else np.zeros((0, book.dim), s.dtype))
    table = {"dim": book.dim, "next_id": book._next_id, "version": book.version,
             "hubness_k": book._graph.k, "key_dtype": str(s.dtype), "layout": "columns",
             "edit_order": edits, "values": list(values), "metas": meta_list, "kinds": list(ENTRY_KINDS)}
    return arrays, table


def from_state(arrays: Mapping[str, np.ndarray], table: Mapping[str, Any],
               config: CodebookConfig | None = None, retrieval: RetrievalConfig | None = None) -> Codebook:
    """The inverse of :func:`export_state`: O(N) reading; the graph is rebuilt only if the saved one
    does not fit (another hubness k or key dtype)."""
    book = Codebook(int(table["dim"]), config, retrieval)
    ids = np.asarray(arrays["entry_ids"], np.int64)
    extra = arrays["contribution_keys"]
    if table.get("layout") == "columns":
        _parts_from_columns(book, arrays, table, ids)
    else:
        _parts_from_rows(book, table, extra)
        for edit_id in table.get("edit_order", []):
            book._edits[edit_id] = None
        for eid in ids.tolist():
            for p in book._parts_of(eid):
                book._note_edit(p.edit_id, eid)
    book._next_id = max(int(table["next_id"]), int(ids.max()) + 1 if len(ids) else 0)
    keys = np.asarray(arrays["entry_keys"])
    fits = (int(table.get("hubness_k", -1)) == book._graph.k and "nbr" in arrays
            and str(table.get("key_dtype")) == str(book._store.dtype))
    if fits:
        partition = ({"centroids": arrays["centroids"], "assign": arrays["assign"], "rad": arrays["rad"]}
                     if "centroids" in arrays else None)
        book._graph.restore(ids, keys, arrays["nbr"], arrays["nlen"], arrays["sigma"], arrays["reach"],
                            partition)
    else:
        logger.warning("codebook: neighbour lists saved for hubness k=%s / %s keys do not fit k=%d / %s; "
                       "rebuilding them (%d keys)", table.get("hubness_k"), table.get("key_dtype"),
                       book._graph.k, book._store.dtype, len(ids))
        book._graph.build(ids, keys)
    if "hits" in arrays and len(ids):
        book._store.column("hits")[book._store.rows(ids)] = arrays["hits"]
    book.version = int(table.get("version", 0))
    book._reset_journal()
    book._search.attach(book)
    return book


def _parts_from_rows(book: Codebook, table: Mapping[str, Any], extra: np.ndarray) -> None:
    """The row layout (one dict per entry, as a format-1 migration produces)."""
    meta_cache: dict[str, Mapping[str, Any]] = {}
    values: dict[str, str] = {}
    for e in table["entries"]:
        parts = []
        for c in e["c"]:
            meta = c.get("meta")
            if meta:
                meta = meta_cache.setdefault(json.dumps(meta, sort_keys=True), meta)
            key = extra[c["key_row"]].astype(book._store.dtype) if "key_row" in c else None
            value = values.setdefault(c["value"], c["value"])
            parts.append(Part(c["edit_id"], c["kind"], value, float(c["radius"]), float(c["created"]),
                              meta or NO_META, key))
        if not parts:
            raise ReasonEditError(f"entry {e['id']} has no contributions.")
        eid = int(e["id"])
        book._parts[eid] = parts[0] if len(parts) == 1 else parts
        if len(parts) > 1:
            book._radius[eid] = float(e["radius"])


def _parts_from_columns(book: Codebook, arrays: Mapping[str, np.ndarray], table: Mapping[str, Any],
                        ids: np.ndarray) -> None:
    """Build the slotted contribution records from the column layout, a chunk at a time (so the
    temporary Python numbers of one chunk are reused by the next instead of piling up)."""
    edits = list(table["edit_order"])
    values = list(table["values"])
    metas = [MappingProxyType(dict(m)) for m in table["metas"]]
    kinds = list(table["kinds"])
    extra = arrays["contribution_keys"]
    dtype = book._store.dtype
    interned: dict[float, float] = {}  # creation times and radii repeat: one float object each
    c_entry = np.asarray(arrays["c_entry"], np.int64)
    uniq, counts = np.unique(c_entry, return_counts=True)
    merged = set(uniq[counts > 1].tolist())
    merged_radius: dict[int, float] = {}
    if merged:
        where = {int(e): i for i, e in enumerate(ids.tolist()) if int(e) in merged}
        merged_radius = {e: float(arrays["e_radius"][where[e]]) for e in merged}
    parts_of: dict[int, Any] = book._parts
    book._edits = dict.fromkeys(edits)
    note = book._note_edit
    for start in range(0, len(c_entry), 65536):
        sl = slice(start, start + 65536)
        ent = c_entry[sl].tolist()
        edit, value, kind = arrays["c_edit"][sl].tolist(), arrays["c_value"][sl].tolist(), arrays["c_kind"][sl].tolist()
        radius, made = arrays["c_radius"][sl].tolist(), arrays["c_created"][sl].tolist()
        meta, key_row = arrays["c_meta"][sl].tolist(), arrays["c_key_row"][sl].tolist()
        for i, eid in enumerate(ent):
            part = Part(edits[edit[i]], kinds[kind[i]], values[value[i]],
                         interned.setdefault(radius[i], radius[i]), interned.setdefault(made[i], made[i]),
                         metas[meta[i]] if meta[i] >= 0 else NO_META,
                         extra[key_row[i]].astype(dtype) if key_row[i] >= 0 else None)
            have = parts_of.get(eid)
            if have is None:
                parts_of[eid] = part
            elif isinstance(have, Part):
                parts_of[eid] = [have, part]
                book._radius[eid] = merged_radius[eid]
            else:
                have.append(part)
            note(part.edit_id, eid)
    if len(parts_of) != len(ids):
        raise ReasonEditError(f"{len(ids)} entry keys but contributions for {len(parts_of)} entries.")
