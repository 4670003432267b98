"""benchmarks/calibrate.py: the grid syntax and the refusal to calibrate on a reported split (fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate.py"


@pytest.fixture(scope="module")
def calibrate():
    spec = importlib.util.spec_from_file_location("calibrate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
