"""The IVF lists of the key store: each list's rows and their radii, in one flat buffer.

Every list owns a stretch of two flat arrays (store rows, int32, and their distances to the list's
centroid, float32) with room to grow. A search takes the rows of all the lists it visits in one call
(:meth:`IvfLists.gather`): short lists through one vectorised index, long ones by copying each stretch.
Against the former array pair per list: a few per cent of a 100k query, the same at 1M (RESULTS.md,
"Session 13"), and two arrays in all instead of two per list.

A list that outgrows its stretch moves to the end of the buffer with twice the room; the stretch it
leaves is dead space, reclaimed when it outgrows the room the lists hold (a compaction, amortised O(1)
per add) or at the next rebuild (every training of the partition).
"""

from __future__ import annotations

import numpy as np

_INDEX = np.int32
_LONG = 256  # mean rows per gathered list above which copying stretches beats one vectorised index


def _slack(lens: np.ndarray) -> np.ndarray:
    """Room per list at a rebuild: an eighth more, at least 4 rows."""
    return lens + np.maximum(4, lens // 8)


class IvfLists:
    """``nlist`` lists of store rows with their radii (``rows_of``/``gather`` read them)."""

    def __init__(self, nlist: int = 0):
        self.lengths = np.zeros(nlist, np.int64)
        """int64 [nlist]: rows in each list."""
        self._start = np.zeros(nlist, np.int64)
        self._cap = np.zeros(nlist, np.int64)
        self._rows = np.zeros(0, _INDEX)
        self._rad = np.zeros(0, np.float32)
        self._end = 0  # first unused slot of the buffer
        self._live_cap = 0  # sum of the lists' capacities (the rest up to _end is dead space)

    def __len__(self) -> int:
        return len(self.lengths)

    def rebuild(self, nlist: int, assign: np.ndarray, rad: np.ndarray) -> None:
        """``nlist`` lists from every row's list number ``assign`` [n] and radius ``rad`` [n]; rows in order."""
        assign = np.asarray(assign, np.int64)
        order = np.argsort(assign, kind="stable")
        lens = np.bincount(assign, minlength=nlist).astype(np.int64)
        cap = _slack(lens)
        start = np.cumsum(cap) - cap
        total = int(cap.sum())
        self._rows = np.empty(max(total, 64), _INDEX)
        self._rad = np.empty(len(self._rows), np.float32)
        dest = np.repeat(start - (np.cumsum(lens) - lens), lens) + np.arange(len(order))
        self._rows[dest] = order
        self._rad[dest] = rad[order]
        self.lengths, self._start, self._cap = lens, start, cap
        self._end = self._live_cap = total

    def rows_of(self, c: int) -> np.ndarray:
        """The rows of list ``c`` (a view: valid until the next change)."""
        s = self._start[c]
        return self._rows[s:s + self.lengths[c]]

    def gather(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of ``lists`` (each list's rows in list order, list after list), their radii and the
        lists' lengths. Short lists through one vectorised index (~2 ns a row); long ones by copying each
        list's stretch (~0.5 us a list, then memory speed): on the benchmark keys, 158-row lists (100k
        keys) gather faster, 500-row lists (1M) copy faster."""
        lens = self.lengths[lists]
        total = int(lens.sum())
        start = self._start[lists]
        if total > _LONG * len(lists):
            spans = list(zip(start.tolist(), (start + lens).tolist()))
            return (np.concatenate([self._rows[a:b] for a, b in spans]),
                    np.concatenate([self._rad[a:b] for a, b in spans]), lens)
        idx = np.repeat(start - (np.cumsum(lens) - lens), lens) + np.arange(total)
        return np.take(self._rows, idx), np.take(self._rad, idx), lens

    def add(self, c: int, row: int, rad: float) -> None:
        n = int(self.lengths[c])
        if n == self._cap[c]:
            self._move(c, max(8, 2 * n))
        s = int(self._start[c])
        self._rows[s + n] = row
        self._rad[s + n] = rad
        self.lengths[c] = n + 1

    def drop(self, c: int, row: int) -> None:
        """Remove ``row`` from list ``c`` (the list's last row takes its place)."""
        members = self.rows_of(c)
        pos = int(np.flatnonzero(members == row)[0])
        s, last = int(self._start[c]), len(members) - 1
        self._rows[s + pos] = self._rows[s + last]
        self._rad[s + pos] = self._rad[s + last]
        self.lengths[c] = last

    def replace(self, c: int, old: int, new: int) -> None:
        """Row ``old`` of list ``c`` is now numbered ``new`` (the store moved it)."""
        members = self.rows_of(c)
        members[np.flatnonzero(members == old)[0]] = new

    def _move(self, c: int, cap: int) -> None:
        """Give list ``c`` a stretch of ``cap`` slots at the end of the buffer (compacting first when
        the dead space has grown past the live one)."""
        if self._end - self._live_cap > self._live_cap:
            self._compact()
        if self._end + cap > len(self._rows):
            size = max(2 * len(self._rows), self._end + cap, 64)
            self._rows = np.resize(self._rows, size)
            self._rad = np.resize(self._rad, size)
        s, n, new = int(self._start[c]), int(self.lengths[c]), self._end
        self._rows[new:new + n] = self._rows[s:s + n]
        self._rad[new:new + n] = self._rad[s:s + n]
        self._live_cap += cap - int(self._cap[c])
        self._start[c], self._cap[c] = new, cap
        self._end = new + cap

    def _compact(self) -> None:
        """Lay every list out afresh, in list order, each with its capacity."""
        start = np.cumsum(self._cap) - self._cap
        offsets = np.cumsum(self.lengths) - self.lengths
        step = np.arange(int(self.lengths.sum()))
        src = np.repeat(self._start - offsets, self.lengths) + step
        dst = np.repeat(start - offsets, self.lengths) + step
        size = max(int(self._cap.sum()), 64)
        rows, rad = np.empty(size, _INDEX), np.empty(size, np.float32)
        rows[dst], rad[dst] = self._rows[src], self._rad[src]
        self._rows, self._rad, self._start = rows, rad, start.astype(np.int64)
        self._end = self._live_cap = int(self._cap.sum())
