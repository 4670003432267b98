"""Codebook growth: cost of one edit and of one query as the codebook grows, against the reference's
from-scratch recomputation of sigma (full N x N distances) after every edit.

    .venv/bin/python benchmarks/bench_codebook.py --sizes 1000 5000 20000 --dim 1152 --backend torch
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.retriever import Retriever


def reference_sigma(keys: torch.Tensor, k: int = 30) -> torch.Tensor:
    """What the reference recomputes after each edit: full distance matrix, k nearest, median."""
    d = torch.cdist(keys, keys)
    d.fill_diagonal_(float("inf"))
    near = d.topk(min(k, len(keys) - 1), largest=False).values
    return near.median(dim=1).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--dim", type=int, default=1152)
    ap.add_argument("--backend", default="torch", choices=["torch", "faiss"])
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"backend={args.backend} dim={args.dim} threads={torch.get_num_threads()}")
    print("| keys | add one edit (ms) | query incl. gate (ms, p50) | reference sigma recompute (ms) |")
    print("|---:|---:|---:|---:|")
    for n in args.sizes:
        keys = torch.randn(n + 5, args.dim)
        cb = Codebook(args.dim, CodebookConfig(merge=False), RetrievalConfig(backend=args.backend))
        for i in range(n):  # bulk fill through the same path users take
            cb.add_edit(f"e{i}", [PendingEntry("reasoning", f"v{i}", keys[i], 0.1)])
        retriever = Retriever(cb)
        retriever.threshold()
        t = time.perf_counter()
        for j in range(5):
            cb.add_edit(f"new{j}", [PendingEntry("reasoning", "x", keys[n + j], 0.1)])
        add_ms = (time.perf_counter() - t) / 5 * 1e3
        retriever.threshold()  # the gate is recomputed once after the edits, not per query
        lat = []
        for q in torch.randn(args.queries, args.dim):
            t = time.perf_counter()
            retriever.search(q)
            lat.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        reference_sigma(cb.keys())
        ref_ms = (time.perf_counter() - t) * 1e3
        print(f"| {n} | {add_ms:.1f} | {statistics.median(lat):.2f} | {ref_ms:.0f} |")


if __name__ == "__main__":
    main()
