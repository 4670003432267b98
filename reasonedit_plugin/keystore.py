"""The key store: every codebook key stored once (float16 by default), partitioned into IVF lists, with an
exact weighted nearest-neighbour search whose work is sub-linear where the keys are clustered.

Rows are contiguous (swap-remove); per-row columns (the hubness graph's neighbour ids, sigma, ...) live
here so that they move with their row. The IVF partition (the seed's hierarchical clustering: k-means
centroids trained with faiss on a seeded sample) stores, per row, its list and ``rad`` = its distance to
its list's centroid. For a query q the triangle inequality gives, for every row x of list c,

    d(q, x) >= | d(q, c) - rad_x |              and for the whole list    d(q, x) >= d(q, c) - max rad;

each list also keeps the box of its rows' first projected codes (``key_projection.py``), a second bound for
the whole list (on the real benchmark keys it admits ~45 % fewer rows than the triangle's alone), so a search
for the k rows of lowest ``d(q, x) / den_x`` (``den`` = sigma + eps for the hubness score, 1 for plain L2)
visits lists by increasing lower bound, skips every row whose bound already exceeds the
current k-th best score, and stops when the next list's bound does: the answer equals a full scan (same
ids, order, distances), not an approximation. Bounds carry a relative margin of 1e-5 for float32
rounding. How much is skipped depends on the data: clustered keys (real ones) prune well; random
high-dimensional keys hardly prune at all (every distance is nearly the same) and cost about a scan.

The searches themselves (IVF walk, projected and float32 screens, exact re-rank) are in ``store_search.py``.

Distances are computed as sqrt(sum((x - q)^2)) in float32 from the stored rows, never by the expanded
square: an exact duplicate is at distance 0. Queries are rounded to the key precision first, so a query
equal to a stored key's original values finds it at distance 0.
"""

from __future__ import annotations

import ctypes
import logging
import math
from typing import Any, Iterable

import numpy as np
import torch

from .errors import ReasonEditError
from .ivf_lists import IvfLists
from .key_projection import HEAD_DIM, PROJ_DIM, KeyProjection, QueryCodes
from .store_search import _CHUNK, _TOL, Hits, search, within_reach  # noqa: F401 (Hits: re-exported)

logger = logging.getLogger(__name__)

KEY_DTYPES = {"float16": np.float16, "float32": np.float32}
_INDEX = np.int32
"""Key ids, rows and IVF list members are stored as int32 (4 bytes a key each, not 8)."""
_MAX_ID = int(np.iinfo(_INDEX).max) - 1


def all_finite(a: np.ndarray) -> bool:
    """No NaN or inf in ``a``. float16 by its exponent bits (numpy has no vectorised float16 isfinite: a
    million 448-wide keys took 0.77 s, the bit test 0.24 s)."""
    if a.dtype == np.float16:
        return not bool(((a.view(np.uint16) & 0x7C00) == 0x7C00).any())
    return bool(np.isfinite(a).all())


def trim_heap() -> None:
    """Hand freed heap pages back to the OS. A load or bulk build passes every key through float32
    temporaries (and a load through the file's bytes); glibc keeps the freed arenas (on the 100k benchmark,
    ~0.6x the key bytes of resident memory that nothing uses). A no-op where the C library has no
    ``malloc_trim``."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class KeyStore:
    """Keys (one row each, in ``dtype``), their ids, extra per-row columns and an IVF partition."""

    def __init__(self, dim: int, dtype: str = "float16", exact_below: int = 4096, nlist: int | None = None,
                 seed: int = 0):
        if dtype not in KEY_DTYPES:
            raise ReasonEditError(f"key dtype {dtype!r} is not one of {sorted(KEY_DTYPES)}.")
        self.dim = int(dim)
        self.dtype = np.dtype(KEY_DTYPES[dtype])
        self.exact_below = int(exact_below)
        self.nlist = nlist
        self.seed = int(seed)
        self.n = 0
        self._mat = np.zeros((0, self.dim), self.dtype)
        self._ids = np.zeros(0, _INDEX)
        self._row_of = np.full(0, -1, _INDEX)  # id -> row (-1: absent); ids are small and dense
        self._columns: dict[str, np.ndarray] = {}
        self._fill: dict[str, Any] = {}
        # IVF
        self.centroids: np.ndarray | None = None  # float32 [L, D]
        self._trained_at = 0
        self._assign = np.zeros(0, np.int32)
        self._rad = np.zeros(0, np.float32)
        self._ivf = IvfLists()  # each list's rows and their radii, in list order (no gather in a search)
        self._list_rmax = np.zeros(0, np.float32)
        self._list_den_max = np.zeros(0, np.float64)
        self._list_reach_max = np.zeros(0, np.float32)
        # each list's box in head-code space (float64 [nlist, HEAD_DIM]: the smallest and largest code of its
        # rows, kept as rows join; a removal leaves it wide, still a bound) and whether an open row joined it
        self._box_lo = np.zeros((0, HEAD_DIM))
        self._box_hi = np.zeros((0, HEAD_DIM))
        self._list_open = np.zeros(0, bool)
        self.add_column("sigma", (), np.float64, 1.0)
        self.eps = 0.0
        """A score's denominator is sigma + eps (:meth:`den`; the hubness graph sets both): one column, not two."""
        self.add_column("reach", (), np.float32, np.inf)
        self.add_column("sqn", (), np.float32, 0.0)
        # projections as 8-bit codes in two columns: the first HEAD_DIM coordinates (a cheap first bound that
        # reads 16 bytes a row) and the rest (read only for the rows the first one keeps); "pz_open": a
        # coordinate outside the code range (a key added after the ranges were fitted), never pruned
        self.add_column("pz_head", (HEAD_DIM,), np.int8, 0)
        self.add_column("pz_tail", (PROJ_DIM - HEAD_DIM,), np.int8, 0)
        self.add_column("pz_open", (), np.bool_, True)
        self._proj: KeyProjection | None = None  # a lower bound of distances from PROJ_DIM codes (trained)
        self._open = False  # some row is open (kept true until the next fit: an O(1) check a search)
        self._csq = np.zeros(0, np.float32)  # squared centroid norms
        self._bounds_memo: tuple[bytes, tuple[np.ndarray, np.ndarray]] | None = None
        du = self.dim * 2.0 ** -24
        self._margin = 2.0 * (du / (1.0 - du) + 3.0 * 2.0 ** -24) * 1.01  # see index._float32_margin
        self._norm_up = 1.0 + 2.0 * du  # sqrt(sqn) * this bounds a stored key's norm from above
        self._sqn_max = 0.0  # the largest sqn ever stored (removals keep it: still an upper bound)

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        return self.n

    def __contains__(self, key_id: object) -> bool:
        try:
            i = int(key_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return 0 <= i < len(self._row_of) and self._row_of[i] >= 0

    def add_column(self, name: str, tail: tuple[int, ...], dtype: Any, fill: Any) -> None:
        self._columns[name] = np.full((len(self._mat),) + tail, fill, dtype)
        self._fill[name] = fill

    def column(self, name: str) -> np.ndarray:
        """The live rows of a per-row column (a view; valid until the next add/remove)."""
        return self._columns[name][: self.n]

    def row(self, key_id: int) -> int:
        if key_id not in self:
            raise KeyError(f"key {key_id} is not stored")
        return int(self._row_of[key_id])

    def rows(self, ids: Iterable[int]) -> np.ndarray:
        ids = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), np.int64)
        if not len(ids):
            return np.zeros(0, np.int64)
        rows = self._row_of[ids] if len(ids) and ids.max() < len(self._row_of) and ids.min() >= 0 else None
        if rows is None or (rows < 0).any():
            raise KeyError(f"unknown key ids among {ids[:10].tolist()}")
        return rows.astype(np.int64)

    @property
    def ids(self) -> np.ndarray:
        return self._ids[: self.n]

    @property
    def matrix(self) -> np.ndarray:
        """The stored keys [n, D] in the key dtype (a view)."""
        return self._mat[: self.n]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._mat[rows].astype(np.float32)

    def round(self, vec: Any) -> np.ndarray:
        """``vec`` at key precision, as float32 [D] (what a stored copy of it would be)."""
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ReasonEditError(f"key has dim {v.shape[0]}, the store {self.dim}.")
        r = v.astype(self.dtype)
        if not np.isfinite(r).all():
            raise ReasonEditError(f"key does not fit {self.dtype} (|value| up to {float(np.abs(v).max()):.3g});"
                                  " use codebook.key_dtype: float32.")
        return r.astype(np.float32)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` rows in all (a bulk load's chunks then go in without growing the arrays)."""
        self._grow(rows)

    def _grow(self, needed: int) -> None:
        """Room for ``needed`` rows, with headroom (a quarter more, at least double the old capacity): the
        new arrays come from calloc and rows past ``n`` are never written until used, so the headroom costs
        address space, not memory, and the edits after a load do not copy every key."""
        cap = len(self._mat)
        if needed <= cap:
            return
        new = max(needed + needed // 4, 2 * cap, 64)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:  # rows >= n are set when they are added
            out = np.zeros((new,) + a.shape[1:], a.dtype)
            out[:cap] = a
            return out

        self._mat = grow(self._mat, 0)
        self._ids = grow(self._ids, -1)
        self._assign = grow(self._assign, -1)
        self._rad = grow(self._rad, 0)
        for name, col in self._columns.items():
            self._columns[name] = grow(col, self._fill[name])

    def add(self, key_id: int, vec: Any, **initial: Any) -> int:
        """Store a key under a new id (``initial``: its column values, e.g. sigma=..., reach=...); returns
        its row."""
        return int(self.add_many(np.array([key_id], np.int64), np.asarray(vec, np.float32).reshape(1, -1),
                                 **initial)[0])

    def add_many(self, ids: np.ndarray, vecs: np.ndarray, **initial: Any) -> np.ndarray:
        ids = np.asarray(ids, np.int64).reshape(-1)
        vecs = np.asarray(vecs).reshape(len(ids), self.dim)
        if len(ids) and (ids.min() < 0 or ids.max() > _MAX_ID):
            raise ReasonEditError(f"key ids must be in [0, {_MAX_ID}], got {int(ids.min())}..{int(ids.max())}.")
        top = int(ids.max()) + 1 if len(ids) else 0
        if top > len(self._row_of):
            grown = np.full(max(top + top // 4, 2 * len(self._row_of), 64), -1, _INDEX)  # headroom: the
            # first edits after a load must not copy the whole id map (8 bytes a key, a quarter more is cheap)
            grown[: len(self._row_of)] = self._row_of
            self._row_of = grown
        if len(ids) and ((self._row_of[ids] >= 0).any() or len(np.unique(ids)) != len(ids)):
            raise ReasonEditError(f"some of the key ids {ids[:10].tolist()} are already stored.")
        m = len(ids)
        start = self.n
        self._grow(start + m)
        block = np.asarray(vecs, self.dtype)  # (no copy when already at key precision: a load's keys are)
        if block is not vecs and not all_finite(block):  # only a cast can overflow: keys already at key
            # precision were checked by whoever made them (an edit, a bulk build; a load, by storage.py)
            raise ReasonEditError(f"a key does not fit {self.dtype}; use codebook.key_dtype: float32.")
        self._mat[start:start + m] = block
        self._ids[start:start + m] = ids
        self._row_of[ids] = np.arange(start, start + m)
        for name, col in self._columns.items():
            col[start:start + m] = initial.get(name, self._fill[name])
        for s in range(start, start + m, _CHUNK):
            x = self._fp32(np.arange(s, min(start + m, s + _CHUNK)))
            if self._proj is not None:
                self._set_projections(slice(s, s + len(x)), x.numpy())
            sqn = self._columns["sqn"][s:s + len(x)] = x.mul_(x).sum(dim=1).numpy()
            self._sqn_max = max(self._sqn_max, float(sqn.max()))
        self.n += m
        rows = np.arange(start, start + m)
        if self.centroids is not None:
            self._assign_rows(rows)
        elif self.n >= self.exact_below:
            self.train()
        return self._row_of[ids]  # a (re)training clusters the rows: they may have moved

    def remove(self, key_id: int) -> tuple[int, int]:
        """Swap-remove; returns (row freed, row that moved into it or -1)."""
        row = self.row(key_id)
        self._row_of[key_id] = -1
        last = self.n - 1
        if self.centroids is not None:
            self._ivf.drop(int(self._assign[row]), row)
        moved = -1
        if row != last:
            moved_id = int(self._ids[last])
            if self.centroids is not None:
                self._ivf.replace(int(self._assign[last]), last, row)
            self._mat[row] = self._mat[last]
            self._ids[row] = moved_id
            self._assign[row] = self._assign[last]
            self._rad[row] = self._rad[last]
            for col in self._columns.values():
                col[row] = col[last]
            self._row_of[moved_id] = row
            moved = last
        self._ids[last] = -1
        for name, col in self._columns.items():
            col[last] = self._fill[name]
        self.n = last
        return row, moved

    # ------------------------------------------------------------------ per-row values with list bounds
    def den(self, rows: Any) -> np.ndarray:
        """The score denominators sigma + eps of ``rows`` (> 0)."""
        return self._columns["sigma"][rows] + self.eps

    def den_max(self) -> float:
        """An upper bound of every row's denominator (O(lists) once partitioned, else O(n))."""
        if self.centroids is not None:
            return float(self._list_den_max.max(initial=0.0))
        return float(self.den(slice(0, self.n)).max(initial=0.0))

    def set_sigma(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Set the hubness sigma of ``rows`` (each list's largest denominator follows)."""
        self._columns["sigma"][rows] = values
        if self.centroids is not None and len(rows):
            np.maximum.at(self._list_den_max, self._assign[rows], np.asarray(values, np.float64) + self.eps)

    def set_eps(self, eps: float) -> None:
        """Use ``eps`` in every denominator sigma + eps from now on."""
        self.eps = float(eps)
        if self.centroids is not None and self.n:
            np.maximum.at(self._list_den_max, self._assign[: self.n], self.den(slice(0, self.n)))

    def set_reach(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Set the reach (largest distance that still matters to the row, e.g. its k-th neighbour)."""
        self._columns["reach"][rows] = values
        if self.centroids is not None and len(rows):
            np.maximum.at(self._list_reach_max, self._assign[rows], np.asarray(values, np.float32))

    # ------------------------------------------------------------------ distances
    def distances(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """float32 L2 distances from float32 ``q`` [D] to ``rows``, by differences (duplicates give 0)."""
        out = np.empty(len(rows), np.float32)
        qt = torch.from_numpy(np.ascontiguousarray(q, np.float32))
        for s in range(0, len(rows), _CHUNK):
            diff = self._fp32(rows[s:s + _CHUNK])
            diff.sub_(qt)
            out[s:s + _CHUNK] = diff.mul_(diff).sum(dim=1).sqrt_().numpy()
        return out

    @property
    def norm_max(self) -> float:
        """An upper bound of every stored key's norm (float64; O(1): kept as keys are added)."""
        return math.sqrt(self._sqn_max) * self._norm_up

    def _fp32(self, rows: np.ndarray) -> torch.Tensor:
        """The keys of ``rows`` as a new float32 tensor [len(rows), D]."""
        mat = torch.from_numpy(self._mat)
        return mat.index_select(0, torch.from_numpy(np.asarray(rows, np.int64))).float()

    def _screen(self, rows: np.ndarray, q: np.ndarray, qsq: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of d(q, x) for ``rows`` from one float32 matrix-vector product:
        |x|^2 + |q|^2 - 2 x.q, off by at most _MARGIN * (|x|^2 + |q|^2) (Higham, §3.1)."""
        d2 = self._columns["sqn"][rows] + qsq - 2.0 * (self._fp32(rows) @ torch.from_numpy(q)).numpy()
        e = self._margin * (self._columns["sqn"][rows] + qsq)
        return np.sqrt(np.maximum(d2 - e, 0.0)), np.sqrt(np.maximum(d2 + e, 0.0))

    def _centroid_bounds(self, q: np.ndarray, qsq: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of d(q, c) for every centroid, from one matrix-vector product (the last
        query's are kept: an edit asks for its key's twice, for its own list and for the lists it enters)."""
        tag = q.tobytes()
        if self._bounds_memo is not None and self._bounds_memo[0] == tag:
            return self._bounds_memo[1]
        # torch, as in _screen: numpy's matmul here (OpenBLAS sgemv) now and then raised a spurious
        # "invalid value" RuntimeWarning on finite centroids and query, and finite products
        d2 = self._csq + qsq - 2.0 * (torch.from_numpy(self.centroids) @ torch.from_numpy(q)).numpy()
        e = self._margin * (self._csq + qsq)
        out = np.sqrt(np.maximum(d2 - e, 0.0)), np.sqrt(np.maximum(d2 + e, 0.0))
        self._bounds_memo = (tag, out)
        return out

    def _projected(self, q: np.ndarray, qsq: float) -> QueryCodes:
        """The query's side of the projected bound (for :meth:`_proj_keep`); the rounding margins use the
        store's largest key norm (a row's own would cost a gather)."""
        return self._proj.query(self._proj.project(q[None])[0], math.sqrt(qsq) * (1.0 + 1e-12), self.norm_max)

    def _box_bounds(self, qc: QueryCodes) -> np.ndarray:
        """float64 [nlist]: a lower bound of d(q, x) for every row x of each IVF list, from the list's box in
        head-code space (0 for a list an open row joined)."""
        lb = self._proj.box_bounds(qc, self._box_lo, self._box_hi)
        lb[self._list_open] = 0.0
        return lb

    def _set_projections(self, rows: slice, x: np.ndarray) -> None:
        codes, is_open = self._proj.encode(self._proj.project(x))
        self._columns["pz_head"][rows] = codes[:, :HEAD_DIM]
        self._columns["pz_tail"][rows] = codes[:, HEAD_DIM:]
        self._columns["pz_open"][rows] = is_open
        self._open = self._open or bool(is_open.any())

    def _fit_projections(self) -> None:
        """Fit the code ranges to the stored keys (up to 32k rows evenly spaced, so every list is sampled; the
        ranges only decide how well the codes prune) and encode every row; rows the sample's ranges miss widen
        them, and every row is encoded again (after a training or a load no row is open)."""
        n = self.n
        sample = np.unique(np.linspace(0, n - 1, min(n, 32768)).astype(np.int64))
        fitted = self._projections(sample)
        for _ in range(2):
            self._proj.fit(fitted)
            self._open = False
            for s in range(0, n, _CHUNK):
                e = min(n, s + _CHUNK)
                self._set_projections(slice(s, e), self._fp32(np.arange(s, e)).numpy())
            if not self._open:
                break
            fitted = np.concatenate([fitted, self._projections(np.flatnonzero(self._columns["pz_open"][:n]))])

    def _projections(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), PROJ_DIM]: the projections of ``rows``' keys."""
        return np.concatenate([self._proj.project(self._fp32(rows[s:s + _CHUNK]).numpy())
                               for s in range(0, len(rows), _CHUNK)] or [np.zeros((0, PROJ_DIM), np.float32)])

    def _proj_keep(self, rows: np.ndarray, qc: QueryCodes, within: np.ndarray) -> np.ndarray:
        """Which ``rows`` the projections cannot rule out: proven lower bounds of d(q, x)
        (``key_projection.py``) <= ``within`` (per row). The first HEAD_DIM coordinates first (a weaker bound
        of the same kind: the first columns of an orthonormal basis are one), then the rest added for the
        rows left. Open rows are kept."""
        proj = self._proj
        head = proj.partial(qc, np.take(self._columns["pz_head"], rows, axis=0))
        keep = head <= proj.reach2(qc, within, HEAD_DIM)
        if keep.any():
            sel = np.flatnonzero(keep)
            tail = proj.partial(qc, np.take(self._columns["pz_tail"], rows[sel], axis=0), HEAD_DIM)
            keep[sel] = head[sel] + tail <= proj.reach2(qc, within[sel], PROJ_DIM)
        if self._open:
            keep |= self._columns["pz_open"][rows]
        return keep

    # ------------------------------------------------------------------ IVF partition
    @property
    def trained(self) -> bool:
        return self.centroids is not None

    def _nlist_for(self, n: int) -> int:
        return int(self.nlist) if self.nlist else max(8, min(4096, int(2 * math.sqrt(n))))

    def train(self) -> None:
        """(Re)train the k-means centroids on a seeded sample of the keys and reassign every row."""
        import faiss

        n = self.n
        nlist = min(self._nlist_for(n), n)
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(n, size=min(n, 32 * nlist), replace=False))
        km = faiss.Kmeans(self.dim, nlist, niter=10, seed=self.seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=256)
        km.train(np.ascontiguousarray(self._mat[sample].astype(np.float32)))
        self.set_partition(km.centroids.astype(np.float32))
        logger.info("key store: %d IVF lists trained on %d of %d keys", nlist, len(sample), n)

    def set_partition(self, centroids: np.ndarray, assign: np.ndarray | None = None,
                      rad: np.ndarray | None = None) -> None:
        """Install centroids; assign every row (or take ``assign``/``rad`` as read from disk)."""
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self._bounds_memo = None
        nlist = len(self.centroids)
        self._trained_at = self.n
        self._csq = np.einsum("ij,ij->i", self.centroids, self.centroids)
        self._proj = KeyProjection.from_centroids(self.centroids, self.dim)
        self._fit_projections()
        if assign is None or rad is None:
            self._assign_rows(np.arange(self.n), rebuild=True)
        else:
            self._assign[: self.n] = assign
            self._rad[: self.n] = rad
        self._cluster_rows()
        self._rebuild_lists()
        assert len(self._ivf) == nlist

    def _cluster_rows(self) -> None:
        """Reorder the rows so that each IVF list's rows are contiguous (in their old order): a search
        then reads each visited list from one stretch of memory instead of gathering rows from all over
        the store (at 100k-1M keys, the gathers were most of a query's time). Row numbers change; ids
        do not (everything outside the store refers to keys by id). Rows added later are appended and
        join their list's stretch at the next (re)training."""
        n = self.n
        a = self._assign[:n]
        if n < 2 or bool((a[1:] >= a[:-1]).all()):
            return
        order = np.argsort(a, kind="stable")
        self._mat[:n] = self._mat[order]
        self._ids[:n] = self._ids[order]
        self._assign[:n] = a[order]
        self._rad[:n] = self._rad[order]
        for col in self._columns.values():
            col[:n] = col[order]
        self._row_of[self._ids[:n]] = np.arange(n)

    def _nearest_centroids(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= 16:  # an edit's few keys: no faiss index (nor its import on the first edit); the
            out = []      # centroid bounds leave a few candidates, compared by exact differences
            for v in x.astype(np.float32):
                lo, hi = self._centroid_bounds(v, float(np.dot(v.astype(np.float64), v)))
                cand = np.flatnonzero(lo <= hi.min() * (1 + _TOL))
                out.append(int(cand[np.argmin(((self.centroids[cand] - v) ** 2).sum(1))]))
            return np.array(out, np.int64)
        import faiss

        out = np.empty(len(x), np.int64)
        index = faiss.IndexFlatL2(self.dim)
        index.add(self.centroids)
        for s in range(0, len(x), 65536):
            _, a = index.search(np.ascontiguousarray(x[s:s + 65536].astype(np.float32)), 1)
            out[s:s + 65536] = a[:, 0]
        return out

    def _assign_rows(self, rows: np.ndarray, rebuild: bool = False) -> None:
        if self.n > 4 * max(self._trained_at, 1) and not rebuild:
            self.train()  # the partition was trained on far fewer keys: retrain (amortised O(1) per key)
            return
        a = self._nearest_centroids(self._mat[rows])
        self._assign[rows] = a
        for s in range(0, len(rows), _CHUNK):
            r = rows[s:s + _CHUNK]
            diff = self._mat[r].astype(np.float32) - self.centroids[a[s:s + _CHUNK]]
            self._rad[r] = np.sqrt((diff * diff).sum(axis=1))
        if not rebuild:  # (a rebuild's caller, set_partition, clusters the rows and rebuilds the lists)
            for r, c in zip(rows.tolist(), a.tolist()):
                self._list_add(c, r)

    @property
    def _list_len(self) -> np.ndarray:
        """int64 [nlist]: rows in each IVF list."""
        return self._ivf.lengths

    def _rebuild_lists(self) -> None:
        nlist = len(self.centroids)
        a = self._assign[: self.n].astype(np.int64)
        self._ivf.rebuild(nlist, a, self._rad[: self.n])
        self._list_rmax = np.zeros(nlist, np.float32)
        np.maximum.at(self._list_rmax, a, self._rad[: self.n])
        self._list_den_max = np.zeros(nlist, np.float64)
        np.maximum.at(self._list_den_max, a, self.den(slice(0, self.n)))
        self._list_reach_max = np.zeros(nlist, np.float32)
        np.maximum.at(self._list_reach_max, a, self._columns["reach"][: self.n])
        self._box_lo = np.full((nlist, HEAD_DIM), np.inf)
        self._box_hi = np.full((nlist, HEAD_DIM), -np.inf)
        head = self._columns["pz_head"][: self.n]
        if self.n:
            order = None if bool((a[1:] >= a[:-1]).all()) else np.argsort(a, kind="stable")  # (rows clustered)
            a_sorted, head = (a, head) if order is None else (a[order], head[order])
            starts = np.flatnonzero(np.r_[True, a_sorted[1:] != a_sorted[:-1]])
            self._box_lo[a_sorted[starts]] = np.minimum.reduceat(head, starts, axis=0)
            self._box_hi[a_sorted[starts]] = np.maximum.reduceat(head, starts, axis=0)
        self._list_open = np.zeros(nlist, bool)
        self._list_open[a[self._columns["pz_open"][: self.n]]] = True

    def _list_add(self, c: int, row: int) -> None:
        self._ivf.add(c, row, self._rad[row])
        self._list_rmax[c] = max(self._list_rmax[c], self._rad[row])
        self._list_den_max[c] = max(self._list_den_max[c], self.den(row))
        self._list_reach_max[c] = max(self._list_reach_max[c], self._columns["reach"][row])
        head = self._columns["pz_head"][row]
        np.minimum(self._box_lo[c], head, out=self._box_lo[c])
        np.maximum(self._box_hi[c], head, out=self._box_hi[c])
        self._list_open[c] |= bool(self._columns["pz_open"][row])

    def partition_state(self) -> dict[str, np.ndarray]:
        """What to persist so a load need not reassign: centroids, each row's list and radius."""
        if self.centroids is None:
            return {}
        return {"centroids": self.centroids, "assign": self._assign[: self.n].copy(),
                "rad": self._rad[: self.n].copy()}

    # ------------------------------------------------------------------ search
    def search(self, q: np.ndarray, k: int, scaled: bool = True, exclude: int = -1,
               force_scan: bool = False, max_lists: int | None = None) -> Hits:
        """The k rows of lowest d(q, x) / den_x (``scaled``) or d(q, x), ties by id; exact.

        ``q`` is float32 at key precision (see :meth:`round`); ``exclude`` leaves one row out;
        ``force_scan`` computes every distance exactly (the reference the pruned path must equal);
        ``max_lists`` (approximate) stops after that many IVF lists, nearest bound first."""
        return search(self, q, k, scaled, exclude, force_scan, max_lists)

    def knn_all(self, k: int, progress: Any = None, max_lists: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every row's min(k, n-1) nearest other rows, (distance, id) order: ids int64 [n, k'] and float32
        distances. Block-wise: the rows of one IVF list against the lists the triangle bound cannot rule
        out, screened by float32 matrix products with a proven rounding margin, then re-ranked by exact
        differences; a row whose screen is not conclusive falls back to :meth:`search`. Exact, but
        O(N^2) when the bound prunes little (K-NN distances of high-dimensional keys are large next to
        the lists' radii). ``max_lists`` caps the lists each block visits (nearest first): an
        approximate graph for bulk imports too large for the exact one (no fallback then)."""
        from .knn_build import knn_all

        return knn_all(self, k, progress, max_lists)

    def within_reach(self, q: np.ndarray, exclude: int = -1, max_lists: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Rows x with d(q, x) <= reach_x (exact; ``max_lists``: only in that many lists, nearest first),
        and those distances."""
        return within_reach(self, q, exclude, max_lists)


from .store_index import StoreIndex  # noqa: E402,F401  (re-export: the read-only index view of a store)
