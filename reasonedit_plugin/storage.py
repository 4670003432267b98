"""Durable codebook format: keys in safetensors, entries and metadata in JSON, an append-only JSONL
audit log; atomic saves; knowledge modules (issue 7). No pickle anywhere.

A codebook is a folder::

    <path>/
      CURRENT                 name of the live snapshot (replaced atomically: the commit point)
      snapshot-000007/        one complete, immutable snapshot
        keys.safetensors      entry_ids int64 [N], entry_keys [N, D] in the key dtype (float16 by default),
                              contribution_keys [M, D] (merged contributions' own keys), nbr int32 [N, K],
                              nlen, sigma, reach (the hubness graph), centroids, assign, rad (IVF partition,
                              absent below codebook.exact_search_below); format 1 (float32 keys, no graph)
                              is migrated on load, once
        entries.json          entries with their contributions (edit id, kind, value, radius, provenance)
        records.jsonl         the raw edit records (committed and quarantined), images as images/<hash>.<ext>
        audit_new.jsonl       audit events this save adds (replayed into audit.jsonl if a crash cut it short)
        meta.json             format + version, KeySetup, config, counts, sha256 of every file above (written last)
      images/<blake2b>.<ext>  content-addressed copies of the records' images (write-once)
      audit.jsonl             append-only audit log
      LOCK                    held (flock) by a writer over load -> edit -> save (locking.py)
      snapshot-*/MANIFEST.json  checksums of every file of the codebook (manifest.py)

A save writes a new snapshot into a temporary folder, fsyncs every file and the folder, renames it into
place, then replaces ``CURRENT`` (write temp, fsync, rename, fsync the folder), then appends the audit
events and removes the old snapshot. A crash or SIGKILL at any point leaves ``CURRENT`` naming either
the old or the new complete snapshot (``tests/test_crash_safety.py`` kills a saving process at random
points and reloads). A load holds the lock shared; :func:`read_meta` holds none, and when the snapshot it
read ``CURRENT`` for is removed before it reads it, it reads ``CURRENT`` again (a writer committed meanwhile)
rather than report damage. A knowledge module (``export_edits``) is the same format holding a subset of edits.

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
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from PIL import Image
import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .audit import AuditEvent, AuditLog, append_events, read_events
from .codebook import Codebook
from .codebook_layout import (AUDIT_FILE, CURRENT, IMAGES_DIR, SNAPSHOT_FILES, SNAPSHOT_PREFIX, TMP_PREFIX,
                              foreign_files, read_current)
from .codebook_setup import check_setup, setup_dict
from .codebook_state import export_state, from_state
from .config import CodebookConfig, ReasonEditConfig, RetrievalConfig
from .errors import CodebookCorruptError, ReasonEditError, RecordError
from .keystore import all_finite, trim_heap
from .locking import codebook_lock, write_errors
from .manifest import write_manifest, require_intact
from .records import IMAGE_FIELDS, EditRecord, make_record

logger = logging.getLogger(__name__)

FORMAT = "reasonedit-codebook"
FORMAT_VERSION = 2
"""1: float32 keys, no neighbour lists (migrated on load, once). 2: keys at key precision stored once,
neighbour lists, sigma and the IVF partition saved (load is O(N) reading)."""
_NO_LIMIT = 10 ** 9


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
    dropped_quarantine: list[str] = field(default_factory=list)
    """Quarantined edits left out because an image of theirs is missing from the folder."""
    rebuild_seconds: float = 0.0
    """Time spent rebuilding what an older format did not store (neighbour lists); 0 for the current one."""
    extra: dict[str, bytes] = field(default_factory=dict)
    """Side files saved with the snapshot (``save_codebook(extra=...)``, e.g. hidden-state fusion vectors
    and gate weights), checksum-verified; empty for codebooks saved without them."""

    @property
    def missing_raw(self) -> list[str]:
        """Committed edits whose raw record (or one of its images) was not kept: they cannot be re-embedded.
        Derived from the codebook and the records (a list of a million ids would cost ~80 bytes an edit)."""
        return sorted(e for e in self.codebook.edit_ids() if e not in self.records)


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


def is_codebook(path: Union[str, Path]) -> bool:
    return (Path(path) / CURRENT).is_file()


SNAPSHOT_SWITCH_RETRIES = 3
"""How often a lock-free reader re-reads ``CURRENT`` when the snapshot it named is gone meanwhile: a writer
in another process committed a new snapshot and removed the old one between the two reads."""


def _read_current(root: Path) -> str | None:
    try:
        return read_current(root)
    except (OSError, UnicodeDecodeError) as exc:
        raise CodebookCorruptError(f"{root / CURRENT} is unreadable ({type(exc).__name__}); run `reasonedit verify "
                                   f"--codebook {root} --repair`.") from None


def current_snapshot(root: Path) -> str | None:
    name = _read_current(root)
    for _ in range(SNAPSHOT_SWITCH_RETRIES):
        if name is None or (root / name).is_dir():
            break
        newer = _read_current(root)
        if newer == name:
            break
        name = newer  # a writer switched snapshots after CURRENT was read: read the new one
    if name is None:
        return None
    if not name.startswith(SNAPSHOT_PREFIX) or "/" in name or not (root / name).is_dir():
        raise CodebookCorruptError(f"{root / CURRENT} names {ascii(name)[:60]}, which is not a snapshot folder "
                                   f"here; the codebook folder was damaged or edited by hand. Run `reasonedit verify "
                                   f"--codebook {root} --repair`.")
    return name


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ReasonEditError(f"cannot save a codebook to {str(root)!r}: it is a file; give a folder path.")
    if root.is_dir() and not is_codebook(root):
        foreign = foreign_files(root)
        if foreign:
            raise ReasonEditError(f"{str(root)!r} is a non-empty folder that is not a ReasonEdit codebook "
                                  f"(it holds {foreign[:5]}); save to a new or empty folder.")
    root.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------- images and records
def _store_image(value: Any, root: Path, cache: dict[int, str]) -> str:
    """Store an image in ``root/images`` under its content hash; returns the relative path. Files are
    re-encoded as PNG from their decoded RGB pixels (what the model sees), so trailing data and metadata
    (EXIF, GPS) of the source file are never stored or shared."""
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
        try:
            with Image.open(src) as im:
                rgb = im.convert("RGB")
        except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise OSError(f"cannot decode {src} ({exc})") from exc
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        data, ext = buf.getvalue(), ".png"
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


def _records_from_rows(root: Path, text: str, skipped: list[tuple[str, str]] | None = None
                       ) -> tuple[dict[str, EditRecord], dict[str, EditRecord]]:
    """Committed and quarantined raw records; a record whose image file is gone is left out (its id and
    status go to ``skipped``): images are only needed to re-embed."""
    committed: dict[str, EditRecord] = {}
    quarantined: dict[str, EditRecord] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        gone = [f for f in IMAGE_FIELDS if isinstance(row["record"].get(f), str)
                and not (root / row["record"][f]).is_file()]
        if gone:
            logger.warning("%s: edit %s: its %s is missing from the folder; it cannot be re-embedded.", root,
                           row["record"].get("id"), gone[0])
            if skipped is not None:
                skipped.append((str(row["record"].get("id")), str(row.get("status"))))
            continue
        try:
            record = make_record(row["record"], image_root=root, index=lineno, max_rationale_chars=_NO_LIMIT,
                                 max_sentences=_NO_LIMIT)
        except RecordError as exc:
            raise CodebookCorruptError(f"{root}: stored edit record on line {lineno} is invalid: {exc}") from exc
        (quarantined if row.get("status") == "quarantined" else committed)[record.id] = record
    return committed, quarantined


# ---------------------------------------------------------------------- codebook <-> files
def _codebook_tables(codebook: Codebook) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Format 2: keys at key precision stored once (entry keys + merged contributions' own keys), the
    hubness neighbour lists, sigma and the IVF partition, so that a load reads instead of recomputing."""
    return export_state(codebook)


def _migrate_v1(tensors: Mapping[str, np.ndarray], table: Mapping[str, Any]) -> tuple[dict[str, np.ndarray],
                                                                                      dict[str, Any]]:
    """Format 1 (float32 keys, every contribution's key, no neighbour lists) -> format 2 tables."""
    entry_keys, contribution_keys = tensors["entry_keys"], tensors["contribution_keys"]
    ids = np.asarray(tensors["entry_ids"], np.int64)
    if [e["id"] for e in table["entries"]] != ids.tolist():
        raise CodebookCorruptError("keys.safetensors and entries.json disagree (entry ids).")
    extra: list[np.ndarray] = []
    entries = []
    for e in table["entries"]:
        rows = []
        for j, c in enumerate(e["contributions"]):
            row = {k: c[k] for k in ("edit_id", "kind", "value", "radius", "created")}
            if c.get("meta"):
                row["meta"] = c["meta"]
            if j:
                row["key_row"] = len(extra)
                extra.append(contribution_keys[c["key_row"]])
            rows.append(row)
        entries.append({"id": e["id"], "c": rows, **({"radius": e["radius"]} if len(rows) > 1 else {})})
    edit_order = list(dict.fromkeys(c["edit_id"] for e in table["entries"] for c in e["contributions"]))
    arrays = {"entry_ids": ids, "entry_keys": entry_keys,
              "contribution_keys": np.stack(extra) if extra else np.zeros((0, entry_keys.shape[1]), np.float32)}
    return arrays, {"dim": table["dim"], "next_id": table["next_id"], "version": table["version"],
                    "edit_order": edit_order, "entries": entries}


def _codebook_from_tables(tensors: Mapping[str, np.ndarray], table: Mapping[str, Any],
                          config: CodebookConfig, retrieval: RetrievalConfig, format_version: int = FORMAT_VERSION
                          ) -> Codebook:
    dim = int(table["dim"])
    if format_version < 2:
        tensors, table = _migrate_v1(tensors, table)
    ids = np.asarray(tensors["entry_ids"])
    entry_keys = tensors["entry_keys"]
    if entry_keys.shape != (len(ids), dim) or ("entries" in table and len(table["entries"]) != len(ids)):
        raise CodebookCorruptError("keys.safetensors and entries.json disagree (entry ids or key shapes).")
    for name in ("entry_keys", "contribution_keys"):
        t = tensors[name]
        if t.size and not all_finite(np.asarray(t)):
            raise CodebookCorruptError(f"keys.safetensors: {name} holds NaN/inf values.")
    if "nbr" in tensors and len(ids) and (tensors["nbr"].shape != (len(ids), int(table.get("hubness_k", 0)))):
        raise CodebookCorruptError("keys.safetensors: the neighbour lists do not match the entries.")
    try:
        return from_state(tensors, table, config, retrieval)
    except (KeyError, ValueError, IndexError) as exc:
        raise CodebookCorruptError(f"entries.json cannot be read as a codebook ({exc!r}).") from exc


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
    setup_values = setup_dict(setup)
    if setup_values["vision_dim"] + setup_values["text_dim"] != codebook.dim:
        raise ReasonEditError(f"the key setup gives dim {setup_values['vision_dim'] + setup_values['text_dim']} "
                              f"but the codebook has dim {codebook.dim}.")
    config_values = config.to_dict() if hasattr(config, "to_dict") else (dict(config) if config else None)
    with write_errors(root):
        _prepare_root(root)
    with write_errors(root), codebook_lock(root):
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
            "keys.safetensors": st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                        metadata={"format": FORMAT}),
            "entries.json": _json_bytes(table),
            "records.jsonl": b"".join(_json_bytes(r) + b"\n" for r in rows),
            "audit_new.jsonl": b"".join(_json_bytes(e.to_dict()) + b"\n" for e in new_events),
            **extra,
        }
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "saved": time.time(),
            "setup": setup_values, "config": config_values,
            "counts": {"entries": len(codebook), "edits": len(active), "contributions":
                       int(tensors["c_entry"].shape[0]), "records": len(rows),
                       "quarantined": len(quarantine or {})},
            "missing_raw": sorted(set(active) - {r["record"]["id"] for r in rows if r["status"] == "committed"}),
            "files": {name: _sha256(data) for name, data in payloads.items()},
        }
        previous = current_snapshot(root)
        number = int(previous[len(SNAPSHOT_PREFIX):]) + 1 if previous else 1
        name = f"{SNAPSHOT_PREFIX}{number:06d}"
        tmp = root / f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        for fname, data in payloads.items():
            _write_file(tmp / fname, data)
        _write_file(tmp / "meta.json", _json_bytes(meta))
        write_manifest(tmp, root, _image_names(rows))  # last: a snapshot with its manifest is complete
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
    used = _image_names(rows)
    images = root / IMAGES_DIR
    if images.is_dir():
        for child in images.iterdir():
            if child.name not in used:
                with contextlib.suppress(OSError):
                    child.unlink()


def _image_names(rows: Sequence[Mapping[str, Any]]) -> set[str]:
    return {Path(r["record"][f]).name for r in rows for f in IMAGE_FIELDS if isinstance(r["record"].get(f), str)}


def read_meta(path: Union[str, Path]) -> dict[str, Any]:
    """The ``meta.json`` of a codebook folder's live snapshot."""
    root = Path(path)
    for _ in range(SNAPSHOT_SWITCH_RETRIES):
        name = current_snapshot(root) if root.is_dir() else None
        if name is None:
            if root.name.startswith(SNAPSHOT_PREFIX) and is_codebook(root.parent):
                raise ReasonEditError(f"{str(root)!r} is one snapshot inside the codebook folder "
                                      f"{str(root.parent)!r}; give that folder (editor.save() returns the snapshot "
                                      "it wrote, not the folder).")
            raise ReasonEditError(f"no ReasonEdit codebook at {str(root)!r} (no {CURRENT} file); give the folder "
                                  "that editor.save() or editor.export_edits() wrote.")
        try:
            meta = json.loads((root / name / "meta.json").read_text(encoding="utf-8"))
            break
        except OSError:
            if _read_current(root) != name:
                continue  # read without a lock: a writer replaced this snapshot meanwhile, read the new one
            raise _unreadable_meta(root, name, "OSError") from None
        except (ValueError, RecursionError) as exc:
            raise _unreadable_meta(root, name, type(exc).__name__) from None
    else:
        raise ReasonEditError(f"the codebook at {str(root)!r} changed {SNAPSHOT_SWITCH_RETRIES} times while its "
                              "metadata was read (other processes are saving it); try again.")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CodebookCorruptError(f"{root / name / 'meta.json'} is not a ReasonEdit codebook's metadata.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ReasonEditError(f"the codebook at {str(root)!r} has format version {version!r}; this "
                              f"reasonedit_plugin reads up to {FORMAT_VERSION}. Upgrade reasonedit_plugin.")
    return meta


def _unreadable_meta(root: Path, name: str, why: str) -> CodebookCorruptError:
    return CodebookCorruptError(
        f"{root / name / 'meta.json'} is missing or unreadable ({why}); the codebook was damaged. Run "
        f"`reasonedit verify --codebook {root}` to see what else is affected, or restore it from a backup.")


def load_codebook(path: Union[str, Path], setup: Any = None, *,
                  codebook_config: CodebookConfig | None = None,
                  retrieval_config: RetrievalConfig | None = None, migrate: bool = True) -> StoredCodebook:
    """Read a codebook folder. With ``setup``, refuse (CodebookMismatchError) if it differs from the saved
    one. The index and hubness lists are rebuilt; retrieval answers equal those before saving. An older
    format is rewritten in the current one (once) unless ``migrate`` is False (the caller then calls
    :func:`migrate_folder` when it holds no read lock)."""
    root = Path(path)
    with codebook_lock(root, shared=True):
        meta = read_meta(root)
        name = current_snapshot(root)
        assert name is not None
        require_intact(root, name)
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
        version = int(meta["format_version"])
        started = time.perf_counter()
        codebook = _codebook_from_tables(tensors, table, codebook_config or saved_config.codebook,
                                         retrieval_config or saved_config.retrieval, version)
        del tensors, table, blobs["keys.safetensors"]
        skipped: list[tuple[str, str]] = []
        records, quarantine = _records_from_rows(root, blobs["records.jsonl"].decode("utf-8"), skipped)
        events = read_events(root / AUDIT_FILE)
        log = AuditLog(events)
        # events of the last save that a crash kept out of audit.jsonl (appended at the next save)
        log.merge(AuditEvent.from_dict(json.loads(line))
                  for line in blobs["audit_new.jsonl"].decode("utf-8").splitlines() if line.strip())
    meta.pop("missing_raw", None)  # derived again from the codebook and records (StoredCodebook.missing_raw)
    stored = StoredCodebook(root, name, meta, meta["setup"], meta.get("config"), codebook, records, quarantine,
                            list(log), [i for i, s in skipped if s == "quarantined"],
                            time.perf_counter() - started if version < FORMAT_VERSION else 0.0,
                            extra={f: blobs[f] for f in blobs if f not in SNAPSHOT_FILES})
    if migrate:
        migrate_folder(stored)
    trim_heap()  # the file's bytes and the load's temporaries are gone: give their pages back
    return stored


def migrate_folder(stored: StoredCodebook) -> bool:
    """Write a loaded old-format codebook back in the current format (once), saying so. Returns whether
    it did; a folder that cannot be written keeps its format (a warning says so)."""
    version = int(stored.meta["format_version"])
    seconds = stored.rebuild_seconds
    if version >= FORMAT_VERSION:
        return False
    try:
        with codebook_lock(stored.path):
            snapshot = save_codebook(stored.path, stored.codebook, stored.setup, config=stored.config,
                                     records=stored.records, quarantine=stored.quarantine,
                                     audit=AuditLog(stored.audit), kind=stored.meta.get("kind", "codebook"),
                                     extra=stored.extra)
    except (OSError, ReasonEditError) as exc:
        logger.warning("codebook %s is in format %d: its neighbour lists were rebuilt in %.1f s; it could not "
                       "be rewritten in format %d (%s), so the next load rebuilds them again. Save it to a "
                       "writable folder to keep the migration.", stored.path, version, seconds, FORMAT_VERSION,
                       exc)
        return False
    stored.snapshot = snapshot.name
    stored.meta = read_meta(stored.path)
    logger.warning("codebook %s migrated from format %d to %d (neighbour lists built once in %.1f s, saved "
                   "as %s); later loads read them.", stored.path, version, FORMAT_VERSION, seconds, snapshot.name)
    return True
