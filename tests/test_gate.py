"""The null-set gate (gate.py): per-contribution image and text tests, conflicts, best match wins."""

import pytest
import torch

from fakes import FakeVLM, pattern, solid
from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig, ReasonEditConfig, RetrievalConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.gate import NullSetGateConfig, describe
from reasonedit_plugin.retriever import Retriever

# keys: 2 image dims, then 3 text dims (unit vectors; the gate only uses the text part's direction)
QA, QA2, QB = [1.0, 0.0, 0.0], [0.95, 0.312, 0.0], [0.0, 0.0, 1.0]   # QA2 is a rephrase of QA (cos 0.95)
RED, RED2, BLUE, GREEN = [0.0, 0.0], [0.3, 0.0], [4.0, 0.0], [0.0, 9.0]


def key(image, text):
    return torch.tensor(image + text, dtype=torch.float32)


def answer(q, a, image, text, radius=0.5):
    return PendingEntry("answer", f"The answer to '{q}' is {a}.", key(image, text), radius)


def book(**nullset):
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig(nullset=nullset or None))
    return cb, Retriever(cb, vision_dim=2)


def test_one_edit_image_and_text_tests():
    cb, r = book()
    cb.add_edit("a", [answer("Q", "Vol", RED, QA, radius=0.5)])
    assert r.search(key(RED, QA)).facts == ["The answer to 'Q' is Vol."]
    assert r.search(key(RED2, QA2)).accepted                     # 0.3 <= 1 x radius 0.5; rephrase cos 0.95
    far = r.search(key(BLUE, QA))                                # the question wording alone: rejected
    assert not far.accepted and far.facts == [] and "no entry passed" in far.reason
    other_q = r.search(key(RED, QB))                             # the edited image, another question
    assert not other_q.accepted
    t = other_q.verdict.tests[0]
    assert t.image_ok and not t.text_ok and t.text_cos == pytest.approx(0.0)
    assert t.image_threshold == pytest.approx(0.5) and "radius" in t.image_reason


def test_sibling_edits_sharing_a_question_do_not_answer_for_each_other():
    cb, r = book()
    cb.add_edit("red", [answer("Q", "Vol", RED, QA), PendingEntry("reasoning", "Red is Vol.", key(RED, QA2), 0.5)])
    cb.add_edit("blue", [answer("Q", "Kem", BLUE, QA, radius=3.0),
                         PendingEntry("reasoning", "Blue is Kem.", key(BLUE, QA2), 3.0)])
    # blue's radius alone (3.0) would reach [3.0, 0]; the conflict bound (2.0) stops it
    assert r.nullset.conflicts() == {"red": (pytest.approx(4.0), "blue"), "blue": (pytest.approx(4.0), "red")}
    assert r.search(key(RED, QA)).facts == ["The answer to 'Q' is Vol.", "Red is Vol."]
    res = r.search(key(BLUE, QA))
    assert res.facts == ["The answer to 'Q' is Kem.", "Blue is Kem."] and res.verdict.winner == "blue"
    test = next(t for t in res.verdict.tests if t.edit_id == "blue" and t.kind == "answer")
    assert test.image_threshold == pytest.approx(2.0) and "conflicting edit red" in test.image_reason
    assert not r.search(key(GREEN, QA)).accepted                 # nobody's image


def test_best_match_wins_among_conflicting_edits():
    cb, r = book(conflict_share=1.0, image_factor=10.0)         # both edits pass the image test
    cb.add_edit("red", [answer("Q", "Vol", RED, QA)])
    cb.add_edit("blue", [answer("Q", "Kem", BLUE, QA)])
    near_red = r.search(key([1.0, 0.0], QA))
    assert near_red.facts == ["The answer to 'Q' is Vol."]
    assert near_red.verdict.dropped_edits == {"blue": "red"} and "dropped blue" in near_red.reason
    assert r.search(key([3.0, 0.0], QA)).facts == ["The answer to 'Q' is Kem."]


def test_edits_on_other_questions_are_kept_together():
    cb, r = book()
    cb.add_edit("tribe", [answer("Q", "Vol", RED, QA)])
    cb.add_edit("tribe-again", [answer("Q2", "Vol", RED2, QA2)])   # the same rule re-edited: no conflict
    cb.add_edit("points", [answer("P", "nine", RED, QB)])
    assert r.nullset.conflicts() == {}
    res = r.search(key(RED, QA))
    assert set(res.verdict.kept_edits) == {"tribe", "tribe-again"} and not res.verdict.dropped_edits
    assert "The answer to 'P' is nine." not in res.facts
    assert r.search(key(RED, QB)).facts == ["The answer to 'P' is nine."]


def test_re_edit_of_the_same_question_and_image_overrides():
    cb = Codebook(5, CodebookConfig(merge=True), RetrievalConfig())   # merged into one entry
    r = Retriever(cb, vision_dim=2)
    cb.add_edit("old", [answer("Q", "Vol", RED, QA)])
    cb.add_edit("new", [answer("Q", "Kem", RED, QA)])
    assert len(cb) == 1
    res = r.search(key(RED, QA))
    assert res.facts == ["The answer to 'Q' is Kem."] and res.verdict.dropped_edits == {"old": "new"}
    cb.remove_edit("new")                                          # removal rebuilds the conflict table
    assert r.search(key(RED, QA)).facts == ["The answer to 'Q' is Vol."]
    assert r.nullset.conflicts() == {}


def test_deterministic_and_explained():
    cb, r = book()
    cb.add_edit("red", [answer("Q", "Vol", RED, QA)])
    cb.add_edit("blue", [answer("Q", "Kem", BLUE, QA)])
    a, b = r.search(key(RED2, QA2)), r.search(key(RED2, QA2))
    assert a.to_dict() == b.to_dict()
    lines = describe(a.verdict, 0.5)
    assert "edit red matched best" in lines[0]
    assert any(line.strip().startswith("PASS") and "image d=0.300 <= 0.500" in line for line in lines)
    assert any("text cos=0.950" in line for line in lines)


def test_config_checks():
    with pytest.raises(ConfigError, match="image_factor"):
        NullSetGateConfig(image_factor=0)
    with pytest.raises(ConfigError, match="conflict_share"):
        NullSetGateConfig(conflict_share=1.5)
    with pytest.raises(ConfigError, match="unknown key 'factor'"):
        RetrievalConfig(nullset={"factor": 2})
    assert RetrievalConfig(gate=True).gate == "nullset" and RetrievalConfig(gate=False).gate == "off"
    assert RetrievalConfig().nullset == NullSetGateConfig()


TRIBES = ["Vol", "Kem", "Zib"]
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "yellow": (220, 220, 20),
           "purple": (150, 20, 150), "cyan": (20, 200, 200)}


def _sibling_records():
    """Edits that share question wordings (two templates, six images, three answers)."""
    wordings = ["Which tribe owns this shape?", "Which tribe does this shape belong to?"]
    out = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        out.append({"id": name, "image": solid(rgb), "prompt": wordings[i % 2], "target": TRIBES[i % 3],
                    "choices": TRIBES, "rationale": f"The shape is {name}. {name.title()} shapes belong to the "
                                                    f"{TRIBES[i % 3]} tribe."})
    return out


@pytest.mark.parametrize("gate", ["nullset", "percentile"])
def test_sequential_equals_single_on_sibling_edits(text_encoder, gate):
    """The issue's interference case on the fake VLM: single-edit reliability is 1.0 for both gates; in
    sequence the null-set gate keeps it (the percentile gate's figure is reported, not required)."""
    def editor():
        return ReasonEditor(FakeVLM(), ReasonEditConfig(guard={"policy": "off"}, only_edit_errors=False,
                                                        retrieval={"gate": gate, "cap_keys": 7}),
                            text_encoder=text_encoder)

    recs = _sibling_records()
    single = []
    for r in recs:
        ed = editor()
        ed.edit([r])
        single.append(ed.answer(r["image"], r["prompt"], TRIBES).text == r["target"])
    ed = editor()
    for r in recs:
        ed.edit([r])
    seq = [ed.answer(r["image"], r["prompt"], TRIBES).text == r["target"] for r in recs]
    assert all(single)
    if gate == "nullset":
        assert all(seq)
        for r in recs:  # nothing of another edit leaks into a query about this shape
            facts = ed.retrieve(r["image"], r["prompt"]).facts
            assert facts and all(r["id"] in f.lower() or f"is {r['target']}" in f for f in facts), facts
        # an unrelated question on an edited image, and an edited wording on an unedited image: rejected
        assert not ed.retrieve(recs[0]["image"], "How many legs does a spider have?").accepted
        assert not ed.retrieve(pattern(3), recs[0]["prompt"]).accepted


def test_an_edit_matches_through_its_question_not_its_sentences():
    """match_on: answer (default): a query close to an evidence sentence but not to the edit's question is
    rejected; match_on: any lets the sentence match."""
    def run(match_on):
        cb, r = book(match_on=match_on)
        cb.add_edit("red", [answer("Q", "Vol", RED, QA),
                            PendingEntry("reasoning", "The picture shows red.", key(RED, QB), 0.5)])
        return r.search(key(RED, QB))
    assert not run("answer").accepted
    res = run("any")
    assert res.accepted and "The picture shows red." in res.facts
    cb, r = book()
    cb.add_edit("sentences-only", [PendingEntry("reasoning", "Red is Vol.", key(RED, QB), 0.5)])
    assert r.search(key(RED, QB)).accepted        # no answer entry: its sentences can match


def test_names_option_passes_a_question_about_the_edited_property():
    """names_option: a query whose question names one of the edit's answer options passes the text test at
    text_floor (relative test off here, to see this one alone); the image test still applies."""
    far = [0.45, 0.893, 0.0]                                     # cos 0.45 with QA: fails text_min_cos 0.6
    points = {"answer_options": ["two", "five", "seven", "nine"]}

    def run(question, meta=points, text=far, image=RED, **nullset):
        cb, r = book(relative_text=False, **{"names_option": True, **nullset})
        cb.add_edit("a", [answer("Q", "five", RED, QA)], meta)
        return r.search(key(image, text), question=question)

    res = run("Is this triangle worth nine points?")             # another option than the answer: still about it
    assert res.accepted and res.facts == ["The answer to 'Q' is five."]
    assert "names the answer option 'nine'" in res.verdict.tests[0].text_reason
    assert not run("Is this triangle red?").accepted             # names no option
    assert not run("Is this worth ninety points?").accepted      # a word, not a substring
    # a number names its option in words or digits, as a real VLM's users and answers write it
    assert run("Is this triangle worth 9 points?").accepted
    assert not run("Is this triangle worth 90 points?").accepted
    digits = {"answer_options": ["2", "25", "100"]}
    assert run("Is this shape worth twenty-five points?", meta=digits).accepted
    assert run("Is it worth a hundred?", meta=digits).accepted and run("Two, is it?", meta=digits).accepted
    assert not run("Is this shape worth twenty points?", meta=digits).accepted
    assert run("Is it the Kesh tribe's?", meta={"answer_options": ["the Kesh tribe"]}).accepted
    assert not run(None).accepted                                # no question text: not tested
    assert not run("Is this triangle worth nine points?", names_option=False).accepted
    assert not run("Is this triangle worth nine points?", text=QB).accepted     # cos 0 < text_floor 0.3
    assert not run("Is this triangle worth nine points?", image=BLUE).accepted  # the image test still applies
    # without stored options the answer its entry states is the option; "yes" / "no" name no property
    assert run("Is it Five?", meta=None).accepted and not run("Is it nine?", meta=None).accepted
    assert not run("Is there no circle?", meta={"answer_options": ["yes", "no"]}).accepted


def test_the_editor_stores_a_records_choices_for_the_option_test(text_encoder, tmp_path):
    config = ReasonEditConfig(guard={"policy": "off"}, only_edit_errors=False,
                              retrieval={"nullset": {"names_option": True}})
    ed = ReasonEditor(FakeVLM(), config, text_encoder=text_encoder)
    ed.edit([_sibling_records()[0]], author="me")
    metas = [part.meta for _, part in ed.codebook.edit_parts("red")]
    assert all(m["answer_options"] == TRIBES and m["author"] == "me" for m in metas)
    ed.save(tmp_path / "cb")
    loaded = ReasonEditor.load(tmp_path / "cb", FakeVLM(), config, text_encoder=text_encoder)
    again = [part.meta for _, part in loaded.codebook.edit_parts("red")]
    assert again == metas


def test_the_query_question_reaches_the_gate_on_every_path(text_encoder, monkeypatch):
    """retrieve, answer (the gate decided inside the answer's pass or after it) and the evaluation's method all
    hand the gate the question's text, which names_option reads."""
    from reasonedit_plugin import gate as gate_module
    from reasonedit_plugin.edit_methods import ReasonEditMethod

    seen = []
    real = gate_module.NullSetGate.screen
    monkeypatch.setattr(gate_module.NullSetGate, "screen",
                        lambda self, query, candidates, question=None: seen.append(question) or real(
                            self, query, candidates, question))
    rec = _sibling_records()[0]
    ed = ReasonEditor(FakeVLM(), ReasonEditConfig(guard={"policy": "off"}, only_edit_errors=False),
                      text_encoder=text_encoder)
    ed.edit([rec])
    ed.retrieve(rec["image"], "Is this shape Kem's?")
    ed.answer(rec["image"], "Is this shape Zib's?", ["yes", "no"])
    method = ReasonEditMethod(lambda: ed)
    method.predict(rec["image"], "Is this shape Vol's?", ["yes", "no"])
    assert seen[-3:] == ["Is this shape Kem's?", "Is this shape Zib's?", "Is this shape Vol's?"]


def test_cached_entry_rows_follow_merges_and_removals():
    """The gate caches each candidate's contributions per codebook version: a merge into an entry and the
    removal of a merged edit must show in the very next query's tests."""
    cb = Codebook(5, CodebookConfig(merge=True), RetrievalConfig())
    r = Retriever(cb, vision_dim=2)
    cb.add_edit("a", [answer("Q", "Vol", RED, QA, radius=0.5)])
    first = r.search(key(RED, QA))
    assert [t.edit_id for t in first.verdict.tests] == ["a"]
    cb.add_edit("b", [answer("Q", "Vol", RED, QA, radius=0.5)])       # same key: merged into entry 0
    assert len(cb) == 1
    merged = r.search(key(RED, QA))
    assert sorted(t.edit_id for t in merged.verdict.tests) == ["a", "b"]
    cb.remove_edit("a")
    after = r.search(key(RED, QA))
    assert [t.edit_id for t in after.verdict.tests] == ["b"] and after.accepted
    assert r.nullset.test(key(RED, QA).double(), 0)[0].edit_id == "b"


def test_entry_rows_read_together_equal_those_read_one_by_one(monkeypatch):
    """Candidates not cached are read in one batch (entry keys gathered together, merged contributions with
    their own keys); a cache that overflows mid-query starts afresh. Every verdict equals one from a fresh
    gate, whatever the cache held."""
    import reasonedit_plugin.gate as gate_module

    cb = Codebook(5, CodebookConfig(merge=True), RetrievalConfig(nullset={"candidates": 6}))
    images = [RED, RED2, BLUE, GREEN, [2.0, 2.0], [6.0, 1.0], [9.0, 9.0], [12.0, 0.0], [0.0, 14.0], [7.0, 7.0]]
    for n, image in enumerate(images):
        cb.add_edit(f"e{n}", [answer(f"Q{n}", "Vol", image, QA if n % 2 else QB, radius=0.6)])
    cb.add_edit("merged", [answer("Q0", "Kem", RED, QB, radius=0.6)])  # a second contribution of entry 0
    queries = [key(image, text) for image in images for text in (QA, QB, QA2)]

    def verdict(res):
        return (res.accepted, res.entry_ids, res.reason,
                [(t.entry_id, t.edit_id, t.image_distance, t.text_cos) for t in res.verdict.tests])

    fresh = [verdict(Retriever(cb, vision_dim=2).search(q)) for q in queries]  # an empty cache each time
    assert any(len(v[3]) > 4 for v in fresh) and any(v[0] for v in fresh) and not all(v[0] for v in fresh)
    monkeypatch.setattr(gate_module, "_ROWS_CACHED", 8)  # a query's candidates overflow what earlier ones left
    small = Retriever(cb, vision_dim=2)
    assert [verdict(small.search(q)) for q in queries] == fresh and len(small.nullset._rows) <= 8
    monkeypatch.setattr(gate_module, "_ROWS_CACHED", 4096)
    shared = Retriever(cb, vision_dim=2)
    assert [verdict(shared.search(q)) for q in queries] == fresh


def test_relative_text_test_accepts_a_far_rephrase_nearest_to_the_edits_question():
    far = [0.45, 0.893, 0.0]                                     # cos 0.45 with QA: fails text_min_cos 0.6
    cb, r = book()
    cb.add_edit("a", [answer("Q", "Vol", RED, QA)])
    res = r.search(key(RED, far))                                # no rival question: nearest is the edit's
    t = res.verdict.tests[0]
    assert res.accepted and t.text_ok and "relative" in t.text_reason and "rival question cos -1.000" in t.text_reason
    cb2, off = book(relative_text=False)
    cb2.add_edit("a", [answer("Q", "Vol", RED, QA)])
    assert not off.search(key(RED, far)).accepted
    cb3, floor = book(text_floor=0.5)
    cb3.add_edit("a", [answer("Q", "Vol", RED, QA)])
    assert not floor.search(key(RED, far)).accepted


def test_relative_text_test_rejects_a_question_nearer_to_a_rival():
    # a null question (generic, from the gate's encoder) nearer to the query than the edit's question
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig())
    r = Retriever(cb, vision_dim=2, encode_text=lambda texts: torch.tensor([[0.0, 0.6, 0.8]] * len(texts)))
    cb.add_edit("a", [answer("Q", "Vol", RED, QA)])
    res = r.search(key(RED, [0.45, 0.893, 0.0]))                 # cos 0.45 with Q, 0.54 with the null question
    assert not res.accepted
    assert "nearest rival question cos 0.536" in res.verdict.tests[0].text_reason
    lines = describe(res.verdict, 0.6)
    assert any("relative: nearest rival" in line for line in lines)
    # another edit's question among the candidates is a rival too (same image, another property)
    cb, r = book()
    cb.add_edit("tribe", [answer("Q", "Vol", RED, QA)])
    cb.add_edit("points", [answer("P", "nine", RED, QB)])
    res = r.search(key(RED, [0.45, 0.0, 0.893]))                 # cos 0.45 with Q, 0.89 with P
    assert res.facts == ["The answer to 'P' is nine."]
    tribe = next(t for t in res.verdict.tests if t.edit_id == "tribe")
    assert not tribe.text_ok and "rival question cos 0.893" in tribe.text_reason


def test_relative_text_config_checks():
    with pytest.raises(ConfigError, match="text_floor"):
        NullSetGateConfig(text_floor=2.0)
    assert NullSetGateConfig(null_questions=["a?"]).null_questions == ("a?",)


def test_domain_images_bound_the_image_test_from_the_first_edit():
    # one edit, radius 5: a near-miss image at distance 3 passes on the radius alone ...
    cb, r = book()
    cb.add_edit("a", [answer("Q", "Vol", RED, QA, radius=5.0)])
    assert r.search(key([3.0, 0.0], QA)).accepted
    # ... but not once images of the domain are in the null set (pairs 2-4 apart: 5th percentile ~2)
    domain = [[2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [4.0, 4.0]]
    cb2 = Codebook(5, CodebookConfig(merge=False), RetrievalConfig())
    r2 = Retriever(cb2, vision_dim=2, domain_images=lambda: torch.tensor(domain, dtype=torch.float64).numpy())
    cb2.add_edit("a", [answer("Q", "Vol", RED, QA, radius=5.0)])
    res = r2.search(key([3.0, 0.0], QA))
    t = res.verdict.tests[0]
    assert not res.accepted and not t.image_ok and "and 4 domain images" in t.image_reason
    assert r2.nullset.null_pairs == 10  # 5 images (the edit's and 4 domain ones), all pairs apart
    assert r2.search(key([0.1, 0.0], QA)).accepted                  # the edited image itself still passes
    smallest = min(float(torch.tensor(a).sub(torch.tensor(b)).norm()) for i, a in enumerate([RED] + domain)
                   for b in ([RED] + domain)[i + 1:])
    assert smallest <= r2.nullset.null_threshold < 3.0           # the low end of the 10 null distances


def test_a_gate_setting_changed_in_place_rebuilds_what_was_derived_from_it():
    edits = [("a", RED), ("b", BLUE), ("c", GREEN), ("d", [2.0, 2.0])]
    cb, r = book()
    for name, image in edits:
        cb.add_edit(name, [answer("Q", name, image, QA, radius=50.0)])  # the null threshold binds
    query = key([3.3, 0.0], QA)
    r.search(query)
    before = r.nullset.null_threshold
    r.nullset.config.null_percentile = 95.0  # in place, on the live config: the codebook has not changed
    after = r.search(query)
    fresh_cb, fresh = book(null_percentile=95.0)
    for name, image in edits:
        fresh_cb.add_edit(name, [answer("Q", name, image, QA, radius=50.0)])
    want = fresh.search(query)
    assert r.nullset.null_threshold == fresh.nullset.null_threshold > before
    assert (after.accepted, [t.image_reason for t in after.verdict.tests]) == \
        (want.accepted, [t.image_reason for t in want.verdict.tests])


def test_null_images_changed_in_place_are_read_again():
    # the editor's domain_images reads the live config's null_images; a change there must reach the gate
    config = RetrievalConfig()
    images = {"one.png": [[2.0, 0.0]], "four.png": [[2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [4.0, 4.0]]}

    def domain():
        rows = [row for name in config.nullset.null_images for row in images[name]]
        return torch.tensor(rows, dtype=torch.float64).numpy() if rows else None

    cb = Codebook(5, CodebookConfig(merge=False), config)
    r = Retriever(cb, vision_dim=2, domain_images=domain)
    cb.add_edit("a", [answer("Q", "Vol", RED, QA, radius=5.0)])
    config.nullset.null_images = ("one.png",)
    assert r.search(key([3.0, 0.0], QA)).verdict.tests[0].image_reason.endswith("and 1 domain images")
    config.nullset.null_images = ("four.png",)                  # in place, on the live config
    assert r.nullset.null_pairs == 1
    res = r.search(key([3.0, 0.0], QA))
    assert r.nullset.null_pairs == 10 and "and 4 domain images" in res.verdict.tests[0].image_reason


def test_the_gate_kind_changed_in_place_is_the_one_searched_with():
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig(gate="percentile"))
    r = Retriever(cb, vision_dim=2)
    for name, image in (("a", RED), ("b", BLUE), ("c", GREEN)):
        cb.add_edit(name, [answer("Q", name, image, QA)])
    query = key(RED2, QA)
    assert r.nullset is None and r.search(query).verdict is None
    cb.retrieval.gate = "nullset"                    # the same config object, changed in place
    fresh_cb, fresh = book()
    for name, image in (("a", RED), ("b", BLUE), ("c", GREEN)):
        fresh_cb.add_edit(name, [answer("Q", name, image, QA)])
    got, want = r.search(query), fresh.search(query)
    assert got.verdict is not None and (got.accepted, got.entry_ids, got.reason) == \
        (want.accepted, want.entry_ids, want.reason)
    gate = r.nullset
    assert r.nullset is gate                          # kept while the section is the same object
    cb.retrieval.nullset = NullSetGateConfig(null_percentile=50.0)
    assert r.nullset is not gate and r.nullset.config.null_percentile == 50.0
    cb.retrieval.gate = "percentile"
    assert r.nullset is None and r.search(query).verdict is None


def test_null_images_resolve_packaged_folders_and_say_what_is_missing(tmp_path):
    from reasonedit_plugin.hparams import resolve_image_paths

    shipped = resolve_image_paths(["package://domain-images-shapes"])
    assert len(shipped) == 24 and all(p.suffix == ".png" for p in shipped)
    with pytest.raises(ConfigError, match="neither an image file nor a folder"):
        resolve_image_paths([str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="holds no images"):
        resolve_image_paths([str(tmp_path)])


def test_config_replace_updates_a_sub_section_without_dropping_its_other_settings():
    cfg = ReasonEditConfig(retrieval={"nullset": {"text_min_cos": 0.42, "candidates": 9}})
    new = cfg.replace(retrieval={"gate": "nullset", "nullset": {"evidence_check": True}})
    assert new.retrieval.nullset.evidence_check and new.retrieval.nullset.text_min_cos == 0.42
    assert new.retrieval.nullset.candidates == 9 and not cfg.retrieval.nullset.evidence_check
