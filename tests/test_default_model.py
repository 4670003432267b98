"""Contracts of the shipped default VLM (``reasonedit_plugin/assets/tiny-qwen2-vl-shapes``): it loads
offline with ``from_pretrained``, its processor works without torchvision, it generates, and it does
what ReasonEdit needs (answers easy-vqa, reads facts). Fast (seconds, CPU)."""

from __future__ import annotations

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
TEMPLATE = dmb.trained_answer_template(MODEL_DIR)
"""The answer entries' wording the shipped model was trained with (what its YAML's codebook.answer_template is)."""


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

    from reasonedit_plugin.model_specs import get_model_spec
    from reasonedit_plugin.vlm import load_processor

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


def test_load_trained_reads_the_folders_own_configuration(model, processor, tmp_path):
    trained = dms.load_trained(MODEL_DIR)
    saved = json.loads((MODEL_DIR / "training_args.json").read_text())["config"]
    assert trained.config.num_layers == saved["num_layers"] == trained.model.config.text_config.num_hidden_layers
    assert torch.equal(trained.model.lm_head.weight, model.lm_head.weight) and not trained.model.training
    assert trained.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    pixels, _ = trained.images.get("test/images/3.png")
    assert torch.allclose(pixels, processor.image_processor(images=[_image("test/images/3.png")],
                                                            return_tensors="pt")["pixel_values"])
    with pytest.raises(FileNotFoundError, match="no training_args.json: it was not saved by train_default_model"):
        dms.load_trained(tmp_path)


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
    assert _accuracy(model, processor, dms.record_examples(records, "both", TEMPLATE)) >= 0.8
    assert _accuracy(model, processor, dms.record_examples(records, "none", TEMPLATE)) <= 0.6


def test_reads_held_out_facts_in_held_out_wordings_but_does_not_know_them(model, processor, records):
    # the shipped model (session 54, seed 8) at n=200 (docs/default_model/five_layers_lens05_until4000_seed8.json):
    # both 1.000; here (48 records) answer entry 1.000, both 1.000. Before it: the session 17 model (word and
    # sentence grounding heads, seed 1) 0.990 / 0.960 at n=200, 1.000 / 0.958 here; a grounding head, seed 1
    # 0.970 / 0.950; letter names, seed 2 1.000 / 0.990; recipe 3 0.965 / 0.790.
    assert _accuracy(model, processor, dms.record_examples(records, "answer", TEMPLATE)) >= 0.95
    assert _accuracy(model, processor, dms.record_examples(records, "both", TEMPLATE)) >= 0.9
    assert _accuracy(model, processor, dms.record_examples(records, "none", TEMPLATE)) <= 0.6


def test_answers_yes_no_questions_through_the_rationale(model, processor, records):
    # the shipped model (session 54, seed 8): 1.000 here, 0.960 at n=200; the session 17 model 0.896 here,
    # 0.935 at n=200 (docs/default_model/sentence_head_seed1.json); the one before it 0.770 at n=200.
    assert _accuracy(model, processor, dms.record_examples(records, "rgen", TEMPLATE)) >= 0.8


def test_facts_about_a_near_miss_rarely_change_the_answer(model, processor, records):
    images = dms.ImageCache(dmb.build_image_processor(tdm.TrainConfig()))

    def predictions(examples):
        out = []
        for ex in examples:
            nll = dms.option_nlls(model, processor.tokenizer, images, ex, ex.choices)
            out.append(ex.choices[min(range(len(nll)), key=lambda j: (nll[j], j))])
        return out

    alone = predictions(dms.record_examples(records, "hard", TEMPLATE))
    with_facts = predictions(dms.record_examples(records, "hard_facts", TEMPLATE))
    # Issue 12's target is <= 0.10 at n=200: the shipped model 0.075 there, 8 of these 48 records (0.167, about
    # 1.5 binomial sd above); the session 17 model 0.285 at n=200 and 15 of these 48 (0.312).
    assert sum(a != b for a, b in zip(alone, with_facts)) / len(records) <= 0.2


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
