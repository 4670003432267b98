"""benchmarks/entry_copy.py: answer entries quoting the asked question, in every wording (fast, no model)."""

from __future__ import annotations

import re

import pytest

from reasonedit_plugin.data.rule_properties import PROPERTIES
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


def test_prompts_quote_the_asked_question_on_train_rule_images_the_same_for_every_wording(script):
    world = rule_world()
    prop = next(p for p in PROPERTIES if p.name == "element")
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
