"""The default VLM's training loop on tiny models (``train_default_model.train``): determinism, saved folders,
the curriculum and its restarts, kept steps and the averages of weights, the auxiliary heads' targets and losses.
Seconds each: the code's paths, not the recipe's figures."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch

from reasonedit_plugin.data import shaperules as sr
from reasonedit_plugin.data import default_model_build as dmb
from reasonedit_plugin.data import train_default_model as tdm

TINY_TRAINING = dict(batch_size=4, eval_every=2, eval_n=2, valid_n=2, hidden_size=32, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, vision_dim=32, vision_depth=1, vision_heads=2,
                     curriculum_copy_target=0.0, curriculum_restarts=0)
"""A tiny model and a few-step run: the training code's paths, not the recipe's figures."""


def _images():
    from reasonedit_plugin.data.default_model_scoring import ImageCache

    return ImageCache(dmb.build_image_processor(tdm.TrainConfig(**TINY_TRAINING)))


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


def test_probed_outputs_are_kept_from_training_forwards_only_with_their_graph_and_their_hooks_removed():
    from reasonedit_plugin.hooks import ModulePathError, hook_count, keep_training_outputs

    model = _tiny_recipe_model()
    ids = torch.tensor([[5, 17, 30]])
    paths = {"first": "model.language_model.layers.0", "norm": "model.language_model.norm"}
    with keep_training_outputs(model, paths) as kept:
        assert hook_count(model) == 2
        model.eval()
        model.model.language_model(input_ids=ids)
        assert kept == {}  # an evaluation forward keeps nothing
        model.train()
        model.model.language_model(input_ids=ids)
        assert set(kept) == {"first", "norm"} and kept["norm"].shape == (1, 3, 32)
        assert kept["first"].grad_fn is not None  # not detached: a probe's loss trains the layer
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="stop"), keep_training_outputs(model, paths):
        raise RuntimeError("stop")
    assert hook_count(model) == 0
    with pytest.raises(ModulePathError, match="layers"), keep_training_outputs(model, {"x": "model.layerz.0"}):
        pass


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
        assert json.loads((Path(cfg.out) / "training_args.json").read_text())["device"] == "cpu"
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
    # a part with a window of its own: the vision tower from the last step alone, the rest the mean of both
    parted = avg.average_checkpoints(folders, tmp_path / "parted", {"visual.": folders[-1:]})
    mixed = load_file(str(parted / "model.safetensors"))
    assert any(k.startswith("visual.") for k in mixed) and any(not k.startswith("visual.") for k in mixed)
    assert all(torch.equal(mixed[k], b[k]) if k.startswith("visual.") else torch.equal(mixed[k], mean[k]) for k in mixed)
    assert json.loads((parted / "training_args.json").read_text())["averaged_parts"] == {"visual.": ["step_00006"]}
    # overlapping prefixes: the longest decides, whatever the order they are given in
    merger = sorted({k.rsplit(".", 2)[0] + "." for k in mixed if k.startswith("visual.merger")})[0]
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith(merger))  # (the two steps differ there)
    for order in ({"visual.": folders[-1:], merger: folders[:1]}, {merger: folders[:1], "visual.": folders[-1:]}):
        nested = load_file(str(avg.average_checkpoints(folders, tmp_path / "nested", order) / "model.safetensors"))
        assert all(torch.equal(nested[k], a[k]) if k.startswith(merger) else
                   torch.equal(nested[k], b[k]) if k.startswith("visual.") else torch.equal(nested[k], mean[k])
                   for k in nested)
    with pytest.raises(SystemExit):  # the same prefix twice is an error, not the last one winning
        avg.main(["--run", str(tmp_path / "kept"), "--part", "visual.=4", "--part", "visual.=6",
                  "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="no tensor's name starts with 'vision.'; the names start with model., visual."):
        avg.average_checkpoints(folders, tmp_path / "bad", {"vision.": folders})
    with pytest.raises(SystemExit):
        avg.main(["--run", str(tmp_path / "kept"), "--part", "visual", "--out", str(tmp_path / "bad")])
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


def test_copy_lens_targets_every_piece_of_the_copied_name_at_the_position_that_predicts_it():
    from reasonedit_plugin.data.aux_probes import CopyLens
    from reasonedit_plugin.data.default_model_scoring import encode
    from reasonedit_plugin.data.training_mix import Example

    tokenizer = dmb.build_tokenizer(sr.rule_world())
    examples = [Example("name_facts", None, "Every red circle is named Qavuro. What is this shape named?", "Qavuro",
                        copy="Qavuro"),
                Example("plain", None, "What shape is this?", "circle"),  # nothing to copy
                Example("caption_facts", None, "Describe it.", "A red circle of the Kesh tribe.", copy="Zubo")]
    labels = encode(tokenizer, None, examples, None)["labels"]
    lens = CopyLens(tokenizer, torch.nn.Identity(), torch.nn.Identity())
    where, pieces = lens.targets(labels, [ex.copy for ex in examples])
    want = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Qavuro"))
    assert len(want) > 1 and pieces.tolist() == want  # every piece; the answer without its name gives none
    assert set(where[:, 0].tolist()) == {0}
    assert [int(labels[0, p + 1]) for p in where[:, 1]] == want  # each read where the model predicts it


def test_copy_accuracy_counts_an_example_right_only_when_every_piece_of_its_name_is_the_argmax():
    from reasonedit_plugin.data.default_model_scoring import copy_accuracy
    from reasonedit_plugin.data.training_mix import copy_eval_examples

    world = sr.rule_world()
    tokenizer = dmb.build_tokenizer(world)
    examples = copy_eval_examples(world, tdm.TrainConfig(), 12)
    assert {ex.kind for ex in examples} == {"caption_facts"} and all(ex.copy and ex.copy in ex.answer for ex in examples)
    assert len({ex.copy for ex in examples}) == 12 and all(ex.copy in ex.text for ex in examples)
    assert copy_eval_examples(world, tdm.TrainConfig(), 12) == examples  # seeded

    class Reader(torch.nn.Module):  # "predicts" the token ``shift`` places ahead: 1 is the teacher-forced next one
        def __init__(self, shift):
            super().__init__()
            self.shift, self.lm_head = shift, torch.nn.Identity()
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.model = lambda input_ids, **kw: type("Out", (), {"last_hidden_state": torch.nn.functional.one_hot(
                torch.roll(input_ids, -self.shift, dims=1), len(tokenizer)).float()})

    images = _images()
    assert copy_accuracy(Reader(1), tokenizer, images, examples) == 1.0
    assert copy_accuracy(Reader(2), tokenizer, images, examples) == 0.0
    unspelt = [dataclasses.replace(ex, copy="Zzyzx") for ex in examples[:4]]
    assert copy_accuracy(Reader(1), tokenizer, images, examples[:4] + unspelt) == 0.5


def test_copy_lens_trains_the_model_only_when_weighted(tmp_path):
    from safetensors.torch import load_file

    weights = []
    # off; on for both steps; on for the first step only (copy_until_step): three different first layers
    for name, weight, until in (("off", 0.0, 0), ("on", 5.0, 0), ("until", 5.0, 1)):
        cfg = tdm.TrainConfig(**TINY_TRAINING, out=str(tmp_path / name), steps=2, num_layers=2, curriculum_steps=1,
                              select_best=False, claim_layer=1, copy_weight=weight, copy_layer=1,
                              copy_until_step=until, mix={"name_facts": 1.0})
        tdm.train(cfg, progress=False)
        weights.append(load_file(str(Path(cfg.out) / "model.safetensors")))
    first = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights[0][first], weights[1][first])
    assert not torch.equal(weights[2][first], weights[0][first]) and not torch.equal(weights[2][first], weights[1][first])
    with pytest.raises(ValueError, match="copy_layer=3"):
        tdm.TrainConfig(num_layers=2, copy_weight=1.0, copy_layer=3)
    too_late = tdm.TrainConfig().steps + 1
    with pytest.raises(ValueError, match=f"copy_until_step={too_late}"):
        tdm.TrainConfig(copy_until_step=too_late)
    assert tdm.TrainConfig().copy_weight == 0.0  # off in the shipped recipe


def test_copy_lens_schedule():
    cfg = tdm.TrainConfig(copy_weight=0.5, copy_until_step=2000)
    assert [tdm.copy_weight_at(step, cfg) for step in (0, 1999, 2000, cfg.steps - 1)] == [0.5, 0.5, 0.0, 0.0]
    always = tdm.TrainConfig(copy_weight=0.5)
    assert {tdm.copy_weight_at(step, always) for step in range(always.steps)} == {0.5}


@pytest.mark.parametrize("flags, message", [
    (["--steps", "100", "--average-from-step", "4000"], "curriculum_steps=1000"),
    (["--steps", "6000", "--average-from-step", "7000"], "average_from_step=7000"),
    (["--mix", "{plain: 1}"], "argument --mix: not JSON"),
    (["--mix", "[1]"], "argument --mix: expected a JSON object"),
    (["--easy-mix", '{"plane": 1}'], "easy_mix={'plane': 1}: keys must be among"),
])
def test_the_training_command_answers_a_bad_flag_in_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        tdm.main(["--out", str(tmp_path / "never"), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: " in err[-1] and message in err[-1].split(": error: ", 1)[1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "never").exists()


def test_recipe_starts_from_a_models_own_configuration_and_flags_override_it(tmp_path):
    saved = json.loads((Path(tdm.TrainConfig().out) / "training_args.json").read_text())["config"]
    cfg, _, _ = tdm.parse_args(["--recipe", "package://tiny-qwen2-vl-shapes", "--out", str(tmp_path / "m")])
    assert {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"} == \
        {k: v for k, v in saved.items() if k != "out"}  # the shipped command, seed and all
    cfg, _, _ = tdm.parse_args(["--recipe", "package://tiny-qwen2-vl-shapes", "--seed", "11", "--mix", '{"plain": 1}',
                                "--out", str(tmp_path / "m")])
    assert (cfg.seed, cfg.mix, cfg.num_layers) == (11, {"plain": 1.0}, saved["num_layers"])


@pytest.mark.parametrize("recipe, message", [
    ("{tmp}/nowhere", "no training configuration readable"),
    ("{tmp}/listed.json", "its 'config' is a list, not an object"),
    ("{tmp}/broken.json", "holds no training configuration (JSONDecodeError"),
    ("{tmp}/other.json", "are not TrainConfig's"),
    ("package://tiny-qwen2-vl-shapes", "--recipe needs --out DIR"),
])
def test_a_bad_recipe_is_answered_in_one_line(tmp_path, capsys, recipe, message):
    (tmp_path / "other.json").write_text(json.dumps({"config": {"seed": 1, "retired_knob": 2}}))
    (tmp_path / "listed.json").write_text(json.dumps({"config": [1]}))
    (tmp_path / "broken.json").write_text('{"config": ')
    out = [] if recipe.startswith("package://") else ["--out", str(tmp_path / "never")]
    with pytest.raises(SystemExit) as exit_:
        tdm.main(["--recipe", recipe.format(tmp=tmp_path), *out])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "never").exists()
