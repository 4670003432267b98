"""Contracts of the ShapeRules generator and of the shipped split (fast, CPU, no model)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from reasonedit_plugin.data import shaperules as sr
from reasonedit_plugin.data import split_files

RECORD_FIELDS = set(sr.RECORD_FIELDS)


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return split_files.load_split("small")


def test_shipped_split_has_every_field_and_existing_images(shipped):
    assert 40 <= len(shipped) <= 60
    ids = [r["id"] for r in shipped]
    assert len(set(ids)) == len(ids)
    for record in shipped:
        assert set(record) == RECORD_FIELDS, record["id"]
        for name in split_files.IMAGE_FIELDS:
            assert Path(record[name]).is_absolute() and Path(record[name]).is_file(), (record["id"], name)
        assert record["target"] in record["choices"]
        assert record["rgen_target"] in record["rgen_choices"]
        assert record["multimodal_locality_ground_truth"] in record["multimodal_locality_choices"]
        assert record["hard_locality_ground_truth"] in record["hard_locality_choices"]
        assert 1 <= len(sr.SENTENCE_SPLIT.split(record["rationale"])) <= 5
        assert record["rephrase_prompt"] != record["prompt"]
        assert record["image_rephrase"] != record["image"]


def test_no_rephrase_is_another_records_prompt(shipped):
    prompts = {r["prompt"] for r in shipped}
    assert not [r["id"] for r in shipped if r["rephrase_prompt"] in prompts]
    big = sr.generate_split("rephrase-check", 300, seed=5)
    assert not {r["rephrase_prompt"] for r in big} & {r["prompt"] for r in big}


def test_shipped_paths_are_relative_to_easy_vqa():
    with open(split_files.split_path("small"), encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    for record in raw:
        for name in split_files.IMAGE_FIELDS:
            assert not Path(record[name]).is_absolute()
            assert (sr.easy_vqa_root() / record[name]).is_file()


def test_shipped_split_is_what_the_generator_makes():
    with open(split_files.split_path("small"), encoding="utf-8") as fh:
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
        kind = record["meta"]["hard_locality"]
        assert kind in sr.HARD_LOCALITY_KINDS
        hard = _info(record["hard_locality_image"])
        assert record["hard_locality_ground_truth"] in record["hard_locality_choices"]
        if kind in ("shares_colour", "shares_shape", "same_wording"):  # the edit's wording, another known rule
            near = world.rule(prop.name, prop.key_of(hard))
            assert not near.held_out and near.key != rule.key and record["hard_locality_ground_truth"] == near.value
            assert hard.image_id != info.image_id
            template = next(t for t in prop.wordings("question", "eval") if sr.format_question(t, info) == record["prompt"])
            assert record["hard_locality_prompt"] == sr.format_question(template, hard)
            if kind == "shares_colour":
                assert hard.colour == info.colour and hard.shape != info.shape
            if kind == "shares_shape":
                assert hard.shape == info.shape and hard.colour != info.colour
        elif kind == "other_property":  # the edited image, a question about another (known) property
            assert record["hard_locality_image"] == record["image"]
            other = next(p for p in sr.PROPERTIES if record["hard_locality_choices"] == list(p.values))
            assert other is not prop
            assert record["hard_locality_ground_truth"] == world.rule(other.name, other.key_of(info)).value
        else:  # a look-alike image, a plain easy-vqa question
            assert (hard.colour, hard.shape) == (info.colour, info.shape) and hard.image_id != info.image_id


def test_hard_locality_covers_every_kind():
    kinds = {r["meta"]["hard_locality"] for r in sr.generate_split("kinds", 100, seed=2)}
    assert kinds == set(sr.HARD_LOCALITY_KINDS)


def test_calibration_split_is_disjoint_from_the_evaluated_split(shipped):
    calib = sr.generate_split("calib", 96, seed=1)
    assert {r["meta"]["purpose"] for r in calib} == {"calibration"}
    evaluated = sr.generate_split("small", 300, seed=0)  # more than shipped: every eval rule and many images
    rules = lambda rs: {(r["meta"]["property"], r["meta"]["key"]) for r in rs}  # noqa: E731
    images = lambda rs: {r[f] for r in rs for f in split_files.IMAGE_FIELDS}  # noqa: E731
    prompts = lambda rs: {r[f] for r in rs for f in ("prompt", "rephrase_prompt", "rgen_prompt")}  # noqa: E731
    assert rules(calib) and not rules(calib) & rules(evaluated)
    assert not images(calib) & images(evaluated)
    assert not prompts(calib) & prompts(evaluated)
    world = sr.rule_world()
    assert {(r.prop, r.key) for r in world.held_out_for("calibration")} == rules(calib)
    assert not {(r.prop, r.key) for r in world.held_out_for("calibration")} & \
        {(r.prop, r.key) for r in world.held_out_for("eval")}


def test_wording_pools_are_disjoint_and_evaluated_splits_use_held_out_wordings(shipped):
    from reasonedit_plugin.data import language

    train, valid, held = (language.all_wordings(pool, sr.PROPERTIES) for pool in ("train", "valid", "eval"))
    assert train and valid and held and not train & held and not valid & (train | held)
    for prop in sr.PROPERTIES:
        for kind in ("question", "rephrase", "yes_no", "rule"):
            assert prop.wordings(kind, "eval") and prop.wordings(kind, "valid"), (prop.name, kind)
        for pool in ("valid", "eval"):
            assert not set(prop.wordings("question", pool)) & set(prop.wordings("rephrase", pool))
    for table in (language.CONNECTORS, language.CAPTION_PROMPTS, language.APPLIES_PROMPTS, language.SPLIT_EVIDENCE):
        assert set(table) == set(language.POOLS)
        assert not set(table["valid"]) & (set(table["train"]) | set(table["eval"]))
    for record in sr.generate_split("wordings", 60, seed=3):
        prop = sr.PROPERTY_BY_NAME[record["meta"]["property"]]
        info = _info(record["image"])
        assert record["prompt"] in {sr.format_question(t, info) for t in prop.wordings("question", "eval")}
        assert record["rephrase_prompt"] in {sr.format_question(t, info) for t in prop.wordings("rephrase", "eval")}
        assert record["rgen_prompt"] in {sr.format_question(t, info, v) for t in prop.wordings("yes_no", "eval")
                                         for v in prop.values}


def test_a_split_in_the_valid_pool_keeps_its_rules_and_images_and_changes_only_the_wordings():
    from reasonedit_plugin.data import language

    train = sr.generate_split("train-valid", 24, 1, purpose="calibration")
    valid = sr.generate_split("train-valid", 24, 1, purpose="calibration", wordings="valid")
    assert [r["meta"]["wordings"] for r in valid] == ["valid"] * 24 and train[0]["meta"]["wordings"] == "train"
    assert {(r["meta"]["property"], r["meta"]["key"]) for r in valid} == \
        {(r["meta"]["property"], r["meta"]["key"]) for r in train}
    other = language.all_wordings("train", sr.PROPERTIES) | language.all_wordings("eval", sr.PROPERTIES)
    for record in valid:
        prop, info = sr.PROPERTY_BY_NAME[record["meta"]["property"]], _info(record["image"])
        assert record["prompt"] in {sr.format_question(t, info) for t in prop.wordings("question", "valid")}
        assert record["rephrase_prompt"] in {sr.format_question(t, info) for t in prop.wordings("rephrase", "valid")}
        assert not {sr.format_question(t, info) for t in other if "{value}" not in t} & {record["prompt"]}
        if record["meta"]["hard_locality"] == "other_property":
            hard = _info(record["hard_locality_image"])
            assert any(record["hard_locality_prompt"] == sr.format_question(t, hard)
                       for p in sr.PROPERTIES for t in p.wordings("question", "valid"))
    with pytest.raises(ValueError, match="wordings='test'"):
        sr.generate_split("x", 2, 0, wordings="test")


def test_rationales_vary_in_structure():
    from reasonedit_plugin.data import language

    prop, info = sr.PROPERTY_BY_NAME["tribe"], sr.image_catalogue("test")[0]
    rng = random.Random(0)
    for style in language.RATIONALE_STYLES:
        for _ in range(20):
            sentences = language.rationale_sentences(prop, info, "Kesh", rng, style=style)
            text = " ".join(sentences)
            assert sr.SENTENCE_SPLIT.split(text) == sentences  # METHOD.md §1's splitter recovers them
            assert "kesh" in text.lower() and info.colour in text.lower()  or style == "rule" or \
                (info.shape in text.lower())
            assert len(sentences) == {"rule": 1, "one-sentence": 1, "evidence-first": 2, "rule-first": 2}.get(
                style, len(sentences))
            if style == "long":
                assert 4 <= len(sentences) <= 5
    negated = language.rule_sentence(prop, "red circle", "Kesh", form=4)
    assert "not" in negated and "Vol" not in negated or "Kesh" in negated


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
    from reasonedit_plugin.data import training_mix as mix
    world = sr.rule_world()
    every_kind = {**tdm.TrainConfig().mix, "applies": 0.05, "quote_copy": 0.05, "name_facts": 0.05}  # (off by default)
    sampler = mix.MixSampler(world, tdm.TrainConfig(word_noise=0.0, mix=every_kind), random.Random(0))  # noise would rewrite the questions parsed below
    held_rule_sentences = {
        sr.rule_sentence(sr.PROPERTY_BY_NAME[r.prop], r.key, v, form, pool)
        for r in world.held_out_rules for v in sr.PROPERTY_BY_NAME[r.prop].values for pool in sr.POOLS
        for form in range(len(sr.PROPERTY_BY_NAME[r.prop].wordings("rule", pool)))
    }
    held_subjects = {sr.PROPERTY_BY_NAME[r.prop].subject(r.key) for r in world.held_out_rules}
    kinds = set()
    for _ in range(600):
        ex = sampler.sample()
        kinds.add(ex.kind)
        assert not any(s in ex.text for s in held_rule_sentences), ex.text
        if ex.kind in ("facts", "known", "near_miss"):
            info = _info(ex.image)
            asked = [p for p in sr.PROPERTIES if any(
                ex.text.endswith(sr.format_question(t, info, v)) for t in p.questions + p.yes_no for v in p.values)]
            assert asked, ex.text
            assert not any(world.rule(p.name, p.key_of(info)).held_out for p in asked), ex.text
        if ex.kind == "quote_copy":  # its random question is about a property whose rule for the image is a train rule
            prop = next(p for p in sr.PROPERTIES if p.values == ex.choices)
            assert not world.rule(prop.name, prop.key_of(_info(ex.image))).held_out, ex.text
    assert kinds == set(mix.MIX_KINDS)
    assert held_subjects  # (rule sentences cover every rendering of a held-out rule above)


def test_the_applies_check_says_whether_the_rationale_is_about_the_image():
    """``applies`` examples: an edit's rationale about this image's rule key ("yes", about half) or about a
    near miss sharing its colour or shape under another key ("no"); the evidence sentence names the
    colour and shape the rationale is about."""
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    from reasonedit_plugin.data import training_mix as mix

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0, easy_share=0.0, mix={"applies": 1.0}), random.Random(3))
    answers = []
    for _ in range(200):
        ex = sampler.sample()
        info = _info(ex.image)
        assert ex.kind == "applies" and ex.choices == sr.YES_NO
        assert any(ex.text.endswith(q) for q in sr.APPLIES_PROMPTS["train"])
        words = set(re.findall(r"[a-z]+", ex.text.lower()))
        named = {c for c in sr.COLOURS if c in words} | {x for x in sr.SHAPES if x in words or x + "s" in words}
        assert named, ex.text  # every rationale says what it is about
        assert (named <= {info.colour, info.shape}) == (ex.answer == "yes"), ex.text
        answers.append(ex.answer)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_near_miss_entries_can_quote_the_asked_question():
    """``near_same_question``: a near miss's answer entry quotes the asked question's template filled for the
    near-miss image (verbatim the asked question when the template names no colour or shape); its value is
    never the answer. Off (0): the default stream draws nothing for it."""
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    from reasonedit_plugin.data import training_mix as mix

    def verbatim_share(share: float) -> float:
        cfg = tdm.TrainConfig(word_noise=0.0, easy_share=0.0, mix={"near_miss": 1.0}, near_same_question=share)
        sampler = mix.MixSampler(sr.rule_world(), cfg, random.Random(4))
        quoted = entries = 0
        for _ in range(400):
            ex = sampler.sample()
            question = ex.text[ex.text.rfind(". ") + 2:] if ". " in ex.text else ex.text
            entry = re.search(r"The answer to '(.*?)' is (\w+)\.", ex.text)
            if entry and ex.choices != sr.YES_NO:
                entries += 1
                quoted += entry.group(1) == question
                if entry.group(1) == question:
                    assert entry.group(2) != ex.answer, ex.text
        return quoted / entries

    assert verbatim_share(1.0) > 0.2 and verbatim_share(0.0) < 0.1  # (measured: 0.31, 0.04)


def test_training_mix_never_uses_a_held_out_wording():
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    from reasonedit_plugin.data import training_mix as mix
    from reasonedit_plugin.data import language

    # the longest literal piece of every valid or eval template (placeholders removed) must never occur in
    # training text
    pieces = set()
    for pool in ("valid", "eval"):
        for template in language.all_wordings(pool, sr.PROPERTIES):
            literal = max((p.strip(" ,.?!;:-") for p in template.replace("}", "{").split("{")[::2]), key=len)
            if len(literal) >= 12:
                pieces.add(literal.lower())
        pieces |= {q.lower().rstrip("?") for q in language.APPLIES_PROMPTS[pool]}
    assert len(pieces) > 40
    every_kind = {**tdm.TrainConfig().mix, "applies": 0.05}
    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0, mix=every_kind,  # templates, not noise
                                                              late_negation=0.5),  # words; the optional forms too
                             random.Random(1))
    for _ in range(600):
        ex = sampler.sample()
        text = (ex.text + " " + ex.answer).lower()
        assert not [p for p in pieces if p in text], ex.text


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
    records = split_files.load_jsonl(out)
    assert [r["id"] for r in records] == [f"shaperules-cli-{i:04d}" for i in range(5)]
    assert {r["meta"]["wordings"] for r in records} == {"eval"}
    sr.main(["--split", "cli", "--n", "5", "--seed", "2", "--wordings", "valid", "--out", str(out)])
    assert {r["meta"]["wordings"] for r in split_files.load_jsonl(out)} == {"valid"}
    with pytest.raises(SystemExit) as exit_:  # argparse's one-line usage error, and nothing written
        sr.main(["--split", "cli", "--n", "0", "--out", str(tmp_path / "none.jsonl")])
    assert exit_.value.code == 2 and not (tmp_path / "none.jsonl").exists()


def test_load_split_names_the_fix_for_unknown_splits():
    with pytest.raises(FileNotFoundError, match="python -m reasonedit_plugin.data.shaperules"):
        split_files.load_split("no-such-split")


def _info(path: str) -> sr.ImageInfo:
    split, _, name = Path(path).parts[-3:]
    image_id = int(Path(name).stem)
    return next(x for x in sr.image_catalogue(split) if x.image_id == image_id)


def test_word_noise_keeps_what_the_answer_depends_on():
    from reasonedit_plugin.data.mix_text import PROTECTED, WORD, word_noise

    text = "The answer to 'Which tribe owns this shape?' is Kesh. Red circles are not in the Vol tribe."
    words = ["alpha", "beta"]
    assert word_noise(text, 0.0, random.Random(0), words) == text
    noisy = word_noise(text, 1.0, random.Random(0), words)
    kept = [w for w in WORD.findall(noisy) if w not in words]
    assert kept == ["Which", "tribe", "shape", "Kesh", "Red", "circles", "not", "Vol", "tribe"]
    assert all(w.lower().rstrip("s") in PROTECTED or w.lower() in PROTECTED for w in kept)
    assert "  " not in noisy
    some = [word_noise(text, 0.3, random.Random(s), words) for s in range(20)]
    assert len(set(some)) > 10 and some == [word_noise(text, 0.3, random.Random(s), words) for s in range(20)]


def test_word_noise_only_after_the_curriculum():
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    from reasonedit_plugin.data import training_mix as mix

    cfg = tdm.TrainConfig(word_noise=0.5)
    clean = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0), random.Random(3))
    noisy = mix.MixSampler(sr.rule_world(), cfg, random.Random(3))
    assert noisy.noise_words and not clean.noise_words
    noisy.easy = clean.easy = True
    assert noisy.sample().text == clean.sample().text  # curriculum: untouched (same draws)
    noisy.easy = False
    texts = [noisy.sample().text for _ in range(50)]
    vocab = set(noisy.noise_words)
    assert sum(any(w in vocab for w in t.lower().split()) for t in texts) > 25
    plain = [noisy._plain().text for _ in range(30)]  # plain easy-vqa questions keep their words
    assert all(q in {x.question for x in sr.plain_questions("train")} for q in plain)


def test_caption_edit_names_mix_real_words_and_made_up_ones():
    tdm = pytest.importorskip("reasonedit_plugin.data.train_default_model")
    from reasonedit_plugin.data import training_mix as mix

    for share in (0.3, 0.7):  # the default (session 11) and recipe 3's
        sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0, caption_word_names=share),
                                 random.Random(0))
        names = [sampler._name().lower() for _ in range(400)]
        real = sum(n in set(sampler.name_words) for n in names) / len(names)
        assert share - 0.1 < real < share + 0.1
    assert tdm.TrainConfig().caption_word_names == 0.3
    # the made-up rest (letters; recipe 3: syllables) is checked in
    # test_training_mix.test_letter_names_are_copied_piece_by_piece_never_held_out


def test_edit_facts_describe_the_image_only_for_an_image_naming_template():
    from reasonedit_plugin.data.default_model_scoring import edit_facts

    record = sr.generate_split("facts", 1, seed=2)[0]
    info = sr.image_info(record["image"])
    naming = "For {image}, the answer to '{question}' is {answer}."
    entry, *rationale = edit_facts(record, "both", naming)
    assert entry == f"For a {info.colour} {info.shape}, the answer to '{record['prompt']}' is {record['target']}."
    assert rationale and all(s in record["rationale"] for s in rationale)
    plain = edit_facts({**record, "image": "not/an/easy-vqa/image.png"}, "answer")  # no image needed, none read
    assert plain == [f"The answer to '{record['prompt']}' is {record['target']}."]
    assert edit_facts(record, "rationale", naming) == rationale
