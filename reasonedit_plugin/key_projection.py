"""A proven lower bound of key distances from a low-dimensional projection (the key store's screen).

For a matrix P with orthonormal columns, ||P^T (q - x)|| <= ||q - x||: the distance between two projected
keys never exceeds the distance between the keys. With P = the top principal directions of the IVF
centroids (a deterministic function of the partition, so nothing extra is saved), 32 numbers per key
separate clustered keys almost as well as the full key: on the real 100k benchmark keys a query's exact
top-5 leaves a few dozen rows (median) whose projected bound does not rule them out, where the
triangle bound of the IVF lists leaves tens of thousands to screen at full dimension.

The bound is computed in float32; every rounding step is accounted for (``KeyProjection.lower_bounds``),
so a row is only ever skipped when its true distance is provably larger. Pruning power depends on the
data; exactness does not.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PROJ_DIM = 32
"""Projected dimensions kept per key (stored as float16: 64 bytes a key next to 2 * D bytes of float16 key;
the half-precision rounding of a stored projection is part of the bound's margin)."""

_U = 2.0 ** -24  # float32 unit roundoff
_U16 = 2.0 ** -11  # float16 unit roundoff (stored projections)


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of an n-term float32 dot product."""
    return n * _U / (1.0 - n * _U)


class KeyProjection:
    """An orthonormal basis [D, r] (float32) and the rounding margins of bounds computed with it."""

    def __init__(self, basis: np.ndarray):
        self.basis = np.ascontiguousarray(basis, np.float32)
        dim, r = self.basis.shape
        # ||P32||_2 <= ||P64||_2 + ||P32 - P64||_F <= 1 + 1e-12 + u sqrt(r)  (orthonormal P64, one rounding each)
        self._stretch = 1.0 + 1e-12 + _U * math.sqrt(r)
        # |fl(p . x) - p . x| <= gamma_D ||p|| ||x|| per projected coordinate, r of them
        self._abs = math.sqrt(r) * _gamma(dim + 1) * self._stretch * (1.0 + 1e-6)
        # the stored projection rounded to float16: off by at most u16 |z| <= u16 stretch (1 + abs) ||x||
        self._abs_x = self._abs + _U16 * self._stretch * (1.0 + self._abs) * (1.0 + 1e-6)
        self._tiny = math.sqrt(r) * 2.0 ** -25  # ... or by half the smallest float16 step (subnormals)
        # the float32 difference, squares, r-term sum and square root of the projected vectors
        self._rel = _gamma(2 * r + 8)

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
        """float32 [m, r] projections of float32 keys [m, D] (the key store keeps them as float16)."""
        return np.asarray(x, np.float32) @ self.basis

    def lower_bounds(self, zq: np.ndarray, z: np.ndarray | torch.Tensor, norm_q: float,
                     norm_x: np.ndarray | float) -> np.ndarray:
        """float64 [m]: lower bounds of ||q - x_i|| from the computed projection ``zq`` [r] of q (float32)
        and the stored projections ``z`` [m, r] of the x_i (float16 values; a float32 tensor is
        overwritten), and upper bounds of the norms ||q|| and ||x_i|| (for the rounding margins; one bound
        for all x_i will do). A projection that overflowed float16 gives the trivial bound 0. The reference
        of :meth:`within`, which a search calls instead."""
        diff = z if isinstance(z, torch.Tensor) else torch.from_numpy(np.array(z, np.float32))
        c = _projected_distances(zq, diff).astype(np.float64)
        lb = c / (1.0 + self._rel) - self._abs * norm_q - self._abs_x * norm_x - self._tiny
        return np.where(np.isfinite(lb), np.maximum(lb, 0.0), 0.0) / self._stretch

    def within(self, zq: np.ndarray, z: torch.Tensor, norm_q: float, norm_x: float, limit: np.ndarray) -> np.ndarray:
        """bool [m]: which rows the projected bound cannot put beyond ``limit`` (``lower_bounds(...) <=
        limit``, a search's hot path): the bound's margins moved to the other side, so the projected
        distances are compared as computed (float32 ``z`` is overwritten). ``limit`` >= 0; a row whose
        projection overflowed float16 is always kept."""
        c = _projected_distances(zq, z)
        # lb <= limit  <=>  c <= (limit * stretch + margins) (1 + rel); a relative 1e-12 covers this float64 sum
        reach = (limit * self._stretch + (self._abs * norm_q + self._abs_x * norm_x + self._tiny)) \
            * ((1.0 + self._rel) * (1.0 + 1e-12))
        return (c <= reach) | ~np.isfinite(c)


def _projected_distances(zq: np.ndarray, z: torch.Tensor) -> np.ndarray:
    """float32 [m]: ||z_i - zq||, computed in float32 as the bounds' rounding margins assume (``z`` is
    overwritten)."""
    z.sub_(torch.from_numpy(np.asarray(zq, np.float32)))
    return z.mul_(z).sum(dim=1).sqrt_().numpy()
