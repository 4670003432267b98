"""The SERAC row for Hugging Face VLMs (``serac_baseline.py``) on the embedded model, with a small training
run: the scope classifier routes an edit's own query to the counterfactual model, which answers with the
edit; unrelated and text-only queries go to the unchanged base model."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.serac_baseline import SeracConfig, SeracMethod, edit_prompt

REPO = Path(__file__).resolve().parents[1]
SERAC_YAML = REPO / "hparams" / "SERAC" / "tiny-qwen2-vl-shapes.yaml"


@pytest.fixture(scope="module")
def serac():
    try:
        from reasonedit_plugin.data.split_files import load_split
        from reasonedit_plugin.hparams import resolve_model_name
        from reasonedit_plugin.records import make_records
        from reasonedit_plugin.vlm import VLM

        records = make_records(load_split("small"))
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")
    vlm = VLM.from_pretrained(resolve_model_name("package://tiny-qwen2-vl-shapes"))
    config = SeracConfig(train_edits=16, classifier_steps=200, cf_steps=20)
    return SeracMethod(vlm, config), records


def test_shipped_yaml_loads_and_checks_keys(tmp_path):
    config = SeracConfig.from_yaml(SERAC_YAML)
    assert config.world_seed != 5 and config.train_edits == 120  # another rule world than the evaluated splits
    bad = tmp_path / "s.yaml"
    bad.write_text(SERAC_YAML.read_text() + "treshold: 0.4\n")
    with pytest.raises(ConfigError, match="unknown key 'treshold'.*threshold"):
        SeracConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="threshold"):
        SeracConfig(threshold=1.5)


def test_scope_classifier_and_counterfactual_model(serac):
    method, records = serac
    assert method.classifier_accuracy > 0.8  # held-out training pairs
    r = records[0]
    assert method.route(r.image, r.prompt) is None  # empty memory: the base model answers
    base_answer = method.predict(r.image, r.prompt, r.choices).text
    for rec in records[:4]:
        method.apply(rec)
    assert method.route(r.image, r.prompt) is r
    assert method.predict(r.image, r.prompt, r.choices).text == r.target
    assert method.route(None, "Does a triangle have four sides?") is None  # text-only: base model
    tf = method.teacher_forced(r.image, r.prompt, r.target)
    assert tf.logits.shape[0] == tf.labels.shape[0]
    assert "Edit: " + r.prompt in edit_prompt(r, "q?") and method.extra["serac"]["routed"]["counterfactual"] >= 1
    method.reset()
    assert method.route(r.image, r.prompt) is None
    assert method.predict(r.image, r.prompt, r.choices).text == base_answer
