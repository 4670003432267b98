"""The key store's bulk K-NN pass (``KeyStore.knn_all``): every row's nearest other rows, block-wise.

The rows of one IVF list are compared with the lists the triangle bound cannot rule out, screened by
float32 matrix products with a proven rounding margin, then re-ranked by exact differences; a row whose
screen is not conclusive falls back to a single exact search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .keystore import _TOL, KeyStore


def knn_all(store: "KeyStore", k: int, progress: Any = None, max_lists: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """See :meth:`KeyStore.knn_all`."""
    n = store.n
    kk = min(k, n - 1)
    ids_out = np.full((n, max(kk, 0)), -1, np.int64)
    d_out = np.zeros((n, max(kk, 0)), np.float32)
    if kk <= 0:
        return ids_out, d_out

    def single(row: int) -> None:
        hits = store.search(store.vectors(np.array([row]))[0], kk, scaled=False, exclude=row)
        ids_out[row], d_out[row] = hits.ids, hits.distances

    if store.centroids is None:
        for row in range(n):
            single(row)
            if progress is not None:
                progress(1)
        return ids_out, d_out
    sqn = store._columns["sqn"]
    e_max = store._margin * float(sqn[:n].max())
    cent = torch.from_numpy(store.centroids)
    csq = (cent * cent).sum(1).numpy()
    k2 = min(kk + 8, n - 1)
    for c in range(len(store._ivf)):
        rows = store._ivf.rows_of(c)
        m = len(rows)
        if not m:
            continue
        q = store._fp32(rows)
        qsq = sqn[rows]
        d2c = qsq[:, None] + csq[None, :] - 2.0 * (q @ cent.T).numpy()
        dlo = np.sqrt(np.maximum(d2c - store._margin * (qsq[:, None] + csq[None, :]), 0.0))
        lbq = dlo - store._list_rmax[None, :] - _TOL * (dlo + store._list_rmax[None, :])
        lbq[:, store._list_len == 0] = np.inf
        block_lb = lbq.min(axis=0)
        best_d2 = np.full((m, k2), np.inf, np.float32)
        best_rows = np.full((m, k2), -1, np.int64)
        ub = np.full(m, np.inf)
        for visited, c2 in enumerate(np.argsort(block_lb, kind="stable")):
            if block_lb[c2] > ub.max() or (max_lists is not None and visited >= max_lists):
                break
            if not (lbq[:, c2] <= ub).any():
                continue
            rows2 = store._ivf.rows_of(c2)
            d2 = qsq[:, None] + sqn[rows2][None, :] - 2.0 * (q @ store._fp32(rows2).T).numpy()
            if c2 == c:
                np.fill_diagonal(d2, np.inf)  # a row is not its own neighbour
            cat_d = np.concatenate([best_d2, d2.astype(np.float32)], axis=1)
            cat_r = np.concatenate([best_rows, np.broadcast_to(rows2, d2.shape)], axis=1)
            keep = np.argpartition(cat_d, k2 - 1, axis=1)[:, :k2]
            best_d2 = np.take_along_axis(cat_d, keep, 1)
            best_rows = np.take_along_axis(cat_r, keep, 1)
            kth = np.partition(best_d2, kk - 1, axis=1)[:, kk - 1].astype(np.float64)
            ub = np.sqrt(np.maximum(kth + store._margin * qsq + e_max, 0.0)) * (1 + _TOL)
        # exact re-rank of the k2 screened candidates
        # (slots no visited list filled, possible when ``max_lists`` stops early, stay -1 and sort last)
        filled = best_rows >= 0
        cand = store._fp32(np.where(filled, best_rows, 0).reshape(-1)).reshape(m, k2, -1)
        cand.sub_(q[:, None, :])
        exact = np.where(filled, cand.mul_(cand).sum(dim=2).sqrt_().numpy(), np.float32(np.inf))
        cid = np.where(filled, store._ids[np.where(filled, best_rows, 0)], np.iinfo(np.int64).max)
        order = np.lexsort((cid, exact), axis=-1)[:, :kk]
        ids_out[rows] = np.take_along_axis(cid, order, 1)
        d_out[rows] = np.take_along_axis(exact, order, 1)
        # conclusive when every candidate left out is provably farther than the k-th
        lo_out = np.sqrt(np.maximum(best_d2.max(axis=1).astype(np.float64) - store._margin * qsq - e_max, 0.0))
        doubtful = (lo_out <= d_out[rows, kk - 1].astype(np.float64) * (1 + _TOL)) & (k2 < n - 1)
        if max_lists is not None:  # approximate by request, but never short of k neighbours
            doubtful = ~np.isfinite(d_out[rows, kk - 1])
        for row in rows[doubtful].tolist():
            single(row)
        if progress is not None:
            progress(m)
    return ids_out, d_out
