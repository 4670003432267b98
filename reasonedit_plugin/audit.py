"""The audit log: who changed the codebook, when, why, and which edit (issue 7).

Events are kept in memory by the editor (:class:`AuditLog`) and appended to ``audit.jsonl`` in the
codebook folder when it is saved (``storage.py``). The file is append-only JSON lines; a torn last line
(a crash in the middle of an append) is detected, skipped on reading and cut off before the next
append, so the file always parses.

Each event: ``id`` (unique; saving appends the events whose id the file lacks), ``seq`` (order within
the in-memory log), ``time`` (unix seconds), ``action`` (one of :data:`ACTIONS`),
``edit_id``, ``who`` (the ``author`` given with the edit, else the OS user), ``why`` (the ``reason``
given with the edit), ``entry_ids`` and free ``details``.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import ReasonEditError

logger = logging.getLogger(__name__)

ACTIONS = ("added", "merged", "removed", "evicted", "quarantined", "approved", "rejected", "imported", "exported",
           "saved", "repaired")
"""``added``: an edit's entries were committed; ``merged``: one of its entries joined an existing entry;
``removed``: an edit was undone; ``evicted``: removed by the optional never-retrieved pruning;
``quarantined`` / ``approved`` / ``rejected``: rationale-guard outcomes; ``imported`` / ``exported``:
knowledge modules; ``saved``: a snapshot was written; ``repaired``: ``reasonedit verify --repair`` rebuilt
the folder (details list what it did)."""


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers; the log then says who=None
        return None


@dataclass
class AuditEvent:
    seq: int
    id: str
    time: float
    action: str
    edit_id: str | None = None
    who: str | None = None
    why: str | None = None
    entry_ids: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "AuditEvent":
        known = {k: row[k] for k in ("seq", "id", "time", "action", "edit_id", "who", "why", "entry_ids", "details")
                 if k in row}
        return cls(**known)

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        parts = [f"#{self.seq} {when} {self.action}"]
        if self.edit_id is not None:
            parts.append(f"edit={self.edit_id!r}")
        if self.who:
            parts.append(f"by={self.who}")
        if self.why:
            parts.append(f"why={self.why!r}")
        if self.entry_ids:
            parts.append(f"entries={self.entry_ids}")
        return " ".join(parts)


class AuditLog:
    """In-memory audit events; ``storage.save_codebook`` appends the ones not yet on disk."""

    def __init__(self, events: Iterable[AuditEvent] = ()):
        self._events: list[AuditEvent] = list(events)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self._events)

    @property
    def last_seq(self) -> int:
        return self._events[-1].seq if self._events else 0

    def record(self, action: str, edit_id: str | None = None, *, who: str | None = None,
               why: str | None = None, entry_ids: Sequence[int] = (), **details: Any) -> AuditEvent:
        if action not in ACTIONS:
            raise ReasonEditError(f"audit action {action!r} is not one of {list(ACTIONS)}.")
        event = AuditEvent(self.last_seq + 1, uuid.uuid4().hex, time.time(), action, edit_id,
                           who if who is not None else current_user(), why, [int(i) for i in entry_ids],
                           _json_safe(details))
        self._events.append(event)
        logger.debug("audit: %s", event)
        return event

    def events(self, edit_id: str | None = None, action: str | None = None) -> list[AuditEvent]:
        return [e for e in self._events
                if (edit_id is None or e.edit_id == edit_id) and (action is None or e.action == action)]

    def missing_from(self, ids: set[str]) -> list[AuditEvent]:
        """Events whose id is not in ``ids`` (those of a file): what a save must append."""
        return [e for e in self._events if e.id not in ids]

    def adopt(self, events: Iterable[AuditEvent], **details: Any) -> int:
        """Append copies of another log's events (an imported module's history), renumbered after this
        log's last event, keeping their id, time, who and why; ``details`` are added to each (e.g. the
        source). Events already present (same id) are skipped. Returns how many were added."""
        have = {e.id for e in self._events}
        added = 0
        for e in events:
            if e.id in have:
                continue
            copy = AuditEvent(self.last_seq + 1, e.id, e.time, e.action, e.edit_id, e.who, e.why,
                              list(e.entry_ids), {**e.details, **_json_safe(details)})
            self._events.append(copy)
            have.add(e.id)
            added += 1
        return added

    def merge(self, events: Iterable[AuditEvent]) -> None:
        """Add events not already present (by id), keeping order; used when loading."""
        have = {e.id for e in self._events}
        for e in events:
            if e.id not in have:
                self._events.append(e)
                have.add(e.id)


def _json_safe(value: Any) -> Any:
    """Details must survive JSON: non-serialisable values become their repr."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): _json_safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_safe(v) for v in value]
        return repr(value)


def read_events(path: str | Path) -> list[AuditEvent]:
    """All complete events of an audit file (a torn last line is skipped with a warning)."""
    path = Path(path)
    if not path.is_file():
        return []
    events = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(AuditEvent.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            if lineno == len(lines):  # the last line has no newline: an append was cut short
                logger.warning("%s: skipping a torn last line (an interrupted append).", path)
            else:
                raise ReasonEditError(f"{path}:{lineno}: corrupt audit log line ({exc}); the log is "
                                      "append-only, so it was edited by hand or damaged.") from exc
    return events


def append_events(path: str | Path, events: Sequence[AuditEvent]) -> None:
    """Append events as JSON lines and fsync. A torn tail from an earlier crash is cut off first."""
    if not events:
        return
    path = Path(path)
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size:
            fh.seek(max(0, size - 1))
            if fh.read(1) != b"\n":  # torn tail: cut back to the last complete line
                fh.seek(0)
                data = fh.read()
                keep = data.rfind(b"\n") + 1
                fh.truncate(keep)
                logger.warning("%s: cut off a torn last line (%d bytes) before appending.", path, size - keep)
            fh.seek(0, os.SEEK_END)
        payload = b"".join(json.dumps(e.to_dict(), ensure_ascii=True, allow_nan=False).encode() + b"\n"
                           for e in events)
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def who_why(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """The ``author`` / ``reason`` (or ``who`` / ``why``) fields of an edit's provenance."""
    who = meta.get("author", meta.get("who"))
    why = meta.get("reason", meta.get("why"))
    return (None if who is None else str(who)), (None if why is None else str(why))


@dataclass
class EditInfo:
    """One edit as ``ReasonEditor.list_edits()`` shows it."""

    edit_id: str
    status: str
    """``active`` (its entries are in the codebook) or ``quarantined`` (held for approval)."""
    entry_ids: list[int] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    """How many contributions of each kind (answer / reasoning / patch)."""
    merged_entries: list[int] = field(default_factory=list)
    """Entries it shares with other edits."""
    created: float | None = None
    who: str | None = None
    why: str | None = None
    flags: list[str] = field(default_factory=list)
    """Rationale-guard flags (from the audit log)."""
    has_raw_record: bool = False
    """Whether the raw edit record is kept (needed to re-embed it for another model)."""

    def __str__(self) -> str:
        text = f"{self.edit_id} [{self.status}] entries={self.entry_ids} kinds={self.kinds}"
        if self.who:
            text += f" by={self.who}"
        if self.flags:
            text += f" flags={self.flags}"
        return text
