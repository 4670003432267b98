"""Query latency of the index backends (METHOD.md §4; summaries claim < 15 ms per codebook lookup).

    python benchmarks/bench_index.py [--sizes 1000 10000 100000] [--dim 1000] [--k 5] [--threads N]

For each backend and number of keys: time to add all keys, latency of one query (batch of 1,
median of ``--queries`` calls) and per-query time in a batch of 64. Keys are random Gaussian
float32; queries are perturbed keys, so each has a clear nearest neighbour.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np
import torch

from reasonedit_plugin.index import MissingDependencyError, make_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--queries", type=int, default=30, help="single-query calls timed per cell")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backends", nargs="+", default=["torch", "faiss"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        keys = rng.standard_normal((n, args.dim), dtype=np.float32)
        ids = np.arange(n, dtype=np.int64)
        pick = rng.integers(0, n, max(args.queries, args.batch))
        queries = keys[pick] + 0.01 * rng.standard_normal((pick.size, args.dim), dtype=np.float32)
        for backend in args.backends:
            try:
                index = make_index(backend, args.dim)
            except MissingDependencyError as exc:
                print(f"skip {backend}: {exc}")
                continue
            start = time.perf_counter()
            index.add(ids, keys)
            add_s = time.perf_counter() - start
            index.search(queries[:1], args.k)  # warm-up
            single = []
            for q in range(args.queries):
                start = time.perf_counter()
                res = index.search(queries[q : q + 1], args.k)
                single.append(time.perf_counter() - start)
                assert res.ids[0, 0] == pick[q], "nearest neighbour of a perturbed key must be that key"
            start = time.perf_counter()
            index.search(queries[: args.batch], args.k)
            batch_s = (time.perf_counter() - start) / args.batch
            rows.append((backend, n, add_s, statistics.median(single), batch_s))
            del index
            gc.collect()
        del keys

    print(f"dim={args.dim}, k={args.k}, torch threads {torch.get_num_threads()}; times in ms")
    print(f"{'backend':<8} {'keys':>8} {'add all':>10} {'1 query':>10} {'per query, batch ' + str(args.batch):>22}")
    for backend, n, add_s, one_s, batch_s in rows:
        print(f"{backend:<8} {n:>8} {add_s * 1e3:>10.1f} {one_s * 1e3:>10.2f} {batch_s * 1e3:>22.2f}")


if __name__ == "__main__":
    main()
