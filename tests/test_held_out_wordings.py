"""benchmarks/held_out_wordings.py: one model's held-out row split by question wording (fast, no model)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("held_out_wordings")


def test_worst_wording_and_the_rest_by_hand(script):
    # 20 records: wording a 10 at 0.5 (5 wrong), b 6 at 0.5 (3 wrong), c 4 at 1.0 -> 8 wrong of 20
    split = script.wording_split({"a": [10, 0.5], "b": [6, 0.5], "c": [4, 1.0]})
    assert split["accuracy"] == pytest.approx(0.6)
    assert split["worst_wording"] == "a" and split["worst_n"] == 10
    assert split["worst_share_of_errors"] == pytest.approx(5 / 8)
    assert split["accuracy_other_wordings"] == pytest.approx(1 - 3 / 10)
    assert split["wordings"] == 3


def test_a_row_without_errors_has_no_worst_share(script):
    split = script.wording_split({"a": [5, 1.0], "b": [5, 1.0]})
    assert split["accuracy"] == 1.0 and split["worst_share_of_errors"] == 0.0
    assert split["accuracy_other_wordings"] == 1.0


def test_a_row_in_one_wording_has_no_other_wordings(script):
    split = script.wording_split({"a": [8, 0.75]})
    assert split["accuracy"] == pytest.approx(0.75) and split["worst_share_of_errors"] == 1.0
    assert split["accuracy_other_wordings"] is None


def test_committed_measurements_carry_the_split(script):
    models = [name for name, rows in script.committed_measurements(script.MEASURED, 200, 123)
              if "by_wording" in rows.get(script.ROW, {})]
    assert len(models) >= 2  # the committed JSONs the benchmark reads
