"""benchmarks/target_rates.py: issue 12's targets met per recipe, from the committed measurements (fast, no model)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("target_rates")


def _rows(easy, both, rgen, near, rgen_none, none):
    return {"easy-vqa test": {"accuracy": easy}, "held-out + both": {"accuracy": both},
            "R-Gen (+ both)": {"accuracy": rgen}, "near miss: answer changed by the facts": {"accuracy": near},
            "R-Gen, no fact": {"accuracy": rgen_none}, "held-out, no fact": {"accuracy": none}}


def test_recipe_is_the_file_name_without_its_seed(script):
    assert script.recipe_of("checkpoint_average_4000_6000_seed10.json") == "checkpoint_average_4000_6000"
    assert script.recipe_of("near_twin05_known005_seed0.json") == "near_twin05_known005"
    assert script.recipe_of("earlier_word_level_model.json") == "earlier_word_level_model"


def test_each_target_at_its_bound_and_just_past_it(script):
    chance = 0.25
    at = script.met(_rows(0.92, 0.95, 0.90, 0.10, 0.45, 0.30), chance)
    assert all(at.values())
    past = script.met(_rows(0.919, 0.949, 0.899, 0.101, 0.449, 0.301), chance)
    assert not any(past.values())
    one_short = script.met(_rows(0.99, 0.96, 0.95, 0.05, 0.50, 0.10), chance)  # only the luck-bound row misses
    assert one_short["four model rows"] and one_short["R-Gen, no fact"]
    assert not one_short["held-out, no fact"] and not one_short["every row"]


def test_tally_groups_seeds_of_a_recipe_and_counts_them(script):
    good, bad = _rows(0.99, 0.96, 0.95, 0.05, 0.50, 0.25), _rows(0.99, 0.80, 0.95, 0.20, 0.50, 0.25)
    recipes = script.tally([("a_seed1.json", good), ("a_seed2.json", bad), ("b_seed1.json", good)], 0.25)
    assert list(recipes) == ["a", "b"]  # most models first
    assert recipes["a"]["models"] == ["a_seed1.json", "a_seed2.json"]
    assert recipes["a"]["four model rows"]["met"] == 1 and recipes["a"]["four model rows"]["n"] == 2
    assert recipes["a"]["easy-vqa test"]["share"] == 1.0
    low, high = recipes["b"]["every row"]["ci95"]
    assert 0 < low < 1 == high


def test_the_committed_result_counts_the_committed_measurements(script):
    import json

    committed = json.loads((script.ROOT / "benchmarks" / "results" / "target_rates.json").read_text())
    measured = script.nfs.committed_measurements(script.nfs.MEASURED, 200, 123)
    assert committed["committed_models"] == len(measured)
    assert sum(len(r["models"]) for r in committed["by_recipe"].values()) == len(measured)


def test_the_unedited_rgen_is_read_from_a_demo_reports_table(script, tmp_path):
    report = tmp_path / "x_demo" / "report.md"
    report.parent.mkdir()
    report.write_text("# Demo\n\n| Method | n | Rel. | T-Gen | I-Gen | R-Gen | Loc. |\n| --- | --- | --- | --- | --- | --- | --- |\n"
                      "| ReasonEdit | 36 | 77.8 | 77.8 | 58.3 | 94.4 | 100.0 |\n"
                      "| unedited model | 36 | 0.0 | 16.7 | 0.0 | 38.9 | 100.0 |\n\n"
                      "| Method | R-Gen |\n| --- | --- |\n| unedited model | 99.0 |\n")
    assert script.unedited_rgen(report) == 38.9  # the first table's row, by its header
    (tmp_path / "y_demo").mkdir()
    (tmp_path / "y_demo" / "report.md").write_text(report.read_text().replace("38.9", "48.9"))
    spread = script.demo_baseline(tmp_path)
    assert spread["reports"] == 2 and spread["mean"] == 43.9 and spread["min"] == 38.9 and spread["max"] == 48.9
