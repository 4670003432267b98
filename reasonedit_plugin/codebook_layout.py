"""The names inside a codebook folder (the layout ``storage.py`` documents) and the one read of ``CURRENT``.

Both the format (``storage.py``) and the writers' lock (``locking.py``) need them; neither imports the other's
side, so they live here."""

from __future__ import annotations

from pathlib import Path

CURRENT = "CURRENT"
"""Names the live snapshot; replaced atomically (the commit point)."""
AUDIT_FILE = "audit.jsonl"
IMAGES_DIR = "images"
LOCK_FILE = "LOCK"
SNAPSHOT_PREFIX = "snapshot-"
TMP_PREFIX = ".tmp-"
"""Temporary files and folders of a save in progress; removed when a save fails."""
AUDIT_NEW = "audit_new.jsonl"
"""A snapshot's own audit events, appended to ``audit.jsonl`` after the commit."""
SNAPSHOT_FILES = ("keys.safetensors", "entries.json", "records.jsonl", AUDIT_NEW)


def read_current(root: Path) -> str | None:
    """The snapshot name ``CURRENT`` holds ("" for an empty file), or None when the folder has no ``CURRENT``.
    An unreadable file raises ``OSError`` / ``UnicodeDecodeError``: the caller decides what that means."""
    try:
        return (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def foreign_files(root: Path) -> list[str]:
    """Names in the folder ``root`` that no codebook writes (sorted): a folder holding any is not one to save into.
    A writer creating a codebook there has its own files (lock, images, temporaries) before ``CURRENT``."""
    ours = {CURRENT, AUDIT_FILE, IMAGES_DIR, LOCK_FILE}
    return sorted(p.name for p in root.iterdir()
                  if p.name not in ours and not p.name.startswith((SNAPSHOT_PREFIX, TMP_PREFIX)))
