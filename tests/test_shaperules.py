"""Contracts of the ShapeRules generator and of the shipped split (fast, CPU, no model)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from reasonedit_plugin.data import shaperules as sr

RECORD_FIELDS = set(sr.RECORD_FIELDS)


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return sr.load_split("small")


def test_shipped_split_has_every_field_and_existing_images(shipped):
    assert 40 <= len(shipped) <= 60
    ids = [r["id"] for r in shipped]
    assert len(set(ids)) == len(ids)
    for record in shipped:
        assert set(record) == RECORD_FIELDS, record["id"]
        for name in sr.IMAGE_FIELDS:
            assert Path(record[name]).is_absolute() and Path(record[name]).is_file(), (record["id"], name)
        assert record["target"] in record["choices"]
        assert record["rgen_target"] in record["rgen_choices"]
        assert record["multimodal_locality_ground_truth"] in record["multimodal_locality_choices"]
        assert record["hard_locality_ground_truth"] in record["hard_locality_choices"]
        assert 1 <= len(sr.SENTENCE_SPLIT.split(record["rationale"])) <= 3
        assert record["rephrase_prompt"] != record["prompt"]
        assert record["image_rephrase"] != record["image"]


def test_shipped_paths_are_relative_to_easy_vqa():
    with open(sr.split_path("small"), encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    for record in raw:
        for name in sr.IMAGE_FIELDS:
            assert not Path(record[name]).is_absolute()
            assert (sr.easy_vqa_root() / record[name]).is_file()


def test_shipped_split_is_what_the_generator_makes():
    with open(sr.split_path("small"), encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    assert raw == sr.generate_split("small", len(raw), seed=0)


def test_records_validate_with_the_record_loader(shipped):
    records = pytest.importorskip("reasonedit_plugin.records")
    for i, record in enumerate(shipped):
        made = records.make_record(record, index=i)
        assert made.target == record["target"]


def test_generator_is_deterministic_for_a_seed():
    a = sr.generate_split("det", 30, seed=3)
    b = sr.generate_split("det", 30, seed=3)
    c = sr.generate_split("det", 30, seed=4)
    assert a == b
    assert a != c


def test_edits_use_held_out_rules_only_and_their_values():
    world = sr.rule_world()
    for record in sr.generate_split("check", 120, seed=7):
        prop = sr.PROPERTY_BY_NAME[record["meta"]["property"]]
        rule = world.rule(prop.name, record["meta"]["key"])
        assert rule.held_out and record["target"] == rule.value
        info = _info(record["image"])
        assert prop.key_of(info) == rule.key
        assert prop.key_of(_info(record["image_rephrase"])) == rule.key
        loc = _info(record["multimodal_locality_image"])
        assert loc.colour != info.colour and loc.shape != info.shape
        if record["meta"]["hard_locality"] == "known_rule":
            near = world.rule(prop.name, prop.key_of(_info(record["hard_locality_image"])))
            assert not near.held_out and record["hard_locality_ground_truth"] == near.value


def test_held_out_rules_never_in_the_training_rule_set():
    world = sr.rule_world()
    held = {(r.prop, r.key) for r in world.held_out_rules}
    train = {(r.prop, r.key) for r in world.train_rules}
    assert held and train and not held & train
    assert len(held) + len(train) == sum(len(p.keys()) for p in sr.PROPERTIES)
    for prop in sr.PROPERTIES:  # both sides use several values, so "without the fact" is near chance
        assert len({r.value for r in world.held_out_rules if r.prop == prop.name}) >= 1
        assert len({r.value for r in world.train_rules if r.prop == prop.name}) >= 2


def test_training_mix_never_mentions_a_held_out_rule():
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    world = sr.rule_world()
    sampler = tdm.MixSampler(world, tdm.TrainConfig(), random.Random(0))
    held_rule_sentences = {
        sr.rule_sentence(sr.PROPERTY_BY_NAME[r.prop], r.key, v, form)
        for r in world.held_out_rules for v in sr.PROPERTY_BY_NAME[r.prop].values for form in range(3)
    }
    for _ in range(400):
        ex = sampler.sample()
        assert not any(s in ex.text for s in held_rule_sentences), ex.text
        if ex.kind in ("facts", "known"):
            info = _info(ex.image)
            asked = [p for p in sr.PROPERTIES if any(
                ex.text.endswith(sr.format_question(t, info, v)) for t in p.questions + p.yes_no for v in p.values)]
            assert asked, ex.text
            assert not any(world.rule(p.name, p.key_of(info)).held_out for p in asked), ex.text


def test_train_rules_do_not_predict_held_out_values():
    world = sr.rule_world()
    chance = sum(1 / len(p.values) for p in sr.PROPERTIES) / len(sr.PROPERTIES)
    assert abs(sr.neighbour_guess_accuracy(world) - chance) <= sr.PRIOR_TOLERANCE


def test_neighbour_guess_detects_a_leaky_world():
    world = sr.rule_world()
    leaky = []
    for rule in world.rules:  # every held-out value copied from the train rules that share a colour or shape
        if rule.held_out:
            train = [r for r in world.train_rules if r.prop == rule.prop]
            same = [r.value for r in train if set(r.key.split()) & set(rule.key.split())] or [r.value for r in train]
            rule = sr.Rule(rule.prop, rule.key, Counter(same).most_common(1)[0][0], True)
        leaky.append(rule)
    assert sr.neighbour_guess_accuracy(sr.RuleWorld(world.seed, tuple(leaky))) > 0.5


def test_rule_world_is_fixed():
    world = sr.rule_world()
    assert world.seed == sr.WORLD_SEED
    assert sr.rule_world(sr.WORLD_SEED) == world
    assert len(world.held_out_rules) == sum(sr.HELD_OUT_PER_PROPERTY.values())


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "s.jsonl"
    sr.main(["--split", "cli", "--n", "5", "--seed", "2", "--out", str(out)])
    records = sr.load_jsonl(out)
    assert [r["id"] for r in records] == [f"shaperules-cli-{i:04d}" for i in range(5)]


def test_load_split_names_the_fix_for_unknown_splits():
    with pytest.raises(FileNotFoundError, match="python -m reasonedit_plugin.data.shaperules"):
        sr.load_split("no-such-split")


def _info(path: str) -> sr.ImageInfo:
    split, _, name = Path(path).parts[-3:]
    image_id = int(Path(name).stem)
    return next(x for x in sr.image_catalogue(split) if x.image_id == image_id)
