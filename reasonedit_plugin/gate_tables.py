"""The null-set gate's tables (``gate.py``), kept up to date from the codebook's change journal.

* :class:`AnswerTable` — every answer contribution, by (entry id, edit id), with its own key (a merged entry
  keeps each edit's key) at key precision, its radius and its answer; per row, the nearest row of another edit
  that answers the same question (text cosine >= ``same_question_cos``) differently. An edit's conflict is the
  nearest of its rows' ones: (image distance, other edit), ties broken by the other edit's id, so the table
  does not depend on the order edits arrived in. Adding an edit compares its rows with every row (one
  vectorised pass, O(#answer rows)); removing one recomputes only the rows whose nearest conflict it was.
* :class:`NullSample` — the edits whose images make the null distribution (``null_percentile`` of the image
  distances between different edits' images, one image per edit: its first non-patch contribution's, in
  entry order). With ``null_sample`` edits or fewer these are all of them; above, the ``null_sample`` edits
  of lowest seeded priority (a hash of the edit id), a uniform sample that an edit changes by at most one
  member — maintained with their pairwise distances and a pool of the lowest ones, so the threshold after
  an edit costs O(sample), not a re-draw over every edit. (Before this, the sample above ``null_sample``
  edits was re-drawn per codebook version; at or below it the value is the same as before.)

Incremental state equals a from-scratch build after any sequence of adds, removals and re-edits (tested:
``tests/test_gate_tables.py``).
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Iterable

import numpy as np

from .gate_sample import LowPool, priority

_CHUNK = 8192
"""Rows upcast to float64 at a time when a new row is compared with the table."""


class AnswerTable:
    """Answer rows (slots reused after removals) and the conflicts between them."""

    def __init__(self, vision_dim: int, dim: int, dtype: np.dtype, same_question_cos: float):
        self.dv, self.dim, self.dtype, self.same_cos = vision_dim, dim, np.dtype(dtype), same_question_cos
        self.has_text = vision_dim < dim
        self.keys = np.zeros((0, dim), self.dtype)
        self.text_norm = np.zeros(0)
        self.radius = np.zeros(0)
        self.live = np.zeros(0, bool)
        self.entry = np.zeros(0, np.int64)
        self.edit: list[str | None] = []
        self.answer: list[str | None] = []
        self.codes = np.zeros((0, 2), np.int64)
        """Per row, a number for its edit and one for its answer (compared vectorised)."""
        self._code: dict[str, int] = {}
        self._next_code = 0
        self._answer_code: dict[str, int] = {}
        self.conf_d = np.zeros(0)
        self.conf_row = np.zeros(0, np.int64)
        """Per row, the nearest conflicting row (-1: none) and its image distance (inf: none)."""
        self.rows_of: dict[str, list[int]] = {}
        """edit id -> its rows, by entry id."""
        self.conflict: dict[str, tuple[float, str]] = {}
        """edit id -> (image distance to the nearest edit answering the same question differently, that edit)."""
        self._free: list[int] = []

    # ------------------------------------------------------------------ rows
    def _slot(self) -> int:
        if self._free:
            return self._free.pop()
        n = len(self.live)
        cap = max(16, 2 * n)
        self.keys = np.concatenate([self.keys, np.zeros((cap - n, self.dim), self.dtype)])
        self.text_norm = np.concatenate([self.text_norm, np.zeros(cap - n)])
        self.radius = np.concatenate([self.radius, np.zeros(cap - n)])
        self.live = np.concatenate([self.live, np.zeros(cap - n, bool)])
        self.entry = np.concatenate([self.entry, np.full(cap - n, -1, np.int64)])
        self.conf_d = np.concatenate([self.conf_d, np.full(cap - n, np.inf)])
        self.conf_row = np.concatenate([self.conf_row, np.full(cap - n, -1, np.int64)])
        self.codes = np.concatenate([self.codes, np.full((cap - n, 2), -1, np.int64)])
        self.edit += [None] * (cap - n)
        self.answer += [None] * (cap - n)
        self._free = list(range(cap - 1, n, -1))
        return n

    def first_row(self, edit_id: str) -> int | None:
        """The edit's first answer row (lowest entry id): the one its conflicts with a rival are judged by."""
        rows = self.rows_of.get(edit_id)
        return rows[0] if rows else None

    def cos(self, a: int, b: int) -> float:
        """Text cosine of two rows (float64, the same arithmetic as the table's comparisons)."""
        ta = self.keys[a, self.dv:].astype(np.float64)
        tb = self.keys[b, self.dv:].astype(np.float64)
        return float((ta * tb).sum() / max(self.text_norm[a] * self.text_norm[b], 1e-300))

    # ------------------------------------------------------------------ changes
    def add(self, edit_id: str, rows: Iterable[tuple[int, np.ndarray, str, float]]) -> None:
        """Add an edit's answer contributions: (entry id, key at key precision, answer, radius)."""
        new = []
        code = self._code[edit_id] = self._next_code
        self._next_code += 1
        for entry_id, key, answer, radius in sorted(rows, key=lambda r: r[0]):
            r = self._slot()
            self.keys[r], self.radius[r] = key, radius
            self.text_norm[r] = np.linalg.norm(self.keys[r, self.dv:].astype(np.float64))
            self.live[r], self.entry[r], self.edit[r], self.answer[r] = True, entry_id, edit_id, answer
            self.conf_d[r], self.conf_row[r] = np.inf, -1
            self.codes[r] = code, self._answer_code.setdefault(answer, len(self._answer_code))
            new.append(r)
        if not new:
            self._code.pop(edit_id, None)
            return
        self.rows_of[edit_id] = new
        if not self.has_text:
            return
        touched = {edit_id}
        for r in new:
            others, d = self._conflicting(r)
            if not len(others):
                continue
            self._take_nearest(r, others, d)
            # every other row: does the new row become its nearest conflict?
            better = (d < self.conf_d[others]) | ((d == self.conf_d[others]) & self._edit_before(r, others))
            for o, dist in zip(others[better].tolist(), d[better].tolist()):
                self.conf_d[o], self.conf_row[o] = dist, r
                touched.add(self.edit[o])
        for e in touched:
            self._edit_conflict(e)

    def remove(self, edit_id: str) -> None:
        rows = self.rows_of.pop(edit_id, None)
        if not rows:
            return
        gone = np.array(rows, np.int64)
        self.live[gone] = False
        for r in rows:
            self.edit[r] = self.answer[r] = None
            self.conf_d[r], self.conf_row[r] = np.inf, -1
        self.codes[gone] = -1
        self._free.extend(rows)
        self.conflict.pop(edit_id, None)
        self._code.pop(edit_id, None)
        if not self.has_text:
            return
        dependents = np.flatnonzero(self.live & np.isin(self.conf_row, gone))
        touched = set()
        for o in dependents.tolist():  # their nearest conflict left: recompute them against every row
            self.conf_d[o], self.conf_row[o] = np.inf, -1
            others, d = self._conflicting(o)
            if len(others):
                self._take_nearest(o, others, d)
            touched.add(self.edit[o])
        for e in touched:
            self._edit_conflict(e)

    # ------------------------------------------------------------------ comparisons
    def _conflicting(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Live rows of other edits answering row ``r``'s question differently, and their image distances."""
        dv = self.dv
        t = self.keys[r, dv:].astype(np.float64)
        v = self.keys[r, :dv].astype(np.float64)
        nr, (edit, answer) = self.text_norm[r], self.codes[r]
        found, dists = [], []
        n = len(self.live)
        for s in range(0, n, _CHUNK):
            live = np.flatnonzero(self.live[s:s + _CHUNK]) + s
            if not len(live):
                continue
            block = self.keys[live].astype(np.float64)
            cos = (block[:, dv:] * t).sum(1) / np.maximum(self.text_norm[live] * nr, 1e-300)
            hit = live[cos >= self.same_cos]
            hit = hit[(self.codes[hit, 0] != edit) & (self.codes[hit, 1] != answer)]
            if len(hit):
                found.append(hit)
                dists.append(np.sqrt(((self.keys[hit, :dv].astype(np.float64) - v) ** 2).sum(1)))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(found), np.concatenate(dists)

    def _edit_before(self, r: int, others: np.ndarray) -> np.ndarray:
        """Whether row ``r``'s edit id sorts before the edit of each row's current nearest conflict."""
        mine = self.edit[r]
        return np.array([self.conf_row[o] < 0 or mine < self.edit[self.conf_row[o]] for o in others.tolist()],
                        bool) if len(others) else np.zeros(0, bool)

    def _take_nearest(self, r: int, others: np.ndarray, d: np.ndarray) -> None:
        """Row ``r``'s nearest conflict among ``others``: smallest distance, then smallest edit id."""
        best = float(d.min())
        tied = others[d == best].tolist()
        o = min(tied, key=lambda x: self.edit[x]) if len(tied) > 1 else tied[0]
        if best < self.conf_d[r] or (best == self.conf_d[r] and
                                     (self.conf_row[r] < 0 or self.edit[o] < self.edit[self.conf_row[r]])):
            self.conf_d[r], self.conf_row[r] = best, o

    def _edit_conflict(self, edit_id: str | None) -> None:
        rows = self.rows_of.get(edit_id) if edit_id is not None else None
        if not rows:
            return
        best = min(((self.conf_d[r], self.edit[self.conf_row[r]]) for r in rows if self.conf_row[r] >= 0),
                   default=None)
        if best is None:
            self.conflict.pop(edit_id, None)
        else:
            self.conflict[edit_id] = (float(best[0]), best[1])


def edit_priority(edit_ids: list[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random priority in [0, 1) per edit id (CRC-32 of the id, then splitmix64)."""
    return priority(np.fromiter((zlib.crc32(e.encode("utf-8")) for e in edit_ids), np.int64, len(edit_ids)),
                    seed)


class NullSample:
    """Up to ``size`` edits of lowest priority with an image, their pairwise image distances and the pool of
    the lowest ones (see the module doc). ``image_of(edit)`` gives an edit's image (None: it has none);
    ``all_edits()`` the codebook's edits (read only when the kept set runs short)."""

    def __init__(self, size: int, seed: int, image_of: Callable[[str], np.ndarray | None],
                 all_edits: Callable[[], list[str]]):
        self.size, self.seed, self.image_of, self.all_edits = size, seed, image_of, all_edits
        self._kept: list[tuple[float, str]] = []
        """The lowest (priority, edit) of the edits with an image: the first ``size`` are the sample, the
        rest a reserve (up to ``size`` more) that replaces members that leave."""
        self._bound: tuple[float, str] | None = None
        """Every edit with an image that is not kept sorts after this (None: every such edit is kept)."""
        self._slot: dict[str, int] = {}
        self._stale: set[str] = set()
        self._images = np.zeros((0, 0))
        self._dist = np.zeros((0, 0))
        self._free: list[int] = []
        self.pairs = 0
        """How many member pairs have images more than 1e-9 apart (the null distances)."""
        self._pool = LowPool()
        self._rescan()

    @property
    def members(self) -> list[str]:
        return [e for _, e in self._kept[: self.size]]

    # ------------------------------------------------------------------ which edits
    def _rescan(self) -> None:
        """The kept set from every edit: walk the edits by priority until 2 x size with an image are found
        (and every edit of the same priority as the last one)."""
        edits = self.all_edits()
        prio = edit_priority(edits, self.seed)
        found: list[tuple[float, str]] = []
        self._bound = None
        for i in np.argsort(prio, kind="stable").tolist():
            p = float(prio[i])
            if len(found) >= 2 * self.size and p > found[-1][0]:
                self._bound = (p, "")  # every edit not walked has at least this priority
                break
            if self.image_of(edits[i]) is not None:
                found.append((p, edits[i]))
        found.sort()
        if len(found) > 2 * self.size:
            self._bound = found[2 * self.size]
            found = found[: 2 * self.size]
        self._kept = found
        self.sync()

    def offer(self, edit_id: str, sync: bool = True) -> None:
        """A new edit (ignored without an image). ``sync=False``: the members follow at :meth:`sync`."""
        item = (float(edit_priority([edit_id], self.seed)[0]), edit_id)
        if (self._bound is not None and item >= self._bound) or self.image_of(edit_id) is None:
            return
        i = bisect.bisect_left(self._kept, item)
        if i < len(self._kept) and self._kept[i] == item:
            return
        self._kept.insert(i, item)
        if len(self._kept) > 2 * self.size:
            self._bound = self._kept.pop()
        if sync:
            self.sync()

    def discard(self, edit_id: str, sync: bool = True) -> None:
        """A removed edit (or one about to be offered again). ``sync=False``: the members follow at
        :meth:`sync` (so that a batch of removals never makes a removed edit a member on the way)."""
        item = (float(edit_priority([edit_id], self.seed)[0]), edit_id)
        i = bisect.bisect_left(self._kept, item)
        if i == len(self._kept) or self._kept[i] != item:
            return
        del self._kept[i]
        if edit_id in self._slot:  # its image may change (a re-edit): it leaves at the next sync
            self._stale.add(edit_id)
        if len(self._kept) < self.size and self._bound is not None:
            self._rescan()  # the reserve is spent: read the lowest again from every edit
        elif sync:
            self.sync()

    # ------------------------------------------------------------------ members, distances, pool
    def sync(self) -> None:
        """Make the members the first ``size`` kept edits (their distances and pool values follow)."""
        want = self.members
        wanted = set(want)
        for e in [e for e in self._slot if e not in wanted or e in self._stale]:
            self._leave(e)
        self._stale.clear()
        for e in want:
            if e not in self._slot:
                self._join(e)

    def _others(self, slot: int) -> np.ndarray:
        used = np.fromiter(self._slot.values(), np.int64, len(self._slot))
        return used[used != slot]

    def _join(self, edit_id: str) -> None:
        image = np.asarray(self.image_of(edit_id), np.float64)
        if not self._free:
            n, dv = len(self._dist), len(image)
            cap = max(16, 2 * n)
            images = np.zeros((cap, dv))
            images[:n] = self._images[:n] if self._images.size else 0.0
            dist = np.zeros((cap, cap))
            dist[:n, :n] = self._dist
            self._images, self._dist, self._free = images, dist, list(range(cap - 1, n - 1, -1))
        s = self._free.pop()
        others = self._others(-1)
        self._slot[edit_id] = s
        self._images[s] = image
        d = np.sqrt(((self._images[others] - image) ** 2).sum(1)) if len(others) else np.zeros(0)
        self._dist[s, others] = self._dist[others, s] = d
        vals = d[d > 1e-9]
        self.pairs += len(vals)
        self._pool.insert(vals)

    def _leave(self, edit_id: str) -> None:
        s = self._slot.pop(edit_id)
        d = self._dist[s, self._others(s)]
        vals = d[d > 1e-9]
        self.pairs -= len(vals)
        self._pool.remove(vals)
        self._free.append(s)

    def threshold(self, percentile: float) -> float | None:
        """The ``percentile`` of the members' pairwise image distances (None: no pair)."""
        if self.pairs == 0:
            return None
        value = self._pool.percentile(self.pairs, percentile)
        if value is None:
            slots = np.sort(np.fromiter(self._slot.values(), np.int64, len(self._slot)))
            iu, ju = np.triu_indices(len(slots), k=1)
            values = self._dist[slots[iu], slots[ju]]
            self._pool.rebuild(values[values > 1e-9], int((self.pairs - 1) * percentile / 100.0) + 2)
            value = self._pool.percentile(self.pairs, percentile)
        return value
