"""benchmarks/validation_transfer.py: validation vs measured split per variant, and the rule's pick (fast, no model)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("validation_transfer")


def test_ranks_margins_and_correlation_by_hand(script):
    assert script.spearman([0.3, 0.1, 0.3, 0.2], [4, 1, 3, 2]) == pytest.approx(0.9486833)  # ties averaged
    assert script.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert script.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert script.spearman([1, 1, 1], [1, 2, 3]) is None and script.spearman([1, 2], [2, 1]) is None
    assert script.margin("held-out + both", 0.97) == pytest.approx(0.02)
    assert script.margin("near miss: answer changed by the facts", 0.13) == pytest.approx(-0.03)


def write(folder, name, hob, rgen, near):
    folder.mkdir(exist_ok=True)
    rows = [{"row": "held-out + both", "accuracy": hob}, {"row": "R-Gen (+ both)", "accuracy": rgen},
            {"row": "near miss: answer changed by the facts", "accuracy": near}]
    (folder / f"{name}.json").write_text(json.dumps({"rows": rows}))


def test_the_rule_picks_most_targets_then_margin(script, tmp_path, capsys):
    val, ev = tmp_path / "val", tmp_path / "eval"
    # seed 1: a meets 2 on validation (margin small), b meets 2 with a larger margin, c meets 1
    write(val, "a_seed1", 0.96, 0.91, 0.2), write(ev, "a_seed1", 0.90, 0.95, 0.05)
    write(val, "b_seed1", 0.99, 0.95, 0.15), write(ev, "b_seed1", 0.96, 0.92, 0.08)
    write(val, "c_seed1", 0.90, 0.80, 0.05), write(ev, "c_seed1", 0.80, 0.70, 0.2)
    out = script.compare(val, ev)["1"]
    assert out["pick"] == "b_seed1" and out["pick_eval_met"] == 3 and out["best_eval_met"] == 3
    assert out["spearman"]["held-out + both"] == pytest.approx(1.0)
    script.main(["--val-dir", str(val), "--eval-dir", str(ev), "--out", str(tmp_path / "t.json")])
    assert "seed 1: the rule picks b_seed1 (3 of 3 met" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["seeds"]["1"]["pick"] == "b_seed1"


def test_a_validation_file_without_its_measured_twin_is_named(script, tmp_path):
    write(tmp_path / "val", "lonely_seed2", 0.9, 0.9, 0.1)
    (tmp_path / "eval").mkdir()
    with pytest.raises(SystemExit, match="lonely_seed2.json.*is not there"):
        script.compare(tmp_path / "val", tmp_path / "eval")
