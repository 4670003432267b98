"""The comparison runner and its report files, on the fake VLM (fast)."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from fakes import FakeVLM
from reasonedit_plugin.baselines import (
    ABLATIONS, EASYEDIT_METHODS, MethodResult, ablation_config, easyedit_status, full_config,
    register_easyedit_runner, run_baseline, run_comparison,
)
from reasonedit_plugin.errors import ConfigError
from reasonedit_plugin.evaluation import ProbeOutcome, ProtocolConfig
from reasonedit_plugin.metrics import retrieval_breakdown
from reasonedit_plugin.report import (EASYEDIT_TABLE, PAPER_TABLE, environment, portable_paths, table_rows,
                                      write_report)
from test_evaluation import cfg, records

METHODS = ("ReasonEdit", "unedited", "answer-only", "no-gate", "no-balance", "no-patches", "IKE", "MEND")


@pytest.fixture(scope="module")
def comparison(text_encoder):
    return run_comparison(FakeVLM(), records(), cfg(), METHODS,
                          ProtocolConfig(eval_every=2, eval_subsample=2, easyedit_metrics=False),
                          model_path="fake://vlm", text_encoder=text_encoder)


def test_rows_ok_and_skipped_with_reasons(comparison):
    by = {m.name: m for m in comparison.methods}
    assert [m.name for m in comparison.methods] == list(METHODS)
    assert by["ReasonEdit"].ok and by["unedited"].ok and by["answer-only"].ok and by["no-gate"].ok
    assert by["ReasonEdit"].evaluation.final.reliability == 1.0
    assert by["unedited"].evaluation.final.reliability == 0.0
    # identical configs are not re-run, they say why
    assert by["no-balance"].status == "skipped" and "identical to the ReasonEdit row" in by["no-balance"].reason
    assert by["no-patches"].status == "skipped" and "patch" in by["no-patches"].reason
    ok, reason = easyedit_status()
    if not ok:  # this venv has no EasyEdit: the rows say exactly that, and carry no numbers
        for name in ("IKE", "MEND"):
            assert by[name].status == "skipped" and by[name].evaluation is None
            assert "easyeditor is not importable" in by[name].reason
    # no-gate retrieves for everything: the unrelated probes are now answered from the codebook
    gate_off = by["no-gate"].evaluation.probes
    assert all(p.accepted for p in gate_off)


def test_table_rows(comparison):
    rows = table_rows(comparison)
    assert [r["Method"] for r in rows][:2] == ["ReasonEdit", "unedited model"]
    main = rows[0]
    assert main["Rel."] == "100.0" and main["Loc."] == "100.0" and main["Status"] == "ok"
    assert set(PAPER_TABLE) <= set(main) and set(EASYEDIT_TABLE) <= set(main)
    skipped = [r for r in rows if r["Status"] == "skipped"]
    assert skipped and all(r["Rel."] == "—" and r["Notes"].startswith("skipped: ") for r in skipped)


def test_report_has_the_demo_caption_section(comparison, tmp_path):
    rows = [{"method": "ReasonEdit", "edits": "2", "Rel.": "50.0"}, {"method": "unedited", "edits": "0", "Rel.": "0.0"}]
    extra = {"captions": {"records": 2, "command": "reasonedit caption --generate 2 --seed 0",
                          "columns": ["method", "edits", "Rel."], "rows": rows}}
    files = write_report(comparison, tmp_path / "rep", title="Demo", extra=extra)
    md = files.markdown.read_text()
    section = md.split("## Caption edits")[1]
    assert "reasonedit caption --generate 2 --seed 0" in section and "| ReasonEdit | 2 | 50.0 |" in section
    page = files.html.read_text()
    assert "<h2>Caption edits</h2>" in page and "<td>unedited</td>" in page
    assert json.loads(files.json.read_text())["extra"]["captions"]["rows"] == rows
    plain = write_report(comparison, tmp_path / "plain", title="Demo")
    assert "Caption edits" not in plain.markdown.read_text() + plain.html.read_text()


def test_retrieval_breakdown_by_hand():
    def probe(kind, accepted, correct):
        return ProbeOutcome(kind, "e", "q?", "yes", "yes" if correct else "no", correct, accepted=accepted)

    outcomes = ([probe("r_gen", True, True), probe("r_gen", True, True), probe("r_gen", True, False),
                 probe("r_gen", False, True), probe("locality", False, True), probe("locality", False, False)]
                + [probe("reliability", None, False)] * 3)  # (no retrieval: an unedited model's probes)
    split = retrieval_breakdown(outcomes)
    assert list(split) == ["r_gen", "locality"]
    assert split["r_gen"] == pytest.approx({"n": 4, "retrieved": 0.75, "right_retrieved": 2 / 3,
                                            "right_not_retrieved": 1.0})
    assert split["locality"] == {"n": 2, "retrieved": 0.0, "right_retrieved": None, "right_not_retrieved": 0.5}
    assert retrieval_breakdown([probe("r_gen", None, True)]) == {}


def test_report_splits_probes_by_retrieval(comparison, tmp_path):
    files = write_report(comparison, tmp_path / "rep", title="Test report")
    section = files.markdown.read_text().split("## Retrieved or not")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")][2:]
    methods = {r[0].lstrip("| ") for r in rows}
    assert "ReasonEdit" in methods and "unedited model" not in methods  # the unedited model retrieves nothing
    main = {r[1]: r[2:] for r in rows if r[0] == "| ReasonEdit"}
    by = {m.name: m for m in comparison.methods}
    n_rel = sum(p.kind == "reliability" for p in by["ReasonEdit"].evaluation.probes)
    assert main["Rel."][0] == str(n_rel) and main["Rel."][1] == "100.0"  # every edit question retrieved its edit
    gate_off = {r[1]: r[2:] for r in rows if r[0] == "| " + by["no-gate"].label}
    assert gate_off["Loc."][1] == "100.0" and gate_off["Loc."][3].rstrip(" |") == "—"  # nothing left unretrieved
    assert main["Hard Loc."][1] == "0.0" and gate_off["Hard Loc."][1] == "100.0"  # the gate's false accepts
    assert "<h2>Retrieved or not</h2>" in files.html.read_text()


def test_report_files(comparison, tmp_path):
    files = write_report(comparison, tmp_path / "rep", title="Test report", command="reasonedit compare --x",
                         hparams={"alg_name": "ReasonEdit", "seed": 0})
    md = files.markdown.read_text()
    assert md.startswith("# Test report") and "reasonedit compare --x" in md.split("## Results")[0]
    assert "| ReasonEdit |" in md and "## Not run" in md and "easyeditor" in md.lower()
    assert "<table>" in files.html.read_text()
    data = json.loads(files.json.read_text())
    assert {"command", "argv", "seed", "environment", "hparams", "comparison", "model_files"} <= set(data)
    env = data["environment"]["packages"]
    assert {"torch", "transformers", "faiss-cpu", "sentence-transformers"} <= set(env)
    assert "easyeditor" in data["environment"]
    methods = data["comparison"]["methods"]
    assert [m["name"] for m in methods] == list(METHODS)
    main = methods[0]["evaluation"]
    assert main["final"]["reliability"] == 1.0 and main["probes"] and main["edit_seconds"]
    assert {"best_distance", "best_score", "accepted", "threshold"} <= set(main["probes"][0])
    names = sorted(p.name for p in files.plots)
    assert names == ["metrics_vs_edits.png", "retrieval_distances.png", "topology_scale.png"]
    # the ReasonEdit row used a fixed λ: the report still shows AutoScaler's sweep, marking the λ used
    used = methods[0]["config"]["embedding"]["scale"]
    assert data["topology"]["balanced"] is False and data["topology"]["scale"] == pytest.approx(used)
    assert data["topology"]["scale_sweep"]["used"] == pytest.approx(used)
    assert len(data["topology"]["scale_sweep"]["points"]) > 3
    for p in files.plots:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300

    assert str(tmp_path) not in files.json.read_text() and sys.prefix not in files.json.read_text()


def test_portable_paths_names_no_local_folder(tmp_path, monkeypatch):
    import reasonedit_plugin

    monkeypatch.chdir(tmp_path)
    package = Path(reasonedit_plugin.__file__).resolve().parent
    data = {"model": str(package / "assets" / "m"), "argv": [f"{sys.prefix}/bin/reasonedit", str(tmp_path / "a.jsonl")],
            "note": f"not importable in {sys.prefix}/bin/python (x)", "n": 3,
            "other": f"{tmp_path}x/file"}  # only whole path components are replaced
    assert portable_paths(data) == {"model": "<reasonedit_plugin>/assets/m", "argv": ["<venv>/bin/reasonedit", "./a.jsonl"],
                                    "note": "not importable in <venv>/bin/python (x)", "n": 3, "other": f"{tmp_path}x/file"}


def test_environment_has_versions():
    env = environment()
    assert env["packages"]["torch"] and env["python"]


def test_config_transforms():
    base = cfg()
    assert ablation_config(base, ABLATIONS["answer-only"]).codebook.rationale_entries is False
    no_hub = ablation_config(base, ABLATIONS["no-hubness"]).retrieval
    assert not no_hub.hubness and no_hub.gate == "off"
    assert ablation_config(base, ABLATIONS["percentile-gate"]).retrieval.gate == "percentile"
    assert full_config(base, balance="auto").embedding.scale == "auto"
    assert full_config(base, patches="on").patches.enabled
    with pytest.raises(ConfigError, match="balance"):
        full_config(base, balance="sometimes")


def test_run_baseline_single_protocol_and_unknown(text_encoder):
    result = run_baseline("answer-only", None, records(), config=cfg(), vlm=FakeVLM(), text_encoder=text_encoder,
                          protocol=ProtocolConfig(easyedit_metrics=False), single=True)
    assert isinstance(result, MethodResult) and result.ok and result.evaluation.protocol == "single"
    with pytest.raises(ConfigError, match="unknown method"):
        run_baseline("ROME", None, records(), config=cfg(), vlm=FakeVLM(), text_encoder=text_encoder)


def test_register_easyedit_runner_validates():
    with pytest.raises(ConfigError, match="unknown EasyEdit method"):
        register_easyedit_runner("ROEM", lambda **kw: None)
    assert "MEND" in EASYEDIT_METHODS and "IKE" in EASYEDIT_METHODS


def test_topology_sweep_plot_in_report(comparison, tmp_path):
    import torch

    from reasonedit_plugin.config import TopologyConfig
    from reasonedit_plugin.topology import Calibration, auto_scale

    g = torch.Generator().manual_seed(0)
    sweep = auto_scale(torch.randn(12, 6, generator=g), torch.randn(12, 5, generator=g),
                       TopologyConfig(scale_samples=6, runs=2, scale_steps=5), seed=0, layer="fake.layer")
    calib = Calibration("fake.layer", sweep.best, sweep.best_point, balanced=True, scale_sweep=sweep,
                        samples=6, runs=2)
    files = write_report(comparison, tmp_path / "topo", topology=calib)
    assert "topology_scale.png" in [p.name for p in files.plots]
    assert "![topology_scale](topology_scale.png)" in files.markdown.read_text()
    data = json.loads(files.json.read_text())
    assert data["topology"]["scale"] == pytest.approx(sweep.best)


def test_edit_k_section(comparison, tmp_path):
    from reasonedit_plugin.evaluation import EditKResult

    res = EditKResult("ReasonEdit", {1: 0.5, 5: None}, {1: [0.5, 0.5], 5: []}, rounds=2, seed=0)
    files = write_report(comparison, tmp_path / "ek", extra={"edit_k": res.to_dict()})
    md = files.markdown.read_text()
    assert "## Edit-k generality" in md and "k=1: 50.0, k=5: —" in md
    assert json.loads(files.json.read_text())["extra"]["edit_k"]["accuracy"] == {"1": 0.5, "5": None}


def test_warnings_are_stated_above_the_results_in_both_pages(comparison, tmp_path):
    from reasonedit_plugin.cli_inputs import report_warnings

    files = write_report(comparison, tmp_path / "w", extra={"warnings": ["read with another answer template"]})
    md = files.markdown.read_text()
    assert md.index("## Warnings") < md.index("## Results") and "- read with another answer template" in md
    assert "<h2>Warnings</h2><ul><li>read with another answer template</li></ul>" in files.html.read_text()
    assert "## Warnings" not in write_report(comparison, tmp_path / "none").markdown.read_text()

    class Hparams:  # a trained default model read with another template: the report says so
        model_name = str(tmp_path / "model")
        codebook = type("C", (), {"answer_template": "The answer to '{question}' is {answer}."})

    (tmp_path / "model").mkdir()
    assert report_warnings(Hparams) == []
    naming = "For {image}, the answer to '{question}' is {answer}."
    (tmp_path / "model" / "training_args.json").write_text(json.dumps({"config": {"answer_template": naming}}))
    assert ["set codebook.answer_template" in w for w in report_warnings(Hparams)] == [True]


def test_summary_text_lists_every_row(comparison):
    from reasonedit_plugin.report import summary_text

    text = summary_text(comparison)
    assert text.splitlines()[0].startswith("Method")
    assert "ReasonEdit" in text and "skipped: " in text and "Hard Loc." in text


def test_protocol_line_says_when_it_was_evaluated(comparison, tmp_path):
    md = write_report(comparison, tmp_path / "a", title="t", command="c").markdown.read_text()
    assert "evaluated every 2 edits" in md
    final_only = dataclasses.replace(comparison, protocol=dataclasses.replace(comparison.protocol, eval_every=0))
    md = write_report(final_only, tmp_path / "b", title="t", command="c").markdown.read_text()
    assert "evaluated once after the last edit" in md and "every 0" not in md and "every N" not in md
    whole = dataclasses.replace(comparison, protocol=dataclasses.replace(comparison.protocol, eval_subsample=1000))
    md = write_report(whole, tmp_path / "c", title="t", command="c").markdown.read_text()
    assert "evaluated every 2 edits on every edit made so far" in md and "1000-edit subsample" not in md


def test_report_sweep_never_fails_the_comparison(text_encoder, caplog):
    class NoMultiLayer(FakeVLM):
        vision_features_multi = None  # a VLM wrapper without AutoLayer support

    comparison = run_comparison(NoMultiLayer(), records(), cfg(), ("ReasonEdit",),
                                ProtocolConfig(eval_every=0, easyedit_metrics=False), text_encoder=text_encoder)
    assert comparison.method("ReasonEdit").ok and comparison.topology is None
    assert "topology-balance sweep for the report skipped" in caplog.text


def test_report_reuses_the_rows_own_autoscaler_run(text_encoder):
    config = cfg(embedding={"layer": None, "scale": "auto"}, topology={"scale_samples": 6, "runs": 2})
    comparison = run_comparison(FakeVLM(), records(), config, ("ReasonEdit",),
                                ProtocolConfig(eval_every=0, easyedit_metrics=False), text_encoder=text_encoder)
    row = comparison.method("ReasonEdit")
    assert row.topology.balanced and comparison.topology is row.topology
    assert comparison.topology.scale_sweep.used is None  # λ was chosen by this sweep, nothing else to mark


def test_checkpoint_tables_at_10_and_100_edits(comparison, tmp_path):
    """A sequential run of 113 edits checkpointed every 10 gets an "After 10 edits" and an "After 100 edits"
    table (powers of ten before the last edit), each row at its own checkpoint, saying how many edits it probed."""
    from reasonedit_plugin.evaluation import Checkpoint, EvaluationResult, Scores
    from reasonedit_plugin.report import checkpoint_rows, checkpoint_steps_reported, render_markdown

    def row(name: str, rel_at: dict[int, float]) -> MethodResult:
        points = [Checkpoint(k, min(k, 20), Scores(reliability=rel_at.get(k, 0.5))) for k in range(10, 111, 10)]
        points.append(Checkpoint(113, 113, Scores(reliability=0.9)))
        ev = EvaluationResult(name, "sequential", 150, 113, points[-1].scores, points)
        return MethodResult(name, "baseline", "ok", label=name, evaluation=ev)

    run = dataclasses.replace(comparison, methods=[row("A", {10: 0.8, 100: 0.6}), row("B", {10: 1.0}),
                                                   MethodResult("C", "easyedit", "skipped", reason="no EasyEdit")])
    assert checkpoint_steps_reported(run) == [10, 100]
    at10 = {r["Method"]: r for r in checkpoint_rows(run, 10)}
    assert set(at10) == {"A", "B"} and at10["A"]["Rel."] == "80.0" and at10["B"]["Rel."] == "100.0"
    assert at10["A"]["probed"] == "10 of 10"
    at100 = {r["Method"]: r for r in checkpoint_rows(run, 100)}
    assert at100["A"]["Rel."] == "60.0" and at100["A"]["probed"] == "20 of 100"
    text = render_markdown(run, "t", None, [])
    assert text.index("## After 10 edits") < text.index("## After 100 edits")
    assert not checkpoint_steps_reported(dataclasses.replace(run, single=True))
    from reasonedit_plugin.report import _power_of_ten
    assert [n for n in range(1, 20001) if _power_of_ten(n)] == [1, 10, 100, 1000, 10000]


def test_the_metrics_plot_title_says_what_its_intermediate_points_probed():
    """'seeded subsample' only when a checkpoint probed fewer edits than had been made (``--subsample 1000`` over
    111 edits probes them all)."""
    from reasonedit_plugin.evaluation import Checkpoint, EvaluationResult, Scores
    from reasonedit_plugin.plots import metrics_title

    def run(probed: list[tuple[int, int]]) -> MethodResult:
        points = [Checkpoint(k, n, Scores(reliability=1.0)) for k, n in probed]
        ev = EvaluationResult("A", "sequential", 150, probed[-1][0], points[-1].scores, points)
        return MethodResult("A", "reasonedit", "ok", evaluation=ev)

    assert "every edit so far; last point: all 111" in metrics_title([run([(50, 50), (100, 100), (111, 111)])])
    assert "a seeded subsample" in metrics_title([run([(50, 50), (100, 20), (111, 111)])])
    assert metrics_title([run([(111, 111)])]) == "Metrics after all 111 edits"
