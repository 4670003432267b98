"""Concurrent `reasonedit edit` writers into one codebook folder: no lost edits, an audit log that matches the
saved state (issue 14).

A "zygote" process imports the CLI once, replaces its model loader with the FakeVLM and forks N writers per
trial; each runs ``cli.main(["edit", ...])`` (the real command: parse, validate, lock, load, edit, save) with
its own edits, all released at the same instant. After every trial the folder must hold every writer's
edits, every writer must exit 0, and audit.jsonl must hold exactly one "added" event per saved edit.
The default suite runs a few trials; ``-m slow`` runs 20 trials each of 2 and 4 writers, and 20 trials with
the real embedded model in separate `reasonedit` processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EDITS_PER_WRITER = 3


def _zygote() -> None:
    """Reads one JSON list of argv lists per line, runs them as simultaneous forked CLI processes, prints
    their exit codes as a JSON list."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import FakeVLM
    from reasonedit_plugin import cli, cli_inputs
    from reasonedit_plugin import editor as _editor  # noqa: F401  (imported before forking)
    from reasonedit_plugin import guards as _guards  # noqa: F401
    from reasonedit_plugin import storage as _storage  # noqa: F401
    from reasonedit_plugin.text_encoder import shared_text_encoder

    shared_text_encoder("all-MiniLM-L6-v2")
    cli_inputs.load_vlm = lambda hparams: FakeVLM()
    print("zygote ready", flush=True)
    for line in sys.stdin:
        jobs = json.loads(line)
        release_r, release_w = os.pipe()
        pids = []
        for argv, log in jobs:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(release_w)
                    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.read(release_r, 1)  # blocks until every writer is forked
                    code = cli.main(argv)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
        os.close(release_r)
        os.close(release_w)  # release them all at once
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        print(json.dumps(codes), flush=True)


if __name__ == "__main__":
    _zygote()


def _write_inputs(root: Path, writers: int, trial: int) -> tuple[Path, list[Path], list[str]]:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "model").mkdir(exist_ok=True)
    yaml = root / "hparams.yaml"
    yaml.write_text(f"alg_name: ReasonEdit\nmodel_name: {root / 'model'}\ndevice: cpu\nonly_edit_errors: false\n"
                    "embedding:\n  scale: 3\naugment:\n  enabled: false\nguard:\n  policy: warn\n")
    files, ids = [], []
    for w in range(writers):
        rows = []
        for k in range(EDITS_PER_WRITER):
            rid = f"t{trial}-w{w}-e{k}"
            image = root / f"{rid}.png"
            Image.new("RGB", (16, 16), ((37 * w + 11 * k) % 256, (53 * trial) % 256, 9 * k)).save(image)
            rows.append({"id": rid, "image": str(image), "prompt": f"What is shape {w}-{k}?",
                         "target": f"v{k}", "rationale": f"Shape {w}-{k} of trial {trial} has value v{k}."})
            ids.append(rid)
        path = root / f"edits-{w}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(path)
    return yaml, files, ids


def check_consistent(codebook: Path, expected: list[str]) -> None:
    from reasonedit_plugin.audit import read_events
    from reasonedit_plugin.storage import load_codebook

    stored = load_codebook(codebook)
    assert sorted(stored.codebook.edit_ids()) == sorted(expected), "edits were lost or duplicated"
    assert sorted(stored.records) == sorted(expected)
    events = read_events(codebook / "audit.jsonl")
    added = [e.edit_id for e in events if e.action == "added"]
    assert sorted(added) == sorted(expected), "the audit log does not match the saved edits"
    assert len({e.id for e in events}) == len(events)


def run_trials(tmp_path: Path, writers: int, trials: int) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    zygote = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    stats = {"trials": 0, "edits": 0, "lost": 0}
    try:
        assert zygote.stdout.readline().strip() == "zygote ready"
        for trial in range(trials):
            root = tmp_path / f"trial{trial}"
            yaml, files, ids = _write_inputs(root, writers, trial)
            codebook = root / "codebook"
            jobs = [(["-q", "edit", "--hparams", str(yaml), "--edits", str(f), "--out", str(codebook)],
                     str(root / f"log-{w}.txt")) for w, f in enumerate(files)]
            zygote.stdin.write(json.dumps(jobs) + "\n")
            zygote.stdin.flush()
            codes = json.loads(zygote.stdout.readline())
            logs = [Path(log).read_text() for _, log in jobs]
            assert codes == [0] * writers, list(zip(codes, logs))
            assert not any("Traceback" in log for log in logs)
            from reasonedit_plugin.storage import load_codebook

            stats["lost"] += len(set(ids) - set(load_codebook(codebook).codebook.edit_ids()))
            check_consistent(codebook, ids)
            stats["trials"] += 1
            stats["edits"] += len(ids)
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    return stats


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_cli_writers_lose_nothing(tmp_path, writers):
    stats = run_trials(tmp_path, writers, trials=3)
    assert stats == {"trials": 3, "edits": 3 * writers * EDITS_PER_WRITER, "lost": 0}


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_cli_writers_many_trials(tmp_path, writers):
    stats = run_trials(tmp_path, writers, trials=20)
    print(stats)
    assert stats == {"trials": 20, "edits": 20 * writers * EDITS_PER_WRITER, "lost": 0}


ASSET = ROOT / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes" / "model.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not ASSET.is_file(), reason="the embedded default model is not built yet")
@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_reasonedit_processes_real_model(tmp_path, writers):
    """Separate `reasonedit edit` processes on the embedded model (minutes: each loads the model)."""
    from reasonedit_plugin.data.split_files import load_split

    rows = load_split("small")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    per = 2
    trials = int(os.environ.get("REASONEDIT_WRITER_TRIALS", "20"))
    for trial in range(trials):
        root = tmp_path / f"trial{trial}"
        root.mkdir()
        codebook, ids, procs = root / "codebook", [], []
        for w in range(writers):
            chosen = [dict(r, id=f"t{trial}-w{w}-{r['id']}") for r in rows[(w * per) % 40:(w * per) % 40 + per]]
            ids += [r["id"] for r in chosen]
            path = root / f"edits-{w}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
            procs.append(subprocess.Popen([sys.executable, "-m", "reasonedit_plugin.cli", "--threads", "1",
                                           "edit", "--edits", str(path), "--out", str(codebook)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        results = [p.communicate(timeout=900) for p in procs]
        assert [p.returncode for p in procs] == [0] * writers, [r[1][-500:] for r in results]
        from reasonedit_plugin.audit import read_events
        from reasonedit_plugin.storage import load_codebook

        stored = load_codebook(codebook)
        saved = set(stored.codebook.edit_ids()) | set(stored.quarantine)
        logged = [e.edit_id for e in read_events(codebook / "audit.jsonl") if e.action in ("added", "quarantined")]
        # "added A, already correct (skipped) S, quarantined Q of N records": what each writer committed
        committed = 0
        for out, _ in results:
            m = re.search(r"added (\d+), already correct \(skipped\) \d+, quarantined (\d+)", out)
            assert m, out[-500:]
            committed += int(m.group(1)) + int(m.group(2))
        assert len(saved) == committed, f"trial {trial}: {committed} edits committed, {len(saved)} saved"
        assert sorted(logged) == sorted(saved) and saved <= set(ids)
