"""benchmarks/demo_rgen_split.py: a demo's R-Gen split by retrieval, and issue 12's demo target (fast, no model)."""

from __future__ import annotations

import json

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("demo_rgen_split")


def probe(kind, accepted, correct):
    return {"kind": kind, "edit_id": "e", "question": "q?", "expected": "yes", "predicted": "yes" if correct else "no",
            "correct": correct, "accepted": accepted, "best_distance": None, "best_score": None, "threshold": None,
            "facts": 1 if accepted else 0}


def write_run(folder, probes, r_gen, unedited):
    folder.mkdir()
    methods = [{"kind": "reasonedit", "evaluation": {"final": {"r_gen": r_gen}, "probes": probes}},
               {"kind": "unedited", "evaluation": {"final": {"r_gen": unedited}, "probes": []}}]
    (folder / "results.json").write_text(json.dumps({"comparison": {"methods": methods}}))
    return folder


def test_split_and_target_by_hand(script, tmp_path):
    # 10 R-Gen probes: 8 retrieved (7 right), 2 not (1 right) -> R-Gen 0.8; unedited 0.6 -> the target is 0.9
    probes = ([probe("r_gen", True, True)] * 7 + [probe("r_gen", True, False)] + [probe("r_gen", False, True),
              probe("r_gen", False, False)] + [probe("locality", False, True)] * 3)
    run = script.split_of(write_run(tmp_path / "a", probes, 0.8, 0.6))
    assert run["n"] == 10 and run["retrieved"] == pytest.approx(0.8) and run["right_retrieved"] == pytest.approx(7 / 8)
    assert run["target"] == pytest.approx(0.9) and not run["meets"]
    # 0.9 = 0.8 x needed + 0.2 x 0.5  ->  needed 1.0
    assert run["right_retrieved_needed"] == pytest.approx(1.0)
    met = script.split_of(write_run(tmp_path / "b", [probe("r_gen", True, True)] * 9 + [probe("r_gen", True, False)],
                                    0.9, 0.4))
    assert met["meets"] and met["target"] == pytest.approx(0.85) and met["right_retrieved_needed"] == pytest.approx(0.85)


def test_main_writes_the_table_json_and_plot(script, tmp_path, capsys):
    off = write_run(tmp_path / "off", [probe("r_gen", True, True), probe("r_gen", False, False)], 0.5, 0.5)
    on = write_run(tmp_path / "on", [probe("r_gen", True, True), probe("r_gen", True, True)], 1.0, 0.5)
    out, png = tmp_path / "split.json", tmp_path / "split.png"
    script.main(["--runs", f"m={off},{on}", "--names", "off", "on", "--out", str(out), "--plot", str(png)])
    table = capsys.readouterr().out
    assert "| m | off | 2 | 50 % | 100.0 | 0.0 | 50.0 (50.0) | no |" in table
    assert "| m | on | 2 | 100 % | 100.0 | — | 100.0 (50.0) | yes |" in table
    data = json.loads(out.read_text())
    assert [r["meets"] for r in data["runs"]["m"]] == [False, True] and data["names"] == ["off", "on"]
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_bad_arguments_say_what_to_write(script, tmp_path):
    with pytest.raises(SystemExit, match="LABEL=DIR"):
        script.main(["--runs", "no-equals-sign"])
    with pytest.raises(SystemExit, match="no results.json"):
        script.main(["--runs", f"m={tmp_path}"])
