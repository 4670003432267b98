"""Contracts of the shipped default VLM (``reasonedit_plugin/assets/tiny-qwen2-vl-shapes``): it loads
offline with ``from_pretrained``, its processor works without torchvision, it generates, and it does
what ReasonEdit needs (answers easy-vqa, reads facts). Fast (seconds, CPU)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from reasonedit_plugin.data import shaperules as sr
from reasonedit_plugin.data import default_model_build as dmb
from reasonedit_plugin.data import default_model_scoring as dms
from reasonedit_plugin.data import train_default_model as tdm
from reasonedit_plugin.data import training_mix as mix

MODEL_DIR = Path(tdm.TrainConfig().out)
CURRENT_RECIPE = "pretrained_embeddings" in json.loads((MODEL_DIR / "training_args.json").read_text())["config"]
"""Whether the shipped asset was trained by the current recipe (MiniLM WordPiece vocabulary). If not, it
is the earlier word-level model, kept because no run of the current recipe beat it yet (README)."""
current_recipe_only = pytest.mark.xfail(
    not CURRENT_RECIPE, strict=True,
    reason="the shipped asset is the earlier word-level model: it does not meet this target (README)")
target_not_met = pytest.mark.xfail(
    strict=True, reason="issue 12 target not met by the shipped model (docs/RESULTS.md, 'The embedded tiny VLM'): "
                        "remove this mark when a retrained model meets it")

TINY_TRAINING = dict(batch_size=4, eval_every=2, eval_n=2, valid_n=2, hidden_size=32, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, vision_dim=32, vision_depth=1, vision_heads=2,
                     curriculum_copy_target=0.0, curriculum_restarts=0)
"""A tiny model and a few-step run: the training code's paths, not the recipe's figures."""


@pytest.fixture(scope="module", autouse=True)
def offline():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(MODEL_DIR, local_files_only=True).eval()


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoConfig

    try:
        from reasonedit_plugin.model_specs import get_model_spec
        from reasonedit_plugin.vlm import load_processor
    except ImportError:  # the VLM interface is not there yet: the same image-only construction
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        return dmb.image_only_processor(Qwen2VLImageProcessorPil.from_pretrained(MODEL_DIR),
                                        AutoTokenizer.from_pretrained(MODEL_DIR))
    return load_processor(MODEL_DIR, get_model_spec(AutoConfig.from_pretrained(MODEL_DIR)))


def _image(rel: str) -> Image.Image:
    with Image.open(sr.easy_vqa_root() / rel) as im:
        return im.convert("RGB")


def test_folder_is_a_small_standard_checkpoint():
    assert "qwen2-vl" in MODEL_DIR.name  # how EasyEdit's MultimodalEditor recognises the family
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "processor_config.json", "chat_template.jinja", "training_args.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    size_mb = sum(p.stat().st_size for p in MODEL_DIR.iterdir()) / 2**20
    assert size_mb <= 25
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    assert json.loads((MODEL_DIR / "processor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"


def test_model_loads_offline_with_the_family_class(model):
    from transformers import Qwen2VLForConditionalGeneration

    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert model.config.model_type == "qwen2_vl"
    assert sum(p.numel() for p in model.parameters()) < 6_000_000


def test_model_spec_row_fits_the_shipped_model(model):
    specs = pytest.importorskip("reasonedit_plugin.model_specs")
    spec = specs.get_model_spec(model)
    assert spec.model_type == "qwen2_vl"
    model.get_submodule(spec.vision_tower)


def test_processor_works_without_torchvision(processor):
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        assert "pil" in type(processor.image_processor).__name__.lower() or \
            type(processor.image_processor).__module__.endswith("image_processing_pil_qwen2_vl")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what shape is present?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>what shape is present?<|im_end|>" in text
    inputs = processor(text=[text], images=[_image("test/images/0.png")], return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_id).sum()) == 16  # 64x64, patch 8, merge 2
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert processor.tokenizer.unk_token_id not in inputs["input_ids"][0].tolist()


def test_training_encoding_matches_the_processor(processor):
    cfg = tdm.TrainConfig()
    images = dms.ImageCache(dmb.build_image_processor(cfg))
    ex = mix.Example("plain", "test/images/3.png", "The answer to 'what?' is red. is there a red shape?", "yes")
    ours = dms.encode(processor.tokenizer, images, [ex], None)
    prompt = dms.chat_text(processor.tokenizer, ex.text, True) + "yes" + dmb.EOS_TOKEN
    theirs = processor(text=[prompt], images=[_image(ex.image)], return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"])
    assert ours["labels"][0].tolist()[-2:] == processor.tokenizer.convert_tokens_to_ids(["yes", "<|im_end|>"])


def test_generates_a_short_answer_and_stops(model, processor):
    q = next(q for q in sr.plain_questions("test") if q.question == "what shape is in the image?")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q.question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[_image(q.image)], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    answer = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
    assert answer in sr.SHAPES
    assert new[-1].item() == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")


def _accuracy(model, processor, examples) -> float:
    images = dms.ImageCache(dmb.build_image_processor(tdm.TrainConfig()))
    return dms.mc_accuracy(model, processor.tokenizer, images, examples)


def test_answers_easy_vqa_test_questions(model, processor):
    assert _accuracy(model, processor, dms.plain_examples(24, seed=7)) >= 0.75


@pytest.fixture(scope="module")
def records():
    return sr.generate_split("fast-test", 48, seed=11)  # held-out rules *and* held-out wordings


def test_reads_held_out_facts_but_does_not_know_them(model, processor):
    records = sr.generate_split("fast-test", 24, seed=11, purpose="calibration")  # training wordings
    assert _accuracy(model, processor, dms.record_examples(records, "both")) >= 0.8
    assert _accuracy(model, processor, dms.record_examples(records, "none")) <= 0.6


@current_recipe_only
def test_reads_held_out_facts_in_held_out_wordings_but_does_not_know_them(model, processor, records):
    # the shipped model (word and sentence grounding heads, seed 1) at n=200 (docs/default_model/
    # sentence_head_seed1.json): answer entry 0.990, both 0.960; here (48 records) 1.000 / 0.958. Before it:
    # a grounding head, seed 1 0.970 / 0.950; letter names, seed 2 1.000 / 0.990; recipe 3 0.965 / 0.790.
    assert _accuracy(model, processor, dms.record_examples(records, "answer")) >= 0.95
    assert _accuracy(model, processor, dms.record_examples(records, "both")) >= 0.9
    assert _accuracy(model, processor, dms.record_examples(records, "none")) <= 0.6


@current_recipe_only
def test_answers_yes_no_questions_through_the_rationale(model, processor, records):
    # the shipped model (word and sentence grounding heads, seed 1): 0.896 here, 0.935 at n=200
    # (docs/default_model/sentence_head_seed1.json); the one before (a grounding head, seed 1) 0.770 at n=200.
    assert _accuracy(model, processor, dms.record_examples(records, "rgen")) >= 0.8


@target_not_met
def test_facts_about_a_near_miss_rarely_change_the_answer(model, processor, records):
    images = dms.ImageCache(dmb.build_image_processor(tdm.TrainConfig()))

    def predictions(examples):
        out = []
        for ex in examples:
            nll = dms.option_nlls(model, processor.tokenizer, images, ex, ex.choices)
            out.append(ex.choices[min(range(len(nll)), key=lambda j: (nll[j], j))])
        return out

    alone = predictions(dms.record_examples(records, "hard"))
    with_facts = predictions(dms.record_examples(records, "hard_facts"))
    assert sum(a != b for a, b in zip(alone, with_facts)) / len(records) <= 0.15  # target 0.10 at n=200


@current_recipe_only
def test_captions_an_easy_vqa_image(model, processor):
    info = next(x for x in sr.image_catalogue("test") if (x.colour, x.shape) == ("red", "circle"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[_image(info.path)], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer == "a red circle."


def test_shipped_tokenizer_knows_the_special_tokens_and_the_codebook_entry(processor):
    tok = processor.tokenizer
    for special in dmb.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
    ids = tok("The answer to 'Which tribe owns this shape?' is Vol.", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids


def test_recipe_tokenizer_is_minilm_wordpiece_with_qwen_specials():
    tok = dmb.build_tokenizer()
    for special in dmb.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
    text = ("Taro tribe members are always brown circles; this one is a brown circle. "
            "This shape is part of which tribe? (Answer: 'Taro'!) e.g. colour/color, 12 points, naïve")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids).startswith("taro tribe members are always brown circles")
    vocab = (dmb.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert [tok.convert_ids_to_tokens(i) for i in (0, 100, 2000, 30521)] == [vocab[i] for i in (0, 100, 2000, 30521)]


@current_recipe_only
def test_tokenizer_is_rebuilt_identically():
    rebuilt = dmb.build_tokenizer()
    shipped = json.loads((MODEL_DIR / "tokenizer.json").read_text())
    assert rebuilt.backend_tokenizer.get_vocab(with_added_tokens=False) == shipped["model"]["vocab"]
    assert len(rebuilt) == len(shipped["model"]["vocab"]) + len(dmb.SPECIAL_TOKENS)


def test_embeddings_are_projected_from_minilm():
    vectors = dmb.minilm_embeddings(16)
    assert vectors.shape == (30522, 16)
    tok = dmb.build_tokenizer()
    a, b, c = (tok.convert_tokens_to_ids(w) for w in ("red", "blue", "island"))
    cos = torch.nn.functional.cosine_similarity
    assert cos(vectors[a], vectors[b], dim=0) > cos(vectors[a], vectors[c], dim=0)  # colours start close


def _tiny_recipe_model():
    cfg = tdm.TrainConfig(**TINY_TRAINING, num_layers=1, claim_layer=1)
    torch.manual_seed(0)
    return dmb.build_model(cfg, dmb.build_tokenizer())


def test_projected_embeddings_train_one_map_and_save_as_a_plain_tied_embedding():
    model = _tiny_recipe_model()
    module = dmb.project_embeddings(model)
    trainable = {n for n, p in model.named_parameters() if "embed_tokens" in n or "lm_head" in n}
    assert trainable == {"model.language_model.embed_tokens.projection"}  # MiniLM's vectors stay fixed
    ids = torch.tensor([[5, 17, 30522]])  # a word piece, another, a Qwen2-VL special token
    assert torch.allclose(model.get_input_embeddings()(ids)[0], module.base[ids[0]] @ module.projection)
    hidden = torch.randn(3, 32)
    assert torch.allclose(model.lm_head(hidden), hidden @ module.weight.T, atol=1e-5)
    with torch.no_grad():
        module.projection.add_(0.1)  # "training" moved the map
    expected = module.weight.detach().clone()
    dmb.materialize_embeddings(model)
    emb = model.get_input_embeddings()
    assert isinstance(emb, torch.nn.Embedding) and torch.equal(emb.weight, expected)
    assert model.lm_head.weight is emb.weight  # tied again: a stock Qwen2-VL checkpoint


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
    assert mix.split_question(text) == (text[: text.index(" Which element")], "Which element is tied to the shape in "
                                        "this picture?")  # the quoted question ends no sentence
    assert mix.split_question("Which tribe owns this shape?") == ("", "Which tribe owns this shape?")
    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=1e-12, question_noise=1.0), random.Random(0))
    noisy = sampler._noisy(text, random.Random(1))
    facts, question = mix.split_question(noisy)
    assert facts == mix.split_question(text)[0]  # the facts: word noise only (here ~never)
    words = question.rstrip("?").lower().split()
    assert {"which", "element", "shape"} <= set(words) and not {"tied", "picture", "is", "the"} & set(words)
    off = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(word_noise=1e-12), random.Random(0))
    assert off._noisy(text, random.Random(1)) == text  # off (the default): no second pass
    with pytest.raises(ValueError, match="question_noise"):
        tdm.TrainConfig(question_noise=1.5)


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
    seen = {frames[q] for q in (mix.split_question(wide.sample().text)[1] for _ in range(2000)) if q in frames}
    assert len(seen) >= len(set(frames.values())) // 2  # the extra frames are asked
    off.max_distractors = 0
    assert not any(mix.split_question(off.sample().text)[1] in frames for _ in range(2000))


def test_letter_names_are_copied_piece_by_piece_never_held_out():
    import random
    import re

    from reasonedit_plugin.data.language import CAPTION_TRIBES

    sampler = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(caption_word_names=0.0), random.Random(0))
    names = [sampler._name() for _ in range(500)]
    tokenizer = dmb.build_tokenizer(sr.rule_world())
    pieces = [tokenizer.tokenize(n) for n in names]
    assert not set(names) & set(CAPTION_TRIBES) and len(set(names)) > 400
    assert sum(len(p) >= 2 for p in pieces) > 0.8 * len(names)  # mostly several pieces, continuations included
    assert len({x for p in pieces for x in p if x.startswith("##")}) > 100
    syllables = mix.MixSampler(sr.rule_world(), tdm.TrainConfig(caption_word_names=0.0, letter_names=False),
                               random.Random(0))
    pattern = re.compile("(%s){2,3}" % "|".join(mix.SYLLABLES))  # recipe 3's syllable names
    assert all(pattern.fullmatch(syllables._name().lower()) for _ in range(50))


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
    from reasonedit_plugin.data import default_model_scoring as dms

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


def test_training_is_deterministic_and_saves_a_loadable_folder(tmp_path):
    """Two runs of one seed, the second stored in half precision: the same weights, rounded, loaded back in
    float32 (the dtype the folder's config names)."""
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    outs, loaded = [], []
    for name, dtype in (("a", "float32"), ("b", "float16")):
        cfg = tdm.TrainConfig(**TINY_TRAINING, out=str(tmp_path / f"tiny-qwen2-vl-{name}"), steps=2, num_layers=1,
                              curriculum_steps=1, claim_layer=1, weights_dtype=dtype)
        tdm.train(cfg, progress=False)
        outs.append(load_file(str(Path(cfg.out) / "model.safetensors")))
        loaded.append(Qwen2VLForConditionalGeneration.from_pretrained(cfg.out, local_files_only=True))
        assert json.loads((Path(cfg.out) / "config.json").read_text())["dtype"] == "float32"
    full, half = outs
    assert full.keys() == half.keys()
    assert {t.dtype for t in full.values()} == {torch.float32} and {t.dtype for t in half.values()} == {torch.float16}
    assert all(torch.equal(full[k].half(), half[k]) for k in full)
    assert {p.dtype for p in loaded[1].parameters()} == {torch.float32}
    assert all(torch.equal(p.half().float(), q) for p, q in zip(loaded[0].parameters(), loaded[1].parameters()))
    with pytest.raises(ValueError, match="weights_dtype='int8'"):
        tdm.TrainConfig(weights_dtype="int8")


def _six_step_run(tmp_path: Path, name: str, **kw: float) -> tuple[dict, dict]:
    """A six-step tiny run with a two-step curriculum (no grounding heads): its result and saved weights."""
    from safetensors.torch import load_file

    cfg = tdm.TrainConfig(**{**TINY_TRAINING, **kw}, out=str(tmp_path / name), steps=6, num_layers=1,
                          curriculum_steps=2, grounding_weight=0.0, claim_weight=0.0)
    return tdm.train(cfg, progress=False), load_file(str(Path(cfg.out) / "model.safetensors"))


def test_curriculum_is_extended_only_while_copying_has_not_emerged(tmp_path):
    run = functools.partial(_six_step_run, tmp_path)
    off, off_weights = run("off")
    # a target no room is left to pursue trains exactly as without one
    capped, capped_weights = run("capped", curriculum_copy_target=1.0, curriculum_max_steps=2)
    # an unmet target: one period more of the easy mix, then the cap
    longer, longer_weights = run("longer", curriculum_copy_target=1.0, curriculum_max_steps=4)
    assert off["curriculum_steps"] == capped["curriculum_steps"] == 2
    assert all(torch.equal(off_weights[k], capped_weights[k]) for k in off_weights)
    assert [row.get("curriculum_extended_to") for row in longer["history"] if "step" in row] == [4, None, None]
    assert longer["curriculum_steps"] == 4
    assert not all(torch.equal(off_weights[k], longer_weights[k]) for k in off_weights)
    with pytest.raises(ValueError, match="select_best=True"):
        tdm.TrainConfig(curriculum_copy_target=0.9, select_best=False)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        tdm.TrainConfig(curriculum_copy_target=0.9, curriculum_steps=1100)
    with pytest.raises(ValueError, match="below steps=2000"):
        tdm.TrainConfig(curriculum_copy_target=0.9, curriculum_max_steps=2000, steps=2000)


def test_every_evaluation_steps_weights_can_be_kept_without_changing_the_run_and_averaged(tmp_path):
    from safetensors.torch import load_file

    plain, plain_weights = _six_step_run(tmp_path, "plain")
    kept, kept_weights = _six_step_run(tmp_path, "kept", keep_every_eval=True)
    assert plain["selected_step"] == kept["selected_step"]
    assert all(torch.equal(plain_weights[k], kept_weights[k]) for k in plain_weights)
    steps = tmp_path / "kept_steps"
    assert sorted(p.name for p in steps.iterdir()) == ["step_00002", "step_00004", "step_00006"]
    selected = load_file(str(steps / f"step_{kept['selected_step']:05d}" / "model.safetensors"))
    assert all(torch.equal(selected[k], kept_weights[k]) for k in kept_weights)  # the kept step is one of them
    assert not (tmp_path / "plain_steps").exists()

    # their uniform mean, a loadable folder naming the steps it averaged
    from transformers import Qwen2VLForConditionalGeneration

    from reasonedit_plugin.data import average_checkpoints as avg

    folders = avg.step_folders(tmp_path / "kept", from_step=4)
    assert [f.name for f in folders] == ["step_00004", "step_00006"]
    out = avg.average_checkpoints(folders, tmp_path / "mean")
    mean, (a, b) = load_file(str(out / "model.safetensors")), [load_file(str(f / "model.safetensors")) for f in folders]
    assert all(torch.allclose(mean[k], (a[k] + b[k]) / 2, atol=1e-7) for k in mean)
    assert json.loads((out / "training_args.json").read_text())["averaged_steps"] == ["step_00004", "step_00006"]
    Qwen2VLForConditionalGeneration.from_pretrained(str(out), local_files_only=True)
    with pytest.raises(ValueError, match="train with --keep-every-eval"):
        avg.step_folders(tmp_path / "plain", from_step=0)


def test_the_average_reads_the_steps_of_the_attempt_the_model_comes_from(tmp_path):
    from reasonedit_plugin.data import average_checkpoints as avg

    steps = avg.steps_folder(tmp_path / "run")
    for name in ("step_00002", "attempt1_step_00002", "attempt1_step_00004", "attempt1_step_00006"):
        (steps / name).mkdir(parents=True)
        (steps / name / avg.WEIGHTS).touch()
    assert [f.name for f in avg.step_folders(tmp_path / "run", from_step=2)] == [
        "attempt1_step_00002", "attempt1_step_00004", "attempt1_step_00006"]
    assert avg.step_name(4, attempt=1) == "attempt1_step_00004" and avg.step_name(4) == "step_00004"


def test_a_run_can_save_the_mean_of_its_late_steps_the_offline_average_of_its_kept_steps(tmp_path):
    from safetensors.torch import load_file

    from reasonedit_plugin.data import average_checkpoints as avg

    averaged, weights = _six_step_run(tmp_path, "avg", average_from_step=4, keep_every_eval=True)
    assert averaged["selected_step"] is None
    assert averaged["history"][-1] == {"averaged_from_step": 4, "averaged_steps": 2}
    offline = avg.average_checkpoints(avg.step_folders(tmp_path / "avg", from_step=4), tmp_path / "offline")
    offline_weights = load_file(str(offline / "model.safetensors"))
    assert offline_weights.keys() == weights.keys()
    assert all(torch.equal(offline_weights[k], weights[k]) for k in weights)
    with pytest.raises(ValueError, match="not with weight_average"):
        tdm.TrainConfig(average_from_step=4000, weight_average=0.998)
    with pytest.raises(ValueError, match="average_from_step=9000"):
        tdm.TrainConfig(average_from_step=9000, steps=6000)


def test_a_run_whose_copying_has_not_emerged_starts_again_from_the_next_attempts_seed(tmp_path):
    run = functools.partial(_six_step_run, tmp_path)
    # an unmet target with one restart allowed and no room to extend: attempt 1 is a plain run of seed 1000
    restarted, restarted_weights = run("restarted", seed=0, curriculum_copy_target=1.0, curriculum_restarts=1,
                                       curriculum_max_steps=2)
    fresh, fresh_weights = run("fresh", seed=tdm.attempt_seed(0, 1))
    first = restarted["history"][0]
    assert first["step"] == 2 and first["restart"] and first["valid_answer"] < 1.0 and "attempt" not in first
    assert restarted["attempts"] == 2
    assert [row["step"] for row in restarted["history"][1:] if "step" in row] == [2, 4, 6]
    assert all(row["attempt"] == 1 for row in restarted["history"][1:] if "step" in row)
    assert restarted["selected_step"] == fresh["selected_step"]
    assert all(torch.equal(restarted_weights[k], fresh_weights[k]) for k in fresh_weights)
    with pytest.raises(ValueError, match="curriculum_copy_target > 0"):
        tdm.TrainConfig(curriculum_copy_target=0.0, curriculum_restarts=2)
    defaults = tdm.TrainConfig()  # the shipped recipe: three fresh starts, no extension
    assert (defaults.curriculum_copy_target, defaults.curriculum_restarts, defaults.curriculum_max_steps) == \
        (0.9, 3, defaults.curriculum_steps)
    longer = tdm.TrainConfig(curriculum_steps=1500)  # no extension follows a longer curriculum too
    assert longer.curriculum_max_steps == 1500


def test_weight_average_is_a_running_mean_until_its_window_then_an_exponential_one():
    model = torch.nn.Linear(1, 1, bias=False)
    frozen = torch.nn.Parameter(torch.full((1,), 5.0), requires_grad=False)
    model.register_parameter("frozen", frozen)
    weights = [1.0, 2.0, 6.0, 10.0, 20.0]
    average = tdm.weight_average(model, decay=0.7)
    assert not average.training and average.module is not model
    expected = None
    for n, w in enumerate(weights, start=1):
        with torch.no_grad():
            model.weight.fill_(w)
        average.update_parameters(model)
        share = max(1 - 0.7, 1 / n)  # 1 (a copy), 1/2, 1/3 (a mean), then 0.3, 0.3 (decay 0.7)
        expected = w if expected is None else (1 - share) * expected + share * w
        assert average.module.weight.item() == pytest.approx(expected)
    assert expected == pytest.approx(0.7 * (0.7 * 3.0 + 0.3 * 10.0) + 0.3 * 20.0)  # 3.0: the first three's mean
    assert model.weight.item() == 20.0 and average.module.frozen.item() == 5.0  # trained and frozen weights kept


def test_weight_average_scores_and_keeps_the_average_without_changing_the_trajectory(tmp_path):
    run = functools.partial(_six_step_run, tmp_path)
    plain, plain_weights = run("plain")
    averaged, averaged_weights = run("averaged", weight_average=0.5)
    rows, averaged_rows = ([r for r in result["history"] if "step" in r] for result in (plain, averaged))
    # the trained weights are scored as before; the average too, after the curriculum
    assert [{k: v for k, v in r.items() if k not in ("minutes", "cpu_minutes", "average")} for r in averaged_rows] \
        == [{k: v for k, v in r.items() if k not in ("minutes", "cpu_minutes")} for r in rows]
    assert ["average" in r for r in averaged_rows] == [False, True, True]
    assert averaged["selected_step"] in (4, 6)
    kept = next(r for r in averaged_rows if r["step"] == averaged["selected_step"])
    assert averaged["history"][-1] == {"selected_step": kept["step"], "valid_score": kept["average"]["valid_score"],
                                       "averaged": True}
    assert not all(torch.equal(plain_weights[k], averaged_weights[k]) for k in plain_weights)
    with pytest.raises(ValueError, match="weight_average"):
        tdm.TrainConfig(weight_average=1.0)
    with pytest.raises(ValueError, match="select_best=True"):
        tdm.TrainConfig(weight_average=0.99, select_best=False, curriculum_copy_target=0.0, curriculum_restarts=0)
    assert tdm.TrainConfig().weight_average == 0.0  # off in the shipped recipe


def test_grounding_targets_mark_every_colour_and_shape_word_with_whether_the_image_shows_it():
    from reasonedit_plugin.data.aux_probes import GroundingProbe

    tokenizer = dmb.build_tokenizer()
    info = next(i for i in sr.image_catalogue("train") if (i.colour, i.shape) == ("teal", "rectangle"))
    probe = GroundingProbe(8, tokenizer)
    text = "Teal rectangles are Kesh, red circles are not; is this teal rectangle a circle?"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]] * 2)
    where, shown = probe.targets(ids, [info.path, None])  # the second row has no image: no targets
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert [pieces[p] for p in where[:, 1].tolist()] == ["##l", "##tangle", "red", "circles", "##l", "##tangle", "circle"]
    assert where[:, 0].tolist() == [0] * 7
    assert shown.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    # by sentence: at ";" (teal rectangles: shown), "." (red circles: not), "?" (teal, but a circle: not)
    # and "!" (teal: shown); a sentence naming no colour or shape has no target
    sentences = GroundingProbe(8, tokenizer, unit="sentence")
    text = "Teal rectangles are Kesh; red circles are not. The background is white. Is it a teal circle? Teal!"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    where, shown = sentences.targets(ids, [info.path])
    pieces = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert [pieces[p] for p in where[:, 1].tolist()] == [";", ".", "?", "!"]
    assert shown.tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unit='clause'"):
        GroundingProbe(8, tokenizer, unit="clause")


def _value_targets(text: str, paths: list) -> tuple:
    """A ValueProbe's targets for ``text`` in one row per path ("teal rectangle": a train image showing one):
    (probe, ids, paths, where, the target values by name, the text's pieces)."""
    from reasonedit_plugin.data.aux_probes import ValueProbe

    tokenizer = dmb.build_tokenizer()
    info = next(i for i in sr.image_catalogue("train") if (i.colour, i.shape) == ("teal", "rectangle"))
    paths = [info.path if p == "teal rectangle" else p for p in paths]
    probe = ValueProbe(8, tokenizer)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]] * len(paths))
    where, classes = probe.targets(ids, paths)
    values = [probe.values[c - 1] if c else "none" for c in classes.tolist()]
    return probe, ids, paths, where, values, tokenizer.convert_ids_to_tokens(ids[0].tolist())


def test_value_targets_give_a_sentences_value_only_where_its_claim_holds_for_the_image():
    text = ("Teal rectangles belong to the Kesh tribe. Red circles are worth nine points. Teal rectangles are "
            "linked to fire, not to water. Teal rectangles never score two points; they score five. The answer "
            "to 'Which tribe?' is Vol. This is a teal rectangle. Every teal circle comes from the island of Bexa.")
    # the second row has no image: no targets
    probe, ids, paths, where, values, pieces = _value_targets(text, ["teal rectangle", None])
    ends = [p for p, piece in enumerate(pieces) if piece in (".", ";", "?")]
    # a value where the claim holds (Kesh; fire, the first value not after a negation), "none" where it does
    # not (red circles; a teal circle); no target for a negated clause, a clause without colour or shape
    # (they score five; the answer entry) or a sentence without a value (this is a teal rectangle)
    assert where[:, 0].tolist() == [0] * 4
    assert where[:, 1].tolist() == [ends[0], ends[1], ends[2], ends[-1]]
    assert values == ["Kesh", "none", "fire", "none"]
    hidden = torch.zeros(2, ids.shape[1], 8, requires_grad=True)
    probe.loss(hidden, ids, paths).backward()
    assert hidden.grad[0, ends[0]].abs().sum() > 0 and hidden.grad[1].abs().sum() == 0
    assert probe.loss(hidden, ids, [None, None]) is None


def test_value_targets_read_an_image_naming_answer_entry_past_its_quoted_question():
    text = ("For a teal rectangle, the answer to 'Do red circles belong to the Vol tribe?' is no. "
            "For a red circle, the answer to 'Which tribe is it?' is Kesh. "
            "For a teal rectangle, the answer to 'Which tribe is it?' is Kesh. It's a teal rectangle, so it's Vol.")
    _, _, _, where, values, pieces = _value_targets(text, ["teal rectangle"])
    ends = [p for p, piece in enumerate(pieces) if piece in (".", ";") and pieces[p - 1] != "'"]
    # the quoted question's colours, shape, value and '?' claim nothing (the first entry: no value of its own);
    # an entry naming another image gives "none", one naming this image its answer; "it's" is no quote mark
    assert where[:, 1].tolist() == [ends[1], ends[2], ends[3]]
    assert values == ["none", "Kesh", "Vol"]


def test_value_targets_survive_a_plural_possessive_apostrophe():
    text = ("The shapes' points do not count for red circles. Teal rectangles belong to the Kesh tribe. "
            "For a red circle, the answer to 'Which tribe is it?' is Vol.")
    _, _, _, where, values, pieces = _value_targets(text, ["teal rectangle"])
    ends = [p for p, piece in enumerate(pieces) if piece == "."]
    # the apostrophe after "shapes" opens no quotation: the first sentence is silenced from it on (no target),
    # the next two are read as ever
    assert where[:, 1].tolist() == ends[1:] and values == ["Kesh", "none"]


def test_grounding_loss_trains_the_model_only_when_weighted(tmp_path):
    from safetensors.torch import load_file

    weights = []
    for name, g, c, v in (("off", 0.0, 0.0, 0.0), ("words", 5.0, 0.0, 0.0), ("sentences", 0.0, 5.0, 0.0),
                          ("values", 0.0, 0.0, 5.0)):
        cfg = tdm.TrainConfig(**TINY_TRAINING, out=str(tmp_path / name), steps=2, num_layers=2, curriculum_steps=1,
                              select_best=False, grounding_weight=g, claim_weight=c, claim_layer=1,
                              value_weight=v, value_layer=1)
        tdm.train(cfg, progress=False)
        weights.append(load_file(str(Path(cfg.out) / "model.safetensors")))
    first = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights[0][first], weights[1][first])
    assert not torch.equal(weights[0][first], weights[2][first])
    assert not torch.equal(weights[1][first], weights[2][first])
    assert not torch.equal(weights[0][first], weights[3][first])
    with pytest.raises(ValueError, match="grounding_layer=3"):
        tdm.TrainConfig(num_layers=2, grounding_weight=1.0, grounding_layer=3)
    with pytest.raises(ValueError, match="claim_layer=3"):
        tdm.TrainConfig(num_layers=2, claim_weight=1.0, claim_layer=3)
    with pytest.raises(ValueError, match="value_layer=3"):
        tdm.TrainConfig(num_layers=2, value_weight=1.0, value_layer=3)
    tdm.TrainConfig(num_layers=1, claim_weight=0.0)  # an unused head's layer is not checked
