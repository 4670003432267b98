"""A codebook on Milvus (milvus-lite) next to the in-process default (issue 13 item 5).

One codebook of N real keys (the embedded model's vision features of easy-vqa images x MiniLM embeddings
of ShapeRules facts, as in ``bench_scale.py``) is built once (``Codebook.bulk``) and served two ways:
``retrieval.backend: faiss`` (in-process key store) and ``retrieval.backend: milvus`` (the same entries
written to a milvus-lite collection; queries take Milvus's L2 candidates and ReasonEdit re-ranks them).
Reported: the upload of N entries, a reconnect (a second process's codebook attaching to the filled
collection: it reads sigma and edit ids back to check them), the scaled top-k query p50/p90 on both
backends and whether every answer is identical (ids, order, distances, scores), and add_edit p50 on both
(the Milvus one writes the new entry and every entry whose sigma changed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_milvus.py --n 10000 \\
        --out benchmarks/results/milvus.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scale import build_set, load_average, real_material  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def percentiles_ms(times: list[float]) -> dict[str, float]:
    ms = sorted(1000 * t for t in times)
    return {"p50": round(statistics.median(ms), 3), "p90": round(ms[int(0.9 * (len(ms) - 1))], 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--facts", type=int, default=100)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--adds", type=int, default=20)
    ap.add_argument("--k", type=int, default=5, help="entries per query (the paper's cap)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_milvus")
    ap.add_argument("--out", default=str(HERE / "results" / "milvus.json"))
    args = ap.parse_args(argv)

    import milvus_lite
    import pymilvus

    from reasonedit_plugin.codebook import Codebook, PendingEntry
    from reasonedit_plugin.codebook_state import export_state, from_state
    from reasonedit_plugin.config import RetrievalConfig

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_start = load_average()
    mat = real_material(args.images, args.facts, args.queries, args.seed)
    keys, values, queries, adds = build_set("real", args.n, mat, args.queries, args.adds, args.seed)
    n = len(keys)
    print(f"{n} keys of dim {keys.shape[1]}; building the codebook", flush=True)
    faiss_cfg = RetrievalConfig(backend="faiss")
    local, t_build = timed(lambda: Codebook.bulk(keys, values, [f"e{i}" for i in range(n)], 0.5,
                                                 retrieval=faiss_cfg))
    arrays, table = export_state(local)
    milvus_section = {"uri": str(work / "codebook.db"), "collection": "bench"}
    milvus_cfg = RetrievalConfig(backend="milvus", milvus=milvus_section)
    served, t_upload = timed(lambda: from_state(arrays, table, retrieval=milvus_cfg))
    replica_cfg = RetrievalConfig(backend="milvus", milvus={**milvus_section, "read_only": True})
    replica, t_reconnect = timed(lambda: from_state(arrays, table, retrieval=replica_cfg))
    print(f"build {t_build:.1f} s, upload {t_upload:.1f} s, reconnect {t_reconnect:.1f} s", flush=True)

    qs = np.concatenate([queries["question"], queries["stored"]])
    times: dict[str, list[float]] = {"faiss": [], "milvus": []}
    same = 0
    candidates = []
    raw = []  # one Milvus search of 64 candidates alone (the round trip to milvus-lite), without the re-rank
    for q in torch.from_numpy(qs):
        a, ta = timed(lambda: local.scaled_topk(q, args.k))
        b, tb = timed(lambda: replica.scaled_topk(q, args.k))
        times["faiss"].append(ta)
        times["milvus"].append(tb)
        same += a == b
        rq = replica.store.round(q.numpy())
        candidates.append(replica.search_backend.search(replica, rq, args.k, True).scored)
        raw.append(timed(lambda: replica.search_backend.index.raw_search(rq[None], 64))[1])
    add_times: dict[str, list[float]] = {"faiss": [], "milvus": []}
    for i, key in enumerate(torch.from_numpy(adds)):
        for name, book in (("faiss", local), ("milvus", served)):
            pending = [PendingEntry("reasoning", f"added fact {i}", key, 0.5)]
            _, t = timed(lambda: book.add_edit(f"add{i}", pending))
            add_times[name].append(t)
    after = sum(local.scaled_topk(q, args.k) == served.scaled_topk(q, args.k) for q in torch.from_numpy(qs))
    result = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_milvus.py " + " ".join(argv or sys.argv[1:]),
        "keys": n, "dim": int(keys.shape[1]), "k": args.k, "queries": len(qs), "adds": len(adds),
        "pymilvus": pymilvus.__version__, "milvus_lite": getattr(milvus_lite, "__version__", "?"),
        "milvus_index": "FLAT (exact L2 candidates)",
        "build_bulk_s": round(t_build, 2), "upload_s": round(t_upload, 2), "reconnect_s": round(t_reconnect, 2),
        "query_ms": {name: percentiles_ms(t) for name, t in times.items()},
        "identical_answers": f"{same}/{len(qs)}",
        "milvus_candidates_per_query": {"p50": int(np.median(candidates)), "max": int(max(candidates))},
        "milvus_search_call_64_ms": percentiles_ms(raw),
        "add_edit_ms": {name: percentiles_ms(t) for name, t in add_times.items()},
        "identical_answers_after_adds": f"{after}/{len(qs)}",
        "load_average_start": load_start, "load_average_end": load_average(), "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for book in (served, replica):
        book.search_backend.close()


if __name__ == "__main__":
    main()
