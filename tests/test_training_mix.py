"""The default VLM's training stream (``training_mix.MixSampler`` under a ``TrainConfig``): what each mix
kind and option writes, the answer-entry templates, and the validation records checkpoint selection reads. Fast,
no model."""

from __future__ import annotations

import re

import pytest

from reasonedit_plugin.data import shaperules as sr
from reasonedit_plugin.data import default_model_build as dmb
from reasonedit_plugin.data import default_model_scoring as dms
from reasonedit_plugin.data import mix_text
from reasonedit_plugin.data.language import CAPTION_TRIBES
from reasonedit_plugin.data import train_default_model as tdm
from reasonedit_plugin.data import training_mix as mix
from reasonedit_plugin.data.rule_properties import PROPERTIES


def test_caption_facts_can_only_be_answered_from_the_prompt():
    import random

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(), random.Random(0))
    examples = [sampler._caption_facts() for _ in range(40)]
    for ex in examples:
        colour_shape = ex.answer.split()[1:3]
        assert ex.answer.startswith("A ") and ex.answer.endswith(".") and ".." not in ex.text
        assert ex.answer[:-1] in ex.text  # the edited caption is in the prompt: copied, never remembered
        assert colour_shape[0] in {i.colour for i in sr.image_catalogue("train")}
    assert len({ex.answer for ex in examples}) >= 38  # made-up names differ from example to example


def test_name_facts_are_answered_by_the_name_stated_for_the_asked_images_colour_and_shape():
    import random

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(), random.Random(0))
    sampler.max_distractors = 2
    info_of = {x.path: x for x in sr.image_catalogue("train")}
    decoys = 0
    for _ in range(200):
        ex = sampler._name_facts()
        info = info_of[ex.image]
        facts, question = mix_text.split_question(ex.text)
        sentence = next(s for s, q in mix_text.NAME_RELATIONS if q == question)
        fill = dict(colour=info.colour, shape=info.shape, Colour=info.colour.capitalize())
        assert sentence.format(name=ex.answer, **fill) in facts and not ex.choices  # generated, open vocabulary
        named = re.findall(sentence.format(name="(\\w+)", colour="(?:\\w+)", shape="(?:\\w+)",
                                           Colour="(?:\\w+)").replace(".", "\\."), facts)
        decoys += len(named) == 2
        assert len(named) == len(set(named))  # a decoy names another, for another colour + shape
        assert ex.answer not in CAPTION_TRIBES  # never a name the caption command asks
    assert 70 < decoys < 130
    assert len({sampler._name_facts().answer for _ in range(50)}) >= 45  # a new name per example


def test_near_miss_twins_differ_from_their_facts_example_only_in_the_image():
    import random

    world = sr.rule_world()
    sampler = mix.MixSampler(world, tdm.TrainConfig(near_twin=1.0), random.Random(0))
    sampler.max_distractors = 2
    pairs = []
    for _ in range(600):
        ex = sampler.sample()
        if ex.kind == "facts" and sampler._queued:
            pairs.append((ex, sampler.sample()))
    assert len(pairs) >= 30
    info = {i.path: i for i in sr.image_catalogue("train")}
    for facts, twin in pairs:
        assert twin.kind == "near_miss" and twin.image != facts.image and twin.choices == facts.choices
        b = info[twin.image]
        # the same (noised) facts: only the question, which may name the image's colour or shape, differs
        assert facts.text.rsplit(". ", 1)[0] == twin.text.rsplit(". ", 1)[0]
        prop = next(p for p in sr.PROPERTIES if set(p.values) == set(facts.choices)) if facts.choices != sr.YES_NO else None
        if prop is not None:  # a property question: the twin's answer is its own (known) rule's value
            assert twin.answer == world.rule_for(prop, b).value and not world.rule_for(prop, b).held_out
    # off (the default): nothing is ever queued
    plain = mix.MixSampler(world, tdm.TrainConfig(), random.Random(0))
    plain.max_distractors = 2
    assert not any((plain.sample(), plain._queued)[1] for _ in range(300))


def test_default_training_stream_is_the_shipped_recipes():
    """The shipped model's command must still draw the examples it was trained on: options added to the mix
    (e.g. twins) leave the default stream alone. A deliberate recipe change updates this digest (session 11:
    letter names and 30 % word names for caption edits became the defaults with the model trained on them)."""
    import hashlib
    import random

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(), random.Random("train-mix:0"))
    drawn = []
    for easy in (True, False):
        sampler.easy, sampler.max_distractors = easy, 0 if easy else 4
        drawn += [repr(sampler.sample()) for _ in range(3000)]
    assert hashlib.md5("\n".join(drawn).encode()).hexdigest() == "6597033f789822368d73edb889a5841f"


def test_question_noise_touches_the_question_alone_and_keeps_its_protected_words():
    import random

    text = ("For a red circle, the answer to 'Which tribe owns this shape?' is Kesh. Red circles belong to the Kesh "
            "tribe. Which element is tied to the shape in this picture?")
    assert mix_text.split_question(text) == (text[: text.index(" Which element")],
                                             "Which element is tied to the shape in this picture?")  # the quoted
    # question ends no sentence
    assert mix_text.split_question("Which tribe owns this shape?") == ("", "Which tribe owns this shape?")
    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=1e-12, question_noise=1.0), random.Random(0))
    noisy = sampler._noisy(text, random.Random(1))
    facts, question = mix_text.split_question(noisy)
    assert facts == mix_text.split_question(text)[0]  # the facts: word noise only (here ~never)
    words = question.rstrip("?").lower().split()
    assert {"which", "element", "shape"} <= set(words) and not {"tied", "picture", "is", "the"} & set(words)
    off = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=1e-12), random.Random(0))
    assert off._noisy(text, random.Random(1)) == text  # off (the default): no second pass
    with pytest.raises(ValueError, match="question_noise"):
        tdm.TrainConfig(question_noise=1.5)


def test_quote_noise_gives_a_quoted_question_the_asked_questions_own_noise():
    import random

    text = ("For a red circle, the answer to 'Which element is tied to the shape in this picture?' is fire. Red "
            "circles stand for fire. Which element is tied to the shape in this picture?")
    on = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.3, question_noise=1.0, quote_noise=1.0),
                        random.Random(0))
    for seed in range(20):
        noisy = on._noisy(text, random.Random(seed))
        facts, question = mix_text.split_question(noisy)
        assert f" '{question}' " in facts  # the entry still quotes the asked question, word for word
        assert not {"tied", "picture"} & set(question.rstrip("?").lower().split())  # which was noised
        assert "  " not in noisy and "fire" in facts  # spaces kept around the quote; values never noised
    unquoted = "Red circles stand for fire. Which element is tied to the shape in this picture?"
    facts, question = mix_text.split_question(on._noisy(unquoted, random.Random(3)))
    assert "tied" not in question and "picture" not in question  # no quote: the question noise as before
    off = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.3, question_noise=1.0), random.Random(0))
    facts, question = mix_text.split_question(off._noisy(text, random.Random(1)))
    assert f"'{question}'" not in facts  # off (the default): quote and question noised apart
    with pytest.raises(ValueError, match="quote_noise"):
        tdm.TrainConfig(quote_noise=-0.1)


def test_entry_over_rationale_answers_a_quoted_entry_against_its_rationale():
    import random

    cfg = tdm.TrainConfig(entry_over_rationale=1.0, word_noise=0.0, question_noise=0.0, near_twin=0.0,
                          answer_template="For {image}, the answer to '{question}' is {answer}.")
    sampler = mix.MixSampler(sr.rule_world(), cfg, random.Random(0))
    conflicts = 0
    for _ in range(400):
        ex = sampler._facts()
        facts, question = mix_text.split_question(ex.text)
        entry = re.search(r"the answer to '([^']+)' is (\w+)\.", facts)
        if entry is None or entry.group(1) != question or ex.answer in ("yes", "no"):
            continue
        assert entry.group(2) == ex.answer  # the quoted entry's value is the answer
        rest = facts.replace(entry.group(0), "")
        named = {v for v in ex.choices if re.search(rf"\b{v}\b", rest)}
        if named and ex.answer not in named:
            conflicts += 1
    assert conflicts > 20  # rationales naming another value, under an entry quoting the question
    with pytest.raises(ValueError, match="entry_over_rationale"):
        tdm.TrainConfig(entry_over_rationale=2.0)


def test_quote_copy_is_answered_by_the_entry_whose_quote_and_image_both_match():
    import random

    cfg = tdm.TrainConfig(answer_template="For {image}, the answer to '{question}' is {answer}.")
    sampler = mix.MixSampler(sr.rule_world(), cfg, random.Random(0))
    entry = re.compile(r"For an? (\w+ \w+), the answer to '([^']+)' is (\w+)\.")
    decoys = {"question": 0, "image": 0}
    for _ in range(300):
        ex = sampler._quote_copy()
        info = sampler.image_info[ex.image]
        facts, question = mix_text.split_question(ex.text)
        assert not set(question.rstrip("?").lower().split()) & mix_text.PROTECTED  # random words, nothing to read
        entries = entry.findall(facts)
        matching = [v for img, q, v in entries if q == question and img == f"{info.colour} {info.shape}"]
        assert matching == [ex.answer] and ex.answer in ex.choices  # exactly one entry answers it
        for img, q, v in entries:
            if (img, q) != (f"{info.colour} {info.shape}", question):
                assert v != ex.answer
                decoys["question" if q != question else "image"] += 1
    assert decoys["question"] > 100 and decoys["image"] > 80  # both decoys are common
    plain = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(), random.Random(0))  # entries name no image
    for _ in range(100):
        facts, question = mix_text.split_question(plain._quote_copy().text)
        assert facts.count(f"'{question}'") == 1  # no same-question decoy where the image cannot tell it apart
    tdm.TrainConfig(mix={"plain": 0.9, "quote_copy": 0.1})  # a mix kind (off in every recipe)


def test_wide_questions_adds_the_extra_frames_to_rule_questions_only_when_asked():
    import random

    world = sr.rule_world()
    wide = mix.MixSampler(world, tdm.TrainConfig(wide_questions=True), random.Random(0))
    off = mix.MixSampler(world, tdm.TrainConfig(), random.Random(0))
    for prop in sr.PROPERTIES:
        assert len(prop.extra_questions) >= 5 and not set(prop.extra_questions) & set(prop.questions)
        assert off.rule_questions[prop.name] == prop.questions
        assert wide.rule_questions[prop.name] == prop.questions + prop.extra_questions
    frames = {}  # every extra frame, filled for some image, to its template
    for prop in sr.PROPERTIES:
        for template in prop.extra_questions:
            for image in wide.images[:40]:
                frames[sr.format_question(template, image)] = template
    wide.max_distractors = 0
    seen = {frames[q] for q in (mix_text.split_question(wide.sample().text)[1] for _ in range(2000)) if q in frames}
    assert len(seen) >= len(set(frames.values())) // 2  # the extra frames are asked
    off.max_distractors = 0
    assert not any(mix_text.split_question(off.sample().text)[1] in frames for _ in range(2000))


def test_letter_names_are_copied_piece_by_piece_never_held_out():
    import random
    import re

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(caption_word_names=0.0), random.Random(0))
    names = [sampler._name() for _ in range(500)]
    tokenizer = dmb.build_tokenizer(sr.rule_world())
    pieces = [tokenizer.tokenize(n) for n in names]
    assert not set(names) & set(CAPTION_TRIBES) and len(set(names)) > 400
    assert sum(len(p) >= 2 for p in pieces) > 0.8 * len(names)  # mostly several pieces, continuations included
    assert len({x for p in pieces for x in p if x.startswith("##")}) > 100
    syllables = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(caption_word_names=0.0, letter_names=False),
                               random.Random(0))
    pattern = re.compile("(%s){2,3}" % "|".join(mix_text.SYLLABLES))  # recipe 3's syllable names
    assert all(pattern.fullmatch(syllables._name().lower()) for _ in range(50))


def test_caption_names_are_no_value_of_the_rule_world_and_no_training_name():
    """A caption edit's name must be one the model can only copy: not a value the rule world trains it to write
    ("Vol", a caption name until session 49, was held by models that copied no other name), and never drawn
    as a training name; the retired name stays out of training draws too, so the stream is the shipped one."""
    import random

    from reasonedit_plugin.data.language import CAPTION_TRIBES, RETIRED_CAPTION_TRIBES
    from reasonedit_plugin.data.rule_properties import PROPERTIES

    world_values = {v.lower() for p in PROPERTIES for v in p.values}
    assert not {n.lower() for n in CAPTION_TRIBES} & world_values
    assert len(set(CAPTION_TRIBES)) == 12 and not set(CAPTION_TRIBES) & set(RETIRED_CAPTION_TRIBES)
    rng = random.Random(0)
    drawn = {mix_text.letters_name(rng) for _ in range(200_000)}
    assert "Vol" not in drawn and not drawn & set(CAPTION_TRIBES)
    assert len({n for n in drawn if len(n) == 3 and n.startswith("Vo")}) >= 15  # its neighbours are drawn: the
    # exclusion, not chance, keeps "Vol" out


def test_answer_entries_do_not_double_a_sentence_final_period():
    from reasonedit_plugin.config import CodebookConfig

    cfg = CodebookConfig()
    assert cfg.answer_entry("Describe this image.", "A red circle.") == \
        "The answer to 'Describe this image.' is A red circle."
    assert cfg.answer_entry("Which tribe?", "Vol") == "The answer to 'Which tribe?' is Vol."
    assert sr.answer_entry("Describe this image.", "A red circle.") == cfg.answer_entry("Describe this image.", "A red circle.")
    assert CodebookConfig(answer_template="Q: {question} A: {answer}").answer_entry("q", "a.") == "Q: q A: a."


NAMING = "For {image}, the answer to '{question}' is {answer}."


def test_an_answer_template_may_name_the_edited_image():
    from reasonedit_plugin.config import CodebookConfig
    from reasonedit_plugin.errors import ConfigError

    cfg = CodebookConfig(answer_template=NAMING)
    assert cfg.names_image and not CodebookConfig().names_image
    assert cfg.answer_entry("Which tribe?", "Vol", "A red circle.") == "For a red circle, the answer to 'Which tribe?' is Vol."
    assert cfg.answer_entry("Describe it.", "A dog.", "The Eiffel Tower") == \
        "For the Eiffel Tower, the answer to 'Describe it.' is A dog."
    with pytest.raises(ConfigError, match="description of its image"):
        cfg.answer_entry("Which tribe?", "Vol")
    assert CodebookConfig().answer_entry("q", "a", "A red circle.") == "The answer to 'q' is a."  # not named: ignored
    info = sr.image_catalogue("test")[0]
    assert sr.answer_entry("q", "a", info, NAMING) == f"For a {info.colour} {info.shape}, the answer to 'q' is a."
    assert sr.image_info(info.path) == info == sr.image_info(str(sr.easy_vqa_root() / info.path))
    with pytest.raises(ValueError, match="catalogue"):
        sr.image_info("elsewhere/x.png")
    with pytest.raises(ConfigError, match="must contain {answer}"):
        tdm.TrainConfig(answer_template="For {image}: {question}")


def test_near_miss_share_about_another_property_of_the_asked_image():
    """``near_other_property``: the share of near-miss edits about another property of the asked image. With an
    image-naming template their answer entry names the asked image; the others name a near miss (another key,
    so another caption), or fall back to another property where no near miss exists. 0.25 is the shipped
    recipe's split (the same draw as before)."""
    import random
    import re

    entry = re.compile(r"For an? (\w+) (\w+), the answer to '[^']*' is [^.']+\.")

    def same_image_share(share: float) -> float:
        cfg = tdm.TrainConfig(answer_template=NAMING, word_noise=0.0, easy_share=0.0, mix={"near_miss": 1.0},
                              near_other_property=share, max_facts=1)  # (max_facts 1: no distractor entries)
        sampler = mix.MixSampler(sr.rule_world(), cfg, random.Random(3))
        same = seen = 0
        for _ in range(400):
            ex = sampler.sample()
            info = sr.image_info(ex.image)
            named = entry.findall(ex.text)
            if ex.kind == "near_miss" and named:
                seen += 1
                same += named[0] == (info.colour, info.shape)
        assert seen > 100
        return same / seen

    none, shipped, every = same_image_share(0.0), same_image_share(0.25), same_image_share(1.0)
    assert none < 0.3  # only where no near-miss image exists for the asked property
    assert none + 0.1 < shipped < every - 0.3
    assert every > 0.9  # (the rest: images whose other properties the world does not know)
    with pytest.raises(ValueError, match="near_other_property"):
        tdm.TrainConfig(near_other_property=1.5)


def test_late_negation_puts_the_wrong_value_after_the_right_one_only_when_asked():
    """``late_negation``: rationales whose rule sentence names the wrong value last ("..., not two"), as the
    train pool's own negated forms do for one property of four; at 0 (the shipped recipe) the sampler draws
    nothing extra."""
    import random

    from reasonedit_plugin.data.language import rule_sentence

    for prop in sr.PROPERTIES:
        assert len(prop.late_negation_forms) >= 2
        for form in prop.late_negation_forms:
            assert form.index("{value}") < form.index("{other}")
        assert not set(prop.late_negation_forms) & set(prop.rule_forms)

    def late_share(share: float) -> float:
        cfg = tdm.TrainConfig(word_noise=0.0, late_negation=share)
        sampler = mix.MixSampler(sr.rule_world(), cfg, random.Random(5))
        late = 0
        for prop, info in random.Random(0).sample(sampler.rule_images, 200):
            value = sampler.rng.choice(prop.values)
            forms = prop.late_negation_forms
            # (the sentence's middle: a one-sentence rationale joins it to the evidence, lower-cased)
            needles = {rule_sentence(prop, prop.key_of(info), value, i, forms=forms)[1:-1] for i in range(len(forms))}
            text = " ".join(sampler._rationale(prop, info, value))
            late += any(n in text for n in needles)
        return late / 200

    assert late_share(1.0) == 1.0 and late_share(0.0) == 0.0 and 0.2 < late_share(0.4) < 0.6
    state = random.Random(5)
    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0), state)
    prop, info = sampler.rule_images[0]
    before = state.getstate()
    sampler._rationale(prop, info, prop.values[0])
    again = random.Random()
    again.setstate(before)
    assert sampler.rng.getstate() == _after_plain_rationale(again, prop, info, prop.values[0])
    with pytest.raises(ValueError, match="late_negation"):
        tdm.TrainConfig(late_negation=-0.1)


def _after_plain_rationale(rng, prop, info, value):
    from reasonedit_plugin.data.language import rationale_sentences

    rationale_sentences(prop, info, value, rng)
    return rng.getstate()


def test_the_mix_writes_answer_entries_in_the_configured_template():
    import random
    import re

    world = sr.rule_world()
    entry = re.compile(r"For an? (\w+) (\w+), the answer to '([^']*)' is ([^.']+)\.")
    sampler = mix.MixSampler(world, tdm.TrainConfig(answer_template=NAMING, word_noise=0.0, entry_sibling=1.0,
                                                    mix={"facts": 1.0}), random.Random(0))
    asked_elsewhere = 0
    for _ in range(300):
        ex = sampler.sample()
        assert "The answer to" not in ex.text
        info = sr.image_info(ex.image)
        for colour, shape, _, _ in entry.findall(ex.text):
            asked_elsewhere += (colour, shape) != (info.colour, info.shape)
    assert asked_elsewhere > 30  # siblings and distractors name other images
    default = mix.MixSampler(world, tdm.TrainConfig(word_noise=0.0, mix={"facts": 1.0}), random.Random(0))
    assert not any(entry.search(default.sample().text) for _ in range(100))
    # a sibling: the same rule key, another look (and never for a colour + shape rule)
    prop = next(p for p in sr.PROPERTIES if p.keyed_by == "shape")
    info = sampler.images[0]
    other = sampler._sibling(prop, info)
    assert other is not None and other.shape == info.shape and other.colour != info.colour
    both = next(p for p in sr.PROPERTIES if p.keyed_by == "colour+shape")
    assert sampler._sibling(both, info) is None


def test_scoring_rows_use_the_template_they_are_given():
    records = sr.generate_split("tmpl", 3, 0)
    named = dms.record_examples(records, "both", NAMING)
    plain = dms.record_examples(records, "both")
    for r, a, b in zip(records, named, plain):
        info = sr.image_info(r["image"])
        assert f"For a {info.colour} {info.shape}, the answer to '{r['prompt']}'" in a.text
        assert f"The answer to '{r['prompt']}'" in b.text


def test_validation_rows_read_the_configured_wording_pool_never_the_measured_one():
    world = sr.rule_world()
    shipped = tdm.validation_records(tdm.TrainConfig(valid_n=8), world)
    unseen = tdm.validation_records(tdm.TrainConfig(valid_n=8, valid_wordings="valid"), world)
    assert {r["meta"]["wordings"] for r in shipped} == {"train"} and {r["meta"]["wordings"] for r in unseen} == {"valid"}
    assert {r["meta"]["key"] for r in shipped} == {r["meta"]["key"] for r in unseen}  # same rules, other words
    assert not {r["prompt"] for r in shipped} & {r["prompt"] for r in unseen}
    with pytest.raises(ValueError, match="valid_wordings='eval'"):
        tdm.TrainConfig(valid_wordings="eval")


def test_validation_prompts_also_ask_in_the_untrained_extra_frames_only_when_asked():
    world = sr.rule_world()

    def frames(records):
        found = set()
        for r in records:
            prop, info = sr.PROPERTY_BY_NAME[r["meta"]["property"]], sr.image_info(r["image"])
            found |= {t for t in prop.extra_questions if sr.format_question(t, info) == r["prompt"]}
        return found

    plain = tdm.validation_records(tdm.TrainConfig(valid_n=64, valid_wordings="valid"), world)
    wide = tdm.validation_records(tdm.TrainConfig(valid_n=64, valid_wordings="valid", valid_extra_questions=True), world)
    assert not frames(plain)
    assert len(frames(wide)) >= 12  # most of the 24 extra frames, in a split of 64
    assert [r["meta"]["key"] for r in wide] == [r["meta"]["key"] for r in plain]  # the same rules in the same order
    assert not {r["rephrase_prompt"] for r in wide} & {r["prompt"] for r in wide}
    with pytest.raises(ValueError, match="wide_questions trains on"):
        tdm.TrainConfig(valid_extra_questions=True, wide_questions=True)


def test_plain_own_edit_puts_an_edit_about_the_asked_image_before_a_plain_question():
    import random

    world = sr.rule_world()
    info = {i.path: i for i in sr.image_catalogue("train")}
    plain = {(q.image, q.question): q.answer for q in sr.plain_questions("train")}

    def draws(share: float) -> list:
        cfg = tdm.TrainConfig(plain_own_edit=share, word_noise=0.0,
                              answer_template="For {image}, the answer to '{question}' is {answer}.")
        sampler = mix.MixSampler(world, cfg, random.Random(3))
        return [sampler._plain_noisy() for _ in range(200)]

    def names_own_image(ex) -> bool:  # a whole sentence naming the image's colour and shape (as an entry does)
        image = info.get(ex.image)  # (off: a fifth of the images asked about have no known colour and shape)
        facts = mix_text.split_question(ex.text)[0]
        return image is not None and re.search(rf"\b{image.colour} {image.shape}\b", facts, re.I) is not None

    with_edit, without = draws(1.0), draws(0.0)
    for ex in with_edit + without:  # the question and its answer are easy-vqa's, whatever the facts
        question = mix_text.split_question(ex.text)[1]
        assert plain[(ex.image, question)] == ex.answer
    assert sum(map(names_own_image, with_edit)) >= 120
    assert sum(map(names_own_image, without)) <= 40


def test_plain_own_evidence_adds_one_true_sentence_about_the_asked_image_and_no_edit():
    import random

    world = sr.rule_world()
    info = {i.path: i for i in sr.image_catalogue("train")}

    def draws(share: float) -> list:
        cfg = tdm.TrainConfig(plain_own_evidence=share, word_noise=0.0)
        sampler = mix.MixSampler(world, cfg, random.Random(5))
        sampler.max_distractors = 4
        return [sampler._plain_noisy() for _ in range(300)]

    def true_evidence(ex) -> bool:  # a sentence of the evidence forms, filled with the image's own colour / shape
        image = info.get(ex.image)
        facts = mix_text.split_question(ex.text)[0]
        return image is not None and any(
            form.format(colour=image.colour, shape=image.shape) in facts
            for forms in sr.EVIDENCE_FORMS.values() for form in forms["train"])

    on, off = draws(1.0), draws(0.0)
    assert all(map(true_evidence, on))  # every example, whatever property's key the sentence is worded for
    assert sum(map(true_evidence, off)) <= 60  # (by chance: a distractor about a look-alike image)


def test_known_noise_answers_a_share_of_no_fact_questions_at_random_only_when_asked():
    """``known_noise``: that share of ``known`` examples is answered by a random value (yes / no questions ask
    about the draw), the rest by the world (at 0, every recipe, nothing extra is drawn: the stream test above)."""
    import random

    def wrong_share(share: float) -> float:
        sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0, known_noise=share, yes_no=0.0),
                                 random.Random(3))
        wrong = 0
        for _ in range(300):
            example = sampler._known()  # a property question (yes_no=0): its options are its property's values
            prop = next(p for p in PROPERTIES if tuple(p.values) == tuple(example.choices))
            wrong += example.answer != sampler.world.rule_for(prop, sampler.image_info[example.image]).value
        return wrong / 300

    assert wrong_share(0.0) == 0.0 and wrong_share(1.0) > 0.6 and 0.15 < wrong_share(0.4) < 0.45
    with pytest.raises(ValueError, match="known_noise"):
        tdm.TrainConfig(known_noise=1.5)



def test_known_yes_sets_how_often_a_no_fact_yes_no_question_asks_the_rules_own_value():
    """``known_yes``: the share of ``known`` yes / no questions answered "yes" (0.5 by default, as before:
    the stream test above pins that nothing else is drawn); out of [0, 1] is refused."""
    import random

    def yes_share(share: float) -> float:
        sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=0.0, known_yes=share, yes_no=1.0),
                                 random.Random(5))
        answers = [sampler._known().answer for _ in range(600)]
        assert set(answers) <= {"yes", "no"}
        return answers.count("yes") / len(answers)

    assert 0.42 < yes_share(0.5) < 0.58 and 0.18 < yes_share(0.25) < 0.32 and yes_share(0.0) == 0.0
    with pytest.raises(ValueError, match="known_yes"):
        tdm.TrainConfig(known_yes=-0.1)
