"""benchmarks/no_fact_spread.py: how far from chance the no-fact rows land by luck (fast, no model)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("no_fact_spread")


def test_the_unsure_guesser_is_the_binomial_spread_of_each_row(script, tmp_path):
    result = script.main(["--out", str(tmp_path / "spread.json")])
    assert json.loads((tmp_path / "spread.json").read_text())["unsure_guess"] == result["unsure_guess"]
    unsure = result["unsure_guess"]
    # every measured record has four options and a yes / no R-Gen question: binomial(200, 1/4) and (200, 1/2)
    assert unsure["held_out"]["sd"] == round((0.25 * 0.75 / 200) ** 0.5, 4)
    assert unsure["rgen"]["sd"] == round((0.25 / 200) ** 0.5, 4)
    one = unsure["held_out"]["within_tolerance"] * unsure["rgen"]["within_tolerance"]
    assert unsure["both_within_tolerance"] == round(one, 4) and unsure["both_in_three_seeds"] == round(one ** 3, 4)
    # far less spread than one answer per rule, the neighbour guesser's
    assert unsure["held_out"]["within_tolerance"] > 2 * result["neighbour_guess"]["within_tolerance"]
    # "no" to every fact-less yes / no question: the split's "no" share (106 of the 200), in every seed
    assert result["rgen_declining_guess"] == {"accuracy": 0.53, "within_tolerance": True}


def test_the_committed_result_counts_the_committed_measurements(script):
    committed = json.loads((script.ROOT / "benchmarks" / "results" / "no_fact_spread.json").read_text())
    measured = script.committed_measurements(script.MEASURED, 200, 123)
    assert committed["committed_models"] == len(measured)
    assert "unsure_guess" in committed and "rgen_declining_guess" in committed
