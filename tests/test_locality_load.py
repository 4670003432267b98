"""Locality under load: hundreds of sequential edits leave unrelated answers unchanged.

Tolerance: at most 2 % of the 30 unrelated probes may change (checked after 100 and 200 edits) their answer (the paper's locality metric is the
fraction that stays right; the gate is what protects it). The FakeVLM run is fast; the slow variant uses the
embedded default model with ShapeRules when that asset is present.
"""

import random

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


@pytest.mark.slow
def test_locality_under_load_default_model():
    """300 sequential ShapeRules edits on the embedded default model; multimodal-locality probes of the split."""
    from pathlib import Path

    import reasonedit_plugin

    asset = Path(reasonedit_plugin.__file__).parent / "assets" / "tiny-qwen2-vl-shapes"
    if not asset.is_dir():
        pytest.skip("the embedded default model (assets/tiny-qwen2-vl-shapes) is not built yet")
    from reasonedit_plugin.data import shaperules
    from reasonedit_plugin.records import make_record

    rows = shaperules.generate_split("locality-load", 300, seed=7) if hasattr(shaperules, "generate_split") else []
    records = [make_record(r, shaperules.easy_vqa_root()) for r in rows]
    probes = [r for r in records if r.multimodal_locality_prompt][:50]
    if len(records) < 300 or not probes:
        pytest.skip("could not generate a 300-edit ShapeRules split with locality probes")
    ed = ReasonEditor.from_pretrained(asset, ReasonEditConfig(guard={"policy": "off"}))

    def loc(r):
        return ed.answer(r.multimodal_locality_image, r.multimodal_locality_prompt,
                         r.multimodal_locality_choices).text

    base = [loc(r) for r in probes]
    for r in records:
        ed.edit([r])
    changed = sum(a != b for a, b in zip(base, [loc(r) for r in probes])) / len(probes)
    assert changed <= TOLERANCE
