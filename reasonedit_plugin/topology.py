"""Topology balance: modularity diagnostics, AutoLayer and AutoScaler (METHOD.md §5).

The key E(image, text) = [v(image); λ·t(text)] should let both modalities matter. On a calibration
set of n (image, question) samples, build the complete weighted graph whose nodes are all n×n pairs
(I_i, T_j), with edge weights w = (d_max − d) / (d_max − d_min) from the L2 distances of their keys
(global min–max over distinct nodes, no self loops, no sparsification). Newman modularity of the
partition by image is the Vision-Q, of the partition by text the Language-Q; the balance score is
their harmonic mean 2VL/(V+L), 0 when either is <= 0.

Speed comes from structure: the squared distance between nodes (i, j) and (k, l) is
``|v_i − v_k|² + λ²|t_j − t_l|²``, and every edge weight is affine in the distance, so both Q values
reduce to sums over the 4-D view ``d[i, j, k, l]`` broadcast from two n×n matrices: the n²×n² graph
is never built, nothing loops over nodes, and a whole sweep (all λ × all seeded runs) is one batched
tensor expression (see :func:`_balance_batch`). The explicit graph (:func:`_pair_graph`) is kept for
tests against ``modularity_closed_form`` and networkx.

Functions take precomputed features; :func:`calibrate` is a thin convenience that gets them from a
``VLM`` (``vlm.py``) and a ``TextEncoder``. :func:`no_balance` is the "no topology balance" ablation:
layer and λ stay fixed and only their diagnostic Q values are reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .config import TopologyConfig
from .errors import ConfigError, ReasonEditError
from .plots import new_figure, save_figure

logger = logging.getLogger(__name__)

DEFAULT_SCALE = 30.0
"""λ used when none is known (METHOD.md §3), e.g. for the AutoLayer pass before AutoScaler."""

__all__ = [
    "modularity_closed_form",
    "modularity",
    "balance_score",
    "BalanceResult",
    "balance_from_embeddings",
    "BalancePoint",
    "ScaleSweep",
    "LayerSweep",
    "Calibration",
    "scale_grid",
    "auto_scale",
    "auto_layer",
    "no_balance",
    "calibrate",
]


# --------------------------------------------------------------------------------------------
# modularity


def _modularity_unchecked(weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Newman modularity of a symmetric weighted graph (float64 scalar tensor)."""
    w = weights.to(torch.float64)
    degree = w.sum(1)
    two_m = degree.sum()
    communities = int(labels.max()) + 1 if labels.numel() else 0
    onehot = torch.zeros(labels.numel(), communities, dtype=torch.float64, device=w.device)
    onehot[torch.arange(labels.numel(), device=w.device), labels] = 1.0
    within = ((w @ onehot) * onehot).sum()  # sum_ij W_ij δ(c_i, c_j)
    community_degree = degree @ onehot  # K_c = sum of degrees in c
    return (within - (community_degree**2).sum() / two_m) / two_m


def modularity_closed_form(weights: torch.Tensor, labels: torch.Tensor) -> float:
    """Newman modularity ``Q = 1/(2m) Σ_ij [W_ij − k_i k_j / (2m)] δ(c_i, c_j)`` in closed form.

    ``weights``: symmetric, non-negative ``[N, N]`` with a zero diagonal (no self loops).
    ``labels``: integer community of each node, ``[N]``. Agrees with
    ``networkx.algorithms.community.modularity(G, communities, weight="weight")``.
    """
    if not isinstance(weights, torch.Tensor) or weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ReasonEditError(f"modularity: weights must be a square [N, N] tensor, got {shape}.")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() != weights.shape[0] or labels.is_floating_point():
        raise ReasonEditError(
            f"modularity: labels must be an integer tensor [N={weights.shape[0]}], got "
            f"{labels.dtype} {tuple(labels.shape)}."
        )
    w = weights.to(torch.float64)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ReasonEditError("modularity: weights must be finite and non-negative.")
    if not torch.allclose(w, w.T, rtol=1e-6, atol=1e-9):
        raise ReasonEditError("modularity: weights must be symmetric (an undirected graph); use (W + W.T) / 2.")
    if w.diagonal().abs().max() > 0:
        raise ReasonEditError("modularity: the diagonal must be zero (no self loops); use W.fill_diagonal_(0).")
    if w.sum() <= 0:
        raise ReasonEditError("modularity: the graph has no edges (all weights are zero); Q is undefined.")
    if labels.numel() and int(labels.min()) < 0:
        raise ReasonEditError("modularity: labels must be >= 0.")
    _, dense = torch.unique(labels.to(torch.int64), return_inverse=True)
    return float(_modularity_unchecked(w, dense.to(w.device)))


modularity = modularity_closed_form
"""Short name (``docs/ARCHITECTURE.md``)."""


def balance_score(vision_q: float, language_q: float) -> float:
    """Harmonic mean ``2VL / (V + L)``; 0 when either Q is <= 0 (METHOD.md §5)."""
    if vision_q <= 0 or language_q <= 0:
        return 0.0
    return 2.0 * vision_q * language_q / (vision_q + language_q)


def _harmonic(vision_q: torch.Tensor, language_q: torch.Tensor) -> torch.Tensor:
    positive = (vision_q > 0) & (language_q > 0)
    safe = torch.where(positive, vision_q + language_q, torch.ones_like(vision_q))
    return torch.where(positive, 2.0 * vision_q * language_q / safe, torch.zeros_like(vision_q))


# --------------------------------------------------------------------------------------------
# balance of one calibration subset


@dataclass(frozen=True)
class BalanceResult:
    """Vision-Q, Language-Q and their harmonic mean for one set of samples and one λ."""

    vision_q: float
    language_q: float
    harmonic: float


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared L2 distances ``[..., n, n]`` of ``x [..., n, D]`` in float64, zero diagonal,
    from centred features (|a|² + |b|² − 2ab in float64 is accurate to ~1e-13 of the spread once the
    mean is removed)."""
    x = x.to(torch.float64)
    x = x - x.mean(-2, keepdim=True)
    sq = x.pow(2).sum(-1)
    d = (sq[..., :, None] + sq[..., None, :]) - 2.0 * (x @ x.transpose(-1, -2))
    d = d.clamp_min_(0.0)
    d.diagonal(dim1=-2, dim2=-1).zero_()
    return d


def _off_diagonal_min(x: torch.Tensor) -> torch.Tensor:
    """``min_{i≠k} x[..., i, k]`` for ``x [..., n, n]``."""
    n = x.shape[-1]
    return x.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), math.inf).amin((-2, -1))


def _balance_batch(vision_sq: torch.Tensor, text_sq: torch.Tensor,
                   scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vision-Q and Language-Q ``[R, S]`` for R runs × every λ in ``scales [S]``, without building
    the graph.

    ``vision_sq = A``/``text_sq = B`` are the ``[R, n, n]`` squared distances (zero diagonal) of each
    run's images / texts. Node (i, j) pairs image i with text j, and
    ``d((i,j),(k,l)) = sqrt(A_ik + λ² B_jl)``. Every edge weight is affine in d,
    ``w = c0 − c1·d`` with ``c0 = d_max/span``, ``c1 = 1/span`` (a self loop would get c0, which is
    subtracted), so every sum modularity needs reduces to sums of d:

    * node degrees need ``Σ_kl d((i,j),(k,l))``: one ``[R, S, n, n, n, n]`` broadcast, no N×N mask;
    * within-image weight uses ``d((i,j),(i,l)) = λ·sqrt(B_jl)``, within-text ``sqrt(A_ik)``;
    * ``d_max² = max A + λ² max B`` and ``d_min² = min(min_{i≠k} A, λ² min_{j≠l} B)``.
    """
    n = vision_sq.shape[-1]
    nodes = n * n
    lam = scales.to(torch.float64)[None, :]  # [1, S]
    lam2 = lam.pow(2)
    a, b = vision_sq.to(torch.float64), text_sq.to(torch.float64)  # [R, n, n]
    d_max = (a.amax((-2, -1))[:, None] + lam2 * b.amax((-2, -1))[:, None]).sqrt()  # [R, S]
    d_min = torch.minimum(_off_diagonal_min(a)[:, None], lam2 * _off_diagonal_min(b)[:, None]).sqrt()
    span = d_max - d_min
    flat = span <= 1e-12 * d_max.clamp_min(1e-300)  # all distinct nodes equally far: a uniform graph
    safe_span = torch.where(flat, torch.ones_like(span), span)
    c0 = torch.where(flat, torch.ones_like(span), d_max / safe_span)
    c1 = torch.where(flat, torch.zeros_like(span), 1.0 / safe_span)

    # Σ_kl d((i,j),(k,l)) for every node (i,j): [R, S, i, j]
    dist = (a[:, None, :, None, :, None] + lam2[:, :, None, None, None, None] * b[:, None, None, :, None, :])
    row_sum = dist.sqrt_().sum((-2, -1))
    degree = (c0 * (nodes - 1))[..., None, None] - c1[..., None, None] * row_sum
    two_m = degree.sum((-2, -1))
    same_node_pairs = n * nodes - nodes  # ordered pairs inside one community, self loops excluded
    within_image = c0 * same_node_pairs - c1 * n * lam * b.sqrt().sum((-2, -1))[:, None]
    within_text = c0 * same_node_pairs - c1 * n * a.sqrt().sum((-2, -1))[:, None]
    image_degree = degree.sum(-1)  # K_i, [R, S, n]
    text_degree = degree.sum(-2)  # K_j, [R, S, n]
    vision_q = (within_image - image_degree.pow(2).sum(-1) / two_m) / two_m
    language_q = (within_text - text_degree.pow(2).sum(-1) / two_m) / two_m
    return vision_q, language_q


def _balance_runs(vision: torch.Tensor, text_sq: torch.Tensor, subsets: torch.Tensor,
                  scales: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-λ, per-run Q values ``[S, R]`` of ``vision [N, D]`` on the run subsets ``[R, n]``."""
    lam = torch.tensor(list(scales), dtype=torch.float64)
    vq, lq = _balance_batch(_squared_distances(vision[subsets]), text_sq, lam)
    return vq.T, lq.T


def _pair_graph(vision: torch.Tensor, text: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The explicit n²-node graph of METHOD.md §5 (slow; for tests and small inspections):
    weights ``[n², n², ]``, image labels and text labels ``[n²]``. Node (i, j) has index i·n + j."""
    n = vision.shape[0]
    v = vision.to(torch.float64)
    t = text.to(torch.float64) * scale
    keys = torch.cat([v.repeat_interleave(n, 0), t.repeat(n, 1)], 1)
    d = torch.cdist(keys, keys, compute_mode="donot_use_mm_for_euclid_dist")
    off = ~torch.eye(n * n, dtype=torch.bool)
    d_min, d_max = d[off].min(), d[off].max()
    w = ((d_max - d) / (d_max - d_min)).masked_fill_(~off, 0.0)
    nodes = torch.arange(n * n)
    return w, nodes // n, nodes % n


def _check_features(x: Any, name: str, rows: Optional[int] = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ReasonEditError(f"{name} must be a torch.Tensor [n, D], got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ReasonEditError(f"{name} must be [n >= 2, D >= 1], got shape {tuple(x.shape)}.")
    if rows is not None and x.shape[0] != rows:
        raise ReasonEditError(
            f"{name} has {x.shape[0]} rows but the text features have {rows}; "
            "give one image feature and one text feature per calibration sample."
        )
    if not torch.isfinite(x).all():
        raise ReasonEditError(f"{name} contains NaN or inf; check the feature extraction (e.g. fp16 overflow).")
    return x.detach().to("cpu", torch.float64)  # the graph sums run on the CPU, whatever device the VLM is on


def _check_scale(scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale (λ) must be a positive finite number, got {scale!r}.")
    return float(scale)


def balance_from_embeddings(vision: torch.Tensor, text: torch.Tensor, scale: float) -> BalanceResult:
    """Vision-Q, Language-Q and balance of the n×n pair graph of ``vision [n, Dv]`` × ``text [n, Dt]``."""
    v = _check_features(vision, "vision")
    t = _check_features(text, "text", rows=v.shape[0])
    lam = _check_scale(scale)
    vq, lq = _balance_batch(_squared_distances(v[None]), _squared_distances(t[None]),
                            torch.tensor([lam], dtype=torch.float64))
    vq_f, lq_f = float(vq[0, 0]), float(lq[0, 0])
    return BalanceResult(vq_f, lq_f, balance_score(vq_f, lq_f))


# --------------------------------------------------------------------------------------------
# sweeps


@dataclass(frozen=True)
class BalancePoint:
    """Mean diagnostics of one candidate (a λ or a layer) over the seeded runs."""

    value: Union[float, str]
    """The λ, or the layer's module path."""
    vision_q: float
    language_q: float
    harmonic: float
    """Mean over runs of the per-run harmonic balance (the selection criterion)."""
    harmonic_std: float
    harmonic_runs: tuple[float, ...] = ()


def _point(value: Union[float, str], vq: torch.Tensor, lq: torch.Tensor) -> BalancePoint:
    """``vq``/``lq``: per-run values ``[runs]``."""
    h = _harmonic(vq, lq)
    std = float(h.std(unbiased=False)) if h.numel() > 1 else 0.0
    return BalancePoint(value, float(vq.mean()), float(lq.mean()), float(h.mean()), std,
                        tuple(float(x) for x in h))


def _best_index(points: Sequence[BalancePoint]) -> int:
    """Highest mean harmonic; the first candidate wins a tie (deterministic)."""
    return max(range(len(points)), key=lambda i: (points[i].harmonic, -i))


@dataclass
class ScaleSweep:
    """AutoScaler: balance per λ (METHOD.md §5). ``best`` is the λ with the highest mean harmonic."""

    points: list[BalancePoint]
    best: float
    samples: int
    runs: int
    seed: int
    layer: Optional[str] = None
    """The vision layer whose features were used, when known."""
    used: Optional[float] = None
    """The λ actually used, when it was fixed rather than chosen by this sweep (marked in the plot)."""

    @property
    def best_point(self) -> BalancePoint:
        return next(p for p in self.points if p.value == self.best)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def plot(self, path: Union[str, Path]) -> Path:
        """Write the topology-balance sweep (Vision-Q, Language-Q, balance vs λ) as a PNG."""
        fig, axes = new_figure(7.0, 4.2)
        ax = axes[0, 0]
        lam = [float(p.value) for p in self.points]
        h = [p.harmonic for p in self.points]
        sd = [p.harmonic_std for p in self.points]
        ax.plot(lam, [p.vision_q for p in self.points], "-", color="tab:blue", label="Vision-Q")
        ax.plot(lam, [p.language_q for p in self.points], "-", color="tab:orange", label="Language-Q")
        ax.plot(lam, h, "-", color="black", linewidth=2, label="balance (harmonic)")
        ax.fill_between(lam, [a - b for a, b in zip(h, sd)], [a + b for a, b in zip(h, sd)],
                        color="black", alpha=0.12, linewidth=0)
        ax.axvline(self.best, color="tab:red", linestyle="--", label=f"best λ = {self.best:.3g}")
        if self.used is not None and self.used != self.best:
            ax.axvline(self.used, color="tab:green", linestyle=":", linewidth=2, label=f"used λ = {self.used:.3g}")
        ax.axhline(0.0, color="grey", linewidth=0.5)
        if all(x > 0 for x in lam) and len(lam) > 1:
            ax.set_xscale("log")
        ax.set_xlabel("λ (text scale)")
        ax.set_ylabel("modularity Q")
        where = f", layer {self.layer}" if self.layer else ""
        ax.set_title(f"Topology balance vs λ (n={self.samples}, {self.runs} runs{where})", fontsize=10)
        ax.legend(fontsize=8)
        return save_figure(fig, path, dpi=120)


@dataclass
class LayerSweep:
    """AutoLayer: balance per vision layer at a fixed λ. ``best`` is a module path."""

    points: list[BalancePoint]
    best: str
    scale: float
    samples: int
    runs: int
    seed: int

    @property
    def best_point(self) -> BalancePoint:
        return next(p for p in self.points if p.value == self.best)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def plot(self, path: Union[str, Path]) -> Path:
        """Write Vision-Q, Language-Q and balance per candidate layer as a PNG."""
        fig, axes = new_figure(max(7.0, 0.35 * len(self.points)), 4.6)
        ax = axes[0, 0]
        x = list(range(len(self.points)))
        h = [p.harmonic for p in self.points]
        ax.plot(x, [p.vision_q for p in self.points], "o-", color="tab:blue", markersize=3, label="Vision-Q")
        ax.plot(x, [p.language_q for p in self.points], "o-", color="tab:orange", markersize=3, label="Language-Q")
        ax.errorbar(x, h, yerr=[p.harmonic_std for p in self.points], fmt="o-", color="black",
                    markersize=4, linewidth=2, capsize=2, label="balance (harmonic)")
        best = [p.value for p in self.points].index(self.best)
        ax.axvline(best, color="tab:red", linestyle="--", label=f"best: {self.best}")
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_xticks(x)
        ax.set_xticklabels([str(p.value) for p in self.points], rotation=70, ha="right", fontsize=6)
        ax.set_ylabel("modularity Q")
        ax.set_title(f"Topology balance per layer (λ={self.scale:.3g}, n={self.samples}, {self.runs} runs)",
                     fontsize=10)
        ax.legend(fontsize=8)
        return save_figure(fig, path, dpi=120)


def scale_grid(config: TopologyConfig) -> list[float]:
    """The λ candidates: ``logspace(scale_min_exp, scale_max_exp, scale_steps)`` (paper: 10^-1..10^2, 41)."""
    grid = torch.logspace(config.scale_min_exp, config.scale_max_exp, config.scale_steps, dtype=torch.float64)
    return [float(x) for x in grid]


def _subsets(total: int, samples: int, runs: int, seed: int) -> torch.Tensor:
    """``[runs, samples]``: seeded random subsets of indices out of ``total`` (shared by all candidates)."""
    if total < samples:
        raise ConfigError(
            f"topology: the calibration set has {total} samples but {samples} are drawn per run; "
            "give more calibration samples or lower topology.scale_samples / topology.layer_samples."
        )
    generator = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(total, generator=generator)[:samples] for _ in range(runs)])


def _check_config(config: Any) -> TopologyConfig:
    if not isinstance(config, TopologyConfig):
        raise ConfigError(f"config must be a TopologyConfig, got {type(config).__name__}.")
    return config


def auto_scale(vision_features: torch.Tensor, text_features: torch.Tensor, config: TopologyConfig,
               seed: int, layer: Optional[str] = None) -> ScaleSweep:
    """AutoScaler: the λ of ``scale_grid(config)`` with the best mean balance over seeded runs.

    ``vision_features [N, Dv]`` and ``text_features [N, Dt]`` are paired calibration samples; each
    run draws ``config.scale_samples`` of them (the same subsets for every λ).
    """
    config = _check_config(config)
    t = _check_features(text_features, "text_features")
    v = _check_features(vision_features, "vision_features", rows=t.shape[0])
    scales = scale_grid(config)
    subsets = _subsets(t.shape[0], config.scale_samples, config.runs, seed)
    vq_all, lq_all = _balance_runs(v, _squared_distances(t[subsets]), subsets, scales)  # [S, runs]
    points = [_point(s, vq_all[i], lq_all[i]) for i, s in enumerate(scales)]
    best = float(points[_best_index(points)].value)
    logger.info("AutoScaler: best λ = %.4g (balance %.4f)", best, points[_best_index(points)].harmonic)
    return ScaleSweep(points, best, config.scale_samples, config.runs, int(seed), layer)


def auto_layer(features_by_layer: Mapping[str, torch.Tensor], text_features: torch.Tensor, scale: float,
               config: TopologyConfig, seed: int) -> LayerSweep:
    """AutoLayer: the vision layer with the best mean balance at λ = ``scale`` over seeded runs.

    ``features_by_layer`` maps a module path to its mean-pooled input activations ``[N, D_layer]``
    (e.g. ``VLM.vision_features_multi``); every layer is scored on the same seeded subsets of
    ``config.layer_samples`` samples. Candidates keep the mapping's order (first wins a tie).
    """
    config = _check_config(config)
    lam = _check_scale(scale)
    if not isinstance(features_by_layer, Mapping) or not features_by_layer:
        raise ReasonEditError("auto_layer: features_by_layer must be a non-empty {module path: Tensor[N, D]}.")
    t = _check_features(text_features, "text_features")
    layers = {str(name): _check_features(x, f"features of layer {name!r}", rows=t.shape[0])
              for name, x in features_by_layer.items()}
    subsets = _subsets(t.shape[0], config.layer_samples, config.runs, seed)
    text_sq = _squared_distances(t[subsets])
    points = []
    for name, v in layers.items():
        vq, lq = _balance_runs(v, text_sq, subsets, [lam])
        points.append(_point(name, vq[0], lq[0]))
    best = str(points[_best_index(points)].value)
    logger.info("AutoLayer: best layer %s (balance %.4f at λ=%.4g)", best, points[_best_index(points)].harmonic, lam)
    return LayerSweep(points, best, lam, config.layer_samples, config.runs, int(seed))


# --------------------------------------------------------------------------------------------
# calibration result, ablation, convenience


@dataclass
class Calibration:
    """The (layer, λ) chosen for the key embedding and the topology diagnostics behind it.

    ``balanced`` is False for the "no balance" ablation (both fixed, nothing searched).
    """

    layer: Optional[str]
    scale: float
    balance: BalancePoint
    """Diagnostics at the chosen (layer, λ): n = ``samples`` per run, mean over runs."""
    balanced: bool
    layer_sweep: Optional[LayerSweep] = None
    scale_sweep: Optional[ScaleSweep] = None
    samples: int = 0
    runs: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def plot(self, path: Union[str, Path]) -> list[Path]:
        """PNG(s) of the sweeps that were run: ``<stem>_scale.png`` and/or ``<stem>_layer.png``."""
        out = Path(path)
        written = []
        if self.scale_sweep is not None:
            written.append(self.scale_sweep.plot(out.with_name(f"{out.stem}_scale.png")))
        if self.layer_sweep is not None:
            written.append(self.layer_sweep.plot(out.with_name(f"{out.stem}_layer.png")))
        if not written:  # the ablation: just the diagnostics at the fixed point
            fig, axes = new_figure(4.5, 3.5)
            ax = axes[0, 0]
            b = self.balance
            ax.bar(["Vision-Q", "Language-Q", "balance"], [b.vision_q, b.language_q, b.harmonic],
                   color=["tab:blue", "tab:orange", "black"])
            ax.set_title(f"No balance: layer {self.layer}, λ={self.scale:.3g}", fontsize=9)
            written.append(save_figure(fig, out.with_suffix(".png"), dpi=120))
        return written


def _diagnose(vision: torch.Tensor, text: torch.Tensor, scale: float, samples: int, runs: int,
              seed: int) -> BalancePoint:
    subsets = _subsets(text.shape[0], samples, runs, seed)
    vq, lq = _balance_runs(vision, _squared_distances(text[subsets]), subsets, [scale])
    return _point(scale, vq[0], lq[0])


def no_balance(vision_features: torch.Tensor, text_features: torch.Tensor, scale: float,
               config: TopologyConfig, seed: int, layer: Optional[str] = None) -> Calibration:
    """The "no topology balance" ablation: keep ``layer`` and λ = ``scale`` as given and only report
    their Vision-Q / Language-Q / balance (n = ``config.scale_samples``, ``config.runs`` seeded runs)."""
    config = _check_config(config)
    lam = _check_scale(scale)
    t = _check_features(text_features, "text_features")
    v = _check_features(vision_features, "vision_features", rows=t.shape[0])
    point = _diagnose(v, t, lam, config.scale_samples, config.runs, seed)
    return Calibration(layer, lam, point, balanced=False, samples=config.scale_samples,
                       runs=config.runs, seed=int(seed))


def calibrate(vlm: Any, text_encoder: Any, images: Sequence[Any], texts: Sequence[str],
              config: TopologyConfig, seed: int, layer: Union[str, int, None] = "auto",
              scale: Union[float, str] = "auto") -> Calibration:
    """AutoLayer then AutoScaler on a VLM (``vlm.py``) and a text encoder (``text_encoder.py``).

    ``layer="auto"`` scores ``vlm.vision_candidates()`` (minus ``vlm.spec.projectors`` when
    ``config.include_projector`` is False) at λ = ``scale`` (or 30 when ``scale`` is also "auto");
    otherwise ``vlm.resolve_layer(layer)`` is used as is. ``scale="auto"`` sweeps λ on
    the chosen layer. Both fixed gives the :func:`no_balance` ablation.
    """
    config = _check_config(config)
    if len(images) != len(texts):
        raise ReasonEditError(f"calibrate: {len(images)} images but {len(texts)} texts; give one text per image.")
    text = torch.as_tensor(text_encoder.encode(list(texts)))  # checked and moved to the CPU by the sweeps
    layer_sweep: Optional[LayerSweep] = None
    if layer == "auto":
        first_scale = DEFAULT_SCALE if scale == "auto" else _check_scale(scale)
        candidates = list(vlm.vision_candidates())
        if not config.include_projector:  # keep only the vision blocks' MLP linears
            projectors = tuple(getattr(getattr(vlm, "spec", None), "projectors", ()) or ())
            candidates = [c for c in candidates
                          if not any(c == p or c.startswith(p + ".") for p in projectors)]
        if not candidates:
            raise ReasonEditError("calibrate: the VLM reported no AutoLayer candidates; give embedding.layer.")
        features = vlm.vision_features_multi(images, candidates)
        layer_sweep = auto_layer(features, text, first_scale, config, seed)
        chosen_layer = layer_sweep.best
        vision = features[chosen_layer]
    else:
        chosen_layer = vlm.resolve_layer(layer)
        vision = vlm.vision_features_multi(images, [chosen_layer])[chosen_layer]
    vision = torch.as_tensor(vision)
    if scale == "auto":
        sweep = auto_scale(vision, text, config, seed, layer=chosen_layer)
        return Calibration(chosen_layer, sweep.best, sweep.best_point, balanced=True, layer_sweep=layer_sweep,
                           scale_sweep=sweep, samples=config.scale_samples, runs=config.runs, seed=int(seed))
    fixed = no_balance(vision, text, _check_scale(scale), config, seed, layer=chosen_layer)
    return dataclasses.replace(fixed, balanced=layer_sweep is not None, layer_sweep=layer_sweep)
