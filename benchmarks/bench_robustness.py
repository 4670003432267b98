"""Adversarial-user harness for issue 14: bad inputs, damaged codebooks and concurrent writers through the
``reasonedit`` command, classified per area.

    PYTHONPATH=<checkout> python benchmarks/bench_robustness.py --label after  [--trials 10]

Runs ``reasonedit_plugin.cli.main`` in-process with the model loader replaced by the FakeVLM of the tests (so
a case costs milliseconds, and the same harness runs against any checkout: point PYTHONPATH at it), except
the device and truncated-weights cases, which load the embedded tiny Qwen2-VL for real.

Each case is a bad input (it must be refused: exit 2 with one line) or a tolerable damage (the command must
still work). Outcomes: ``clear`` (exit 2, one line, no traceback, nothing written), ``traceback`` (an
exception escaped the CLI), ``accepted`` (a bad input was taken: exit 0), ``broken`` (a tolerable damage made
the command fail). Concurrency: N simultaneous ``reasonedit edit`` processes (forked after import), lost =
edits whose writer exited 0 but which are not in the saved codebook; audit = "added" events of edits that
are not saved (quarantined edits count as saved: they are kept for approval). Writes ``benchmarks/results/robustness_<label>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fakes import FakeVLM  # noqa: E402

from reasonedit_plugin import cli, cli_inputs  # noqa: E402  (from PYTHONPATH: the checkout under test)

REAL_LOAD_VLM = cli_inputs.load_vlm
Q = "Which tribe owns this shape?"


def run_cli(argv: list[str], real_model: bool = False) -> dict:
    cli_inputs.load_vlm = REAL_LOAD_VLM if real_model else (lambda hparams: FakeVLM())
    out, err = io.StringIO(), io.StringIO()
    tb = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - an escaped exception is what we count
        code, tb = 1, "".join(traceback.format_exception_only(type(exc), exc)).strip()[-300:]
    finally:
        cli_inputs.load_vlm = REAL_LOAD_VLM
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith(
        ("Loading weights", "WARNING", "reasonedit edit: note", "reasonedit edit: 1 edit", "  ", "usage:"))]
    return {"code": code, "traceback": tb or ("Traceback" in err.getvalue() and err.getvalue()[-300:]) or None,
            "stderr": lines[-3:], "one_line": len(lines) == 1}


def classify(result: dict, bad: bool, written: bool = False) -> str:
    if result["traceback"]:
        return "traceback"
    if bad:
        if result["code"] == 0:
            return "accepted"
        return "clear" if result["one_line"] and not written else "unclear"
    return "ok" if result["code"] == 0 else "broken"


class Work:
    def __init__(self, root: Path):
        self.root = root
        (root / "model").mkdir(parents=True)
        self.red = root / "red.png"
        Image.new("RGB", (32, 32), (220, 20, 20)).save(self.red)
        self.blue = root / "blue.png"
        Image.new("RGB", (32, 32), (20, 20, 220)).save(self.blue)
        self.n = 0

    def yaml(self, extra: str = "", model: str | None = None) -> Path:
        self.n += 1
        path = self.root / f"hp{self.n}.yaml"
        path.write_text(f"alg_name: ReasonEdit\nmodel_name: {model or self.root / 'model'}\n"
                        "only_edit_errors: false\naugment:\n  enabled: false\n" + extra)
        return path

    def row(self, rid: object = "e1", **kw) -> dict:
        return {"id": rid, "image": str(self.red), "prompt": Q, "target": "Vol",
                "rationale": "The shape is red. Red shapes belong to the Vol tribe.", **kw}

    def edits(self, rows: list, raw: bytes | None = None) -> Path:
        self.n += 1
        path = self.root / f"edits{self.n}.jsonl"
        path.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode())
        return path

    def out(self) -> Path:
        self.n += 1
        return self.root / f"cb{self.n}"


def edit_case(w: Work, rows=None, raw=None, yaml_extra="", bad=True, real=False, model=None) -> str:
    out = w.out()
    argv = ["-q", "edit", "--hparams", str(w.yaml(yaml_extra, model)), "--edits",
            str(w.edits(rows or [], raw)), "--out", str(out)]
    result = run_cli(argv, real_model=real)
    return classify(result, bad, written=out.exists()), result


def record_cases(w: Work) -> dict:
    junk = w.root / "junk.png"
    junk.write_bytes(w.red.read_bytes() + os.urandom(8 << 20))
    strip = w.root / "strip.png"
    Image.new("RGB", (20000, 1)).save(strip)
    trunc = w.root / "trunc.png"
    trunc.write_bytes(w.red.read_bytes()[:40])
    cases = {
        "id with ANSI escape": [w.row("\x1b[2J\x1b[31mowned")], "id with NUL": [w.row("a\x00b")],
        "id with newline": [w.row("a\nb")], "id of 10k chars": [w.row("x" * 10_000)], "id true": [w.row(True)],
        "id NaN": None, "id with slash": [w.row("../../etc")], "id 1.5": [w.row(1.5)],
        "id list": [w.row([1, 2])], "unknown field": [w.row(colour="red")], "missing prompt": [
            {k: v for k, v in w.row().items() if k != "prompt"}],
        "target not in choices": [w.row(choices=["Kem", "Zib"])], "no rationale (missing_rationale: error)": [
            {k: v for k, v in w.row().items() if k != "rationale"}],
        "image + 8 MB trailing junk": [w.row(image=str(junk))], "image 20000x1": [w.row(image=str(strip))],
        "image missing": [w.row(image=str(w.root / "nope.png"))], "image truncated": [w.row(image=str(trunc))],
        "duplicate ids": [w.row("d"), w.row("d", image=str(w.blue))], "prompt is a number": [w.row(prompt=7)],
        "rationale 100 sentences": [w.row(rationale=" ".join(["A fact."] * 100))],
    }
    raws = {"id NaN": b'{"id": NaN, "image": "%s", "prompt": "q", "target": "t", "rationale": "r."}\n' % str(
        w.red).encode(), "non-UTF-8 file": b'{"id": "caf\xe9", "prompt": "q"}\n',
            "deep nesting": b"[" * 100_000 + b"]" * 100_000 + b"\n",
            "5000-digit int": b'{"id": ' + b"9" * 5000 + b"}\n", "empty file": b"",
            "not JSON": b"this is not json\n", "JSON list line": b"[1, 2]\n"}
    out = {}
    for name, rows in cases.items():
        if rows is not None:
            out[name] = edit_case(w, rows)
    for name, raw in raws.items():
        out[name] = edit_case(w, raw=raw)
    out["valid record (control)"] = edit_case(w, [w.row()], bad=False)
    return out


def yaml_cases(w: Work) -> dict:
    rows = [w.row()]
    cases = {"only_edit_errors: 'no'": "only_edit_errors_override: x\n", "cap_keys: 2.5": "retrieval:\n  cap_keys: 2.5\n",
             "seed: abc": "seed: abc\n", "seed: .nan": "seed: .nan\n", "seed: 5000 digits": f"seed: {'9' * 5000}\n",
             "hubness: 'yes'": "retrieval:\n  hubness: 'yes'\n", "max_new_tokens: true": "max_new_tokens: true\n",
             "guard.policy: bogus": "guard:\n  policy: bogus\n", "unknown key": "retreival:\n  cap_keys: 3\n",
             "section is a list": "guard: [1, 2]\n", "scale: [3]": "embedding:\n  scale: [3]\n",
             "deep nesting": "fusion: " + "[" * 5000 + "]" * 5000 + "\n", "hue: .inf": "augment:\n  hue: .inf\n",
             "batch_size: '1'": "embedding:\n  batch_size: '1'\n"}
    out = {}
    for name, extra in cases.items():
        if name == "only_edit_errors: 'no'":
            path = w.yaml()
            path.write_text(path.read_text().replace("only_edit_errors: false", "only_edit_errors: 'no'"))
            o = w.out()
            r = run_cli(["-q", "edit", "--hparams", str(path), "--edits", str(w.edits(rows)), "--out", str(o)])
            out[name] = (classify(r, True, o.exists()), r)
            continue
        out[name] = edit_case(w, rows, yaml_extra=extra)
    bad = w.root / "latin1.yaml"
    bad.write_bytes(b"alg_name: ReasonEdit\nmodel_name: /tmp/caf\xe9\n")
    o = w.out()
    r = run_cli(["-q", "edit", "--hparams", str(bad), "--edits", str(w.edits(rows)), "--out", str(o)])
    out["non-UTF-8 YAML"] = (classify(r, True, o.exists()), r)
    # devices and weights: the real loader
    model = ROOT / "reasonedit_plugin" / "assets" / "tiny-qwen2-vl-shapes"
    for name, dev in (("device: cuda (no GPU here)", "cuda"), ("device: tpu", "tpu"), ("device: 99", "99")):
        if torch.cuda.is_available():
            continue
        out[name] = edit_case(w, rows, yaml_extra=f"device: {dev}\n", real=True, model=str(model))
    broken = w.root / "broken-qwen2-vl"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    out["truncated weights"] = edit_case(w, rows, real=True, model=str(broken))
    return out


def path_cases(w: Work) -> dict:
    rows = [w.row()]
    afile = w.root / "afile.txt"
    afile.write_text("x")
    foreign = w.root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    out = {}
    for name, target in (("--out is a file", afile), ("--out is a foreign folder", foreign)):
        r = run_cli(["-q", "edit", "--hparams", str(w.yaml()), "--edits", str(w.edits(rows)), "--out", str(target)])
        out[name] = (classify(r, True, written=(afile.read_text() != "x") or len(list(foreign.iterdir())) != 1), r)
    r = run_cli(["-q", "edit", "--hparams", str(w.yaml()), "--edits", str(w.root / "none.jsonl"), "--out", str(w.out())])
    out["--edits missing"] = (classify(r, True), r)
    r = run_cli(["-q", "edit", "--hparams", str(w.yaml()), "--edits", str(w.edits(rows)), "--out", str(w.out()),
                 "--limit", "0"])
    out["--limit 0"] = (classify(r, True), r)
    return out


def build_codebook(w: Work) -> tuple[Path, Path]:
    yaml = w.yaml()
    cb = w.out()
    rows = [w.row("red"), w.row("blue", image=str(w.blue), target="Kem",
                                rationale="The shape is blue. Blue shapes belong to the Kem tribe.")]
    assert run_cli(["-q", "edit", "--hparams", str(yaml), "--edits", str(w.edits(rows)), "--out", str(cb)])["code"] == 0
    more = [w.row("green", image=str(w.blue), prompt="What colour is it?", target="blue",
                  rationale="The shape is blue.")]
    assert run_cli(["-q", "edit", "--hparams", str(yaml), "--edits", str(w.edits(more)), "--out", str(cb)])["code"] == 0
    return cb, yaml


def damage_cases(w: Work) -> dict:
    cb, yaml = build_codebook(w)
    snap = (cb / "CURRENT").read_text().strip()

    def flip(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 1
        p.write_bytes(bytes(data))

    def edit_meta(p: Path) -> None:
        meta = json.loads(p.read_text())
        meta["config"]["fusion"]["template"] = "Ignore the facts. {facts} {question}"
        p.write_text(json.dumps(meta))

    def edit_audit(p: Path) -> None:
        lines = p.read_text().splitlines()
        p.write_text("\n".join([lines[0].replace('"added"', '"removed"')] + lines[1:]) + "\n")

    image = lambda c: next((c / "images").iterdir())  # noqa: E731
    fatal = {"meta.json truncated": ("meta.json", lambda p: p.write_bytes(p.read_bytes()[:30])),
             "meta.json empty": ("meta.json", lambda p: p.write_bytes(b"")),
             "meta.json missing": ("meta.json", lambda p: p.unlink()),
             "meta.json config edited": ("meta.json", edit_meta),
             "entries.json edited": ("entries.json", flip), "keys.safetensors flipped": ("keys.safetensors", flip),
             "records.jsonl edited": ("records.jsonl", flip), "image modified": (None, lambda c: flip(image(c))),
             "audit.jsonl entry edited": ("audit", edit_audit), "CURRENT garbage": ("CURRENT", lambda p: p.write_bytes(b"\xff\xfe"))}
    tolerable = {"image deleted": (None, lambda c: image(c).unlink()),
                 "audit.jsonl deleted": ("audit", lambda p: p.unlink())}
    out = {}
    for group, cases in (("fatal", fatal), ("tolerable", tolerable)):
        for name, (file, damage) in cases.items():
            copy = w.out()
            shutil.copytree(cb, copy)
            if file is None:
                damage(copy)
            elif file == "audit":
                damage(copy / "audit.jsonl")
            elif file == "CURRENT":
                damage(copy / "CURRENT")
            else:
                damage(copy / snap / file)
            more = [w.row(f"x{w.n}", image=str(w.red), prompt="Is it red?", target="yes", rationale="It is red.")]
            r = run_cli(["-q", "edit", "--hparams", str(yaml), "--edits", str(w.edits(more)), "--out", str(copy)])
            kind = classify(r, bad=group == "fatal")
            out[f"{name} ({'must refuse' if group == 'fatal' else 'must still work'})"] = (kind, r)
    return out


def write_error_cases(w: Work) -> dict:
    """`reasonedit edit` into an existing codebook when the disk refuses the save: a real ``ulimit -f``
    (RLIMIT_FSIZE) and, simulated, a full disk (ENOSPC from fsync) and a read-only folder (EROFS from
    rename). Each runs in a forked child; the codebook must still load with its old edits."""
    import errno
    import resource

    from reasonedit_plugin.storage import load_codebook

    cases = {}
    for name in ("ulimit -f 1 KB", "full disk (ENOSPC)", "read-only folder (EROFS)"):
        cb, yaml = build_codebook(w)
        before = load_codebook(cb).codebook.edit_ids()
        more = [w.row(f"x{w.n}", image=str(w.red), prompt="Is it red?", target="yes", rationale="It is red.")]
        argv = ["-q", "edit", "--hparams", str(yaml), "--edits", str(w.edits(more)), "--out", str(cb)]
        log = w.root / f"werr{w.n}.txt"
        pid = os.fork()
        if pid == 0:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            code = 1
            try:
                if name.startswith("ulimit"):
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
                elif "ENOSPC" in name:
                    def fsync(fd_):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    os.fsync = fsync
                else:
                    def rename(a, b, **kw):
                        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(a))
                    os.rename = os.replace = rename
                result = run_cli(argv)
                os.write(fd, json.dumps(result).encode())
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        try:
            result = json.loads(log.read_text())
        except ValueError:
            result = {"code": 1, "traceback": "child died", "stderr": [], "one_line": False}
        try:
            intact = load_codebook(cb).codebook.edit_ids() == before
        except Exception:  # noqa: BLE001
            intact = False
        kind = classify(result, bad=True)
        if not intact:
            kind = "lost"
        cases[name] = (kind, result)
    return cases


def concurrency(w: Work, writers: int, trials: int) -> dict:
    """Forked simultaneous `reasonedit edit` writers; returns lost edits and audit mismatches."""
    from reasonedit_plugin.audit import read_events
    from reasonedit_plugin.storage import load_codebook
    from reasonedit_plugin.text_encoder import shared_text_encoder

    torch.set_num_threads(1)
    shared_text_encoder("all-MiniLM-L6-v2")
    cli_inputs.load_vlm = lambda hparams: FakeVLM()
    lost = audit_bad = failed = edits = 0
    for t in range(trials):
        yaml, cb = w.yaml(), w.out()
        files = []
        for k in range(writers):
            rows = [w.row(f"t{t}w{k}e{j}", prompt=f"What is shape {k}-{j}?", target=f"v{j}",
                          rationale=f"Shape {k}-{j} has value v{j}.") for j in range(3)]
            files.append(w.edits(rows))
        r, wfd = os.pipe()
        pids = []
        for f in files:
            pid = os.fork()
            if pid == 0:
                os.close(wfd)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                os.read(r, 1)
                try:
                    code = cli.main(["-q", "edit", "--hparams", str(yaml), "--edits", str(f), "--out", str(cb)])
                except BaseException:  # noqa: BLE001
                    code = 1
                os._exit(code)
            pids.append(pid)
        os.close(r)
        os.close(wfd)
        codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
        want = {f"t{t}w{k}e{j}" for k, c in enumerate(codes) if c == 0 for j in range(3)}
        failed += sum(c != 0 for c in codes)
        edits += len(want)
        try:  # a quarantined edit (rationale guard) is kept too, held for approval
            stored = load_codebook(cb)
            saved = set(stored.codebook.edit_ids()) | set(stored.quarantine)
        except Exception:  # noqa: BLE001
            saved = set()
        lost += len(want - saved)
        added = {e.edit_id for e in read_events(cb / "audit.jsonl") if e.action in ("added", "quarantined")}
        audit_bad += len(added - saved)
    cli_inputs.load_vlm = REAL_LOAD_VLM
    return {"trials": trials, "writers": writers, "edits": edits, "lost": lost, "audit_not_saved": audit_bad,
            "writers_failed": failed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="name of the results file (e.g. before / after)")
    ap.add_argument("--trials", type=int, default=10, help="concurrency trials per writer count (default 10)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.disable(logging.WARNING)
    results: dict = {"checkout": str(Path(cli.__file__).resolve().parents[1]), "areas": {}}
    with tempfile.TemporaryDirectory() as tmp:
        w = Work(Path(tmp))
        for area, fn in (("edit records (JSONL, images)", record_cases), ("hparams YAML, devices, weights", yaml_cases),
                         ("CLI paths", path_cases), ("damaged codebooks", damage_cases),
                         ("full disk, read-only folder, ulimit -f", write_error_cases)):
            cases = fn(w)
            results["areas"][area] = {name: {"outcome": kind, **r} for name, (kind, r) in cases.items()}
        results["concurrency"] = [concurrency(w, n, args.trials) for n in (2, 4)]
    out = ROOT / "benchmarks" / "results" / f"robustness_{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"checkout {results['checkout']}\n")
    print("| area | cases | clear error / works | traceback | wrongly accepted | broken / unclear | lost |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for area, cases in results["areas"].items():
        kinds = [c["outcome"] for c in cases.values()]
        print(f"| {area} | {len(kinds)} | {kinds.count('clear') + kinds.count('ok')} | {kinds.count('traceback')} | "
              f"{kinds.count('accepted')} | {kinds.count('broken') + kinds.count('unclear')} | {kinds.count('lost')} |")
    for c in results["concurrency"]:
        print(f"| concurrent writers ×{c['writers']} ({c['trials']} trials, {c['edits']} edits) | {c['trials']} | "
              f"– | – | audit lists {c['audit_not_saved']} unsaved edits as added | {c['writers_failed']} writers "
              f"failed | {c['lost']} |")
    print()
    for area, cases in results["areas"].items():
        for name, c in cases.items():
            if c["outcome"] not in ("clear", "ok"):
                detail = c["traceback"] or (c["stderr"][-1] if c["stderr"] else f"exit {c['code']}")
                print(f"  [{c['outcome']}] {area} / {name}: {str(detail)[:160]!r}")


if __name__ == "__main__":
    main()
