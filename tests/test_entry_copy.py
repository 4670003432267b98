"""benchmarks/entry_copy.py: answer entries quoting the asked question, in every wording (fast, no model)."""

from __future__ import annotations

import re

import pytest

from reasonedit_plugin.data.rule_properties import PROPERTIES, PROPERTY_BY_NAME
from reasonedit_plugin.data.shaperules import rule_world

TEMPLATE = "For {image}, the answer to '{question}' is {answer}."


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("entry_copy")


def test_every_pool_of_every_property_is_asked_and_the_control_for_each(script):
    asked = script.wordings()
    for prop in PROPERTIES:
        for pool in script.POOLS:
            assert {q for p, k, q in asked if p == prop.name and k == pool} == set(getattr(prop, pool))
        assert (prop.name, "control", script.CONTROL) in asked
        assert {q for p, k, q in asked if p == prop.name and k == "control_words"} == set(script.WORD_CONTROLS)


def test_prompts_quote_the_asked_question_on_train_rule_images_the_same_for_every_wording(script):
    world = rule_world()
    prop = PROPERTY_BY_NAME["element"]
    a = script.prompts("element", "Which element is tied to the shape in this picture?", 30, 0, TEMPLATE)
    b = script.prompts("element", script.CONTROL, 30, 0, TEMPLATE)
    assert len(a) == len(b) == 30
    assert [(x[0], x[3]) for x in a] == [(x[0], x[3]) for x in b]  # same images and entry values
    for image, text, options, value in a:
        quoted, asked = re.fullmatch(r"For an? \w+ \w+, the answer to '(.+)' is (\w+)\. (.+)", text).group(1, 3)
        assert quoted == asked and value in options == list(prop.values)
        image_id = int(re.search(r"(\d+)\.png$", image).group(1))
        info = next(x for x in script.image_catalogue("test") if x.image_id == image_id)
        assert not world.rule_for(prop, info).held_out
    values = [x[3] for x in script.prompts("points", script.CONTROL, 200, 0, TEMPLATE)]
    assert len(set(values)) == 4  # drawn at random, not the rule's own value


def test_a_model_that_copies_every_entry_reads_one_and_one_that_never_does_reads_chance(script, monkeypatch, tmp_path):
    def copier(image, text, options):  # lowest NLL for the entry's value
        value = re.search(r"' is (\w+)\.", text).group(1)
        return [0.0 if o == value else 1.0 for o in options]

    def first(image, text, options):
        return [0.0] + [1.0] * (len(options) - 1)

    monkeypatch.setattr(script, "trained_answer_template", lambda path: TEMPLATE)
    for scorer, expect in ((copier, 1.0), (first, None)):
        monkeypatch.setattr(script.mdm, "make_scorer", lambda path, s=scorer: (s, "fake", None))
        res = script.measure(tmp_path, 8, 0)
        assert len(res["wordings"]) == len(script.wordings())
        followed = [r["followed"] for r in res["wordings"]]
        if expect is not None:
            assert set(followed) == {expect} and all(s["below"] == 0 for s in res["summary"].values())
        else:  # the first option wins: right exactly when the random value is the first
            assert max(followed) < 1.0 and res["summary"]["control"]["below"] == len(PROPERTIES)
            assert res["summary"]["control_words"]["of"] == len(PROPERTIES) * len(script.WORD_CONTROLS)


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["no-equals-sign"], "give NAME=MODEL_DIR with an existing model folder"),
])
def test_a_bad_flag_is_answered_in_one_line_before_any_model_is_loaded(script, capsys, tmp_path, flags, message):
    with pytest.raises(SystemExit) as exit_:
        model = [] if flags[0] == "no-equals-sign" else [f"m={tmp_path}"]
        script.main([*flags, *model, "--out", str(tmp_path / "o.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err
