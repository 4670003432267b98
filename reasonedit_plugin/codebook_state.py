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

from .codebook import Codebook
from .contributions import ENTRY_KINDS, NO_META, Part
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
    # contributions as columns (numbers here, strings once each in the JSON table): the table's rows are
    # copied as arrays; only entries held as record lists (merged ones) are walked
    edits = book.edit_ids()
    t = book._table
    codes = np.array([t.edit_code(e) for e in edits], np.int64)
    edit_index = np.full(int(codes.max()) + 1 if len(codes) else 0, -1, np.int32)
    edit_index[codes] = np.arange(len(edits), dtype=np.int32)
    rows_ = t.row_columns()
    used = np.unique(rows_["value"])
    values: dict[str, int] = {t.value(int(c)): i for i, c in enumerate(used.tolist())}
    value_index = np.full(int(used.max()) + 1 if len(used) else 0, -1, np.int32)
    value_index[used] = np.arange(len(used), dtype=np.int32)
    metas: dict[int, int] = {}
    meta_list: list[dict[str, Any]] = []

    def meta_row(meta: Mapping[str, Any]) -> int:
        if not meta:
            return -1
        if id(meta) not in metas:
            metas[id(meta)] = len(meta_list)
            meta_list.append(dict(meta))
        return metas[id(meta)]

    row_codes = rows_["edit"]
    meta_of_code = np.full(len(edit_index), -1, np.int32)
    for code, meta in t.edit_metas().items():
        meta_of_code[code] = meta_row(meta)
    row_meta = meta_of_code[row_codes]
    cols: dict[str, list[Any]] = {k: [] for k in ("c_entry", "c_edit", "c_value", "c_kind", "c_radius",
                                                  "c_created", "c_meta", "c_key_row")}
    extra_keys: list[np.ndarray] = []
    for eid in sorted(t.record_entries()):
        for p in t.parts(eid):
            cols["c_entry"].append(eid)
            cols["c_edit"].append(edit_index[t.edit_code(p.edit_id)])
            cols["c_value"].append(values.setdefault(p.value, len(values)))
            cols["c_kind"].append(ENTRY_KINDS.index(p.kind))
            cols["c_radius"].append(p.radius)
            cols["c_created"].append(p.created)
            cols["c_meta"].append(meta_row(p.meta))
            if p.key is not None:
                cols["c_key_row"].append(len(extra_keys))
                extra_keys.append(p.key)
            else:
                cols["c_key_row"].append(-1)
    dtypes = {"c_entry": np.int64, "c_edit": np.int32, "c_value": np.int32, "c_kind": np.int8,
              "c_radius": np.float64, "c_created": np.float64, "c_meta": np.int32, "c_key_row": np.int32}
    from_rows = {"c_entry": rows_["entry"], "c_edit": edit_index[row_codes], "c_value": value_index[rows_["value"]],
                 "c_kind": rows_["kind"], "c_radius": rows_["radius"], "c_created": rows_["created"],
                 "c_meta": row_meta, "c_key_row": np.full(len(row_codes), -1)}
    merged = {k: np.concatenate([np.asarray(from_rows[k], dtypes[k]), np.asarray(v, dtypes[k])])
              for k, v in cols.items()}
    order = np.argsort(merged["c_entry"], kind="stable")  # entry order; an entry's records stay in order
    arrays.update({k: v[order] for k, v in merged.items()})
    arrays["e_radius"] = t.radii(ids)
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
    for edit_id in table.get("edit_order", []):
        book._table.note_order(edit_id)
    for e in table["entries"]:
        parts = []
        for c in e["c"]:
            meta = c.get("meta")
            if meta:
                meta = meta_cache.setdefault(json.dumps(meta, sort_keys=True), MappingProxyType(dict(meta)))
            key = extra[c["key_row"]].astype(book._store.dtype) if "key_row" in c else None
            value = values.setdefault(c["value"], c["value"])
            parts.append(Part(c["edit_id"], c["kind"], value, float(c["radius"]), float(c["created"]),
                              meta or NO_META, key))
        if not parts:
            raise ReasonEditError(f"entry {e['id']} has no contributions.")
        eid = int(e["id"])
        book._table.add(eid, parts, float(e["radius"]) if len(parts) > 1 else parts[0].radius)


def _parts_from_columns(book: Codebook, arrays: Mapping[str, np.ndarray], table: Mapping[str, Any],
                        ids: np.ndarray) -> None:
    """Fill the contribution table from the column layout: the single-contribution entries (nearly all)
    as arrays, in one step; only the others (merged entries, records with their own key copy or with
    provenance other than their edit's) as records."""
    edits = list(table["edit_order"])
    metas = [MappingProxyType(dict(m)) for m in table["metas"]]
    kinds = list(table["kinds"])
    extra = arrays["contribution_keys"]
    c = {k: np.asarray(arrays[k]) for k in ("c_entry", "c_edit", "c_value", "c_kind", "c_radius", "c_created",
                                            "c_meta", "c_key_row")}
    if kinds != list(ENTRY_KINDS):
        known = np.array([ENTRY_KINDS.index(k) for k in kinds], np.int8)
        c["c_kind"] = known[c["c_kind"]]
    uniq, counts = np.unique(c["c_entry"], return_counts=True)
    single = np.isin(c["c_entry"], uniq[counts == 1]) & (c["c_key_row"] < 0)
    # an edit's provenance is its first row's; a row with other provenance is kept as a record
    edit_meta = np.full(len(edits), -1, np.int64)
    codes_single = c["c_edit"][single]
    first_codes, first_at = np.unique(codes_single, return_index=True)
    edit_meta[first_codes] = c["c_meta"][single][first_at]
    row = single.copy()
    row[single] = c["c_meta"][single] == edit_meta[codes_single]
    book._table.fill_rows(c["c_entry"][row], edits, c["c_edit"][row].astype(np.int64), c["c_kind"][row],
                          list(table["values"]), c["c_value"][row].astype(np.int64), c["c_radius"][row],
                          c["c_created"][row],
                          {code: metas[m] for code, m in enumerate(edit_meta.tolist()) if m >= 0})
    rest = np.flatnonzero(~row)
    if len(rest):
        where = {int(e): i for i, e in enumerate(ids.tolist())}
        grouped: dict[int, list[Part]] = {}
        dtype = book._store.dtype
        for i in rest.tolist():
            k = int(c["c_key_row"][i])
            grouped.setdefault(int(c["c_entry"][i]), []).append(Part(
                edits[int(c["c_edit"][i])], ENTRY_KINDS[int(c["c_kind"][i])], table["values"][int(c["c_value"][i])],
                float(c["c_radius"][i]), float(c["c_created"][i]),
                metas[int(c["c_meta"][i])] if c["c_meta"][i] >= 0 else NO_META,
                extra[k].astype(dtype) if k >= 0 else None))
        for eid, parts in grouped.items():
            book._table.add(eid, parts, float(arrays["e_radius"][where[eid]]) if len(parts) > 1 else parts[0].radius)
    if len(book._table) != len(ids):
        raise ReasonEditError(f"{len(ids)} entry keys but contributions for {len(book._table)} entries.")
