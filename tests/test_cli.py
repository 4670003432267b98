"""The ``reasonedit`` command: help texts, clear one-line errors (exit 2), and a small end-to-end
comparison on the embedded default model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from reasonedit_plugin.cli import build_parser, main

COMMANDS = ("demo", "edit", "eval", "compare", "inspect")
ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes" / "model.safetensors"


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"reasonedit {command}" in out and "--hparams" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: reasonedit" in capsys.readouterr().out


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "reasonedit_plugin.cli", *args], capture_output=True,
                          text=True, cwd=str(ROOT), env=env, timeout=300)


def test_bad_edit_path_is_one_line_exit_2(tmp_path):
    proc = run_cli("edit", "--edits", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "cb"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"reasonedit edit: error: edit file {str(tmp_path / 'missing.jsonl')!r} does not exist."]


def test_bad_hparams_path_and_bad_key(tmp_path, capsys):
    assert main(["compare", "--hparams", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "nope.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("alg_name: ReasonEdit\nmodel_name: /tmp/m\nretrieval:\n  cap_key: 3\n")
    assert main(["eval", "--hparams", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cap_key" in err and "Did you mean 'cap_keys'" in err


def test_bad_model_and_codebook_paths(tmp_path, capsys):
    assert main(["inspect", "--codebook", str(tmp_path / "none")]) == 2
    assert "codebook folder" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path / "no-model")]) == 2
    assert "model folder" in capsys.readouterr().err
    assert main(["demo", "--split", "huge"]) == 2
    assert "no shipped ShapeRules split 'huge'" in capsys.readouterr().err


def test_inspect_needs_both_image_and_question(tmp_path, capsys):
    (tmp_path / "cb").mkdir()
    assert main(["inspect", "--codebook", str(tmp_path / "cb"), "--image", "x.png"]) == 2
    assert "both --image and --question" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--subsample", "0"], "argument --subsample: must be >= 1, got 0"),
    (["demo", "--captions", "-1"], "argument --captions: must be >= 0, got -1"),
    (["demo", "--limit", "-1"], "argument --limit: must be >= 1, got -1"),
    (["caption", "--generate", "0"], "argument --generate: must be >= 1, got 0"),  # once: an empty report
    (["caption", "--generate", "3", "--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1"),
    (["eval", "--edit-k", "5", "0"], "argument --edit-k: must be >= 1, got 0"),
    (["eval", "--rounds", "0"], "argument --rounds: must be >= 1, got 0"),
    (["compare", "--jobs", "0"], "argument --jobs: must be >= 1, got 0"),
    (["inspect", "--codebook", "cb", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["--threads", "0", "demo"], "argument --threads: must be >= 1, got 0"),
    (["demo", "--eval-every", "ten"], "argument --eval-every: expected a whole number, got 'ten'"),
])
def test_bad_numbers_are_one_line_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_parser_methods_choices():
    args = build_parser().parse_args(["compare", "--methods", "ReasonEdit", "no-gate", "IKE"])
    assert args.methods == ["ReasonEdit", "no-gate", "IKE"] and args.balance == "auto"


@pytest.mark.skipif(not ASSET.is_file(), reason="the embedded default model is not built yet")
def test_small_comparison_end_to_end_on_embedded_default(tmp_path, capsys):
    """Four ShapeRules edits on the shipped tiny Qwen2-VL: ReasonEdit, the unedited model, one ablation and
    one EasyEdit baseline (skipped with its reason without EasyEdit); then edit -> inspect on a codebook."""
    out = tmp_path / "compare"
    code = main(["-q", "--threads", "1", "compare", "--limit", "4", "--methods", "ReasonEdit", "unedited",
                 "no-gate", "IKE", "--balance", "yaml", "--eval-every", "2", "--subsample", "2",
                 "--locality-size", "12", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    rows = {m["name"]: m for m in data["comparison"]["methods"]}
    assert rows["ReasonEdit"]["status"] == "ok" and rows["unedited"]["status"] == "ok"
    final = rows["ReasonEdit"]["evaluation"]["final"]
    for key in ("reliability", "t_gen", "i_gen", "r_gen", "locality", "hard_locality"):
        assert final[key] is None or 0.0 <= final[key] <= 1.0
    assert set(final["easyedit"]) == {"rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc",
                                      "multimodal_locality_acc"}
    assert rows["unedited"]["evaluation"]["final"]["locality"] == 1.0
    if rows["IKE"]["status"] == "skipped":
        assert rows["IKE"]["reason"]
    for name in ("report.md", "report.html", "metrics_vs_edits.png", "retrieval_distances.png"):
        assert (out / name).is_file()
    with Image.open(out / "metrics_vs_edits.png") as im:
        im.verify()

    edits = tmp_path / "edits.jsonl"
    from reasonedit_plugin.data.split_files import load_split

    rows = load_split("small")[:3]
    edits.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["-q", "--threads", "1", "edit", "--edits", str(edits), "--out", str(tmp_path / "cb")]) == 0
    capsys.readouterr()
    probe = load_split("small")[6]
    assert probe["prompt"] == rows[1]["prompt"] and probe["image"] != rows[1]["image"]
    assert main(["--threads", "1", "inspect", "--codebook", str(tmp_path / "cb"), "--image", probe["image"],
                 "--question", probe["prompt"], "--choices", *probe["choices"]]) == 0
    shown = capsys.readouterr().out
    assert "gate:" in shown and "fused question:" in shown and "distance" in shown and "answer:" in shown
    # the null-set gate says which test accepted or rejected each candidate, with the numbers. rows[6] is
    # not among the edits and asks rows[1]'s question word for word about another image: the wording alone
    # must not retrieve rows[1]'s answer
    assert "gate nullset (image <=" in shown and "REJECTED: no entry passed both tests" in shown
    assert "FAIL" in shown and "image d=" in shown and "text cos=" in shown and "x radius" in shown
    # an edited record's own question on its own image retrieves its edit (records the model already
    # answered right are not edited: only_edit_errors)
    accepted = []
    for row in rows:
        assert main(["--threads", "1", "inspect", "--codebook", str(tmp_path / "cb"), "--image", row["image"],
                     "--question", row["prompt"], "--choices", *row["choices"]]) == 0
        shown = capsys.readouterr().out
        if f"ACCEPTED: edit {row['id']} matched best" in shown:
            assert "PASS" in shown
            accepted.append(row["id"])
    assert accepted


@pytest.mark.slow
@pytest.mark.skipif(not ASSET.is_file(), reason="the embedded default model is not built yet")
def test_demo_main_job_full_split(tmp_path):
    """The README's main command on the whole shipped split (minutes on 2 cores)."""
    proc = run_cli("demo", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ReasonEdit" in proc.stdout and "Rel." in proc.stdout
    data = json.loads((tmp_path / "demo" / "results.json").read_text())
    final = data["comparison"]["methods"][0]["evaluation"]["final"]
    assert final["counts"]["reliability"] == data["comparison"]["reference"]["records_edited"]


def test_unloadable_model_folder_is_a_clean_error(tmp_path, capsys):
    folder = tmp_path / "broken-qwen2-vl"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert main(["demo", "--model", str(folder), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "could not load the model" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_quiet_silences_transformers_progress_bars_too():
    from transformers.utils import logging as hf_logging

    from reasonedit_plugin import cli

    before = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity())
    try:
        hf_logging.enable_progress_bar()
        cli._configure_logging(0, quiet=False)
        assert hf_logging.is_progress_bar_enabled()
        cli._configure_logging(0, quiet=True)
        assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
    finally:
        (hf_logging.enable_progress_bar if before[0] else hf_logging.disable_progress_bar)()
        hf_logging.set_verbosity(before[1])


@pytest.mark.skipif(not ASSET.is_file(), reason="the embedded default model is not built yet")
def test_compare_jobs_gives_the_rows_of_one_process(tmp_path):
    """``--jobs 2`` runs the rows in two spawned workers, each loading its own model: the seeded rows must
    come out exactly as in one process (checkpoints included), in the order asked for."""
    common = ["-q", "--threads", "1", "compare", "--limit", "3", "--methods", "unedited", "ReasonEdit",
              "--balance", "yaml", "--eval-every", "2", "--subsample", "2", "--locality-size", "8",
              "--no-easyedit-metrics"]
    rows = {}
    for jobs in (1, 2):
        assert main(common + ["--jobs", str(jobs), "--out", str(tmp_path / f"j{jobs}")]) == 0
        data = json.loads((tmp_path / f"j{jobs}" / "results.json").read_text())
        rows[jobs] = data["comparison"]["methods"]
    assert [m["name"] for m in rows[2]] == ["unedited", "ReasonEdit"]
    for one, two in zip(rows[1], rows[2]):
        assert two["status"] == "ok", two["reason"]
        assert one["evaluation"]["final"] == two["evaluation"]["final"]
        assert one["evaluation"]["checkpoints"] == two["evaluation"]["checkpoints"]


def test_a_model_trained_on_another_answer_template_is_warned_about(tmp_path, caplog):
    from reasonedit_plugin.cli_inputs import warn_on_other_answer_template

    default = "The answer to '{question}' is {answer}."
    naming = "For {image}, the answer to '{question}' is {answer}."
    assert warn_on_other_answer_template(tmp_path, default) is None  # not a trained folder
    (tmp_path / "training_args.json").write_text(json.dumps({"config": {"seed": 1}}))
    assert warn_on_other_answer_template(tmp_path, default) is None  # trained before the option: the default
    assert "set codebook.answer_template" in warn_on_other_answer_template(tmp_path, naming)
    (tmp_path / "training_args.json").write_text(json.dumps({"config": {"answer_template": naming}}))
    assert warn_on_other_answer_template(tmp_path, naming) is None
    with caplog.at_level("WARNING", logger="reasonedit_plugin.cli"):
        message = warn_on_other_answer_template(tmp_path, default)
    assert message is not None and "set codebook.answer_template" in message and message in caplog.text
