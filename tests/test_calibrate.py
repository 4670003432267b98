"""benchmarks/calibrate.py: the grid syntax and the refusal to calibrate on a reported split (fast)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def calibrate(benchmark_script):
    return benchmark_script("calibrate")


def test_grid_values_are_yaml_scalars(calibrate):
    grid = calibrate.parse_grid(["embedding.scale=1,3.5", "retrieval.gate=nullset,percentile", "codebook.merge=false"])
    assert grid == {"embedding.scale": [1, 3.5], "retrieval.gate": ["nullset", "percentile"],
                    "codebook.merge": [False]}


@pytest.mark.parametrize("bad", ["scale=1", "embedding.scale", "embedding.scale="])
def test_bad_grid_items_say_how_to_write_them(calibrate, bad):
    with pytest.raises(SystemExit, match="section.field=v1,v2"):
        calibrate.parse_grid([bad])


def test_dotted_settings_become_nested_overrides_on_the_base(calibrate):
    nested = calibrate.overrides({"retrieval.nullset.text_min_cos": 0.5, "retrieval.gate": "nullset",
                                  "embedding.scale": 3})
    assert nested == {"retrieval": {"nullset": {"text_min_cos": 0.5}, "gate": "nullset"}, "embedding": {"scale": 3}}
    base = {"retrieval": {"gate": "percentile", "cap_keys": 7, "nullset": {"text_min_cos": 0.6, "image_factor": 1.0}},
            "embedding": {"scale": 30, "layer": None}}
    assert calibrate.merged(base, nested) == {
        "retrieval": {"gate": "nullset", "cap_keys": 7, "nullset": {"text_min_cos": 0.5, "image_factor": 1.0}},
        "embedding": {"scale": 3, "layer": None}}


def test_refuses_a_split_that_is_reported(calibrate):
    with pytest.raises(SystemExit, match="calibration split"):
        calibrate.main(["--split", "small", "--grid", "embedding.scale=3"])


def test_an_invalid_grid_point_fails_before_any_run(calibrate, monkeypatch):
    """Every grid point's config is built first: a bad one is one line, not a traceback after the others ran."""
    monkeypatch.setattr(calibrate.VLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model first"))
    with pytest.raises(SystemExit, match=r"--grid point .*evidence_min_yes.*0.6.*must satisfy"):
        calibrate.main(["--grid", "retrieval.nullset.evidence_min_yes=0.5,0.6"])


def test_refuses_held_out_records_as_tuning_edits(calibrate):
    heldout = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "heldout_handwritten.jsonl"
    with pytest.raises(SystemExit, match="held-out records"):
        calibrate.main(["--edits", str(heldout), "--grid", "embedding.scale=3"])


def test_tuning_and_held_out_sets_share_no_wording():
    import json

    data = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
    fields = ("prompt", "rephrase_prompt", "rgen_prompt")

    def wordings(name):
        rows = [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines()]
        texts = {r[f] for r in rows for f in fields}
        texts |= {s.strip() + "." for r in rows for s in r["rationale"].split(".") if s.strip()}
        return rows, texts

    tune, tune_text = wordings("tune_handwritten.jsonl")
    held, held_text = wordings("heldout_handwritten.jsonl")
    assert len(tune) == len(held) == 40
    assert all(r["meta"]["source"] == "handwritten-tune" for r in tune)
    # question wordings never repeat; a rationale sentence may only repeat if it states nothing worded
    assert not {r["prompt"] for r in tune} & {r["prompt"] for r in held}
    assert not {r["rephrase_prompt"] for r in tune} & (held_text | {r["prompt"] for r in held})
    assert not tune_text & held_text
