"""Who contributed what to each codebook entry: the contribution records, held in columns.

Nearly every entry has one contribution (one edit's key, kind, value and radius). Holding each as a Python
object cost ~160 bytes an entry at a million entries (the record, its dict slot and its id), more than the
neighbour lists. :class:`PartTable` keeps a single-contribution entry as a row of numpy columns indexed by
entry id (edit code, kind, radius, creation time, value code: 25 bytes), each distinct value string and each
edit id once, and an edit's entries as its first entry id in a column (more in a dict, for edits with
several). An entry merged from several contributions, or whose record cannot be a row (its own key copy,
provenance other than its edit's), keeps a list of :class:`Part` records. Reading an entry builds its
records on access.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

ENTRY_KINDS = ("answer", "reasoning", "patch")

NO_META: Mapping[str, Any] = MappingProxyType({})

_NONE, _ROW, _RECORDS = 0, 1, 2
"""Entry states: absent, a row of the columns, a list of records."""


class Part:
    """A contribution as the codebook holds it: its key is the entry's row in the key store (``key`` None,
    the first contribution) or its own copy at key precision (later, merged contributions)."""

    __slots__ = ("edit_id", "kind", "value", "radius", "created", "meta", "key")

    def __init__(self, edit_id: str, kind: str, value: str, radius: float, created: float,
                 meta: Mapping[str, Any], key: np.ndarray | None):
        self.edit_id, self.kind, self.value, self.radius = edit_id, kind, value, radius
        self.created, self.meta, self.key = created, meta, key


def _grown(a: np.ndarray, size: int, fill: Any = 0) -> np.ndarray:
    """``a`` with room for ``size`` rows (a quarter more), new rows set to ``fill``. Zero-filled room comes
    from calloc and costs no memory until written."""
    if size <= len(a):
        return a
    new = max(size + size // 4, 2 * len(a), 64)
    out = np.zeros(new, a.dtype) if fill == 0 else np.full(new, fill, a.dtype)
    out[: len(a)] = a
    return out


class PartTable:
    """Entry id -> its contribution records; edit id -> its entry ids (in the order they were noted)."""

    def __init__(self) -> None:
        self._state = np.zeros(0, np.int8)
        self._edit = np.zeros(0, np.int32)
        self._kind = np.zeros(0, np.int8)
        self._value = np.zeros(0, np.int32)
        self._radius = np.zeros(0, np.float64)
        self._created = np.zeros(0, np.float64)
        self._records: dict[int, tuple[list[Part], float]] = {}
        """Entries held as records: entry id -> (records, entry radius)."""
        self._n = 0
        self._values: list[str | None] = []
        self._value_code: dict[str, int] = {}
        self._value_refs = np.zeros(0, np.int64)
        self._free_values: list[int] = []
        self._code: dict[str, int] = {}
        """Edit id -> code, in order of first appearance."""
        self._names: list[str | None] = []
        self._meta: dict[int, Mapping[str, Any]] = {}
        self._first = np.zeros(0, np.int32)
        """Edit code -> its first entry id + 1 (0: none yet; zeros cost nothing until written)."""
        self._more: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ entries
    def __len__(self) -> int:
        return self._n

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, (int, np.integer)) and 0 <= entry_id < len(self._state) \
            and self._state[entry_id] != _NONE

    def ids(self) -> list[int]:
        """Entry ids, ascending (the order they were added: ids only grow)."""
        return np.flatnonzero(self._state).tolist()

    def parts(self, entry_id: int) -> list[Part]:
        """The entry's contribution records (built on access for a row; the table's own for a list)."""
        state = self._state[entry_id] if 0 <= entry_id < len(self._state) else _NONE
        if state == _RECORDS:
            return self._records[entry_id][0]
        if state == _NONE:
            raise KeyError(entry_id)
        code = int(self._edit[entry_id])
        return [Part(self._names[code], ENTRY_KINDS[self._kind[entry_id]],  # type: ignore[arg-type]
                     self._values[self._value[entry_id]], float(self._radius[entry_id]),  # type: ignore[arg-type]
                     float(self._created[entry_id]), self._meta.get(code, NO_META), None)]

    def radius(self, entry_id: int) -> float:
        if self._state[entry_id] == _RECORDS:
            return self._records[entry_id][1]
        return float(self._radius[entry_id])

    def set(self, entry_id: int, parts: Sequence[Part], radius: float) -> None:
        """Store (or replace) an entry's records; ``radius`` is the entry's (a single record's own)."""
        self.delete(entry_id, missing_ok=True)
        self._reserve(entry_id + 1)
        self._n += 1
        if len(parts) == 1 and parts[0].key is None and self._meta_fits(parts[0]):
            p = parts[0]
            code = self._edit_code(p.edit_id)
            self._state[entry_id] = _ROW
            self._edit[entry_id] = code
            self._kind[entry_id] = ENTRY_KINDS.index(p.kind)
            self._value[entry_id] = self._value_ref(p.value)
            self._radius[entry_id] = p.radius
            self._created[entry_id] = p.created
            if p.meta:
                self._meta.setdefault(code, p.meta)
        else:
            self._state[entry_id] = _RECORDS
            self._records[entry_id] = (list(parts), float(radius))
            for p in parts:
                self._edit_code(p.edit_id)

    def add(self, entry_id: int, parts: Sequence[Part], radius: float) -> None:
        """:meth:`set`, and note that each record's edit contributed to the entry."""
        self.set(entry_id, parts, radius)
        for p in parts:
            self.note_edit(p.edit_id, entry_id)

    def delete(self, entry_id: int, missing_ok: bool = False) -> None:
        state = self._state[entry_id] if 0 <= entry_id < len(self._state) else _NONE
        if state == _NONE:
            if missing_ok:
                return
            raise KeyError(entry_id)
        if state == _ROW:
            self._value_unref(int(self._value[entry_id]))
        else:
            del self._records[entry_id]
        self._state[entry_id] = _NONE
        self._n -= 1

    def _reserve(self, size: int) -> None:
        if size > len(self._state):
            # a row's columns are read only where its state says so: zeros (free until written) do
            self._state = _grown(self._state, size)
            self._edit = _grown(self._edit, size)
            self._kind = _grown(self._kind, size)
            self._value = _grown(self._value, size)
            self._radius = _grown(self._radius, size)
            self._created = _grown(self._created, size)

    def _meta_fits(self, part: Part) -> bool:
        """A row carries its edit's provenance (kept once per edit): the record's must be the edit's."""
        code = self._code.get(part.edit_id)
        have = self._meta.get(code) if code is not None else None
        if have is not None:
            return part.meta is have or dict(part.meta) == dict(have)
        # the edit has no provenance recorded, so neither have its rows, if any
        return not part.meta or code is None or self._first[code] == 0

    # ------------------------------------------------------------------ value strings
    def _value_ref(self, value: str) -> int:
        code = self._value_code.get(value)
        if code is None:
            if self._free_values:
                code = self._free_values.pop()
                self._values[code] = value
            else:
                code = len(self._values)
                self._values.append(value)
                self._value_refs = _grown(self._value_refs, code + 1)
            self._value_code[value] = code
        self._value_refs[code] += 1
        return code

    def _value_unref(self, code: int) -> None:
        self._value_refs[code] -= 1
        if self._value_refs[code] == 0:
            del self._value_code[self._values[code]]  # type: ignore[arg-type]
            self._values[code] = None
            self._free_values.append(code)

    # ------------------------------------------------------------------ edits
    def _edit_code(self, edit_id: str) -> int:
        code = self._code.get(edit_id)
        if code is None:
            code = len(self._names)
            self._code[edit_id] = code
            self._names.append(edit_id)
            self._first = _grown(self._first, code + 1)
        return code

    def note_order(self, edit_id: str) -> None:
        """Register an edit id before its entries (a load keeps the saved order of edits)."""
        self._edit_code(edit_id)

    def edit_ids(self) -> list[str]:
        """Edit ids in order of first appearance."""
        return list(self._code)

    def num_edits(self) -> int:
        return len(self._code)

    def has_edit(self, edit_id: str) -> bool:
        return edit_id in self._code

    def note_edit(self, edit_id: str, entry_id: int) -> None:
        """Record that ``edit_id`` contributed to ``entry_id`` (once)."""
        code = self._edit_code(edit_id)
        first = int(self._first[code]) - 1
        if first < 0:
            self._first[code] = entry_id + 1
        elif first != entry_id:
            more = self._more.setdefault(code, [])
            if entry_id not in more:
                more.append(entry_id)

    def edit_entries(self, edit_id: str) -> list[int]:
        code = self._code.get(edit_id)
        if code is None or self._first[code] == 0:
            return []
        return [int(self._first[code]) - 1] + self._more.get(code, [])

    def drop_edit(self, edit_id: str) -> None:
        """Forget an edit (its entries were deleted or changed first)."""
        code = self._code.pop(edit_id)
        self._names[code] = None
        self._first[code] = 0
        self._more.pop(code, None)
        self._meta.pop(code, None)

    # ------------------------------------------------------------------ bulk fills
    def fill_rows(self, entry_ids: np.ndarray, edit_ids: Sequence[str], edit_codes: np.ndarray,
                  kinds: np.ndarray, values: Sequence[str], value_codes: np.ndarray, radius: np.ndarray,
                  created: np.ndarray, metas: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Fill an empty table with single-contribution entries at once (a bulk build, a load): entry
        ``entry_ids[i]`` is edit ``edit_ids[edit_codes[i]]``'s ``values[value_codes[i]]``; every edit id is
        registered in order (``metas``: edit code -> its provenance)."""
        if self._n or self._code:
            raise ValueError("fill_rows fills an empty table")
        self._code = {edit_id: code for code, edit_id in enumerate(edit_ids)}
        if len(self._code) != len(edit_ids):
            raise ValueError("fill_rows: edit ids repeat")
        self._names = list(edit_ids)
        self._first = _grown(self._first, len(self._names))
        self._meta.update({int(c): m for c, m in (metas or {}).items() if m})
        self._values = list(values)
        self._value_code = {v: i for i, v in enumerate(self._values)}
        self._value_refs = np.bincount(np.asarray(value_codes, np.int64), minlength=len(self._values))
        unused = np.flatnonzero(self._value_refs == 0).tolist()
        for code in unused:
            del self._value_code[self._values[code]]  # type: ignore[arg-type]
            self._values[code] = None
        self._free_values = unused
        ids = np.asarray(entry_ids, np.int64)
        if not len(ids):
            return
        self._reserve(int(ids.max()) + 1)
        self._state[ids] = _ROW
        self._edit[ids] = edit_codes
        self._kind[ids] = kinds
        self._value[ids] = value_codes
        self._radius[ids] = radius
        self._created[ids] = created
        self._n = len(ids)
        self._note_many(np.asarray(edit_codes, np.int64), ids)

    def _note_many(self, codes: np.ndarray, entry_ids: np.ndarray) -> None:
        """:meth:`note_edit` for many distinct (edit code, entry id) pairs of edits with no entries yet
        (each edit's entries ascending)."""
        if not len(codes):
            return
        order = np.lexsort((entry_ids, codes))
        codes, ids = codes[order], entry_ids[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        self._first[codes[starts]] = ids[starts] + 1
        for s, e in zip(starts.tolist(), np.r_[starts[1:], len(codes)].tolist()):
            if e - s > 1:
                self._more[int(codes[s])] = ids[s + 1:e].tolist()

    def record_entries(self) -> Iterable[int]:
        """Entry ids held as lists of records (merged entries and the like)."""
        return self._records.keys()

    # ------------------------------------------------------------------ reading in bulk (a save)
    def row_columns(self) -> dict[str, np.ndarray]:
        """The single-contribution rows: entry ids (ascending) and their edit codes, kinds (index into
        :data:`ENTRY_KINDS`), value codes, radii and creation times."""
        ids = np.flatnonzero(self._state == _ROW)
        return {"entry": ids, "edit": self._edit[ids], "kind": self._kind[ids], "value": self._value[ids],
                "radius": self._radius[ids], "created": self._created[ids]}

    def radii(self, entry_ids: np.ndarray) -> np.ndarray:
        entry_ids = np.asarray(entry_ids, np.int64)
        out = self._radius[entry_ids].astype(np.float64)
        for i in np.flatnonzero(self._state[entry_ids] == _RECORDS).tolist():
            out[i] = self._records[int(entry_ids[i])][1]
        return out

    def edit_code(self, edit_id: str) -> int:
        return self._code[edit_id]

    def edit_metas(self) -> Mapping[int, Mapping[str, Any]]:
        """Edit code -> its provenance, for the edits that have any."""
        return MappingProxyType(self._meta)

    def value(self, code: int) -> str:
        return self._values[code]  # type: ignore[return-value]
