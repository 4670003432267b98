"""Fuzz suite (issue 14): JSONL edit files, hparams YAML and codebook folders. The contract is "a clear error
or a correct result, never a traceback": every input either loads into valid objects or raises a
ReasonEditError with a one-line message; through the CLI, a bad input exits 2 with one line and writes
nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakes import FakeVLM, solid
from reasonedit_plugin import cli, cli_inputs
from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.editor import ReasonEditor
from reasonedit_plugin.errors import ReasonEditError
from reasonedit_plugin.hparams import ReasonEditHyperParams
from reasonedit_plugin.manifest import verify_codebook
from reasonedit_plugin.records import MAX_ID_CHARS, load_records
from reasonedit_plugin.storage import load_codebook

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_YAML = ROOT / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"
N = int(os.environ.get("REASONEDIT_FUZZ_EXAMPLES", "60"))
"""Examples per fuzz test (the default suite: 60, derandomized; set more for a long run)."""
FUZZ = settings(max_examples=N, deadline=None, derandomize=N <= 60,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def one_line(exc: BaseException) -> bool:
    return "\n" not in str(exc) and len(str(exc)) < 2000


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_images")
    solid((200, 30, 30)).save(root / "red.png")
    buf = io.BytesIO()
    solid((30, 30, 200)).save(buf, format="PNG")
    (root / "junk.png").write_bytes(buf.getvalue() + b"\0" * (5 << 20))  # trailing junk
    Image.new("RGB", (2000, 10)).save(root / "strip.png")  # 200:1
    (root / "trunc.png").write_bytes(buf.getvalue()[:30])
    return root


# ---------------------------------------------------------------------- JSONL records
WEIRD_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\x1b[31mred", "a/b", "..", "x\ny", "\0",
                                                                 "\u202eevil", "x" * 201, "ok-id", "é✓"]))
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                                     WEIRD_TEXT), lambda c: st.lists(c, max_size=3) |
                           st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)
FIELDS = ["id", "image", "prompt", "target", "rationale", "choices", "meta", "rephrase_prompt", "image_rephrase",
          "unknown_field", "case_id"]


def good_row(i: int) -> dict:
    return {"id": f"r{i}", "image": "red.png", "prompt": "Which tribe owns this shape?", "target": "Vol",
            "rationale": "The shape is red. Red shapes belong to the Vol tribe.", "choices": ["Vol", "Kem"]}


@st.composite
def jsonl_files(draw) -> bytes:
    lines = []
    for i in range(draw(st.integers(1, 4))):
        row = good_row(i)
        for _ in range(draw(st.integers(0, 2))):
            field = draw(st.sampled_from(FIELDS))
            row[field] = draw(st.one_of(JSON_VALUES, st.sampled_from(["junk.png", "strip.png", "trunc.png",
                                                                      "missing.png", "/etc/passwd"])))
        lines.append(json.dumps(row, allow_nan=True).encode())
    damage = draw(st.sampled_from(["none", "none", "latin1", "deep", "bigint", "truncate", "bom", "garbage"]))
    if damage == "latin1":
        lines.append("{\"id\": \"caf\u00e9\"}".encode("latin-1"))
    elif damage == "deep":
        lines.append(b"[" * 100_000 + b"]" * 100_000)
    elif damage == "bigint":
        lines.append(b'{"id": ' + b"9" * 5000 + b"}")
    elif damage == "truncate":
        lines[-1] = lines[-1][: draw(st.integers(0, max(0, len(lines[-1]) - 1)))]
    elif damage == "bom":
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    elif damage == "garbage":
        lines.append(draw(st.binary(min_size=1, max_size=40)))
    return b"\n".join(lines) + b"\n"


def valid_id(rid: str) -> bool:
    return (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS and rid.isprintable() and "/" not in rid
            and "\\" not in rid)


@FUZZ
@given(data=jsonl_files())
def test_fuzz_jsonl_records(data, image_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "edits.jsonl"
    path.write_bytes(data)
    try:
        records = load_records(path, image_root=image_dir)
    except ReasonEditError as exc:
        assert one_line(exc), str(exc)
        return
    for r in records:
        assert valid_id(r.id) and isinstance(r.prompt, str) and isinstance(r.target, str)
        assert all(isinstance(s, str) for s in r.rationale)
        assert not str(r.image).endswith(("junk.png", "strip.png", "trunc.png"))


# ---------------------------------------------------------------------- YAML
YAML_SCALARS = st.one_of(st.sampled_from(["no", "'no'", "yes", "'true'", ".nan", ".inf", "-.inf", "2.5", "3.0", "abc",
                                          "null", "~", "[1, 2]", "{a: 1}", "9" * 5000, "-1", "0", "1e400", "0x10",
                                          "cuda", "tpu", "99", "cuda:99", "'3'", "\"auto\"", "!!binary aGk=",
                                          "&a [*a]", "[" * 2000 + "]" * 2000]),
                         st.integers(-10 ** 20, 10 ** 20).map(str), st.floats().map(repr))
KEYS = ["seed", "only_edit_errors", "max_new_tokens", "device", "dtype", "batch_size", "missing_rationale",
        "embedding.scale", "embedding.layer", "embedding.batch_size", "retrieval.cap_keys", "retrieval.hubness",
        "retrieval.gate_percentile", "guard.policy", "guard.injection", "augment.enabled", "augment.hue",
        "fusion.template", "topology.runs", "bogus", "retrieval.bogus"]


@st.composite
def yaml_files(draw) -> bytes:
    overrides = {}
    for _ in range(draw(st.integers(1, 3))):
        overrides[draw(st.sampled_from(KEYS))] = draw(YAML_SCALARS)
    top = {k: v for k, v in overrides.items() if "." not in k}
    sections: dict[str, dict[str, str]] = {}
    for k, v in overrides.items():
        if "." in k:
            s, f = k.split(".")
            sections.setdefault(s, {})[f] = v
    lines = ["alg_name: ReasonEdit", "model_name: package://tiny-qwen2-vl-shapes"]
    lines += [f"{k}: {v}" for k, v in top.items()]
    for s, fs in sections.items():
        lines.append(f"{s}:")
        lines += [f"  {f}: {v}" for f, v in fs.items()]
    data = "\n".join(lines).encode() + b"\n"
    if draw(st.integers(0, 9)) == 0:
        data += b"guard:\n  policy: \xff\xfe\n"
    return data


@FUZZ
@given(data=yaml_files())
def test_fuzz_hparams_yaml(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("yaml") / "hp.yaml"
    path.write_bytes(data)
    try:
        hp = ReasonEditHyperParams.from_hparams(str(path))
    except ReasonEditError as exc:
        assert one_line(exc), str(exc)
        return
    config = hp.to_config()
    assert isinstance(config.only_edit_errors, bool) and isinstance(config.retrieval.hubness, bool)
    assert isinstance(config.seed, int) and not isinstance(config.seed, bool)
    assert isinstance(config.retrieval.cap_keys, int) and not isinstance(config.retrieval.cap_keys, bool)
    assert config.guard.policy in ("off", "warn", "quarantine", "reject")
    assert hp.device is None or str(hp.device).split(":")[0] in ("cpu", "cuda", "mps") or isinstance(hp.device, int)


# ---------------------------------------------------------------------- codebook files
@pytest.fixture(scope="module")
def codebook(tmp_path_factory, text_encoder):
    ed = ReasonEditor(FakeVLM(), ReasonEditConfig(guard={"policy": "off"}, augment={"enabled": False},
                                                  only_edit_errors=False), text_encoder=text_encoder)
    ed.edit([{"id": "red", "image": solid((220, 20, 20)), "prompt": "Which tribe?", "target": "Vol",
              "rationale": "Red shapes belong to the Vol tribe."},
             {"id": "blue", "image": solid((20, 20, 220)), "prompt": "Which tribe?", "target": "Kem",
              "rationale": "Blue shapes belong to the Kem tribe."}])
    path = tmp_path_factory.mktemp("cb") / "codebook"
    ed.save(path)
    ed.remove("blue")
    ed.save(path)  # a second snapshot: the audit log is pinned by the manifest
    stored = load_codebook(path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != "LOCK")
    return path, files, _state(stored)


def _state(stored):
    return (stored.codebook.edit_ids(), {i: (e.key.tolist(), e.values) for i, e in stored.codebook.entries.items()},
            sorted(stored.records), [e.id for e in stored.audit])


@FUZZ
@given(data=st.data())
def test_fuzz_codebook_files(codebook, data, tmp_path_factory):
    path, files, original = codebook
    copy = tmp_path_factory.mktemp("cbcopy") / "codebook"
    shutil.copytree(path, copy)
    target = copy / data.draw(st.sampled_from(files), label="file")
    blob = target.read_bytes()
    mutation = data.draw(st.sampled_from(["flip", "truncate", "delete", "append", "empty", "replace"]),
                         label="mutation")
    if mutation == "flip":
        assume(blob)
        i = data.draw(st.integers(0, len(blob) - 1))
        target.write_bytes(blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1:])
    elif mutation == "truncate":
        target.write_bytes(blob[: data.draw(st.integers(0, max(0, len(blob) - 1)))])
    elif mutation == "delete":
        target.unlink()
    elif mutation == "append":
        target.write_bytes(blob + data.draw(st.binary(min_size=1, max_size=64)))
    elif mutation == "empty":
        target.write_bytes(b"")
    else:
        target.write_bytes(data.draw(st.binary(max_size=200)))
    try:
        report = verify_codebook(copy)
        assert all("\n" not in str(p) for p in report.problems)
    except ReasonEditError as exc:
        assert one_line(exc)
    try:
        stored = load_codebook(copy)
    except ReasonEditError as exc:
        assert one_line(exc), str(exc)
        return
    state = _state(stored)
    # what loads is the original, except what a missing/damaged image or audit tail legitimately takes away
    assert state[0] == original[0] and state[1] == original[1]
    assert set(state[2]) <= set(original[2]) and set(state[3]) <= set(original[3])


# ---------------------------------------------------------------------- through the CLI
@settings(FUZZ, max_examples=max(25, N // 2))
@given(data=jsonl_files())
def test_fuzz_cli_edit_exit_2_and_nothing_written(data, image_dir, tmp_path_factory, monkeypatch, capsys,
                                                  text_encoder):
    monkeypatch.setattr(cli_inputs, "load_vlm", lambda hparams: FakeVLM())
    work = tmp_path_factory.mktemp("cli")
    edits = work / "edits.jsonl"
    edits.write_bytes(data)
    (work / "model").mkdir()
    yaml = work / "hp.yaml"
    yaml.write_text(f"alg_name: ReasonEdit\nmodel_name: {work / 'model'}\nonly_edit_errors: false\n"
                    "augment:\n  enabled: false\nembedding:\n  scale: 3\n")
    out = work / "cb"
    capsys.readouterr()
    code = cli.main(["-q", "edit", "--hparams", str(yaml), "--edits", str(edits), "--image-root", str(image_dir),
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("reasonedit edit: error: "), err
        assert not out.exists()
    else:
        stored = load_codebook(out)
        assert all(valid_id(i) for i in stored.codebook.edit_ids()) and torch.isfinite(
            stored.codebook.keys(stored.codebook.entry_ids())).all()
