"""Codebook at scale (issue 13): query latency incl. re-rank and gate, agreement with exact search, add_edit,
first query after an edit, load time and memory, for 10k / 100k / 1M keys.

Keys are real keys of the embedded default model: the vision feature v(image) of easy-vqa train images
(the model's own vision MLP input, as the editor computes it) concatenated with lambda * t(fact), the
MiniLM sentence embedding of a generated ShapeRules fact (rule sentences with the image's colour and
shape), lambda = 3 as in ``hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml``. N keys are N distinct
(image, fact) pairs. "random" keys are Gaussian with the real keys' per-dimension mean and std.

Queries (never stored):
* ``question``: a stored image with a ShapeRules *question* (what the editor embeds at answer time);
* ``stored``: an exact stored (image, fact) pair (must be found at distance 0 and accepted);
* ``random``: for random keys, fresh Gaussian keys from the same distribution.

Latencies are wall-clock p50/p95 and, next to them, the CPU time of the serving thread (``cpu_*``: what
the work costs when the machine is shared; wall time includes waiting for a core). Every query is answered
twice: by ``Retriever.search`` (IVF-bounded exact search + the paper's percentile gate,
``retrieval.gate: percentile``; the null-set gate needs edits with answer entries, which bulk keys are not)
and by the exact reference (every key scored, ``Codebook.scaled_topk(exact_scan=True)``, same tau); recall@5 and gate
agreement compare the two. Each size is built once (``Codebook.bulk``), saved with ``save_codebook``, and
served by a fresh process that loads it, so load time and RSS are those of a real reopen.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py \\
        --sizes 10000 100000 1000000 --out benchmarks/results/scale.json

Re-timing the current code on the keys of an earlier run (no rebuild; each codebook served by ``--repeat``
fresh processes, the row being the run of median question-query p50, every run kept under ``runs``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py --reuse --repeat 3 --kinds real \
        --sizes 10000 100000 1000000 --out benchmarks/results/scale_session7.json

(``--kinds real random --random-max 100000``: random keys defeat any exact pruning — every distance is
nearly the same — and an exact K-NN graph of 1M random keys is an O(N^2) build, so random stops at 100k.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_HPARAMS = HERE.parent / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------- data
def real_material(n_images: int, n_facts: int, n_questions: int, seed: int) -> dict[str, Any]:
    """Vision features of easy-vqa train images, MiniLM embeddings of generated facts and questions."""
    import torch

    from reasonedit_plugin.data import shaperules as sr
    from reasonedit_plugin.editor import ReasonEditor
    from reasonedit_plugin.hparams import ReasonEditHyperParams
    from reasonedit_plugin.records import load_image

    hp = ReasonEditHyperParams.from_hparams(str(DEFAULT_HPARAMS))
    editor = ReasonEditor.from_pretrained(hp.model_name, hp.to_config(), device="cpu")
    rng = random.Random(seed)
    catalogue = list(sr.image_catalogue("train"))
    rng.shuffle(catalogue)
    images = catalogue[:n_images]
    root = sr.easy_vqa_root()
    feats = []
    with torch.inference_mode():
        for s in range(0, len(images), 64):
            feats.append(editor.keys.vision([load_image(root / im.path) for im in images[s:s + 64]]))
    vision = torch.cat(feats).numpy().astype(np.float32)
    facts = sorted({sr.rule_sentence(p, key, value, form) for p in sr.PROPERTIES for key in p.keys()
                    for value in p.values for form in range(len(p.rule_forms))})
    rng.shuffle(facts)
    while len(facts) < n_facts:  # more facts than the rule world has: number the worlds
        facts += [f"In world {len(facts) // 1000 + 1}, {f[0].lower()}{f[1:]}" for f in facts[: n_facts - len(facts)]]
    facts = facts[:n_facts]
    questions = []
    for _ in range(n_questions):
        p = rng.choice(sr.PROPERTIES)
        info = rng.choice(images)
        template = rng.choice(p.questions + p.yes_no)
        questions.append((images.index(info), sr.format_question(template, info, rng.choice(p.values))))
    scale = float(editor.keys.scale)
    text = editor.text_encoder.encode(facts).numpy() * scale
    qtext = editor.text_encoder.encode([q for _, q in questions]).numpy() * scale
    return {"vision": vision, "facts": facts, "fact_emb": text.astype(np.float32),
            "question_img": np.array([i for i, _ in questions]), "question_emb": qtext.astype(np.float32),
            "scale": scale, "vision_dim": vision.shape[1], "text_dim": text.shape[1]}


def real_keys(mat: dict[str, Any], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N distinct (image, fact) pairs, as keys [N, D] and pair indices [N, 2]."""
    ni, nf = len(mat["vision"]), len(mat["facts"])
    if n > ni * nf:
        raise SystemExit(f"{n} keys need more than {ni} images x {nf} facts; raise --images/--facts.")
    rng = np.random.default_rng(seed)
    flat = rng.choice(ni * nf, size=n, replace=False)
    pairs = np.stack([flat // nf, flat % nf], axis=1)
    keys = np.concatenate([mat["vision"][pairs[:, 0]], mat["fact_emb"][pairs[:, 1]]], axis=1)
    return keys.astype(np.float32), pairs


def build_set(kind: str, n: int, mat: dict[str, Any], n_queries: int, n_adds: int, seed: int
              ) -> tuple[np.ndarray, list[str], dict[str, np.ndarray], np.ndarray]:
    """Keys, values, query sets and keys for later add_edit calls."""
    rng = np.random.default_rng(seed + 1)
    keys, pairs = real_keys(mat, n + n_adds, seed)
    if kind == "real":
        values = [mat["facts"][j] for j in pairs[:n, 1]]
        q_img = mat["question_img"][:n_queries]
        questions = np.concatenate([mat["vision"][q_img], mat["question_emb"][:n_queries]], axis=1)
        stored = keys[rng.choice(n, size=min(n_queries, n), replace=False)]
        queries = {"question": questions.astype(np.float32), "stored": stored}
        return keys[:n], values, queries, keys[n:]
    mean, std = keys.mean(0), keys.std(0)
    rand = (rng.standard_normal((n + n_adds + 2 * n_queries, keys.shape[1])) * std + mean).astype(np.float32)
    values = [f"random fact {i}" for i in range(n)]
    queries = {"random": rand[n + n_adds: n + n_adds + n_queries],
               "stored": rand[rng.choice(n, size=min(n_queries, n), replace=False)]}
    return rand[:n], values, queries, rand[n:n + n_adds]


# ---------------------------------------------------------------------------------------------- serve
def serve(path: str, queries_file: str, exact_queries: int) -> dict[str, Any]:
    """Run in a fresh process: load, measure RSS, answer queries both ways, then edit and query."""
    import torch

    from reasonedit_plugin.config import RetrievalConfig
    from reasonedit_plugin.retriever import Retriever
    from reasonedit_plugin.storage import load_codebook

    import faiss  # noqa: F401  (a library, loaded before the baseline so it is not counted as codebook memory)

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = np.load(queries_file)
    gc.collect()
    rss0 = rss_bytes()
    from reasonedit_plugin.config import CodebookConfig

    probe = os.environ.get("BENCH_GRAPH_PROBE")
    passes = max(1, int(os.environ.get("BENCH_PASSES", "1")))
    t = time.perf_counter()
    c = time.process_time()
    stored = load_codebook(path, codebook_config=CodebookConfig(merge=False,
                                                                graph_probe=int(probe) if probe else None))
    load_s = time.perf_counter() - t
    load_cpu_s = time.process_time() - c
    gc.collect()
    cb = stored.codebook
    rss_loaded = rss_bytes() - rss0
    raw_fp16 = len(cb) * cb.dim * 2
    retr = Retriever(cb, RetrievalConfig(cap_keys=5, gate="percentile"), seed=0)
    t = time.perf_counter()
    tau = retr.threshold()
    gate_init_s = time.perf_counter() - t
    out: dict[str, Any] = {"entries": len(cb), "dim": cb.dim, "load_s": load_s, "load_cpu_s": load_cpu_s,
                           "gate_init_s": gate_init_s,
                           "graph_probe": int(probe) if probe else None,
                           "rss_codebook_bytes": rss_loaded, "raw_fp16_key_bytes": raw_fp16,
                           "rss_ratio": rss_loaded / raw_fp16, "tau": tau, "queries": {}}
    for name in [k for k in data.files if k.startswith("q_")]:
        qs = torch.from_numpy(data[name])
        recall, order_equal, gate_equal, accepted = [], [], [], []
        # timed alone: the full scans of the reference would evict the search's working set
        results, (lat, cpu), (lat_min, cpu_min) = timed_passes(retr.search, qs, passes)
        for i, (q, res) in enumerate(zip(qs, results)):
            accepted.append(res.accepted)
            if i < exact_queries:
                exact = cb.scaled_topk(q, 5, exact_scan=True)
                ids = [e for _, _, e in exact]
                recall.append(len(set(ids) & set(res.entry_ids)) / len(ids))
                order_equal.append(ids == res.entry_ids)
                gate_equal.append((exact[0][0] <= tau) == res.accepted)
        out["queries"][name[2:]] = {
            "n": len(qs), "p50_ms": statistics.median(lat), "p95_ms": float(np.percentile(lat, 95)),
            "cpu_p50_ms": statistics.median(cpu), "cpu_p95_ms": float(np.percentile(cpu, 95)),
            "passes": passes, "p50_min_ms": statistics.median(lat_min), "cpu_p50_min_ms": statistics.median(cpu_min),
            "exact_compared": len(recall), "recall_at_5": float(np.mean(recall)) if recall else None,
            "order_identical": float(np.mean(order_equal)) if order_equal else None,
            "gate_agreement": float(np.mean(gate_equal)) if gate_equal else None,
            "accepted": float(np.mean(accepted))}
    # edits: add_edit, then the first query after it (sigma upkeep + gate sample + search), then the same
    # query again: the difference is what the edit costs the first query (the upkeep)
    probe = torch.from_numpy(data[[k for k in data.files if k.startswith("q_")][0]])
    out.update(edit_timings(cb, retr, data["adds"], probe, "reasoning", "bench-add"))
    gc.collect()
    out["rss_after_edits_ratio"] = (rss_bytes() - rss0) / raw_fp16
    # the null-set gate (the default gate): its tables are built on first use, then kept from the journal
    vision_dim = stored.setup.get("vision_dim")
    if vision_dim:
        removes = []
        for j in range(len(data["adds"])):  # the same keys come back as answer entries
            t = time.perf_counter()
            cb.remove_edit(f"bench-add-{j}")
            removes.append((time.perf_counter() - t) * 1e3)
        out["remove_edit_p50_ms"] = statistics.median(removes)
        out["remove_edit_p95_ms"] = float(np.percentile(removes, 95))
        # the shipped YAML's null-set settings (candidates, relative text test and its null questions)
        from reasonedit_plugin.hparams import ReasonEditHyperParams
        from reasonedit_plugin.text_encoder import shared_text_encoder

        shipped = ReasonEditHyperParams.from_hparams(str(DEFAULT_HPARAMS)).to_config().retrieval.nullset
        before_encoder = rss_bytes()
        encoder = shared_text_encoder()  # for the null questions; its weights are not the codebook's memory
        encoder.encode(["warm-up"])
        encoder_bytes = rss_bytes() - before_encoder
        null = Retriever(cb, RetrievalConfig(cap_keys=5, gate="nullset", nullset=shipped), seed=0,
                         vision_dim=int(vision_dim), encode_text=encoder.encode)
        row_cfg = {"candidates": shipped.candidates, "relative_text": shipped.relative_text}
        t = time.perf_counter()
        null.nullset.refresh()
        row: dict[str, Any] = {"gate_init_s": time.perf_counter() - t, **row_cfg}
        _, (lat, cpu), (lat_min, cpu_min) = timed_passes(null.search, probe, passes)
        row["query_p50_ms"] = statistics.median(lat)
        row["query_cpu_p50_ms"] = statistics.median(cpu)
        row.update(passes=passes, query_p50_min_ms=statistics.median(lat_min),
                   query_cpu_p50_min_ms=statistics.median(cpu_min))
        row.update(edit_timings(cb, null, data["adds"], probe, "answer", "bench-null-add"))
        gc.collect()
        row["rss_ratio_with_tables"] = (rss_bytes() - rss0 - encoder_bytes) / raw_fp16
        row["text_encoder_bytes_excluded"] = encoder_bytes
        out["nullset"] = row
    out["load_average"] = load_average()
    return out


def timed_passes(search: Any, queries: Any, passes: int) -> tuple[list[Any], tuple[list[float], list[float]],
                                                                tuple[list[float], list[float]]]:
    """Answer every query ``passes`` times (pass after pass): the first pass's answers, its wall and CPU ms
    per query (the benchmark's p50 since session 5), and per query the least of its passes (``--passes``:
    the code's cost with less of a shared machine's noise)."""
    results, lat, cpu = [], [[] for _ in queries], [[] for _ in queries]
    for p in range(passes):
        for i, q in enumerate(queries):
            c, t = time.thread_time(), time.perf_counter()
            res = search(q)
            lat[i].append((time.perf_counter() - t) * 1e3)
            cpu[i].append((time.thread_time() - c) * 1e3)
            if p == 0:
                results.append(res)
    return results, ([x[0] for x in lat], [x[0] for x in cpu]), ([min(x) for x in lat], [min(x) for x in cpu])


def edit_timings(cb: Any, retr: Any, adds: np.ndarray, probe: Any, kind: str, prefix: str) -> dict[str, float]:
    """add_edit, the first query after it and the same query once more (p50/p95, wall and CPU ms)."""
    import torch

    from reasonedit_plugin.codebook import PendingEntry

    adds_ms, firsts, again, adds_cpu, firsts_cpu, again_cpu = [], [], [], [], [], []
    for j, key in enumerate(torch.from_numpy(adds)):
        value = f"The answer to 'added question {j}' is {j}." if kind == "answer" else f"added fact {j}"
        c, t = time.thread_time(), time.perf_counter()
        cb.add_edit(f"{prefix}-{j}", [PendingEntry(kind, value, key, 0.5)])
        adds_ms.append((time.perf_counter() - t) * 1e3)
        adds_cpu.append((time.thread_time() - c) * 1e3)
        q = probe[j % len(probe)]
        c, t = time.thread_time(), time.perf_counter()
        retr.search(q)
        firsts.append((time.perf_counter() - t) * 1e3)
        firsts_cpu.append((time.thread_time() - c) * 1e3)
        c, t = time.thread_time(), time.perf_counter()
        retr.search(q)
        again.append((time.perf_counter() - t) * 1e3)
        again_cpu.append((time.thread_time() - c) * 1e3)
    upkeep = [f - a for f, a in zip(firsts, again)]
    upkeep_cpu = [f - a for f, a in zip(firsts_cpu, again_cpu)]
    return {"add_edit_p50_ms": statistics.median(adds_ms), "add_edit_p95_ms": float(np.percentile(adds_ms, 95)),
            "first_query_after_edit_p50_ms": statistics.median(firsts),
            "first_query_after_edit_p95_ms": float(np.percentile(firsts, 95)),
            "same_query_again_p50_ms": statistics.median(again),
            "first_query_upkeep_p50_ms": statistics.median(upkeep),
            "add_edit_cpu_p50_ms": statistics.median(adds_cpu),
            "first_query_after_edit_cpu_p50_ms": statistics.median(firsts_cpu),
            "first_query_upkeep_cpu_p50_ms": statistics.median(upkeep_cpu)}


# ---------------------------------------------------------------------------------------------- main
TARGETS = {"query_ms": {100_000: 2.0, 1_000_000: 15.0}, "edit_ms": {1_000_000: 5.0}, "load_s": {1_000_000: 30.0},
           "rss_ratio": {1_000_000: 1.5}}
"""Issue 13's targets on a 2-core machine (drawn as x markers)."""


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind in sorted({r["kind"] for r in results}):
        rows = [r for r in results if r["kind"] == kind]
        n = [r["entries"] for r in rows]
        for qname in rows[0]["queries"]:
            axes[0].plot(n, [r["queries"][qname]["p50_ms"] for r in rows], "o-", label=f"{kind}/{qname}")
        null = [(r["entries"], r["nullset"]["query_p50_ms"]) for r in rows if r.get("nullset")]
        if null:
            axes[0].plot(*zip(*null), "^-", label=f"{kind}/question, null-set gate")
        axes[1].plot(n, [r["add_edit_p50_ms"] for r in rows], "o-", label=f"{kind} add_edit")
        axes[1].plot(n, [r["first_query_upkeep_p50_ms"] for r in rows], "s--",
                     label=f"{kind} first query after an edit: upkeep")
        axes[2].plot(n, [r["load_s"] for r in rows], "o-", label=f"{kind} load (s)")
        axes[2].plot(n, [r["rss_ratio"] for r in rows], "s--", label=f"{kind} RSS / fp16 keys")
    for ax, names in zip(axes, (("query_ms",), ("edit_ms",), ("load_s", "rss_ratio"))):
        for name in names:
            xs, ys = zip(*TARGETS[name].items())
            ax.plot(xs, ys, "kx", markersize=8, label=f"target ({name})")
    for ax, title in zip(axes, ("query p50 incl. re-rank + gate (ms)", "edit p50 (ms)", "reopen")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entries")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000])
    ap.add_argument("--kinds", nargs="+", default=["real", "random"], choices=["real", "random"])
    ap.add_argument("--random-max", type=int, default=100000)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--facts", type=int, default=1100)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=200, help="queries also answered by a full scan")
    ap.add_argument("--exact-queries-1m", type=int, default=60)
    ap.add_argument("--adds", type=int, default=30)
    ap.add_argument("--exact-graph-max", type=int, default=100000,
                    help="above this many keys the bulk import builds an approximate K-NN graph (--graph-lists)")
    ap.add_argument("--graph-lists", type=int, default=16)
    ap.add_argument("--graph-probe", type=int, default=None,
                    help="codebook.graph_probe for the served codebooks above --exact-graph-max (edits keep an "
                         "approximate graph with bounded work); default: exact upkeep")
    ap.add_argument("--sigma-check", type=int, default=40, help="rows whose sigma is checked against exact K-NN")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_scale")
    ap.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    ap.add_argument("--reuse", action="store_true",
                    help="serve the codebooks already built in --workdir (from an earlier run of the same sizes) "
                         "instead of building them again: a re-timing of the current code on the same keys")
    ap.add_argument("--repeat", type=int, default=1,
                    help="serve each codebook this many times (fresh processes); the row is the run of median "
                         "question-query p50, every run's figures kept under 'runs'")
    ap.add_argument("--passes", type=int, default=1,
                    help="answer the timed queries this many times; p50_ms stays the first pass's, p50_min_ms "
                         "is the median over queries of each query's fastest pass")
    ap.add_argument("--serve", nargs=3, metavar=("PATH", "QUERIES", "EXACT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        print(json.dumps(serve(args.serve[0], args.serve[1], int(args.serve[2]))))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    cache = work / f"material-{args.images}-{args.facts}-{args.queries}-{args.seed}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        mat = {k: z[k] for k in z.files if k != "facts"}
        mat.update(facts=[str(f) for f in z["facts"]], scale=float(z["scale"]), vision_dim=int(z["vision_dim"]),
                   text_dim=int(z["text_dim"]))
    else:
        mat = real_material(args.images, args.facts, args.queries, args.seed)
        np.savez(cache, **{k: np.asarray(v) for k, v in mat.items()})
    print(f"material: {len(mat['vision'])} images x {len(mat['facts'])} facts, dim "
          f"{mat['vision_dim']}+{mat['text_dim']} ({time.perf_counter() - t:.0f} s)", flush=True)
    setup = {"model_type": "qwen2_vl", "model_fingerprint": "bench", "vision_module": "bench", "scale": mat["scale"],
             "text_encoder": "minilm:bench", "vision_dim": mat["vision_dim"], "text_dim": mat["text_dim"]}
    out_path = Path(args.out)
    results: list[dict[str, Any]] = json.loads(out_path.read_text())["results"] if out_path.is_file() else []
    for kind in args.kinds:
        for n in args.sizes:
            if kind == "random" and n > args.random_max:
                continue
            path = work / f"{kind}-{n}"
            qfile = work / f"{kind}-{n}-queries.npz"
            lists = None if n <= args.exact_graph_max else args.graph_lists
            load_before = load_average()
            if args.reuse:
                if not (path.is_dir() and qfile.is_file()):
                    raise SystemExit(f"--reuse: {path} or {qfile} is missing; run once without --reuse.")
                graph: dict[str, Any] = {"graph": "as built by the earlier run", "reused": True}
                build_s = save_s = None
            else:
                build_s, save_s, graph = build(kind, n, mat, args, lists, path, qfile, setup)
            exact = args.exact_queries if n < 1_000_000 else args.exact_queries_1m
            env = dict(os.environ)
            if args.graph_probe and lists is not None:
                env["BENCH_GRAPH_PROBE"] = str(args.graph_probe)
            env["BENCH_PASSES"] = str(args.passes)
            runs = []
            for _ in range(max(1, args.repeat)):
                proc = subprocess.run([sys.executable, __file__, "--serve", str(path), str(qfile), str(exact)],
                                      capture_output=True, text=True, check=False, env=env)
                if proc.returncode:
                    raise SystemExit(f"serve {kind}-{n} failed:\n{proc.stderr[-3000:]}")
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            first_q = next(iter(runs[0]["queries"]))
            runs_sorted = sorted(runs, key=lambda r: r["queries"][first_q]["p50_ms"])
            row = dict(runs_sorted[len(runs_sorted) // 2])
            if len(runs) > 1:
                row["runs"] = [{k: v for k, v in r.items()} for r in runs]
            row.update(graph, kind=kind, build_s=build_s, save_s=save_s, load_average_before=load_before,
                       threads=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
            results = [r for r in results if (r["kind"], r["entries"]) != (kind, n)] + [row]
            results.sort(key=lambda r: (r["kind"], r["entries"]))
            print(json.dumps({k: v for k, v in row.items() if k not in ("queries", "runs")}), flush=True)
            print(json.dumps(row["queries"]), flush=True)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps({"command": " ".join(["benchmarks/bench_scale.py"] + (argv or sys.argv[1:])),
                                            "results": results}, indent=1))
            plot(results, out_path.with_suffix(".png"))


def build(kind: str, n: int, mat: dict[str, Any], args: argparse.Namespace, lists: int | None, path: Path,
          qfile: Path, setup: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """Build one codebook of ``n`` keys, check sigma of an approximate graph, save it and its queries."""
    from reasonedit_plugin.codebook import Codebook
    from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
    from reasonedit_plugin.storage import save_codebook

    keys, values, queries, adds = build_set(kind, n, mat, args.queries, args.adds, args.seed)
    t = time.perf_counter()
    cb = Codebook.bulk(keys, values, [f"e{i}" for i in range(n)], 0.5,
                       config=CodebookConfig(merge=False), retrieval=RetrievalConfig(cap_keys=5, gate="percentile"),
                       graph_lists=lists)
    build_s = time.perf_counter() - t
    graph = {"graph": "exact" if lists is None else f"approximate ({lists} IVF lists per block)"}
    if lists is not None:  # how far sigma from the approximate graph is from the exact one
        store = cb.store
        ids = np.random.default_rng(args.seed).choice(n, size=min(args.sigma_check, n), replace=False)
        rows = store.rows(ids)  # by entry id: the store orders its rows by IVF list
        got = store.column("sigma")[rows]
        want = np.array([float(np.median(store.search(store.vectors(np.array([r]))[0], cb._graph.k,
                                                           scaled=False, exclude=int(r)).distances
                                        .astype(np.float64))) for r in rows])
        rel = np.abs(got - want) / want
        graph.update(sigma_checked=len(rows), sigma_exact_fraction=float(np.mean(rel < 1e-6)),
                     sigma_rel_err_median=float(np.median(rel)), sigma_rel_err_max=float(rel.max()))
    t = time.perf_counter()
    save_codebook(path, cb, setup)
    save_s = time.perf_counter() - t
    del cb, keys
    gc.collect()
    np.savez(qfile, adds=adds, **{f"q_{k}": v for k, v in queries.items()})
    return build_s, save_s, graph


if __name__ == "__main__":
    main()
