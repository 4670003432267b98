"""An EasyEdit user's path, written from EasyEdit's and this project's documentation: the README snippet as
written, ``edit_dataset`` with EasyEdit's VQA template, every shipped baseline YAML through EasyEdit's own
hyper-parameter classes (after ``reasonedit hparams --materialize``), and the set-up mistakes that must be
one-line errors.

Needs EasyEdit importable (docs/EASYEDIT.md, "Set-up") and the easy-vqa images; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.easyedit

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"
TEMPLATE = "Question: {} Short answer:"  # EasyEdit's documented VQA template



@pytest.fixture(scope="module")
def shaperules():
    try:
        from reasonedit_plugin.data.shaperules import easy_vqa_root
        from reasonedit_plugin.data.split_files import load_split

        return load_split("small"), easy_vqa_root()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")


def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_with_easyedit_snippet_runs_as_written(easyedit, shaperules, tmp_path):
    """The README's "With EasyEdit" code, unchanged, from a folder holding the repository's hparams/;
    also: ``import easyeditor`` writes nothing, ``MultimodalEditor`` writes logs/run.log (as documented)."""
    code = _readme_block("## With EasyEdit")
    (tmp_path / "hparams").symlink_to(REPO / "hparams")
    runner = ("import os\nimport easyeditor\nprint('after-import', sorted(os.listdir('.')))\n"
              f"exec(compile({code!r}, 'README.md', 'exec'))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "after-import ['hparams']"  # import easyeditor wrote nothing
    assert (tmp_path / "logs" / "run.log").is_file()  # MultimodalEditor(...) did
    assert lines[-1] == "{'pre': 0.0, 'post': 1.0}"  # EasyEdit's rewrite_acc before and after the edit


def test_edit_dataset_with_easyedit_vqa_template_finds_rationales(easyedit, shaperules, tmp_path):
    from easyeditor import MultimodalEditor, VQADataset

    import reasonedit_plugin  # noqa: F401 -- registers ReasonEdit
    from reasonedit_plugin import ReasonEditHyperParams
    from reasonedit_plugin.easyedit_mend import vqa_record
    from reasonedit_plugin.records import split_sentences

    rows, root = shaperules
    data = []
    for row in rows[:2]:
        item = vqa_record(row)
        for key in ("image", "image_rephrase", "m_loc"):
            item[key] = str(Path(item[key]).relative_to(root))
        data.append({**item, "rationale": row["rationale"]})
    (tmp_path / "edits.json").write_text(json.dumps(data), encoding="utf-8")
    hparams = ReasonEditHyperParams.from_hparams(TINY_YAML)
    hparams.rationale_source = str(tmp_path / "edits.json")
    hparams.coco_image = hparams.rephrase_image = str(root)
    editor = MultimodalEditor.from_hparams(hparams)
    ds = VQADataset(str(tmp_path / "edits.json"), config=hparams)
    metrics, edited_model, _ = editor.edit_dataset(ds, template=TEMPLATE, verbose=False)
    assert len(metrics) == 2 and all("rewrite_acc" in m["post"] for m in metrics)
    # the last request carried the template and still found its rationale (else RecordError "has no rationale")
    stored = {c.value for e in edited_model.editor.codebook.entries.values() for c in e.contributions}
    assert edited_model.edit_log and any(s in stored for s in split_sentences(rows[1]["rationale"]))


@pytest.mark.parametrize("method", ["IKE", "GRACE", "WISE", "LoRA", "MEND", "FT"])
def test_every_shipped_baseline_yaml_loads_with_easyedits_own_class(easyedit, shaperules, tmp_path, method):
    from reasonedit_plugin.easyedit_materialize import load_with_easyedit, materialize

    done = materialize(REPO / "hparams" / method / "tiny-qwen2-vl-shapes.yaml", tmp_path / "hp")
    hparams = load_with_easyedit(done.path, method)  # <EasyEdit class>.from_hparams(path)
    assert type(hparams).__module__.startswith("easyeditor.") and hparams.alg_name == method
    assert Path(hparams.model_name).is_dir()
    if method not in ("IKE", "GRACE", "WISE", "LoRA"):
        return  # MEND (HF VLMs) and FT (text-only) are not runnable by MultimodalEditor: docs/BASELINES.md
    from easyeditor import MultimodalEditor

    rows, _ = shaperules
    row = rows[0]
    editor = MultimodalEditor.from_hparams(hparams)
    kwargs = {}
    if method == "IKE":  # as EasyEdit's examples: encode the demonstrations first
        from easyeditor import encode_ike_facts_multimodal
        from sentence_transformers import SentenceTransformer

        train_ds = [{"prompt": r["prompt"], "target": r["target"], "rephrase_prompt": r["rephrase_prompt"],
                     "locality_prompt": r["locality_prompt"], "locality_ground_truth": r["locality_ground_truth"]}
                    for r in rows[1:4]]
        encode_ike_facts_multimodal(SentenceTransformer(hparams.sentence_model_name, device="cpu"), train_ds, hparams)
        kwargs["train_ds"] = train_ds
    locality = {"text": {"prompt": [row["locality_prompt"]], "ground_truth": [row["locality_ground_truth"]]},
                "vision": {"image": [row["multimodal_locality_image"]], "prompt": [row["multimodal_locality_prompt"]],
                           "ground_truth": [row["multimodal_locality_ground_truth"]]}}
    metrics, _, _ = editor.edit(prompts=[row["prompt"]], targets=[row["target"]], image=[row["image"]],
                                rephrase_prompts=[row["rephrase_prompt"]], rephrase_image=[row["image_rephrase"]],
                                locality_inputs=locality, verbose=False, **kwargs)
    post = metrics[0]["post"]
    assert {"rewrite_acc", "rephrase_acc", "locality_acc", "multimodal_locality_acc"} <= set(post)


def test_serac_yaml_says_why_it_has_no_easyedit_form(tmp_path):
    from reasonedit_plugin.easyedit_materialize import materialize
    from reasonedit_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="BLIP-2/MiniGPT-4"):
        materialize(REPO / "hparams" / "SERAC" / "tiny-qwen2-vl-shapes.yaml", tmp_path)


def test_setup_mistakes_are_one_line_errors_naming_the_fix(easyedit, tmp_path):
    from easyeditor import MultimodalEditor

    import reasonedit_plugin  # noqa: F401
    from reasonedit_plugin import ReasonEditHyperParams
    from reasonedit_plugin.errors import ConfigError

    placeholder = ReasonEditHyperParams.from_hparams(REPO / "hparams" / "ReasonEdit" / "qwen2vl-7b.yaml")
    with pytest.raises(ConfigError, match="placeholder: replace it") as info:
        MultimodalEditor.from_hparams(placeholder)
    assert "\n" not in str(info.value)

    folder = tmp_path / "my-model"
    folder.symlink_to(ReasonEditHyperParams.from_hparams(TINY_YAML).model_name)
    hparams = ReasonEditHyperParams.from_hparams(TINY_YAML)
    hparams.model_name = hparams.name = str(folder)
    with pytest.raises(ConfigError, match=r"ln -s .*my-model-qwen2-vl") as info:
        MultimodalEditor.from_hparams(hparams)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "logs").exists()  # refused before EasyEdit set anything up

    linked = tmp_path / "my-model-qwen2-vl"  # the fix the message names
    linked.symlink_to(folder.resolve())
    hparams.model_name = hparams.name = str(linked)
    assert MultimodalEditor.from_hparams(hparams).model is not None
