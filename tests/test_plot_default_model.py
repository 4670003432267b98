"""examples/plot_default_model.py: issue 12's target rows of measured models, side by side."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import plot_default_model as pdm  # noqa: E402


def _measured(path: Path, **accuracy: float) -> Path:
    rows = [{"row": row, "n": 200, "accuracy": accuracy.get(label, 0.5)} for row, label in
            (("easy-vqa test", "plain"), ("held-out + both", "both"), ("R-Gen (+ both)", "rgen"))]
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_plots_every_model_and_reads_labels(tmp_path):
    a = _measured(tmp_path / "a.json", plain=0.99, both=0.96)
    b = _measured(tmp_path / "b.json", rgen=0.91)
    label, rows = pdm.load(f"seed 1={a}")
    assert label == "seed 1" and rows["held-out + both"] == 0.96
    assert pdm.load(str(b))[0] == "b"                             # a bare path is labelled by its name
    out = pdm.plot([pdm.load(f"seed 1={a}"), pdm.load(str(b))], tmp_path / "p" / "seeds.png", "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"          # rows a file lacks are left out, not an error


def test_no_two_models_share_a_colour():
    for n in (1, 10, 11, 20):
        assert len(set(map(str, pdm.bar_colours(n)))) == n


def test_a_file_that_is_not_a_measurement_says_how_to_make_one(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="--json FILE"):
        pdm.load(f"x={bad}")


def test_the_no_fact_row_is_drawn_against_the_chance_the_files_share(tmp_path):
    def with_no_fact(name: str, chance: float | None) -> str:
        path = _measured(tmp_path / f"{name}.json")
        data = json.loads(path.read_text())
        data["rows"].append({"row": "held-out, no fact", "n": 200, "accuracy": 0.3,
                             **({} if chance is None else {"chance": chance})})
        path.write_text(json.dumps(data))
        return f"{name}={path}"

    a, b, c, d = with_no_fact("a", 0.25), with_no_fact("b", 0.25), with_no_fact("c", 0.2), with_no_fact("d", None)
    assert pdm.split_chance([a, b]) == 0.25
    assert pdm.split_chance([a, c]) is None and pdm.split_chance([a, d]) is None   # no band rather than a wrong one
    assert pdm.load(a)[1]["held-out, no fact"] == 0.3
    out = pdm.plot([pdm.load(a), pdm.load(b)], tmp_path / "nf.png", "t", chance=0.25)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
