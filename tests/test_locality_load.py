"""Locality under load: hundreds of sequential edits leave unrelated answers unchanged.

Tolerance: at most 2 % of the 30 unrelated probes may change their answer (checked after 100 and 200
edits; the paper's locality metric is the fraction that stays right; the gate is what protects it). The
FakeVLM run is fast; the slow variants use the embedded default model configured by the shipped YAML
(``hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml``): 300 edits (2 %) and 1,000 edits (the issue's 1 % drift
target).
"""

import random
from pathlib import Path

import pytest

from fakes import FakeVLM, pattern
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor

TOLERANCE = 0.02
TRIBES = ["Vol", "Kem", "Zib", "Tor", "Pax"]
UNRELATED = ["How many legs does a spider have?", "What is the capital of France?", "Is the sky green at noon?",
             "What does a thermometer measure?", "How many days are in a week?"]


def test_locality_under_200_sequential_edits(text_encoder):
    rng = random.Random(0)
    ed = ReasonEditor(FakeVLM(), ReasonEditConfig(guard={"policy": "off"}, augment={"enabled": False},
                                                  only_edit_errors=False),
                      text_encoder=text_encoder)
    probes = [(pattern(10_000 + i), UNRELATED[i % len(UNRELATED)], ["eight", "six", "four"]) for i in range(30)]
    base = [ed.answer(img, q, ch).text for img, q, ch in probes]
    edits, changed_at = 200, {}
    for i in range(edits):
        tribe = TRIBES[i % len(TRIBES)]
        report = ed.edit([{"id": f"e{i}", "image": pattern(i), "prompt": f"Which tribe owns shape {i}?",
                           "target": tribe, "choices": TRIBES,
                           "rationale": f"Shape {i} has pattern {rng.randrange(10**6)}. "
                                        f"Pattern {i} shapes belong to the {tribe} tribe."}])
        assert report.added == [f"e{i}"]
        if (i + 1) % 100 == 0:
            now = [ed.answer(img, q, ch).text for img, q, ch in probes]
            changed_at[i + 1] = sum(a != b for a, b in zip(now, base)) / len(probes)
    assert len(ed.codebook) > 2 * edits
    assert all(rate <= TOLERANCE for rate in changed_at.values()), changed_at
    # the edits themselves are still retrieved at the end (their own answer entry among the facts)
    for i in (0, 57, 150, 199):
        facts = ed.retrieve(pattern(i), f"Which tribe owns shape {i}?").facts
        assert f"The answer to 'Which tribe owns shape {i}?' is {TRIBES[i % 5]}." in facts


YAML = Path(__file__).resolve().parents[1] / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


def _drift_run(edits: int, probes_n: int, tolerance: float) -> None:
    """``edits`` sequential ShapeRules edits on the embedded default, configured by the shipped YAML; the
    drift is the share of unrelated probes (the split's multimodal-locality probes and plain easy-vqa
    questions on their images) whose answer changed from the unedited model's."""
    from reasonedit_plugin.data import shaperules
    from reasonedit_plugin.hparams import ASSETS_DIR, ReasonEditHyperParams
    from reasonedit_plugin.records import make_records

    if not (ASSETS_DIR / "tiny-qwen2-vl-shapes" / "config.json").is_file():
        pytest.skip("the embedded default model (assets/tiny-qwen2-vl-shapes) is not built")
    hparams = ReasonEditHyperParams.from_hparams(YAML)
    config = hparams.to_config().replace(guard={"policy": "off"}, only_edit_errors=False)
    ed = ReasonEditor.from_pretrained(hparams.model_name, config)
    root = shaperules.easy_vqa_root()
    records = make_records(shaperules.generate_split("locality-load", edits, seed=7), root)
    probes = [(r.multimodal_locality_image, r.multimodal_locality_prompt, r.multimodal_locality_choices)
              for r in records if r.multimodal_locality_prompt][:probes_n]
    assert len(probes) == probes_n
    base = [ed.answer(img, q, ch).text for img, q, ch in probes]
    for r in records:
        ed.edit([r])
    assert len(ed.edit_ids()) == edits
    now = [ed.answer(img, q, ch).text for img, q, ch in probes]
    drift = sum(a != b for a, b in zip(base, now)) / len(probes)
    accepted = sum(ed.retrieve(img, q).accepted for img, q, _ in probes) / len(probes)
    print(f"{edits} edits: drift {drift:.3f}, unrelated probes accepted by the gate {accepted:.3f}")
    assert drift <= tolerance, (drift, accepted)


@pytest.mark.slow
def test_locality_under_load_default_model():
    """300 sequential edits with the shipped YAML: at most 2 % of 100 unrelated probes change."""
    _drift_run(300, 100, TOLERANCE)


@pytest.mark.slow
def test_locality_drift_1000_edits_default_model():
    """The issue's drift target: after 1,000 sequential edits with the shipped YAML, at most 1 % of 100
    unrelated probes change their answer."""
    _drift_run(1000, 100, 0.01)
