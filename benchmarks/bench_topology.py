"""Time the topology-balance sweeps (METHOD.md §5) and compare with networkx.

    python benchmarks/bench_topology.py [--threads N] [--calibration 100]

Rows: the paper's full AutoScaler sweep (41 λ × n=10 × 10 runs), AutoLayer over 12 layers
(n=20 × 10 runs), one Q pair at n=30 by the structured closed form, by the generic closed form on
the explicit 900-node graph, and by networkx's ``community.modularity`` on that graph.
Features are random (timing does not depend on their content).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from reasonedit_plugin import topology as topo
from reasonedit_plugin.config import TopologyConfig


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--calibration", type=int, default=100, help="calibration samples N")
    parser.add_argument("--vision-dim", type=int, default=1024)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-networkx", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    text = torch.randn(args.calibration, args.text_dim, generator=g)
    layers = {f"blocks.{i}.mlp.fc1": torch.randn(args.calibration, args.vision_dim, generator=g) * (1 + i)
              for i in range(12)}
    vision = layers["blocks.0.mlp.fc1"]
    cfg = TopologyConfig()  # paper: 41 λ in logspace(-1, 2), n=10 (λ) / n=20 (layer), 10 runs

    rows: list[tuple[str, float]] = []
    rows.append(("AutoScaler: 41 λ × n=10 × 10 runs", timed(lambda: topo.auto_scale(vision, text, cfg, 0), args.repeat)))
    rows.append(("AutoLayer: 12 layers × n=20 × 10 runs",
                 timed(lambda: topo.auto_layer(layers, text, 30.0, cfg, 0), args.repeat)))
    rows.append(("one (V-Q, L-Q) at n=30, structured closed form",
                 timed(lambda: topo.balance_from_embeddings(vision[:30], text[:30], 30.0), args.repeat)))
    w, by_image, by_text = topo._pair_graph(vision[:30], text[:30], 30.0)
    rows.append(("one (V-Q, L-Q) at n=30, generic closed form on the 900-node graph",
                 timed(lambda: (topo.modularity_closed_form(w, by_image), topo.modularity_closed_form(w, by_text)),
                       args.repeat)))
    if not args.skip_networkx:
        import networkx as nx
        from networkx.algorithms.community import modularity

        start = time.perf_counter()
        graph = nx.from_numpy_array(w.numpy())
        rows.append(("networkx: build the 900-node complete graph (n=30)", time.perf_counter() - start))
        communities = [set(torch.nonzero(by_image == c).flatten().tolist()) for c in range(30)]
        start = time.perf_counter()
        q_nx = modularity(graph, communities, weight="weight")
        rows.append(("networkx: one Q at n=30 (community.modularity)", time.perf_counter() - start))
        q_ours = topo.balance_from_embeddings(vision[:30], text[:30], 30.0).vision_q
        print(f"check: Vision-Q networkx {q_nx:.10f}  ours {q_ours:.10f}")

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, N={args.calibration}, "
          f"Dv={args.vision_dim}, Dt={args.text_dim} (best of {args.repeat})")
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:9.4f}")


if __name__ == "__main__":
    main()
