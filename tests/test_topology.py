"""Tests for reasonedit_plugin.topology (METHOD.md §5): closed-form modularity against networkx,
the structured pair-graph balance against the explicit graph, AutoScaler / AutoLayer behaviour."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import pytest
import torch

from reasonedit_plugin import topology as topo
from reasonedit_plugin.config import TopologyConfig
from reasonedit_plugin.errors import ConfigError, ReasonEditError
from reasonedit_plugin.topology import (
    BalanceResult,
    Calibration,
    LayerSweep,
    ScaleSweep,
    auto_layer,
    auto_scale,
    balance_from_embeddings,
    balance_score,
    calibrate,
    modularity_closed_form,
    no_balance,
    scale_grid,
)

nx = pytest.importorskip("networkx")
from networkx.algorithms.community import modularity as nx_modularity  # noqa: E402


def _nx_q(weights: torch.Tensor, labels: torch.Tensor) -> float:
    graph = nx.from_numpy_array(weights.numpy())
    communities = [set(torch.nonzero(labels == c).flatten().tolist()) for c in labels.unique()]
    return nx_modularity(graph, communities, weight="weight")


def _random_graph(n: int, seed: int, density: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, n, generator=g, dtype=torch.float64)
    w = w * (torch.rand(n, n, generator=g, dtype=torch.float64) < density)
    w = torch.triu(w, 1)
    w = w + w.T
    if w.sum() == 0:
        w[0, 1] = w[1, 0] = 1.0
    return w


def _clustered(n: int, dim: int, clusters: int, spread: float, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g) * spread
    labels = torch.arange(n) % clusters
    return centres[labels] + noise * torch.randn(n, dim, generator=g)


# ------------------------------------------------------------------------------------------
# closed-form modularity


@pytest.mark.parametrize("seed", range(8))
def test_modularity_matches_networkx_on_random_weighted_graphs(seed: int) -> None:
    n = 5 + 2 * seed
    w = _random_graph(n, seed)
    g = torch.Generator().manual_seed(100 + seed)
    labels = torch.randint(0, 1 + seed % 4, (n,), generator=g)
    assert modularity_closed_form(w, labels) == pytest.approx(_nx_q(w, labels), abs=1e-6)


def test_modularity_matches_networkx_on_karate_club() -> None:
    graph = nx.karate_club_graph()
    w = torch.tensor(nx.to_numpy_array(graph, weight=None))
    labels = torch.tensor([0 if graph.nodes[i]["club"] == "Mr. Hi" else 1 for i in graph.nodes])
    expected = nx_modularity(graph, [set(torch.nonzero(labels == c).flatten().tolist()) for c in (0, 1)],
                             weight=None)
    assert modularity_closed_form(w, labels) == pytest.approx(expected, abs=1e-9)
    # label values need not be contiguous
    assert modularity_closed_form(w, labels * 7 + 3) == pytest.approx(expected, abs=1e-9)


def test_modularity_of_one_community_is_zero() -> None:
    w = _random_graph(9, 3)
    assert modularity_closed_form(w, torch.zeros(9, dtype=torch.long)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "weights, labels, message",
    [
        (torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 1]), "symmetric"),
        (torch.tensor([[0.0, -1.0], [-1.0, 0.0]]), torch.tensor([0, 1]), "non-negative"),
        (torch.tensor([[1.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1]), "diagonal must be zero"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), "no edges"),
        (torch.ones(2, 3), torch.tensor([0, 1]), "square"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 2]), "labels must be an integer tensor"),
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0.0, 1.0]), "labels must be an integer tensor"),
    ],
)
def test_modularity_rejects_bad_graphs(weights: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ReasonEditError, match=message):
        modularity_closed_form(weights, labels)


def test_balance_score_rule() -> None:
    assert balance_score(0.3, 0.6) == pytest.approx(0.4)
    assert balance_score(0.0, 0.6) == 0.0
    assert balance_score(-0.1, 0.6) == 0.0
    assert balance_score(0.5, -1e-9) == 0.0


# ------------------------------------------------------------------------------------------
# the pair graph: structured computation == explicit graph == networkx


@pytest.mark.parametrize("scale", [0.01, 0.3, 1.0, 7.0, 1e3])
def test_structured_balance_matches_explicit_graph_and_networkx(scale: float) -> None:
    g = torch.Generator().manual_seed(int(scale * 100) % 997)
    n = 4
    vision, text = torch.randn(n, 12, generator=g), torch.randn(n, 5, generator=g)
    w, by_image, by_text = topo._pair_graph(vision, text, scale)
    assert w.shape == (n * n, n * n)
    result = balance_from_embeddings(vision, text, scale)
    assert isinstance(result, BalanceResult)
    assert result.vision_q == pytest.approx(_nx_q(w, by_image), abs=1e-6)
    assert result.language_q == pytest.approx(_nx_q(w, by_text), abs=1e-6)
    assert result.harmonic == pytest.approx(balance_score(result.vision_q, result.language_q))


@pytest.mark.parametrize("n", [2, 3, 7, 12])
def test_structured_balance_matches_closed_form_on_the_explicit_graph(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    vision, text = torch.randn(n, 30, generator=g) * 3, torch.randn(n, 8, generator=g)
    vision[1] = vision[0]  # duplicate image: some distinct nodes at distance d_min = λ·|t_j - t_l|
    for scale in (0.05, 1.0, 20.0):
        w, by_image, by_text = topo._pair_graph(vision, text, scale)
        result = balance_from_embeddings(vision, text, scale)
        assert result.vision_q == pytest.approx(modularity_closed_form(w, by_image), abs=1e-9)
        assert result.language_q == pytest.approx(modularity_closed_form(w, by_text), abs=1e-9)


def test_uniform_graph_is_handled() -> None:
    # two images and two texts, all distinct nodes equally far: no division by zero, Q <= 0
    vision = torch.tensor([[0.0], [1.0]])
    text = torch.tensor([[0.0], [1.0]])
    result = balance_from_embeddings(vision, text, 1.0)
    assert math.isfinite(result.vision_q) and math.isfinite(result.language_q)
    assert result.harmonic == 0.0


def test_text_dominates_with_a_huge_scale() -> None:
    """Hand-built: n mutually equidistant texts (one-hot), small random images. As λ -> inf the
    nodes sharing a text collapse together (weight ~1) and all others are ~d_max apart (weight ~0):
    the text partition is perfect, Q_L -> 1 - 1/n, and the image partition holds no weight,
    Q_V -> -n·(1/n)² = -1/n, so the balance is 0."""
    n = 8
    g = torch.Generator().manual_seed(0)
    vision, text = torch.randn(n, 16, generator=g), torch.eye(n)
    result = balance_from_embeddings(vision, text, 1e4)
    assert result.language_q == pytest.approx(1 - 1 / n, abs=1e-4)
    assert result.vision_q == pytest.approx(-1 / n, abs=1e-4)
    assert result.harmonic == 0.0
    # growing λ moves weight from the image partition to the text partition
    qs = [balance_from_embeddings(vision, text, lam) for lam in (1e-2, 1.0, 1e2, 1e4)]
    assert [q.language_q for q in qs] == sorted(q.language_q for q in qs)
    assert [q.vision_q for q in qs] == sorted((q.vision_q for q in qs), reverse=True)
    # the mirror image: one-hot images, λ -> 0
    mirror = balance_from_embeddings(torch.eye(n), torch.randn(n, 16, generator=g), 1e-4)
    assert mirror.vision_q == pytest.approx(1 - 1 / n, abs=1e-4)
    assert mirror.language_q == pytest.approx(-1 / n, abs=1e-4)
    assert mirror.harmonic == 0.0


def test_balance_rejects_bad_features() -> None:
    v, t = torch.randn(5, 3), torch.randn(5, 2)
    with pytest.raises(ReasonEditError, match="one image feature and one text feature"):
        balance_from_embeddings(v, torch.randn(4, 2), 1.0)
    with pytest.raises(ReasonEditError, match="NaN or inf"):
        balance_from_embeddings(v, torch.full((5, 2), math.nan), 1.0)
    with pytest.raises(ReasonEditError, match=r"n >= 2"):
        balance_from_embeddings(v[:1], t[:1], 1.0)
    with pytest.raises(ConfigError, match="positive finite"):
        balance_from_embeddings(v, t, 0.0)


# ------------------------------------------------------------------------------------------
# AutoScaler / AutoLayer


def _two_modalities(n: int = 40, vision_spread: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Both modalities carry cluster structure; image distances are ~10x text distances."""
    vision = _clustered(n, 32, 3, spread=vision_spread, noise=0.2 * vision_spread, seed=11)
    text = _clustered(n, 24, 4, spread=1.0, noise=0.2, seed=12)
    return vision, text


def test_scale_grid_is_the_paper_grid_by_default() -> None:
    grid = scale_grid(TopologyConfig())
    assert len(grid) == 41
    assert grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(100.0)
    assert grid[20] == pytest.approx(10 ** 0.5)


def test_auto_scale_picks_an_interior_lambda_when_both_modalities_have_structure() -> None:
    vision, text = _two_modalities()
    sweep = auto_scale(vision, text, TopologyConfig(), seed=0)
    assert isinstance(sweep, ScaleSweep)
    grid = scale_grid(TopologyConfig())
    assert len(sweep.points) == 41 and [p.value for p in sweep.points] == grid
    assert grid[0] < sweep.best < grid[-1]
    best = sweep.best_point
    assert best.vision_q > 0 and best.language_q > 0
    assert best.harmonic > sweep.points[0].harmonic and best.harmonic > sweep.points[-1].harmonic
    assert best.harmonic == max(p.harmonic for p in sweep.points)
    assert 1.0 < sweep.best < 50.0  # image distances are ~10x text distances here
    # the endpoints are dominated by one modality
    assert sweep.points[0].vision_q > sweep.points[0].language_q
    assert sweep.points[-1].language_q > sweep.points[-1].vision_q
    assert len(best.harmonic_runs) == 10


def test_auto_scale_is_deterministic_under_a_seed() -> None:
    vision, text = _two_modalities()
    cfg = TopologyConfig(scale_steps=9, runs=4)
    a = auto_scale(vision, text, cfg, seed=5).to_dict()
    b = auto_scale(vision, text, cfg, seed=5).to_dict()
    c = auto_scale(vision, text, cfg, seed=6).to_dict()
    assert a == b
    assert a["points"] != c["points"]
    json.dumps(a)  # plain data


def test_auto_layer_prefers_the_layer_whose_scale_balances_the_text() -> None:
    vision, text = _two_modalities(vision_spread=1.0)
    layers = {
        "blocks.0.mlp.fc1": vision * 1e-3,  # the text swamps it
        "blocks.1.mlp.fc1": vision,  # distances comparable to λ·|t - t'| at λ = 1
        "blocks.2.mlp.fc1": vision * 1e3,  # swamps the text
    }
    cfg = TopologyConfig(runs=4)
    sweep = auto_layer(layers, text, 1.0, cfg, seed=0)
    assert isinstance(sweep, LayerSweep)
    assert sweep.best == "blocks.1.mlp.fc1"
    assert [p.value for p in sweep.points] == list(layers)
    assert sweep.points[0].harmonic == 0.0 and sweep.points[2].harmonic == 0.0
    assert sweep.best_point.harmonic > 0
    assert sweep.scale == 1.0 and sweep.samples == 20
    again = auto_layer(layers, text, 1.0, cfg, seed=0)
    assert again.to_dict() == sweep.to_dict()
    json.dumps(sweep.to_dict())


def test_auto_layer_tie_goes_to_the_first_candidate() -> None:
    vision, text = _two_modalities()
    sweep = auto_layer({"b": vision, "a": vision.clone()}, text, 10.0, TopologyConfig(runs=2), seed=0)
    assert sweep.best == "b"


def test_sweeps_validate_their_inputs() -> None:
    vision, text = _two_modalities(n=15)
    with pytest.raises(ConfigError, match="layer_samples"):
        auto_layer({"x": vision}, text, 1.0, TopologyConfig(), seed=0)  # 15 < 20 samples
    with pytest.raises(ConfigError, match="TopologyConfig"):
        auto_scale(vision, text, {"runs": 2}, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ReasonEditError, match="non-empty"):
        auto_layer({}, text, 1.0, TopologyConfig(layer_samples=5), seed=0)
    with pytest.raises(ReasonEditError, match="one image feature and one text feature"):
        auto_scale(vision[:10], text, TopologyConfig(), seed=0)


def test_no_balance_ablation_reports_the_fixed_point() -> None:
    vision, text = _two_modalities()
    cfg = TopologyConfig(runs=3, scale_steps=31)  # exponents -1, -0.9, ..., 2: λ = 10 is on the grid
    fixed = no_balance(vision, text, 10.0, cfg, seed=2, layer="blocks.3.mlp.fc1")
    assert isinstance(fixed, Calibration)
    assert fixed.balanced is False and fixed.layer == "blocks.3.mlp.fc1" and fixed.scale == 10.0
    assert fixed.layer_sweep is None and fixed.scale_sweep is None
    # same seed, same subsets: equals the sweep's entry at λ = 10
    sweep = auto_scale(vision, text, cfg, seed=2)
    on_grid = min(sweep.points, key=lambda p: abs(math.log(float(p.value) / 10.0)))
    assert on_grid.value == pytest.approx(10.0)
    assert fixed.balance.vision_q == pytest.approx(on_grid.vision_q, abs=1e-12)
    assert fixed.balance.language_q == pytest.approx(on_grid.language_q, abs=1e-12)
    assert fixed.balance.harmonic == pytest.approx(on_grid.harmonic, abs=1e-12)
    json.dumps(fixed.to_dict())


def test_full_paper_sweep_runs_quickly() -> None:
    """41 λ × n=10 × 10 runs and 12 layers × n=20 × 10 runs: seconds, not hours (generous bound)."""
    import time

    g = torch.Generator().manual_seed(0)
    text = torch.randn(40, 384, generator=g)
    layers = {f"blocks.{i}.mlp.fc1": torch.randn(40, 1024, generator=g) for i in range(12)}
    start = time.perf_counter()
    auto_scale(layers["blocks.0.mlp.fc1"], text, TopologyConfig(), seed=0)
    auto_layer(layers, text, 30.0, TopologyConfig(), seed=0)
    assert time.perf_counter() - start < 60.0


# ------------------------------------------------------------------------------------------
# plots and the VLM convenience


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    vision, text = _two_modalities()
    cfg = TopologyConfig(runs=2, scale_steps=7)
    scale_png = auto_scale(vision, text, cfg, seed=0).plot(tmp_path / "scale.png")
    layer_png = auto_layer({"a": vision, "b": vision * 2}, text, 3.0, cfg, seed=0).plot(tmp_path / "sub" / "layer.png")
    ablation = no_balance(vision, text, 3.0, cfg, seed=0, layer="a").plot(tmp_path / "fixed.png")
    assert _is_png(scale_png) and _is_png(layer_png)
    assert len(ablation) == 1 and _is_png(ablation[0])


class _FakeVLM:
    def __init__(self, features: dict[str, torch.Tensor]):
        self.features = features
        self.calls: list[list[str]] = []

    def vision_candidates(self) -> list[str]:
        return list(self.features)

    def resolve_layer(self, layer: object) -> str:
        return f"blocks.{layer}.mlp.fc1" if isinstance(layer, int) else str(layer)

    def vision_features_multi(self, images: Sequence[object], modules: Sequence[str]) -> dict[str, torch.Tensor]:
        self.calls.append(list(modules))
        return {m: self.features[m][: len(images)] for m in modules}


class _FakeTextEncoder:
    def __init__(self, table: torch.Tensor):
        self.table = table

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.table[[int(t) for t in texts]]


def test_calibrate_auto_and_fixed(tmp_path: Path) -> None:
    vision, text = _two_modalities(vision_spread=1.0)
    vlm = _FakeVLM({"blocks.0.mlp.fc1": vision * 1e-3, "blocks.1.mlp.fc1": vision * 30.0})
    encoder = _FakeTextEncoder(text)
    images, texts = list(range(40)), [str(i) for i in range(40)]
    cfg = TopologyConfig(runs=2, scale_steps=13)

    auto = calibrate(vlm, encoder, images, texts, cfg, seed=0)
    assert auto.balanced and auto.layer == "blocks.1.mlp.fc1"
    assert auto.layer_sweep is not None and auto.scale_sweep is not None
    assert auto.scale == auto.scale_sweep.best and auto.scale_sweep.layer == auto.layer
    assert auto.balance == auto.scale_sweep.best_point
    assert len(auto.plot(tmp_path / "calib.png")) == 2 if _has_matplotlib() else True

    fixed = calibrate(vlm, encoder, images, texts, cfg, seed=0, layer=1, scale=30.0)
    assert not fixed.balanced and fixed.layer == "blocks.1.mlp.fc1" and fixed.scale == 30.0
    assert vlm.calls[-1] == ["blocks.1.mlp.fc1"]

    with pytest.raises(ReasonEditError, match="one text per image"):
        calibrate(vlm, encoder, images, texts[:3], cfg, seed=0)


def test_calibrate_can_leave_out_the_projector() -> None:
    vision, text = _two_modalities(vision_spread=1.0)
    vlm = _FakeVLM({"blocks.0.mlp.fc1": vision * 1e-3, "merger.mlp.0": vision})
    vlm.spec = type("Spec", (), {"projectors": ("merger",)})()  # type: ignore[attr-defined]
    encoder = _FakeTextEncoder(text)
    images, texts = list(range(40)), [str(i) for i in range(40)]
    with_projector = calibrate(vlm, encoder, images, texts, TopologyConfig(runs=2), seed=0, scale=1.0)
    assert with_projector.layer == "merger.mlp.0"
    cfg = TopologyConfig(runs=2, include_projector=False)
    without = calibrate(vlm, encoder, images, texts, cfg, seed=0, scale=1.0)
    assert without.layer == "blocks.0.mlp.fc1"
    assert [p.value for p in without.layer_sweep.points] == ["blocks.0.mlp.fc1"]  # type: ignore[union-attr]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
