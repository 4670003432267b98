"""Paired A/B of the codebook search between two versions of the code, in one process (issue 13).

On a shared machine the same code's query p50 moved by 20-30 % from one process to the next (session 22),
more than most changes to the search. This answers each benchmark query with both versions in turn (the
order alternating query by query), each version serving its own copy of the same saved codebook, so both
see the same machine at the same moment; per query the fastest of ``--passes`` passes (and the first pass,
where caches fill, separately), then the median over queries and the median of per-query ratios. The
answers (entry ids, gate decision, reason) are compared on the first 50 queries.

    git worktree add /tmp/before <commit>
    OMP_NUM_THREADS=1 python benchmarks/ab_search.py --before /tmp/before --codebook /tmp/bench_scale/real-100000

``--codebook`` is a folder ``bench_scale.py`` built (its queries file next to it, ``<folder>-queries.npz``).
The "before" package is imported under another name from a temporary copy (its imports are relative).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_HPARAMS = HERE.parent / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


def retrievers(package: str, codebook: str, gates: list[str]) -> dict[str, Any]:
    """One codebook loaded by ``package`` and a retriever per gate on it (the null-set gate with the shipped
    YAML's settings, its tables built)."""
    storage = importlib.import_module(f"{package}.storage")
    config = importlib.import_module(f"{package}.config")
    retriever = importlib.import_module(f"{package}.retriever")
    hparams = importlib.import_module(f"{package}.hparams")
    text_encoder = importlib.import_module(f"{package}.text_encoder")
    stored = storage.load_codebook(codebook, codebook_config=config.CodebookConfig(merge=False, graph_probe=2))
    out = {}
    for gate in gates:
        if gate == "nullset":
            nullset = hparams.ReasonEditHyperParams.from_hparams(str(DEFAULT_HPARAMS)).to_config().retrieval.nullset
            r = retriever.Retriever(stored.codebook,
                                    config.RetrievalConfig(cap_keys=5, gate="nullset", nullset=nullset), seed=0,
                                    vision_dim=int(stored.setup["vision_dim"]),
                                    encode_text=text_encoder.shared_text_encoder().encode)
            r.nullset.refresh()
        else:
            r = retriever.Retriever(stored.codebook, config.RetrievalConfig(cap_keys=5, gate="percentile"), seed=0)
            r.threshold()
        out[gate] = r
    return out


def paired(before: Any, after: Any, queries: Any, passes: int) -> dict[str, float]:
    """CPU ms per query of both, alternating which goes first; medians over queries."""
    cpu: dict[str, list[list[float]]] = {"before": [[] for _ in queries], "after": [[] for _ in queries]}
    for p in range(passes):
        for i, q in enumerate(queries):
            pair = (("before", before), ("after", after))
            for name, r in (pair if (p + i) % 2 else pair[::-1]):
                c = time.thread_time()
                r.search(q)
                cpu[name][i].append((time.thread_time() - c) * 1e3)
    best = {k: [min(x) for x in v] for k, v in cpu.items()}
    first = {k: [x[0] for x in v] for k, v in cpu.items()}
    return {"before_p50_ms": statistics.median(best["before"]), "after_p50_ms": statistics.median(best["after"]),
            "median_ratio": statistics.median(b / a for a, b in zip(best["before"], best["after"])),
            "first_pass_before_p50_ms": statistics.median(first["before"]),
            "first_pass_after_p50_ms": statistics.median(first["after"]),
            "first_pass_median_ratio": statistics.median(b / a for a, b in zip(first["before"], first["after"]))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="a checkout of the code to compare with (holds reasonedit_plugin/)")
    ap.add_argument("--codebook", required=True, help="a codebook folder built by bench_scale.py")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--gates", nargs="+", default=["percentile", "nullset"], choices=["percentile", "nullset"])
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    source = Path(args.before) / "reasonedit_plugin"
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"--before {args.before}: no reasonedit_plugin package there.")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(source, Path(tmp) / "reasonedit_plugin_before")
        sys.path.insert(0, tmp)
        before = retrievers("reasonedit_plugin_before", args.codebook, args.gates)
        after = retrievers("reasonedit_plugin", args.codebook, args.gates)
        data = np.load(f"{args.codebook.rstrip('/')}-queries.npz")
        for kind in [k for k in data.files if k.startswith("q_")]:
            queries = torch.from_numpy(data[kind])
            for gate in args.gates:
                for q in queries[:50]:
                    a, b = before[gate].search(q), after[gate].search(q)
                    if (a.entry_ids, a.accepted, a.reason) != (b.entry_ids, b.accepted, b.reason):
                        raise SystemExit(f"{kind} {gate}: the answers differ ({a.entry_ids} vs {b.entry_ids})")
                row = paired(before[gate], after[gate], queries, args.passes)
                print(f"{kind[2:]:9s} {gate:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
