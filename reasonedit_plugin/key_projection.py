"""A proven lower bound of key distances from a low-dimensional projection, stored as 8-bit codes (the
key store's screen).

For a matrix P with orthonormal columns, ||P^T (q - x)|| <= ||q - x||: the distance between two projected
keys never exceeds the distance between the keys, and the same holds for any subset of the columns. With
P = the top principal directions of the IVF centroids (a deterministic function of the partition, so
nothing extra is saved), a few dozen numbers per key separate clustered keys almost as well as the full
key: on the real 100k benchmark keys, of the rows a query's IVF lists leave after the triangle bound, a
few hundred are not ruled out by 64 projected coordinates, where the triangle bound leaves ten thousand.

Each projected coordinate is stored as an 8-bit code: coordinate i of a key lies within half a step of
``mid_i + step_i * c_i``, so with w_i = (p_i . q - mid_i) / step_i the vector step * (w - c) is within
m = step / 2 (per coordinate, plus rounding) of P^T (q - x), and

    ||q - x|| >= ||P^T (q - x)|| >= ||step * (w - c)|| - ||m||,

which loses little to the quantisation (one step is ~1/200 of the coordinate's range; on the benchmark keys
the per-coordinate form, |w_i - c_i| less its own half step, kept 7 % fewer rows for twice the arithmetic).
Against the former 32 half-precision coordinates (the same 64 bytes a key): twice the coordinates, and on
the benchmark keys about a third of the rows left to screen at full dimension. The code ranges are fitted
to the stored keys when the partition is trained or loaded, with a margin; a key added later whose
coordinate falls outside them is marked ``open`` and never pruned by its codes.

The bound is computed in float32; every rounding step is accounted for (:meth:`KeyProjection.query`,
:meth:`KeyProjection.reach2`), so a row is only ever skipped when its true distance is provably larger.
Pruning power depends on the data; exactness does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PROJ_DIM = 64
"""Projected coordinates kept per key (one int8 code each: 64 bytes a key next to 2 * D bytes of float16 key)."""
HEAD_DIM = 16
"""The first coordinates, tested first for every row (16 bytes read a row); the rest only for the rows the
head does not rule out."""
_CODE_MAX = 127  # codes in [-127, 127]
_RANGE_MARGIN = 0.125  # the fitted range is widened by this share of its span on each side

_U = 2.0 ** -24  # float32 unit roundoff


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term float32 dot product."""
    return n * _U / (1.0 - n * _U)


@dataclass(frozen=True)
class QueryCodes:
    """A query's side of the bound (computed once per query)."""

    w: torch.Tensor
    """float32 [r]: the query's coordinates in code units, (p_i . q - mid_i) / step_i."""
    w64: np.ndarray
    """float64 [r]: the same, before rounding to float32."""
    step2: np.ndarray
    """float32 [r]: the squared code steps (their rounding is in the relative margin)."""
    margin: np.ndarray
    """float64 [r + 1]: ``margin[j]`` bounds how far the computed ||step * (w - c)|| over the first j
    coordinates can be from ||P^T (q - x)|| over them (half steps, projection and float32 rounding)."""


class KeyProjection:
    """An orthonormal basis [D, r] (float32), the code ranges of its coordinates and the rounding margins
    of bounds computed with them."""

    def __init__(self, basis: np.ndarray):
        self.basis = np.ascontiguousarray(basis, np.float32)
        dim, r = self.basis.shape
        # ||P32||_2 <= ||P64||_2 + ||P32 - P64||_F <= 1 + 1e-12 + u sqrt(r)  (orthonormal P64, one rounding each)
        self._stretch = 1.0 + 1e-12 + _U * math.sqrt(r)
        # |fl(p . x) - p . x| <= gamma_(D+1) ||p|| ||x||, ||p|| <= stretch: per coordinate, times the norm
        self._abs = _gamma(dim + 1) * self._stretch * (1.0 + 1e-6)
        # the float32 scaling, squares and r-term sum of step * (c - w) (a head and a tail partial sum added:
        # one rounding more)
        self._rel = _gamma(r + 10)
        self._set_ranges(np.zeros(r, np.float64), np.ones(r, np.float64))

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    @classmethod
    def from_centroids(cls, centroids: np.ndarray, key_dim: int, r: int = PROJ_DIM) -> "KeyProjection":
        """The top ``r`` principal directions of the (centred) centroids, orthonormalised in float64;
        zero columns when there are fewer directions than ``r``."""
        c = np.asarray(centroids, np.float64)
        basis = np.zeros((key_dim, r), np.float64)
        if len(c) >= 2:
            _, _, vt = np.linalg.svd(c - c.mean(axis=0), full_matrices=False)
            m = min(r, vt.shape[0], key_dim)
            q, _ = np.linalg.qr(vt[:m].T)
            basis[:, :m] = q
        return cls(basis)

    def project(self, x: np.ndarray) -> np.ndarray:
        """float32 [m, r] projections of float32 keys [m, D]."""
        return np.asarray(x, np.float32) @ self.basis

    def fit(self, z: np.ndarray) -> None:
        """Code ranges from projections ``z`` [m, r] of (a sample of) the stored keys: each coordinate's
        range widened by an eighth of its span on each side, cut into 255 steps. A step is never below a
        millionth of the coordinate's magnitude."""
        if not len(z):
            return
        lo, hi = np.asarray(z.min(axis=0), np.float64), np.asarray(z.max(axis=0), np.float64)
        span = (hi - lo) * (1.0 + 2.0 * _RANGE_MARGIN)
        self._set_ranges((hi + lo) / 2.0, np.maximum.reduce([span / (2 * _CODE_MAX), 1e-6 * (np.abs(lo) + np.abs(hi)),
                                                              np.full(len(lo), 1e-30)]))

    def _set_ranges(self, mid: np.ndarray, step: np.ndarray) -> None:
        """Code centres and steps (float64 [r]) and what a query's margins need of them (:meth:`query`)."""
        self.mid, self.step = mid, step
        self._half_step = step * (0.5 + 1e-6 + 2.0 * _U * (_CODE_MAX + 1.0))
        self._w_step = step * 4.0 * _U
        self._step2 = np.square(step).astype(np.float32)
        self._mid32, self._inv_step32 = mid.astype(np.float32), (1.0 / step).astype(np.float32)
        self._encode_err = 8.0 * _U * np.abs(mid)  # the float32 encoding's error, less its |z| part (:meth:`query`)

    def encode(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 codes [m, r] of projections ``z`` [m, r] (float32) and which rows are ``open`` (bool [m]:
        a coordinate outside the code range, so the codes bound nothing)."""
        v = np.asarray(z, np.float32) - self._mid32
        v *= self._inv_step32
        codes = np.clip(np.rint(v), -_CODE_MAX, _CODE_MAX)
        return codes.astype(np.int8), (np.abs(v - codes) > 0.5).any(axis=1)

    def query(self, zq: np.ndarray, norm_q: float, norm_x: float) -> QueryCodes:
        """The query's side of :meth:`partial` from its computed projection ``zq`` [r] (float32) and upper
        bounds of ||q|| and of every stored key's norm.

        Per coordinate (code units): a stored key's computed coordinate z was within 1/2 of its code as
        encoded in float32 ((z - mid) * (1 / step): off by at most 8 u (|z| + |mid|) / step, |z| <=
        1.01 ||x||), both computed projections are within e = gamma ||p|| ||.|| of the true ones
        (``e / step``), and the float32 difference c - w on the hot path is off by at most
        u |w| + u (|w| + 127) (1 + u) (rounded up to 2 u (2 |w| + 128)); 1e-6 more covers the float64 work
        here. The margin over j coordinates is the norm of step times their sum."""
        w = (np.asarray(zq, np.float64) - self.mid) / self.step
        per = (self._half_step + self._abs * (norm_q + norm_x) + 8.0 * _U * 1.01 * norm_x + self._encode_err
               + self._w_step * np.abs(w))  # step * (code units): absolute
        margin = np.sqrt(np.concatenate([[0.0], np.cumsum(per * per)])) * (1.0 + 1e-6)
        return QueryCodes(torch.from_numpy(w.astype(np.float32)), w, self._step2, margin)

    def lower_bounds(self, qc: QueryCodes, codes: np.ndarray) -> np.ndarray:
        """float64 [m]: lower bounds of ||q - x_i|| from codes [m, r'] of the first r' coordinates of the x_i,
        in float64 (the reference of :meth:`partial` and :meth:`reach2`; an open row's bound is meaningless,
        see :meth:`encode`)."""
        r = codes.shape[1]
        t = (codes.astype(np.float64) - qc.w[:r].double().numpy()) * self.step[:r]
        return np.maximum(np.sqrt((t * t).sum(axis=1)) - qc.margin[r], 0.0) / self._stretch

    def box_bounds(self, qc: QueryCodes, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """float64 [m]: lower bounds of ||q - x|| for every x whose codes of the first r' coordinates lie in
        the box ``lo`` .. ``hi`` ([m, r'] float64, code units; an empty box is +inf .. -inf): each coordinate's
        distance from w to the box, times its step, bounds |step (w - c)| for every code c in it, so the
        same margin as :meth:`lower_bounds` applies (computed in float64: 1e-12 covers its rounding)."""
        r = lo.shape[1]
        w = qc.w64[:r]
        g = np.maximum(np.maximum(lo - w, w - hi), 0.0) * self.step[:r]
        return np.maximum(np.sqrt(np.einsum("ij,ij->i", g, g)) * (1.0 - 1e-12) - qc.margin[r], 0.0) / self._stretch

    def partial(self, qc: QueryCodes, codes: np.ndarray, first: int = 0) -> np.ndarray:
        """float32 [m]: ||step * (c - w)||^2 over codes [m, r'] (int8) of coordinates ``first`` ..
        ``first + r'``, as a search's hot path computes it (partial sums of disjoint coordinates add up):
        (c - w)^2 in torch, then one matrix-vector product with step^2 (a row sum over 16 columns is ~3x
        slower as a reduction)."""
        part = slice(first, first + codes.shape[1])
        t = torch.from_numpy(codes).float().sub_(qc.w[part])
        return t.mul_(t).numpy() @ qc.step2[part]

    def reach2(self, qc: QueryCodes, limit: np.ndarray, r: int) -> np.ndarray:
        """float64: the largest computed :meth:`partial` sum over the first ``r`` coordinates (one partial or
        the sum of two) of a row whose distance may be within ``limit`` (>= 0).

        lb = (||step (w - c)|| - margin[r]) / stretch <= limit  <=>  ||step (w - c)|| <= limit stretch +
        margin[r], and the computed sum is at most (1 + rel) ||step (w - c)||^2 (the float32 scaling, squares
        and sum of nonnegative terms; the difference's rounding is in the margin); 1e-12 covers this float64 product."""
        return np.square(limit * self._stretch + qc.margin[r]) * ((1.0 + self._rel) * (1.0 + 1e-12))
