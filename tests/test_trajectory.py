"""benchmarks/trajectory.py: a run's measured rows step by step, from hand-made measurement files (no model)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("trajectory")


def _measure(both: float, rgen: float, near: float, worst: float) -> dict:
    rows = [{"row": "held-out + both", "n": 200, "accuracy": both,
             "by_wording": {"a?": [100, worst], "b?": [100, round(2 * both - worst, 4)]}},
            {"row": "R-Gen (+ both)", "n": 200, "accuracy": rgen},
            {"row": "near miss: answer changed by the facts", "n": 200, "accuracy": near},
            {"row": "R-Gen, no fact", "n": 200, "accuracy": 0.5},
            {"row": "held-out, no fact", "n": 200, "accuracy": 0.25}]
    return {"seed": 123, "rows": rows}


def test_a_run_read_step_by_step(script, tmp_path):
    measures = tmp_path / "m"
    measures.mkdir()
    # step: (held-out + both, R-Gen, near miss, the worse wording's accuracy)
    table = {1750: (0.5, 0.5, 0.5, 0.5), 2000: (0.90, 0.95, 0.05, 0.80), 2250: (0.96, 0.92, 0.08, 0.92),
             2500: (0.86, 0.97, 0.20, 0.72)}
    for step, values in table.items():
        (measures / f"step_{step:05d}.json").write_text(json.dumps(_measure(*values)))
    history = [{"step": 2000, "valid_score": 0.8}, {"step": 2250, "valid_score": 0.9},
               {"step": 2500, "valid_score": 0.85}, {"selected_step": 2250, "valid_score": 0.9}]
    args = tmp_path / "training_args.json"
    args.write_text(json.dumps({"history": history}))
    run = script.read_run(measures, args, first_step=2000)
    assert [s["step"] for s in run["steps"]] == [2000, 2250, 2500]  # before --first-step: not read
    assert run["kept_step"] == 2250 and run["kept"]["both"] == 0.96
    assert run["both_range"] == [0.86, 0.96] and run["both_largest_step_change"] == pytest.approx(0.10)
    assert run["steps_meeting"] == {"both": 1, "rgen": 3, "near_miss": 2}
    assert run["steps_meeting_all_three"] == [2250]
    assert run["steps"][0]["worst_wording"] == "a?" and run["steps"][0]["worst_accuracy"] == 0.8
    # validation 0.80 / 0.90 / 0.85 against held-out + both 0.90 / 0.96 / 0.86: deviations (-1, 1, 0) x 0.05 against
    # (-0.2, 1.6, -1.4) / 30: r = 1.8 / sqrt(2 x 4.56) = 0.596
    assert run["valid_score_vs_both_correlation"] == pytest.approx(0.596, abs=1e-3)
