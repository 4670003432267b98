"""Durable codebook format: keys in safetensors, entries and metadata in JSON, an append-only JSONL
audit log; atomic saves; knowledge modules (issue 7). No pickle anywhere.

A codebook is a folder::

    <path>/
      CURRENT                 name of the live snapshot (replaced atomically: the commit point)
      snapshot-000007/        one complete, immutable snapshot
        keys.safetensors      entry_ids int64 [N], entry_keys float32 [N, D], contribution_keys float32 [M, D]
        entries.json          entries with their contributions (edit id, kind, value, radius, provenance)
        records.jsonl         the raw edit records (committed and quarantined), images as images/<hash>.<ext>
        audit_new.jsonl       audit events this save adds (replayed into audit.jsonl if a crash cut it short)
        meta.json             format + version, KeySetup, config, counts, sha256 of every file above (written last)
      images/<blake2b>.<ext>  content-addressed copies of the records' images (write-once)
      audit.jsonl             append-only audit log
      LOCK                    held (flock) while saving

A save writes a new snapshot into a temporary folder, fsyncs every file and the folder, renames it into
place, then replaces ``CURRENT`` (write temp, fsync, rename, fsync the folder), then appends the audit
events and removes the old snapshot. A crash or SIGKILL at any point leaves ``CURRENT`` naming either
the old or the new complete snapshot (``tests/test_crash_safety.py`` kills a saving process at random
points and reloads). A knowledge module (``export_edits``) is the same format holding a subset of edits.

``meta.json`` pins what keys depend on (:class:`~reasonedit_plugin.embedding.KeySetup`: model type and
weight fingerprint, vision module, scale, text encoder fingerprint, dims); loading into a different setup
raises :class:`~reasonedit_plugin.errors.CodebookMismatchError` saying what differs and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import torch
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .audit import AuditEvent, AuditLog, EditInfo, append_events, read_events, who_why
from .codebook import Codebook, Contribution, Entry, PendingEntry
from .config import CodebookConfig, ReasonEditConfig, RetrievalConfig
from .errors import CodebookMismatchError, ReasonEditError, RecordError
from .records import EditRecord, make_record

try:  # POSIX advisory lock; elsewhere saves are not protected against a concurrent writer
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

FORMAT = "reasonedit-codebook"
FORMAT_VERSION = 1
CURRENT = "CURRENT"
AUDIT_FILE = "audit.jsonl"
IMAGES_DIR = "images"
LOCK_FILE = "LOCK"
SNAPSHOT_PREFIX = "snapshot-"
TMP_PREFIX = ".tmp-"
SNAPSHOT_FILES = ("keys.safetensors", "entries.json", "records.jsonl", "audit_new.jsonl")
SETUP_FIELDS = ("model_type", "model_fingerprint", "vision_module", "scale", "text_encoder", "vision_dim",
                "text_dim")
IMAGE_FIELDS = ("image", "image_rephrase", "multimodal_locality_image", "hard_locality_image")
_NO_LIMIT = 10 ** 9


class CodebookCorruptError(ReasonEditError):
    """A saved codebook's files do not match their checksums or cannot be parsed."""


@dataclass
class StoredCodebook:
    """Everything read from a codebook folder."""

    path: Path
    snapshot: str
    meta: dict[str, Any]
    setup: dict[str, Any]
    config: dict[str, Any] | None
    codebook: Codebook
    records: dict[str, EditRecord] = field(default_factory=dict)
    """Raw records of the committed edits (images point into the folder's ``images/``)."""
    quarantine: dict[str, EditRecord] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)
    missing_raw: list[str] = field(default_factory=list)
    """Committed edits whose raw record (or one of its images) was not kept: they cannot be re-embedded."""
    extra: dict[str, bytes] = field(default_factory=dict)
    """Side files saved with the snapshot (``save_codebook(extra=...)``, e.g. hidden-state fusion vectors
    and gate weights), checksum-verified; empty for codebooks saved without them."""


# ---------------------------------------------------------------------- low-level durable writes
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")
    _write_file(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ReasonEditError(f"cannot save: a value is not JSON-serialisable without NaN/inf ({exc}).") from exc


@contextlib.contextmanager
def _locked(root: Path, shared: bool = False) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    lock = root / LOCK_FILE
    try:
        fh = open(lock, "r" if shared else "a+")
    except OSError:  # read-only copy without a LOCK file: nothing can write it concurrently
        yield
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def is_codebook(path: Union[str, Path]) -> bool:
    return (Path(path) / CURRENT).is_file()


def _current_snapshot(root: Path) -> str | None:
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name.startswith(SNAPSHOT_PREFIX) or not (root / name).is_dir():
        raise CodebookCorruptError(f"{root / CURRENT} names {name!r}, which is not a snapshot folder here; "
                                   "the codebook folder was damaged or edited by hand.")
    return name


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ReasonEditError(f"cannot save a codebook to {str(root)!r}: it is a file; give a folder path.")
    if root.is_dir() and not is_codebook(root):
        ours = {CURRENT, AUDIT_FILE, IMAGES_DIR, LOCK_FILE}
        foreign = [p.name for p in root.iterdir()
                   if p.name not in ours and not p.name.startswith((SNAPSHOT_PREFIX, TMP_PREFIX))]
        if foreign:
            raise ReasonEditError(f"{str(root)!r} is a non-empty folder that is not a ReasonEdit codebook "
                                  f"(it holds {sorted(foreign)[:5]}); save to a new or empty folder.")
    root.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------- images and records
def _store_image(value: Any, root: Path, cache: dict[int, str]) -> str:
    """Copy an image into ``root/images`` under its content hash; returns the relative path."""
    images = root / IMAGES_DIR
    if isinstance(value, Image.Image):
        key = id(value)
        if key in cache:
            return cache[key]
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data, ext = buf.getvalue(), ".png"
    else:
        src = Path(value)
        if src.parent.resolve() == images.resolve() and src.is_file():
            return f"{IMAGES_DIR}/{src.name}"  # already stored here under its hash
        data, ext = src.read_bytes(), (src.suffix.lower() or ".img")
        if not ext[1:].isalnum() or len(ext) > 8:
            ext = ".img"
    name = hashlib.blake2b(data, digest_size=16).hexdigest() + ext
    target = images / name
    if not target.is_file():
        images.mkdir(exist_ok=True)
        _atomic_write(target, data)
    rel = f"{IMAGES_DIR}/{name}"
    if isinstance(value, Image.Image):
        cache[id(value)] = rel
    return rel


def _record_row(record: EditRecord, status: str, root: Path, cache: dict[int, str]) -> dict[str, Any] | None:
    """A JSON row for a raw record, its images copied in; None (with a warning) if an image is gone."""
    row: dict[str, Any] = {}
    for f in dataclasses.fields(EditRecord):
        value = getattr(record, f.name)
        if f.name in IMAGE_FIELDS and value is not None:
            try:
                value = _store_image(value, root, cache)
            except OSError as exc:
                logger.warning("edit %s: its %s (%s) can no longer be read (%s); its raw record is not "
                               "saved, so it cannot be re-embedded for another model.", record.id, f.name,
                               value, exc)
                return None
        if value is None or (f.name == "meta" and not value):
            continue
        row[f.name] = value
    return {"status": status, "record": row}


def _records_from_rows(root: Path, text: str) -> tuple[dict[str, EditRecord], dict[str, EditRecord]]:
    committed: dict[str, EditRecord] = {}
    quarantined: dict[str, EditRecord] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        try:
            record = make_record(row["record"], image_root=root, index=lineno, max_rationale_chars=_NO_LIMIT,
                                 max_sentences=_NO_LIMIT)
        except RecordError as exc:
            raise CodebookCorruptError(f"{root}: stored edit record on line {lineno} is invalid: {exc}") from exc
        (quarantined if row.get("status") == "quarantined" else committed)[record.id] = record
    return committed, quarantined


# ---------------------------------------------------------------------- codebook <-> files
def _codebook_tables(codebook: Codebook) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ids = codebook.entry_ids()
    contribution_keys: list[torch.Tensor] = []
    entries = []
    for eid in ids:
        entry = codebook.entries[eid]
        rows = []
        for c in entry.contributions:
            rows.append({**c.to_dict(), "key_row": len(contribution_keys)})
            contribution_keys.append(c.key.detach().float().cpu().reshape(-1))
        entries.append({"id": eid, "radius": float(entry.radius), "contributions": rows})
    tensors = {
        "entry_ids": torch.tensor(ids, dtype=torch.int64),
        "entry_keys": codebook.keys(ids).detach().float().cpu().contiguous(),
        "contribution_keys": (torch.stack(contribution_keys) if contribution_keys
                              else torch.zeros(0, codebook.dim)).contiguous(),
    }
    table = {"dim": codebook.dim, "next_id": int(getattr(codebook, "_next_id", max(ids, default=-1) + 1)),
             "version": int(codebook.version), "entries": entries}
    return tensors, table


def _codebook_from_tables(tensors: Mapping[str, torch.Tensor], table: Mapping[str, Any],
                          config: CodebookConfig, retrieval: RetrievalConfig) -> Codebook:
    dim = int(table["dim"])
    entry_keys, contribution_keys = tensors["entry_keys"], tensors["contribution_keys"]
    ids = tensors["entry_ids"].tolist()
    if [e["id"] for e in table["entries"]] != ids or entry_keys.shape != (len(ids), dim):
        raise CodebookCorruptError("keys.safetensors and entries.json disagree (entry ids or key shapes).")
    for name, t in (("entry_keys", entry_keys), ("contribution_keys", contribution_keys)):
        if t.numel() and not torch.isfinite(t).all():
            raise CodebookCorruptError(f"keys.safetensors: {name} holds NaN/inf values.")
    codebook = Codebook(dim, config, retrieval)
    for row, key in zip(table["entries"], entry_keys):
        contributions = [Contribution(c["edit_id"], c["kind"], c["value"], contribution_keys[c["key_row"]].clone(),
                                      float(c["radius"]), float(c["created"]), dict(c.get("meta") or {}))
                         for c in row["contributions"]]
        if not contributions:
            raise CodebookCorruptError(f"entry {row['id']} has no contributions.")
        codebook.entries[int(row["id"])] = Entry(int(row["id"]), key.clone(), float(row["radius"]), contributions)
    # The codebook has no public restore; its index and hubness lists are rebuilt from the entries.
    codebook._next_id = max(int(table["next_id"]), max(ids, default=-1) + 1)
    codebook.rebuild()
    codebook.version = max(codebook.version, int(table["version"]))
    return codebook


def _setup_dict(setup: Any) -> dict[str, Any]:
    values = setup.to_dict() if hasattr(setup, "to_dict") else dict(setup)
    missing = [k for k in SETUP_FIELDS if k not in values]
    if missing:
        raise ReasonEditError(f"key setup lacks {missing}; pass editor.keys.setup.")
    return {k: values[k] for k in SETUP_FIELDS}


def setup_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two key setups (empty when keys are comparable)."""
    diffs = []
    for name in SETUP_FIELDS:
        a, b = saved.get(name), current.get(name)
        if name == "scale":
            same = a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
        elif name == "text_encoder":  # "<name or path>:<weights hash>": the same weights under another path match
            same = str(a).rsplit(":", 1)[-1] == str(b).rsplit(":", 1)[-1]
        else:
            same = a == b
        if not same:
            diffs.append(f"{name}: saved {a!r}, current {b!r}")
    return diffs


def check_setup(saved: Mapping[str, Any], current: Any, where: Union[str, Path]) -> None:
    """Raise :class:`CodebookMismatchError` when ``current`` differs from the setup a codebook was saved with."""
    diffs = setup_differences(saved, _setup_dict(current))
    if diffs:
        raise CodebookMismatchError(
            f"the codebook at {str(where)!r} was built with a different key setup, so its keys are not "
            f"comparable with this model's: {'; '.join(diffs)}. Either load the model, vision layer, scale "
            f"and text encoder it was built with (saved setup: {dict(saved)}), or re-embed its edits into "
            "this setup with editor.import_edits(path) (it uses the raw edit records kept in the codebook).")


# ---------------------------------------------------------------------- save / load
def save_codebook(path: Union[str, Path], codebook: Codebook, setup: Any, *,
                  config: ReasonEditConfig | Mapping[str, Any] | None = None,
                  records: Mapping[str, EditRecord] | None = None,
                  quarantine: Mapping[str, EditRecord] | None = None,
                  audit: AuditLog | None = None, kind: str = "codebook",
                  extra: Mapping[str, bytes] | None = None) -> Path:
    """Atomically write ``codebook`` (plus raw records, quarantine and new audit events) to folder ``path``.

    Returns the snapshot folder. ``setup`` is ``editor.keys.setup`` (or its dict). ``extra``: side files
    (name -> bytes) written into the snapshot and covered by its checksums."""
    extra = dict(extra or {})
    for name in extra:
        if name in SNAPSHOT_FILES or name == "meta.json" or "/" in name or name.startswith("."):
            raise ReasonEditError(f"extra file name {name!r} is reserved or not a plain file name.")
    root = Path(path)
    setup_values = _setup_dict(setup)
    if setup_values["vision_dim"] + setup_values["text_dim"] != codebook.dim:
        raise ReasonEditError(f"the key setup gives dim {setup_values['vision_dim'] + setup_values['text_dim']} "
                              f"but the codebook has dim {codebook.dim}.")
    config_values = config.to_dict() if hasattr(config, "to_dict") else (dict(config) if config else None)
    _prepare_root(root)
    with _locked(root):
        tensors, table = _codebook_tables(codebook)
        image_cache: dict[int, str] = {}
        rows = []
        missing_raw = []
        active = set(codebook.edit_ids())
        for status, source in (("committed", records or {}), ("quarantined", quarantine or {})):
            for rid, record in source.items():
                if status == "committed" and rid not in active:
                    continue  # removed since: its raw record goes with it
                row = _record_row(record, status, root, image_cache)
                if row is None:
                    missing_raw.append(rid)
                else:
                    rows.append(row)
        file_ids = {e.id for e in read_events(root / AUDIT_FILE)}
        new_events = audit.missing_from(file_ids) if audit is not None else []

        payloads = {
            "keys.safetensors": st_save(tensors, metadata={"format": FORMAT}),
            "entries.json": _json_bytes(table),
            "records.jsonl": b"".join(_json_bytes(r) + b"\n" for r in rows),
            "audit_new.jsonl": b"".join(_json_bytes(e.to_dict()) + b"\n" for e in new_events),
            **extra,
        }
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "saved": time.time(),
            "setup": setup_values, "config": config_values,
            "counts": {"entries": len(codebook), "edits": len(active), "contributions":
                       int(tensors["contribution_keys"].shape[0]), "records": len(rows),
                       "quarantined": len(quarantine or {})},
            "missing_raw": sorted(set(active) - {r["record"]["id"] for r in rows if r["status"] == "committed"}),
            "files": {name: _sha256(data) for name, data in payloads.items()},
        }
        previous = _current_snapshot(root)
        number = int(previous[len(SNAPSHOT_PREFIX):]) + 1 if previous else 1
        name = f"{SNAPSHOT_PREFIX}{number:06d}"
        tmp = root / f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for fname, data in payloads.items():
            _write_file(tmp / fname, data)
        _write_file(tmp / "meta.json", _json_bytes(meta))  # last: a snapshot with meta.json is complete
        _fsync_dir(tmp)
        final = root / name
        if final.exists():  # left by a crash between rename and commit; never current
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        _atomic_write(root / CURRENT, (name + "\n").encode())  # the commit point
        append_events(root / AUDIT_FILE, new_events)
        _cleanup(root, name, rows)
    logger.info("saved %s %s (%d entries, %d edits) to %s", kind, name, len(codebook), len(active), root)
    return final


def _cleanup(root: Path, current: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Remove old snapshots, temporary leftovers and images no record of the live snapshot uses."""
    for child in root.iterdir():
        if child.name == current:
            continue
        if child.name.startswith(SNAPSHOT_PREFIX) or child.name.startswith(TMP_PREFIX):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
    used = {Path(r["record"][f]).name for r in rows for f in IMAGE_FIELDS if isinstance(r["record"].get(f), str)}
    images = root / IMAGES_DIR
    if images.is_dir():
        for child in images.iterdir():
            if child.name not in used:
                with contextlib.suppress(OSError):
                    child.unlink()


def read_meta(path: Union[str, Path]) -> dict[str, Any]:
    """The ``meta.json`` of a codebook folder's live snapshot."""
    root = Path(path)
    name = _current_snapshot(root) if root.is_dir() else None
    if name is None:
        raise ReasonEditError(f"no ReasonEdit codebook at {str(root)!r} (no {CURRENT} file); give the folder "
                              "that editor.save() or editor.export_edits() wrote.")
    meta = json.loads((root / name / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise CodebookCorruptError(f"{root / name / 'meta.json'} is not a ReasonEdit codebook's metadata.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ReasonEditError(f"the codebook at {str(root)!r} has format version {version!r}; this "
                              f"reasonedit_plugin reads up to {FORMAT_VERSION}. Upgrade reasonedit_plugin.")
    return meta


def load_codebook(path: Union[str, Path], setup: Any = None, *,
                  codebook_config: CodebookConfig | None = None,
                  retrieval_config: RetrievalConfig | None = None) -> StoredCodebook:
    """Read a codebook folder. With ``setup``, refuse (CodebookMismatchError) if it differs from the saved
    one. The index and hubness lists are rebuilt; retrieval answers equal those before saving."""
    root = Path(path)
    with _locked(root, shared=True):
        meta = read_meta(root)
        name = _current_snapshot(root)
        assert name is not None
        if setup is not None:
            check_setup(meta["setup"], setup, root)
        blobs = {}
        for fname in list(SNAPSHOT_FILES) + sorted(set(meta["files"]) - set(SNAPSHOT_FILES)):
            data = (root / name / fname).read_bytes()
            if _sha256(data) != meta["files"].get(fname):
                raise CodebookCorruptError(f"{root / name / fname} does not match its checksum in meta.json; "
                                           "the file was damaged or edited. Restore the folder from a backup.")
            blobs[fname] = data
        saved_config = ReasonEditConfig.from_dict(meta["config"]) if meta.get("config") else ReasonEditConfig()
        try:
            tensors = st_load(blobs["keys.safetensors"])
            table = json.loads(blobs["entries.json"])
        except Exception as exc:  # safetensors raises its own error types
            raise CodebookCorruptError(f"{root / name}: cannot parse the keys or entries ({exc}).") from exc
        codebook = _codebook_from_tables(tensors, table, codebook_config or saved_config.codebook,
                                         retrieval_config or saved_config.retrieval)
        records, quarantine = _records_from_rows(root, blobs["records.jsonl"].decode("utf-8"))
        events = read_events(root / AUDIT_FILE)
        log = AuditLog(events)
        # events of the last save that a crash kept out of audit.jsonl (appended at the next save)
        log.merge(AuditEvent.from_dict(json.loads(line))
                  for line in blobs["audit_new.jsonl"].decode("utf-8").splitlines() if line.strip())
    return StoredCodebook(root, name, meta, meta["setup"], meta.get("config"), codebook, records, quarantine,
                          list(log), list(meta.get("missing_raw", [])),
                          {f: blobs[f] for f in blobs if f not in SNAPSHOT_FILES})


# ---------------------------------------------------------------------- the editor's side
def _save_config(editor: Any) -> dict[str, Any]:
    """The editor's config with 'auto' layer/scale replaced by what calibration chose."""
    values = editor.config.to_dict()
    values["embedding"]["layer"] = editor.keys.vision_module
    values["embedding"]["scale"] = editor.keys.scale
    return values


def save_editor(editor: Any, path: Union[str, Path]) -> Path:
    snapshot = save_codebook(path, editor.codebook, editor.keys.setup, config=_save_config(editor),
                             records=editor.edit_records, quarantine=editor.quarantine, audit=editor.audit,
                             extra=editor.side_files())
    return snapshot


def load_editor(cls: type, path: Union[str, Path], vlm: Any, config: Any = None, text_encoder: Any = None,
                **kwargs: Any) -> Any:
    meta = read_meta(path)
    if config is None and meta.get("config"):
        config = ReasonEditConfig.from_dict(meta["config"])
    editor = cls(vlm, config, text_encoder=text_encoder, **kwargs)
    stored = load_codebook(path, editor.keys.setup, codebook_config=editor.config.codebook,
                           retrieval_config=editor.config.retrieval)
    editor._codebook = stored.codebook
    editor._retriever = None
    editor.edit_records = dict(stored.records)
    editor.quarantine = dict(stored.quarantine)
    editor.audit = AuditLog(stored.audit)
    editor.load_side_files(stored.extra)
    return editor


def _edit_order(codebook: Codebook, ids: Iterable[str]) -> list[str]:
    wanted = set(ids)
    return [e for e in codebook.edit_ids() if e in wanted]


def _pending_by_edit(codebook: Codebook, edit_ids: Sequence[str]) -> dict[str, tuple[list[PendingEntry], dict]]:
    """Each edit's own contributions as pending entries (entry order), with its provenance."""
    out: dict[str, tuple[list[PendingEntry], dict]] = {e: ([], {}) for e in edit_ids}
    for eid in sorted(codebook.entries):
        for c in codebook.entries[eid].contributions:
            if c.edit_id in out:
                out[c.edit_id][0].append(PendingEntry(c.kind, c.value, c.key.clone(), c.radius))
                out[c.edit_id][1].update(c.meta)
    return out


def export_edits(editor: Any, edit_ids: Iterable[str], path: Union[str, Path]) -> Path:
    """Write a knowledge module: the given edits' keys, entries and raw records (images copied in)."""
    if isinstance(edit_ids, str):
        edit_ids = [edit_ids]
    wanted = list(dict.fromkeys(edit_ids))
    known = set(editor.codebook.edit_ids())
    unknown = [e for e in wanted if e not in known]
    if unknown:
        raise ReasonEditError(f"cannot export unknown edits {unknown}; editor.list_edits() shows the "
                              f"{len(known)} edits in the codebook.")
    if not wanted:
        raise ReasonEditError("export_edits needs at least one edit id.")
    module = Codebook(editor.codebook.dim, editor.config.codebook, editor.config.retrieval)
    for edit_id, (pending, meta) in _pending_by_edit(editor.codebook, _edit_order(editor.codebook, wanted)).items():
        module.add_edit(edit_id, pending, meta)
    log = AuditLog([e for e in editor.audit if e.edit_id in set(wanted)])
    log.record("exported", None, edit_ids=wanted, source=str(path))
    snapshot = save_codebook(path, module, editor.keys.setup, config=_save_config(editor),
                             records={e: editor.edit_records[e] for e in wanted if e in editor.edit_records},
                             audit=log, kind="module")
    editor.audit.record("exported", None, edit_ids=wanted, target=str(path))
    return snapshot


@dataclass
class ImportReport:
    imported: list[str]
    reembedded: bool
    quarantined: list[str] = field(default_factory=list)
    flags: dict[str, list[str]] = field(default_factory=dict)


def import_edits(editor: Any, path: Union[str, Path], reembed: Union[bool, str] = "auto",
                 guard: bool = True) -> ImportReport:
    """Add a module's (or another codebook's) edits. Same key setup: keys are used as they are. Different
    setup (or ``reembed=True``): every edit is re-embedded from its raw record through this editor; edits
    without raw data make it fail with nothing added. All-or-nothing. With ``guard`` and a configured
    rationale guard, raw records are checked and the guard policy applies."""
    if reembed not in (True, False, "auto"):
        raise ReasonEditError(f"reembed={reembed!r}: give True, False or 'auto'.")
    meta = read_meta(path)
    diffs = setup_differences(meta["setup"], _setup_dict(editor.keys.setup))
    if diffs and reembed is False:
        check_setup(meta["setup"], editor.keys.setup, path)
    do_reembed = bool(diffs) or reembed is True
    stored = load_codebook(path, None if do_reembed else editor.keys.setup,
                           codebook_config=editor.config.codebook, retrieval_config=editor.config.retrieval)
    order = stored.codebook.edit_ids()
    clash = [e for e in order if e in set(editor.codebook.edit_ids()) or e in editor.quarantine]
    if clash:
        raise ReasonEditError(f"cannot import {str(path)!r}: edits {clash[:10]} already exist here; remove them "
                              "first (editor.remove) or import into another codebook. Nothing was imported.")
    if do_reembed:
        lacking = [e for e in order if e not in stored.records]
        if lacking:
            raise CodebookMismatchError(
                f"cannot re-embed {str(path)!r} for this setup ({'; '.join(diffs) or 'reembed=True'}): edits "
                f"{lacking[:10]} have no raw record (image + text) in it. Load the model it was built with, "
                "or import it from the original edit records with editor.edit(load_records(...)).")
    flags: dict[str, list[str]] = {}
    held: list[str] = []
    if guard and getattr(editor, "guard", None) is not None:
        from .records import load_image

        for e in order:
            record = stored.records.get(e)
            if record is None:
                continue
            found = editor.guard.check(record, load_image(record.image))
            if found:
                flags[e] = [str(f) for f in found]
        policy = editor.config.guard.policy
        if flags and policy == "reject":
            for e, fl in flags.items():
                editor.audit.record("rejected", e, flags=fl, source=str(path))
            raise ReasonEditError(f"import of {str(path)!r} rejected by the rationale guard: "
                                  + "; ".join(f"{e}: {', '.join(fl)}" for e, fl in flags.items())
                                  + ". Nothing was imported.")
        if flags and policy == "quarantine":
            held = list(flags)
    pending = _pending_by_edit(stored.codebook, order)
    added: list[str] = []
    try:
        for e in order:
            if e in held:
                continue
            entries, prov = pending[e]
            if do_reembed:
                from .records import load_image

                record = stored.records[e]
                entries = editor._pending_entries(record, load_image(record.image))
            result = editor.codebook.add_edit(e, entries, prov)
            added.append(e)
            if e in stored.records:
                editor.edit_records[e] = stored.records[e]
            who, why = who_why(prov)
            editor.audit.record("imported", e, who=who, why=why, entry_ids=[i for i, _ in result],
                                source=str(path), reembedded=do_reembed, flags=flags.get(e, []))
    except BaseException:
        for e in reversed(added):
            editor.codebook.remove_edit(e)
            editor.edit_records.pop(e, None)
        raise
    for e in held:
        editor.quarantine[e] = stored.records[e]
        editor.audit.record("quarantined", e, flags=flags[e], source=str(path))
    return ImportReport(added, do_reembed, held, flags)


def list_edits(editor: Any) -> list[EditInfo]:
    """Every edit the editor knows: active ones (in codebook order), then quarantined ones."""
    infos: dict[str, EditInfo] = {}
    for eid in sorted(editor.codebook.entries) if editor._codebook is not None else []:
        entry = editor.codebook.entries[eid]
        shared = len(entry.edit_ids) > 1
        for c in entry.contributions:
            info = infos.get(c.edit_id)
            if info is None:
                who, why = who_why(c.meta)
                info = infos[c.edit_id] = EditInfo(c.edit_id, "active", created=c.created, who=who, why=why,
                                                   has_raw_record=c.edit_id in editor.edit_records)
            if eid not in info.entry_ids:
                info.entry_ids.append(eid)
                if shared:
                    info.merged_entries.append(eid)
            info.kinds[c.kind] = info.kinds.get(c.kind, 0) + 1
    ordered = [infos[e] for e in editor.codebook.edit_ids()] if editor._codebook is not None else []
    for rid, record in editor.quarantine.items():
        who, why = who_why(record.meta)
        ordered.append(EditInfo(rid, "quarantined", who=who, why=why, has_raw_record=True))
    for info in ordered:
        events = editor.audit.events(info.edit_id)
        flagged = [e for e in events if e.details.get("flags")]
        if flagged:
            info.flags = list(flagged[-1].details["flags"])
        if info.created is None and events:
            info.created = events[0].time
    return ordered
