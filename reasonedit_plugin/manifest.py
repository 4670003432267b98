"""Tamper evidence for a codebook folder: a manifest of checksums over every file, verify and repair
(issue 14).

Every save writes ``<snapshot>/MANIFEST.json`` (inside the snapshot, so it is committed atomically with it)::

    {"format": "reasonedit-manifest", "version": 1,
     "files":  {"meta.json": sha256, "entries.json": sha256, ...},   # every other file of the snapshot
     "images": {"<hash>.png": sha256, ...},                          # every image its records use
     "audit":  {"bytes": N, "sha256": sha256 of the first N bytes of audit.jsonl, "expected": true},
     "checksum": sha256 of the above (sorted-key JSON)}

``audit.jsonl`` is append-only: the manifest pins the part written before the snapshot; the events of the
save itself live in the snapshot's ``audit_new.jsonl`` (checksummed) and are appended after the commit.

:func:`verify_codebook` lists every problem; :func:`require_intact` (called when a codebook is loaded)
refuses a changed or missing snapshot file, a changed image or an edited audit log with one line naming
the file, and only warns about missing images (their edits cannot be re-embedded for another model, they
still answer) and a missing audit log (its history is gone). :func:`repair_codebook` (``reasonedit verify
--repair``) rebuilds what can be rebuilt. Checksums catch damage and hand edits; they are not a signature
(someone who rewrites the manifest too is not detected).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

from .codebook_layout import AUDIT_FILE, AUDIT_NEW, CURRENT, IMAGES_DIR, SNAPSHOT_PREFIX, TMP_PREFIX, read_current
from .errors import CodebookCorruptError, ReasonEditError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "MANIFEST.json"
MANIFEST_FORMAT = "reasonedit-manifest"
MANIFEST_VERSION = 1
FIRST_FORMAT_WITH_MANIFEST = 2
"""Codebooks of format 1 (``meta.json``'s ``format_version``) were written before manifests: they load
(their snapshot files are still checked against ``meta.json``'s checksums) and are rewritten with one."""
_CHUNK = 1 << 20


def _sha256_file(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as fh:
        while remaining is None or remaining > 0:
            chunk = fh.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
            if not chunk:
                break
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
    return h.hexdigest()


def _audit_prefix(path: Path) -> dict[str, Any]:
    """Size and hash of the complete lines of the audit log (a torn tail is cut by the next append)."""
    if not path.is_file():
        return {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    return {"bytes": keep, "sha256": hashlib.sha256(data[:keep]).hexdigest()}


def _self_checksum(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _previous_image_hashes(root: Path) -> dict[str, str]:
    """Image checksums of the live snapshot's manifest (verified when that snapshot was loaded)."""
    try:
        name = read_current(root)
        if name is None:
            return {}
        manifest = json.loads((root / name / MANIFEST_FILE).read_text(encoding="utf-8"))
        images = manifest["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in images.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(images, dict) else {}


def write_manifest(snapshot_dir: Path, root: Path, image_names: Iterable[str]) -> None:
    """Write ``MANIFEST.json`` into a snapshot folder that is about to be committed (fsynced)."""
    files = {p.name: _sha256_file(p) for p in sorted(snapshot_dir.iterdir())
             if p.is_file() and p.name != MANIFEST_FILE}
    known = _previous_image_hashes(root)  # images are write-once and content-addressed: hash each once
    images = {name: known.get(name) or _sha256_file(root / IMAGES_DIR / name) for name in sorted(set(image_names))}
    audit = _audit_prefix(root / AUDIT_FILE)
    new_events = snapshot_dir / AUDIT_NEW
    audit["expected"] = audit["bytes"] > 0 or (new_events.is_file() and new_events.stat().st_size > 0)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files, "images": images,
                "audit": audit}
    manifest["checksum"] = _self_checksum(manifest)
    with open(snapshot_dir / MANIFEST_FILE, "wb") as fh:
        fh.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
        fh.flush()
        os.fsync(fh.fileno())


def _format_version(snap: Path) -> int:
    """The snapshot's format version from its meta.json (a large number when unreadable: then the manifest
    rule applies)."""
    try:
        version = json.loads((snap / "meta.json").read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError, RecursionError):
        return 1 << 30
    return version if isinstance(version, int) else 1 << 30


@dataclass
class Problem:
    """One finding of :func:`verify_codebook`."""

    path: str
    """Relative to the codebook folder."""
    kind: str
    """``missing``, ``changed``, ``unreadable`` or ``unexpected``."""
    area: str
    """``snapshot`` (keys, entries, records, metadata), ``image``, ``audit`` or ``current``."""
    fatal: bool
    """Loading refuses the codebook while this problem exists."""
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class VerifyReport:
    root: Path
    snapshot: str | None
    problems: list[Problem] = field(default_factory=list)
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    def missing_images(self) -> set[str]:
        return {Path(p.path).name for p in self.problems if p.area == "image" and p.kind == "missing"}


def _snapshots(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(SNAPSHOT_PREFIX))


def _read_manifest(snap: Path) -> dict[str, Any] | None:
    path = snap / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CodebookCorruptError(f"{path} is unreadable ({exc}); the codebook was damaged. Restore the folder "
                                   "from a backup.") from None
    ok = (isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT
          and all(isinstance(manifest.get(k), dict) for k in ("files", "images", "audit")))
    if not ok or manifest.get("checksum") != _self_checksum(manifest):
        raise CodebookCorruptError(f"{path} does not match its own checksum; the codebook was damaged or edited. "
                                   "Restore the folder from a backup.")
    return manifest


def verify_codebook(path: Union[str, Path], snapshot: str | None = None) -> VerifyReport:
    """Check every file of the codebook at ``path`` against the live snapshot's manifest."""
    root = Path(path)
    if not root.is_dir():
        raise ReasonEditError(f"codebook folder {str(root)!r} does not exist.")
    report = VerifyReport(root, snapshot)
    if snapshot is None:
        try:
            snapshot = read_current(root)
            state = "missing"
        except (OSError, UnicodeDecodeError):
            snapshot, state = None, "unreadable"
        if snapshot is None:
            found = _snapshots(root)
            if not found:
                raise ReasonEditError(f"no ReasonEdit codebook at {str(root)!r} (no {CURRENT} file and no "
                                      "snapshot folder).")
            report.problems.append(Problem(CURRENT, state, "current", True,
                                           f"snapshots present: {found}; --repair points it at the newest intact one"))
            return report
        if not snapshot.startswith(SNAPSHOT_PREFIX) or not (root / snapshot).is_dir():
            report.problems.append(Problem(CURRENT, "changed", "current", True,
                                           f"names {snapshot[:60]!r}, which is not a snapshot folder here"))
            return report
        report.snapshot = snapshot
    snap = root / snapshot
    manifest = _read_manifest(snap)
    if manifest is None:
        if _format_version(snap) < FIRST_FORMAT_WITH_MANIFEST:
            report.problems.append(Problem(f"{snapshot}/{MANIFEST_FILE}", "missing", "snapshot", False,
                                           "written before manifests (format 1); loading rewrites it with one"))
        else:
            report.problems.append(Problem(f"{snapshot}/{MANIFEST_FILE}", "missing", "snapshot", True,
                                           "the checksums of this codebook are gone; it was damaged or edited"))
        return report
    for name, digest in sorted(manifest["files"].items()):
        rel, file = f"{snapshot}/{name}", snap / name
        report.files_checked += 1
        if not file.is_file():
            report.problems.append(Problem(rel, "missing", "snapshot", True))
        elif _sha256_file(file) != digest:
            report.problems.append(Problem(rel, "changed", "snapshot", True, "does not match its checksum"))
    for extra in sorted(p.name for p in snap.iterdir()):
        if extra != MANIFEST_FILE and extra not in manifest["files"]:
            report.problems.append(Problem(f"{snapshot}/{extra}", "unexpected", "snapshot", False,
                                           "not written by reasonedit; ignored"))
    for name, digest in sorted(manifest["images"].items()):
        rel, file = f"{IMAGES_DIR}/{name}", root / IMAGES_DIR / name
        report.files_checked += 1
        if not file.is_file():
            report.problems.append(Problem(rel, "missing", "image", False,
                                           "its edits still answer but cannot be re-embedded for another model"))
        elif _sha256_file(file) != digest:
            report.problems.append(Problem(rel, "changed", "image", True, "does not match its checksum"))
    audit = root / AUDIT_FILE
    want = manifest["audit"]
    report.files_checked += 1
    if int(want.get("bytes", 0)) > 0 or want.get("expected"):
        if not audit.is_file():
            report.problems.append(Problem(AUDIT_FILE, "missing", "audit", False,
                                           "the history of the codebook's edits is gone"))
        elif audit.stat().st_size < int(want["bytes"]) or _sha256_file(audit, int(want["bytes"])) != want["sha256"]:
            report.problems.append(Problem(AUDIT_FILE, "changed", "audit", True,
                                           "its earlier entries were edited or cut (it is append-only)"))
    return report


def require_intact(path: Union[str, Path], snapshot: str) -> VerifyReport:
    """Raise :class:`CodebookCorruptError` naming the damaged files if loading must be refused; log the
    problems that only reduce what the codebook can do."""
    report = verify_codebook(path, snapshot)
    fatal = report.fatal
    if fatal:
        named = "; ".join(str(p) for p in fatal[:3]) + (f"; and {len(fatal) - 3} more" if len(fatal) > 3 else "")
        raise CodebookCorruptError(
            f"the codebook at {str(path)!r} fails its checksums: {named}. It was damaged or edited by hand; "
            f"run `reasonedit verify --codebook {path} --repair` to rebuild what can be rebuilt, or restore it "
            "from a backup.")
    for p in report.problems:
        logger.warning("codebook %s: %s", path, p)
    return report


# ---------------------------------------------------------------------- repair
def _intact_snapshot(root: Path) -> str | None:
    for name in reversed(_snapshots(root)):
        try:
            report = verify_codebook(root, name)
        except ReasonEditError:
            continue
        if not any(p.area == "snapshot" and p.fatal for p in report.problems):
            return name
    return None


def repair_codebook(path: Union[str, Path]) -> list[str]:
    """Rebuild what can be rebuilt; returns what was done (one line each).

    * ``CURRENT`` missing or wrong: pointed at the newest snapshot whose files match its manifest.
    * a changed image: removed; a missing image: its edit's raw record is dropped (the edit still answers,
      it can no longer be re-embedded); a quarantined edit without its image is dropped.
    * an edited audit log is moved aside (``audit.jsonl.damaged-<time>``); a missing one is reported;
      a ``repaired`` event records the repair.
    * then the codebook is saved again as a new snapshot with a fresh manifest.

    A damaged snapshot file (keys, entries, records, metadata) cannot be rebuilt: restore a backup."""
    from .audit import AuditLog
    from .locking import codebook_lock
    from .storage import load_codebook, save_codebook

    root = Path(path)
    done: list[str] = []
    with codebook_lock(root):
        report = verify_codebook(root)
        if any(p.area == "current" for p in report.problems):
            name = _intact_snapshot(root)
            if name is None:
                raise CodebookCorruptError(f"cannot repair {str(root)!r}: {CURRENT} is lost and no snapshot "
                                           "folder is intact. Restore the folder from a backup.")
            tmp = root / f"{TMP_PREFIX}{CURRENT}"
            tmp.write_text(name + "\n", encoding="utf-8")
            os.replace(tmp, root / CURRENT)
            done.append(f"{CURRENT} now names {name}")
            report = verify_codebook(root)
        snapshot_damage = [p for p in report.problems if p.area == "snapshot" and p.fatal]
        if snapshot_damage:
            raise CodebookCorruptError(
                f"cannot repair {str(root)!r}: {'; '.join(map(str, snapshot_damage[:3]))}. The keys, entries, "
                "records and metadata cannot be rebuilt from the rest; restore the folder from a backup.")
        for p in report.problems:
            if p.area == "image" and p.kind == "changed":
                (root / p.path).unlink()
                done.append(f"removed {p.path} (changed); its edits can no longer be re-embedded")
            elif p.area == "image" and p.kind == "missing":
                done.append(f"{p.path} is missing; its edits can no longer be re-embedded")
            elif p.area == "audit" and p.kind == "changed":
                aside = root / f"{AUDIT_FILE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
                os.replace(root / AUDIT_FILE, aside)
                done.append(f"{AUDIT_FILE} was edited: moved aside to {aside.name}; a new log starts here")
            elif p.area == "audit" and p.kind == "missing":
                done.append(f"{AUDIT_FILE} is missing: the earlier history is lost; a new log starts here")
            elif p.kind == "unexpected":
                done.append(f"{p.path}: not written by reasonedit (left alone)")
        if not done:
            return done
        stored = load_codebook(root)
        if stored.dropped_quarantine:
            done.append(f"dropped quarantined edits {stored.dropped_quarantine} (their images are gone; they "
                        "were never active)")
        log = AuditLog(stored.audit)
        log.record("repaired", None, actions=list(done))
        save_codebook(root, stored.codebook, stored.setup, config=stored.config, records=stored.records,
                      quarantine=stored.quarantine, audit=log, kind=stored.meta.get("kind", "codebook"))
        done.append("saved a new snapshot with a fresh manifest")
    return done
