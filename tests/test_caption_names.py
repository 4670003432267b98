"""benchmarks/caption_names.py: caption edits asked with other names (fast, fake VLMs, no model)."""

from __future__ import annotations

import re

import pytest

from reasonedit_plugin.data.language import CAPTION_TRIBES
from reasonedit_plugin.data.mix_text import name_words, noise_vocabulary

TEMPLATE = "For {image}, the answer to '{question}' is {answer}."


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("caption_names")


def test_three_pools_of_twelve_distinct_names_seeded(script):
    pools = script.names(0)
    assert list(pools) == list(script.POOLS) and all(len(set(v)) == 12 for v in pools.values())
    assert pools["tribes"] == list(CAPTION_TRIBES)
    assert not set(pools["letters"]) & set(CAPTION_TRIBES)
    assert all(re.fullmatch(r"[A-Z][a-z]{2,5}", n) for n in pools["letters"])
    assert {w.lower() for w in pools["words"]} <= set(name_words(noise_vocabulary()))
    assert script.names(0) == pools and script.names(1)["letters"] != pools["letters"]


def test_renamed_swaps_the_name_in_target_and_rationale_only(script):
    record = script.caption_split(3, seed=0)[0]
    old = record["target"].rsplit(" ", 2)[-2]
    new = script.renamed(record, "Qavon")
    assert new["target"] == record["target"].replace(old, "Qavon") and "Qavon" in new["rationale"]
    assert old not in new["rationale"].split() and new["image"] == record["image"]
    assert record["target"].endswith(f"{old} tribe.")  # the original is left as it was


def _fake(monkeypatch, script, writer):
    import reasonedit_plugin.vlm as vlm

    class Fake:
        def generate(self, image, text, max_new_tokens=16):
            return writer(text)

    monkeypatch.setattr(vlm.VLM, "from_pretrained", staticmethod(lambda path: Fake()))
    monkeypatch.setattr(script, "trained_answer_template", lambda path: TEMPLATE)


def test_a_model_that_copies_the_entry_copies_every_name_and_one_that_writes_tor_only_tor(script, monkeypatch,
                                                                                          tmp_path):
    _fake(monkeypatch, script, lambda text: re.search(r"' is (A [^.]+\.)", text).group(1))
    res = script.measure(tmp_path, 4, 0)
    assert len(res["names"]) == 36 and all(r["n"] == 4 and r["right"] == 1.0 for r in res["names"])
    assert all(s == {"mean": 1.0, "copied": 12, "of": 12} for s in res["summary"].values())

    _fake(monkeypatch, script, lambda text: re.sub(r"of the \w+ tribe", "of the tor tribe",
                                                    re.search(r"' is (A [^.]+\.)", text).group(1)))
    res = script.measure(tmp_path, 4, 0)
    assert res["summary"]["tribes"] == {"mean": round(1 / 12, 4), "copied": 1, "of": 12}
    assert res["summary"]["letters"]["copied"] == res["summary"]["words"]["copied"] == 0
    assert next(r for r in res["names"] if r["name"] == "Tor")["example"].startswith("A ")


def test_pieces_tell_a_copied_name_from_one_written_from_the_model_s_prior(script, monkeypatch, tmp_path):
    """Teacher-forced piece scores: a copier's argmax is every right piece; a model that writes "tor" whatever
    the name is right at the first piece of "Tor" only, and gives the right pieces little probability."""
    import torch
    from transformers import AutoTokenizer

    import reasonedit_plugin.vlm as vlm
    from reasonedit_plugin.data.default_model_build import minilm_dir
    from reasonedit_plugin.scoring import TokenScores

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tor = tokenizer.convert_tokens_to_ids("tor")

    class Fake:
        processor = type("P", (), {"tokenizer": tokenizer})()

        def __init__(self, copies):
            self.copies = copies

        def generate(self, image, text, max_new_tokens=16):
            return re.search(r"' is (A [^.]+\.)", text).group(1) if self.copies else "a shape."

        def token_scores(self, image, text, continuations):
            ids = torch.tensor(tokenizer(continuations[0], add_special_tokens=False)["input_ids"])
            predicted, logprobs = ids.clone(), torch.zeros(len(ids))
            if not self.copies:  # writes "tor" at every piece of the name (the word before "tribe")
                end = ids.tolist().index(tokenizer.convert_tokens_to_ids("tribe"))
                for k in range(end - len(tokenizer.tokenize(continuations[0].split()[-2])), end):
                    predicted[k], logprobs[k] = tor, 0.0 if int(ids[k]) == tor else -6.0
            return [TokenScores(ids, logprobs, predicted, predicted[:, None])]

    monkeypatch.setattr(script, "trained_answer_template", lambda path: TEMPLATE)
    for copies in (True, False):
        monkeypatch.setattr(vlm.VLM, "from_pretrained", staticmethod(lambda path, c=copies: Fake(c)))
        res = script.measure(tmp_path, 3, 0, pieces=True)
        by_name = {r["name"]: r for r in res["names"] if r["pool"] == "tribes"}
        if copies:
            assert all(r["first_piece"] == {"n": 3, "right": 1.0, "median_logp": 0.0} for r in by_name.values())
            assert res["summary"]["letters"]["later_pieces"]["right"] == 1.0
        else:
            assert by_name["Tor"]["first_piece"]["right"] == 1.0 and by_name["Tor"]["later_pieces"]["n"] == 0
            assert by_name["Mik"]["first_piece"] == {"n": 3, "right": 0.0, "median_logp": -6.0}
            assert res["summary"]["tribes"]["first_piece"]["right"] == round(1 / 12, 4)


def test_a_name_missing_from_its_target_is_a_clear_error(script):
    import torch
    from transformers import AutoTokenizer

    from reasonedit_plugin.data.default_model_build import minilm_dir
    from reasonedit_plugin.scoring import TokenScores

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))

    class Fake:
        processor = type("P", (), {"tokenizer": tokenizer})()

        def token_scores(self, image, text, continuations):
            ids = torch.tensor(tokenizer(continuations[0], add_special_tokens=False)["input_ids"])
            return [TokenScores(ids, torch.zeros(len(ids)), ids, ids[:, None])]

    assert script.name_pieces(Fake(), "x.png", "q", "A red circle of the Tor tribe.", "Tor") == [(True, 0.0)]
    with pytest.raises(ValueError, match="'Qavon'.*is not among the pieces"):
        script.name_pieces(Fake(), "x.png", "q", "A red circle of the Tor tribe.", "Qavon")


def test_bad_arguments_are_one_line_errors(script, capsys):
    for argv in (["x=/nonexistent", "--out", "o.json"], ["x=.", "--n", "0", "--out", "o.json"],
                 ["x=.", "--n", "24", "--out", "o.json"]):
        with pytest.raises(SystemExit):
            script.main(argv)
        assert "error:" in capsys.readouterr().err
