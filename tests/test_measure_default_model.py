"""examples/measure_default_model.py: the table of issue 12's rows, and the per-item dump for reading errors."""

import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import measure_default_model as mdm  # noqa: E402

from reasonedit_plugin.data.language import CAPTION_TRIBES  # noqa: E402
from reasonedit_plugin.hparams import resolve_model_name  # noqa: E402
from reasonedit_plugin.records import normalize_answer  # noqa: E402


def test_the_dump_holds_every_scored_item_with_its_record(tmp_path):
    out = mdm.main(["--n", "10", "--plain-n", "5", "--captions", "6", "--threads", "1",
                    "--dump", str(tmp_path / "items.jsonl")])
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    by_row = defaultdict(list)
    for item in items:
        by_row[item["row"]].append(item)
    scored = {r["row"]: r for r in out["rows"] if not r["row"].startswith("near miss")}
    assert set(by_row) == set(scored)
    for name, row in scored.items():
        # the table's accuracy is the dump's: one line per item, prediction against truth
        same = normalize_answer if name == mdm.CAPTION_ROW else str.lower  # (a generated caption: up to spacing)
        got = [same(i["prediction"]) == same(i["truth"]) for i in by_row[name]]
        assert len(got) == row["n"] and round(sum(got) / len(got), 4) == row["accuracy"], name
    assert all(i["record"] is None for i in by_row["easy-vqa test"] + by_row["caption (24-way)"])
    held = by_row["held-out + both"]
    assert [i["record"] for i in held] == [i["record"] for i in by_row["hard locality"]] and len(set(
        i["record"] for i in held)) == 10
    # the near-miss applies check holds only the records whose near miss is another image, each on that image
    near = by_row["applies check: near-miss image (no)"]
    assert all(i["near_miss"] in mdm.NEAR_MISS_IMAGES for i in near)
    hard_image = {i["record"]: i["image"] for i in by_row["hard locality"]}
    assert all(i["image"] == hard_image[i["record"]] for i in near)
    # each row of edit records split by the rationale's rule form, the two parts adding up to the row
    for row in scored.values():
        if "by_rule_form" in row:
            split = row["by_rule_form"]
            k = split["negated_n"]
            parts = k * (split["negated"] or 0) + (row["n"] - k) * (split["affirmative"] or 0)
            assert abs(parts - row["n"] * row["accuracy"]) < 1e-3 and (split["negated"] is None) == (k == 0)
    # ... and per question wording, the parts adding up to the row as well
    for row in scored.values():
        if "by_wording" in row:
            parts = row["by_wording"].values()
            assert sum(n for n, _ in parts) == row["n"]
            assert abs(sum(n * acc for n, acc in parts) - row["n"] * row["accuracy"]) < 1e-3
    # ... and per rule, where the row asks about the edit's own rule
    for row in scored.values():
        if "by_rule" in row:
            parts = row["by_rule"]["rules"].values()
            assert sum(n for n, _, _ in parts) == row["n"]
            assert abs(sum(n * acc for n, acc, _ in parts) - row["n"] * row["accuracy"]) < 1e-3
            assert abs(sum(n * modal for n, _, modal in parts) - row["n"] * row["by_rule"]["modal_share"]) < 1e-3
    assert "by_rule" in scored["held-out, no fact"] and "by_rule" not in scored["hard locality"]
    guess = scored["held-out, no fact"]["neighbour_guess"]
    assert 0 <= guess["mean"] <= 1 and 0 <= guess["within_tolerance"] <= 1
    assert all("neighbour_guess" not in row for name, row in scored.items() if name != "held-out, no fact")
    assert all("{" in w for w in scored["R-Gen (+ both)"]["by_wording"])  # each asks about a value or the image
    assert scored["held-out + both"]["by_rule_form"]["negated_n"] == 2  # (of these 10 records)
    assert "by_rule_form" not in scored["easy-vqa test"]
    captions = scored[mdm.CAPTION_ROW]
    assert captions["n"] == 6 and sum(n for n, _ in captions["by_name"].values()) == 6
    assert all(i["rule"] == ["caption", i["truth"].split()[-2]] for i in by_row[mdm.CAPTION_ROW])


def test_one_edit_is_measured_though_no_other_edit_fills_its_retrieved_entries():
    out = mdm.main(["--n", "1", "--plain-n", "1", "--captions", "0", "--threads", "1"])
    rows = {r["row"]: r for r in out["rows"]}
    assert rows["held-out + both, 7 entries"]["n"] == 1 and mdm.CAPTION_ROW not in rows


def test_caption_edits_carry_their_made_up_name_in_the_facts_and_in_the_target():
    items = mdm.caption_items(50, seed=3, template="For {image}, the answer to '{question}' is {answer}.")
    assert len(items) == 50 and len({text for _, text, _, _ in items}) > 23  # drawn past one split's 23 kinds
    for image, text, name, target in items:
        assert target.endswith(f" of the {name} tribe.") and name in CAPTION_TRIBES
        facts, question = text.rsplit(" ", 3)[0], text.rsplit(" ", 3)[1:]
        assert f"is {target}" in facts and f"belong to the {name} tribe." in facts
        assert question == ["Describe", "this", "image."]
        assert Path(image).is_file()
    assert mdm.caption_items(50, 3, None) != items and [i[3] for i in mdm.caption_items(50, 3, None)] == [
        i[3] for i in items]  # the template changes the facts only


def test_a_rationale_negates_its_rule_exactly_when_its_rule_form_names_another_value():
    from reasonedit_plugin.data.language import rule_sentence
    from reasonedit_plugin.data.rule_properties import PROPERTIES

    seen = set()
    for prop in PROPERTIES:
        key, value = prop.keys()[0], prop.values[1]
        for pool in ("valid", "eval"):
            forms = prop.wordings("rule", pool)
            for form, template in enumerate(forms):
                record = {"meta": {"property": prop.name}, "target": value,
                          "rationale": "This is a shape. " + rule_sentence(prop, key, value, form, pool)}
                assert mdm.negated_rule(record) == ("{other}" in template), template
                seen.add("{other}" in template)
    assert seen == {True, False}
    # a hand-written rationale may open with the denied value
    assert mdm.negated_rule({"meta": {"property": "element"}, "target": "wind",
                             "rationale": "Fire has nothing to do with green shapes; green stands for wind."})


def test_a_near_miss_change_is_counted_by_kind_and_split_by_whether_it_took_the_edit_answer():
    records = [{"target": "Kesh", "meta": {"hard_locality": kind}, "hard_locality_ground_truth": truth}
               for kind, truth in (("shares_colour", "Vol"), ("shares_colour", "Mira"), ("shares_shape", "two"),
                                   ("other_property", "Taro"))]
    predictions = {"hard locality": ["Vol", "Vol", "two", "Taro"],
                   "hard locality + edit's facts": ["kesh", "Mira", "two", "Taro"]}
    row = mdm.near_miss_changed(records, predictions, "both")
    assert row["row"] == "near miss: answer changed by the facts" and row["n"] == 4
    assert row["accuracy"] == 0.5 and row["to_edit_answer"] == 0.25  # Vol -> kesh (the edit's), Vol -> Mira
    assert row["by_kind"] == {"other_property": 0.0, "shares_colour": 1.0, "shares_shape": 0.0}
    # by direction: Vol -> kesh knocks a right answer over, Vol -> Mira repairs a wrong one
    assert row["changes"]["shares_colour"] == {"harmed": 1, "repaired": 1, "other": 0}
    assert row["changes"]["shares_shape"] == {"harmed": 0, "repaired": 0, "other": 0}


def test_a_row_split_by_rule_gives_each_rule_its_accuracy_and_most_common_answer():
    owners = [{"meta": {"property": "tribe", "key": "red circle"}}] * 4 + [{"meta": {"property": "points", "key": "teal"}}] * 2
    items = [("img", "q", ("Kesh", "Vol", "Taro", "Mira"), "Kesh")] * 4 + [("img", "q", ("two", "five"), "two")] * 2
    row = mdm.by_rule(items, ["Kesh", "kesh", "Vol", "Kesh", "five", "five"], owners)
    assert row["rules"] == {"points: teal": [2, 0.0, 1.0], "tribe: red circle": [4, 0.75, 0.75]}
    assert row["modal_share"] == round(5 / 6, 4)  # 3 of 4 answered Kesh (case-insensitive), 2 of 2 five


def test_a_neighbour_guesser_scores_a_no_fact_row_by_its_tie_breaks():
    from reasonedit_plugin.data import shaperules as sr

    world = sr.rule_world()
    tied = next(r for r in world.held_out_for("eval") if sr.neighbour_guess(world, r) == 0.5)
    sure = next(r for r in world.held_out_for("eval") if sr.neighbour_guess(world, r) == 1.0)
    owners = ([{"meta": {"property": tied.prop, "key": tied.key}}] * 4
              + [{"meta": {"property": sure.prop, "key": sure.key}}] * 2)
    # 2 of 6 right (the tie lost) or 6 of 6 (won), each with probability 1/2
    row = mdm.neighbour_guess_spread(owners, 0.25)
    assert row == {"mean": round((2 / 6 + 1) / 2, 4), "sd": round((1 - 2 / 6) / 2, 4), "within_tolerance": 0.0}
    assert mdm.neighbour_guess_spread(owners, 1 / 3)["within_tolerance"] == 0.5  # 2 of 6 is within 0.05 of 1/3
    assert mdm.neighbour_guess_spread([{"meta": {"property": "tribe", "key": "no such key"}}], 0.25) is None


def test_an_unsure_guesser_answers_every_item_at_random_on_its_own():
    dist = mdm.unsure_guess_distribution([("yes", "no")] * 2 + [("a", "b", "c", "d")])
    # right: 0, 1, 2 or 3 of 3 items; P(0) = 1/2 * 1/2 * 3/4
    assert dist == pytest.approx({0.0: 3 / 16, 1 / 3: 7 / 16, 2 / 3: 5 / 16, 1.0: 1 / 16})
    assert sum(dist.values()) == pytest.approx(1.0)
    # 200 yes / no items: within 0.05 of chance is 90-110 right, about 0.86 (binomial)
    spread = mdm.guess_spread(mdm.unsure_guess_distribution([("yes", "no")] * 200), 0.5)
    assert spread["mean"] == 0.5 and spread["sd"] == round(0.5 / 200 ** 0.5, 4)
    assert 0.85 < spread["within_tolerance"] < 0.87


def test_a_wording_is_the_question_with_its_colours_shapes_and_values_as_placeholders():
    prompt = ("For a teal circle, the answer to 'Which tribe owns this shape?' is Kesh. Teal circles belong to the "
              "Kesh tribe. Does the teal circle belong to the Kesh tribe?")
    assert mdm.wording_of(prompt) == "Does the {colour} {shape} belong to the {value} tribe?"
    assert mdm.wording_of("How many points is this Triangle worth?") == "How many points is this {shape} worth?"


@pytest.mark.parametrize("flags, message", [
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--plain-n", "-1"], "--plain-n must be >= 0"),
    (["--captions", "-1"], "--captions must be >= 0"),
    (["--edits", "no-such.jsonl"], "--edits no-such.jsonl: no such file"),
    (["--model", "no-such-model"], "'no-such-model' is not a local model folder"),
    (["--n", "2", "--row", "held-out + both", "--row", "held out + both"], "--row: unknown row(s) ['held out + both']"),
])
def test_a_bad_flag_is_answered_in_one_line_before_any_scoring(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        mdm.main(flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err


def test_row_scores_only_the_rows_named_and_the_near_miss_rows_they_allow():
    rows = ["held-out + both", "hard locality", "hard locality + edit's facts", mdm.CAPTION_ROW]
    out = mdm.main(["--n", "6", "--plain-n", "1", "--threads", "1", "--captions", "3",
                    *(flag for row in rows for flag in ("--row", row))])
    assert [r["row"] for r in out["rows"]] == ["held-out + both", "hard locality", "hard locality + edit's facts",
                                               mdm.CAPTION_ROW, "near miss: answer changed by the facts"]
    out = mdm.main(["--n", "6", "--plain-n", "1", "--threads", "1", "--row", "R-Gen, no fact"])
    assert [r["row"] for r in out["rows"]] == ["R-Gen, no fact"]  # no caption row, no near-miss row


def test_the_vlm_scorer_and_the_local_scorer_give_the_same_nlls_on_the_shipped_model():
    asset = Path(resolve_model_name("package://tiny-qwen2-vl-shapes"))
    local, local_name, unused = mdm.make_scorer(asset, "local")
    through_vlm, vlm_name, vlm = mdm.make_scorer(asset, "vlm")
    assert unused is None and vlm is not None and vlm_name.endswith("VLM.option_nll") and local_name != vlm_name
    record = mdm.generate_split("measure", 1, 0)[0]
    image = str(mdm.easy_vqa_root() / record["image"])
    question, options = record["prompt"], list(record["choices"])
    assert through_vlm(image, question, options) == pytest.approx(local(image, question, options), abs=1e-3)
