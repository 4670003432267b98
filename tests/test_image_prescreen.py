"""``retrieval.nullset.image_prescreen``: a query whose image no edit's image test can reach is rejected before
its question is embedded, and ``answer`` reads the key's image part from the unedited answer's own vision pass
(``hooks.tap_input`` / ``VLM.vision_tap``). The decisions and answers must equal the full path's."""

import random
from pathlib import Path

import pytest
import torch

from reasonedit_plugin.codebook import Codebook, PendingEntry
from reasonedit_plugin.config import CodebookConfig, RetrievalConfig
from reasonedit_plugin.hooks import hook_count, tap_input
from reasonedit_plugin.retriever import Retriever

PRESCREEN = {"image_prescreen": True}
SHIPPED_YAML = Path(__file__).resolve().parent.parent / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


# ---------------------------------------------------------------------------------------------- the hook
def test_tap_input_hands_the_first_input_and_can_stop():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(5, 3)
    seen = []
    with tap_input(model, "2", lambda t: seen.append(t) or True) as tapped:
        out = model(x)
        model(x)  # a second run: not handed again
    assert tapped.fired and not tapped.stopped and len(seen) == 1
    torch.testing.assert_close(seen[0], torch.relu(model[0](x)))
    torch.testing.assert_close(out, model(x))
    after = []
    with tap_input(model, "2", lambda t: False) as tapped:
        after.append(model(x))  # stopped inside the last layer: the call never returns
    assert tapped.stopped and after == [] and hook_count(model) == 0
    with tap_input(model, "0", lambda t: True) as tapped:
        pass
    assert not tapped.fired and hook_count(model) == 0


# ---------------------------------------------------------------------------------------------- the gate
def key(image, text):
    return torch.tensor(list(image) + list(text), dtype=torch.float32)


def answer_entry(edit, image, text, radius):
    return PendingEntry("answer", f"The answer to '{edit}' is {edit.upper()}.", key(image, text), radius)


def book(**nullset):
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig(nullset={**PRESCREEN, **nullset}))
    return cb, Retriever(cb, vision_dim=2)


def test_out_of_reach_only_where_no_answer_image_test_can_pass():
    cb, r = book()
    cb.add_edit("a", [answer_entry("a", [0.0, 0.0], [1.0, 0.0, 0.0], 0.5),
                      PendingEntry("reasoning", "A is red.", key([0.0, 0.0], [0.0, 1.0, 0.0]), 0.5)])
    assert r.out_of_reach(torch.tensor([0.4, 0.0])) is None                   # within 1 x radius
    far = r.out_of_reach(torch.tensor([0.6, 0.0]))
    assert far is not None and not far.accepted and "not embedded" in far.reason and far.entry_ids == []
    for text in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]):          # the full gate agrees, any question
        assert not r.search(key([0.6, 0.0], text)).accepted
    assert r.search(key([0.4, 0.0], [1.0, 0.0, 0.0])).accepted
    cb.add_edit("b", [answer_entry("b", [3.0, 0.0], [0.0, 0.0, 1.0], 1.0)])  # a new edit: new bounds
    assert r.out_of_reach(torch.tensor([3.5, 0.0])) is None
    cb.remove_edit("b")
    assert r.out_of_reach(torch.tensor([3.5, 0.0])) is not None


def test_out_of_reach_cannot_tell_without_answer_rows_or_when_off():
    cb, r = book()
    cb.add_edit("s", [PendingEntry("reasoning", "S is round.", key([0.0, 0.0], [1.0, 0.0, 0.0]), 0.5)])
    assert r.out_of_reach(torch.tensor([9.0, 9.0])) is None                   # matches through its sentences
    assert not r.prescreens()  # so answers take the full path at once (no tapped pass to throw away)
    cb, r = book(match_on="any")
    cb.add_edit("a", [answer_entry("a", [0.0, 0.0], [1.0, 0.0, 0.0], 0.5)])
    assert r.out_of_reach(torch.tensor([9.0, 9.0])) is None and not r.prescreens()
    cb = Codebook(5, CodebookConfig(merge=False), RetrievalConfig(nullset={}))
    cb.add_edit("a", [answer_entry("a", [0.0, 0.0], [1.0, 0.0, 0.0], 0.5)])
    assert Retriever(cb, vision_dim=2).out_of_reach(torch.tensor([9.0, 9.0])) is None   # the default: off


def test_prescreen_rejections_agree_with_the_full_gate_on_random_books():
    gen = torch.Generator().manual_seed(0)
    rng = random.Random(0)
    rejected = searched = 0
    for trial in range(6):
        cb, r = book()
        for e in range(12):
            image = (torch.randn(2, generator=gen) * 3).tolist()
            text = torch.nn.functional.normalize(torch.randn(3, generator=gen), dim=0).tolist()
            cb.add_edit(f"e{e}", [answer_entry(f"e{e}", image, text, rng.uniform(0.2, 1.5)),
                                  PendingEntry("reasoning", f"fact {e}", key(image, text[::-1]), 0.5)])
        if trial % 2:
            cb.remove_edit("e3")
        for _ in range(60):
            q_image = torch.randn(2, generator=gen) * 3
            q_text = torch.nn.functional.normalize(torch.randn(3, generator=gen), dim=0)
            early = r.out_of_reach(q_image)
            if early is None:
                searched += 1
                continue
            rejected += 1
            full = r.search(torch.cat([q_image, q_text]))
            assert not full.accepted and not any(t.image_ok and t.kind == "answer" for t in full.verdict.tests)
    assert rejected > 50 and searched > 50


# ---------------------------------------------------------------------------------------------- the editor
@pytest.fixture(scope="module")
def editors(tmp_path_factory):
    from reasonedit_plugin.cli_inputs import load_edit_records
    from reasonedit_plugin.editor import ReasonEditor
    from reasonedit_plugin.hparams import ReasonEditHyperParams

    hp = ReasonEditHyperParams.from_hparams(str(SHIPPED_YAML))
    cfg = hp.to_config().replace(guard={"policy": "off"})
    full = ReasonEditor.from_pretrained(hp.model_name, cfg, device="cpu")
    full.edit(load_edit_records(None, "small", None, None)[:10])
    saved = tmp_path_factory.mktemp("prescreen") / "codebook"
    full.save(saved)
    fast = ReasonEditor.load(saved, full.vlm, cfg.replace(retrieval={"nullset": PRESCREEN}),
                             text_encoder=full.keys.text_encoder)
    return full, fast


@pytest.fixture(scope="module")
def queries():
    from reasonedit_plugin.data import shaperules as sr
    from reasonedit_plugin.records import load_image

    rng = random.Random(3)
    images = list(sr.image_catalogue("test"))
    rng.shuffle(images)
    root = sr.easy_vqa_root()
    return [(load_image(root / info.path), sr.format_question(rng.choice(rng.choice(sr.PROPERTIES).questions), info))
            for info in images[:25]]


def test_the_tapped_feature_is_the_keys_vision_part(editors, queries):
    full, _ = editors
    image, question = queries[0]
    seen = []
    with full.vlm.vision_tap(full.keys.vision_module, lambda f: seen.append(f) or True) as tapped:
        full.vlm.generate(image, question, 4)
    assert tapped.fired and not tapped.stopped
    full.keys._cache.clear()
    assert torch.equal(seen[0], full.keys.vision([image])[0])          # bit for bit: the same pixels, same pass


def test_prescreened_answers_equal_the_full_path_and_skip_the_second_pass(editors, queries, monkeypatch):
    full, fast = editors
    import reasonedit_plugin.embedding as embedding

    calls = {"vision": 0, "text": 0, "digest": 0, "screen": 0, "search": 0}
    vision_features, text, digest = fast.vlm.vision_features, fast.keys.text, embedding.image_digest
    screen, build_inputs, topk = fast.retriever.out_of_reach, fast.vlm.build_inputs, fast.retriever._scaled_topk
    built = []

    def counted_topk(*a, **k):
        calls["search"] += 1
        return topk(*a, **k)

    def counted_build(*a, **k):
        built.append(1)
        return build_inputs(*a, **k)

    def counted_screen(*a, **k):
        calls["screen"] += 1
        return screen(*a, **k)

    def counted_vision(*a, **k):
        calls["vision"] += 1
        return vision_features(*a, **k)

    def counted_text(*a, **k):
        calls["text"] += 1
        return text(*a, **k)

    def counted_digest(*a, **k):
        calls["digest"] += 1
        return digest(*a, **k)

    fast.retrieve(*queries[-1])  # first use: the key setup's probe and the gate's null images are encoded
    monkeypatch.setattr(fast.vlm, "vision_features", counted_vision)
    monkeypatch.setattr(fast.keys, "text", counted_text)
    monkeypatch.setattr(embedding, "image_digest", counted_digest)
    monkeypatch.setattr(fast.retriever, "out_of_reach", counted_screen)
    monkeypatch.setattr(fast.vlm, "build_inputs", counted_build)
    monkeypatch.setattr(fast.retriever, "_scaled_topk", counted_topk)
    early = gate_rejected = evidence_read = 0
    for n, (image, question) in enumerate(queries[:-1]):
        choices = ["yes", "no", "kesh"] if n % 3 == 0 else None
        for ed in (full, fast):
            ed.keys._cache.clear()
        a = full.answer(image, question, choices)
        before = dict(calls)
        built.clear()
        b = fast.answer(image, question, choices)
        assert (a.text, a.prompt, a.option_nll, a.retrieval.accepted, a.retrieval.facts) == \
               (b.text, b.prompt, b.option_nll, b.retrieval.accepted, b.retrieval.facts)
        assert calls["digest"] - before["digest"] == 1                   # the image's pixels hashed once
        assert calls["screen"] - before["screen"] == 1                   # its reach screened once
        if "not embedded" in b.retrieval.reason:
            early += 1
            assert calls == {**before, "digest": before["digest"] + 1,
                             "screen": before["screen"] + 1}              # no vision pass of its own, no embedding
        else:
            assert calls["vision"] == before["vision"]                   # the feature came from the answer's pass
            assert calls["search"] - before["search"] == 1               # candidates listed and key-tested once,
            evidence_read += bool(b.retrieval.verdict.evidence)          # also where the evidence decided
        if not b.retrieval.accepted and (b.retrieval.verdict is None or not b.retrieval.verdict.evidence):
            gate_rejected += "not embedded" not in b.retrieval.reason
            assert len(built) == 1                                         # rejected in the pass: it answered
        else:
            assert len(built) >= 2                                         # the evidence pass or the fused answer
        assert fast.retrieve(image, question).accepted == a.retrieval.accepted
    assert 0 < early < len(queries) and gate_rejected > 0 and evidence_read > 0


def test_a_key_module_outside_the_answer_pass_falls_back_once(editors, queries, monkeypatch):
    import contextlib

    from reasonedit_plugin.hooks import Tapped

    full, fast = editors
    asked = []

    @contextlib.contextmanager
    def never_fires(module, check):
        asked.append(module)
        yield Tapped()

    monkeypatch.setattr(fast.vlm, "vision_tap", never_fires)
    monkeypatch.setattr(fast, "_one_pass", None)
    for image, question in queries[:3]:
        fast.keys._cache.clear()
        full.keys._cache.clear()
        assert fast.answer(image, question).text == full.answer(image, question).text
    assert len(asked) == 1 and fast._one_pass is False


def test_retrieval_from_processor_outputs_is_prescreened_alike(editors, queries):
    """The EasyEdit adapter's path (pixel tensors, no PIL image) takes the same decisions with the prescreen."""
    full, fast = editors
    early = 0
    for image, question in queries[:12]:
        inputs = full.vlm.build_inputs([image], [question])
        a, b = full.retrieve_from_inputs(inputs, question), fast.retrieve_from_inputs(inputs, question)
        assert (a.accepted, a.facts) == (b.accepted, b.facts)
        early += "not embedded" in b.reason
    assert early > 0


def test_a_search_stopped_before_its_evidence_resumes_to_the_same_retrieval():
    """``conclude(screen(q), evidence)`` is ``search(q, evidence=evidence)``: the stop a decision inside
    another model pass makes, and its resumption after it, change nothing."""
    from reasonedit_plugin.evidence import EvidenceTest

    cb, r = book()
    rng = random.Random(0)
    for e in range(6):
        near = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
        cb.add_edit(f"e{e}", [answer_entry(f"e{e}", near, [1.0, 0.0, float(e % 2)], 0.8),
                             PendingEntry("reasoning", f"E{e} holds.", key(near, [0.0, 1.0, 0.0]), 0.8)])
    asked = []

    def refuse(edits):  # the evidence of every other matched edit fails
        asked.append(list(edits))
        return {e: [EvidenceTest(e, "shown", 0.9, 0.1 if n % 2 else 0.9, 0.5)] for n, e in enumerate(edits)}

    needed = 0
    for _ in range(40):
        q = key([rng.uniform(-1, 1), rng.uniform(-1, 1)], [1.0, 0.0, rng.random()])
        for evidence in (None, refuse):
            a = r.search(q, evidence=evidence)
            screened = r.screen(q)
            b = r.conclude(screened, evidence)
            needed += screened.needs_evidence
            assert (a.accepted, a.facts, a.entry_ids, a.scores, a.reason) == \
                   (b.accepted, b.facts, b.entry_ids, b.scores, b.reason)
            assert screened.needs_evidence == bool(r.search(q).accepted)
    assert 0 < needed < 80 and asked
    plain = Retriever(Codebook(5, CodebookConfig(merge=False), RetrievalConfig(gate="percentile")))
    with pytest.raises(ValueError, match="use search"):
        plain.screen(q)


def test_past_the_size_limit_the_prescreen_steps_aside(monkeypatch):
    import reasonedit_plugin.gate as gate

    cb, r = book()
    for e in range(3):
        cb.add_edit(f"e{e}", [answer_entry(f"e{e}", [3.0 * e, 0.0], [1.0, 0.0, 0.0], 0.5)])
    assert r.out_of_reach(torch.tensor([9.0, 9.0])) is not None and r.prescreens()
    monkeypatch.setattr(gate, "_PRESCREEN_MAX", 5)                      # 3 rows x 2 dims > 5
    cb.add_edit("e3", [answer_entry("e3", [20.0, 0.0], [1.0, 0.0, 0.0], 0.5)])
    assert r.out_of_reach(torch.tensor([9.0, 9.0])) is None and not r.prescreens()
    assert not r.search(key([9.0, 9.0], [1.0, 0.0, 0.0])).accepted     # the full gate decides instead


def test_tuned_keys_cannot_be_prescreened():
    from reasonedit_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="untuned keys"):
        RetrievalConfig(tuning="contrastive", nullset=PRESCREEN)


def test_without_the_evidence_check_an_accepted_query_is_decided_in_the_pass(editors, queries, tmp_path):
    """Evidence check off: the pass decides every query itself; an accepted one stops there and is fused."""
    from reasonedit_plugin.editor import ReasonEditor

    full, fast = editors
    full.save(tmp_path / "codebook")
    off = {"evidence_check": False}
    plain, screened = (ReasonEditor.load(tmp_path / "codebook", full.vlm,
                                         ed.config.replace(retrieval={"nullset": off}),
                                         text_encoder=full.keys.text_encoder) for ed in (full, fast))
    assert plain.evidence is None and screened.retriever.prescreens()
    accepted = 0
    for image, question in queries[:-1]:
        a, b = plain.answer(image, question), screened.answer(image, question)
        assert (a.text, a.prompt, a.retrieval.accepted, a.retrieval.facts) == \
               (b.text, b.prompt, b.retrieval.accepted, b.retrieval.facts)
        accepted += b.retrieval.accepted
    assert accepted > 0
