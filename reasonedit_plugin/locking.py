"""Writers of a codebook folder: one at a time, never over another writer's changes (issue 14).

Two mechanisms, both needed:

* :func:`codebook_lock` — an advisory ``flock`` on ``<codebook>/LOCK`` held over a whole
  read -> edit -> save (the CLI holds it from loading the codebook to committing the new snapshot). It waits
  up to ``timeout`` seconds, then raises :class:`CodebookBusyError` naming the holder (pid, command, how
  long). It is re-entrant within a process: ``save_codebook`` takes it again inside the CLI's lock.
* :func:`check_unchanged` — optimistic versioning for API users who load, edit and save without the lock:
  an editor remembers the snapshot it loaded (``editor_token``); saving refuses with
  :class:`CodebookChangedError` when another writer committed a newer snapshot in between, or when the
  folder holds a codebook this editor never loaded (saving would silently drop its edits).

:func:`write_errors` turns an ``OSError`` during a save (full disk, read-only folder, ``ulimit -f``,
permissions) into one line naming the file and saying that the previous snapshot is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from .codebook_layout import LOCK_FILE, TMP_PREFIX, read_current
from .errors import ReasonEditError

try:  # POSIX advisory locks; elsewhere only the optimistic check protects a codebook
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT = 120.0
"""Seconds a writer waits for another one before giving up with :class:`CodebookBusyError`."""
_POLL = 0.05


class CodebookBusyError(ReasonEditError):
    """Another process holds the codebook's lock longer than the timeout."""


class CodebookChangedError(ReasonEditError):
    """The codebook folder changed since this editor loaded it; saving would lose the other writer's edits."""


class CodebookWriteError(ReasonEditError):
    """The operating system refused a write (full disk, read-only folder, file size limit, permissions)."""


@dataclass
class _Held:
    handle: Any
    shared: bool
    depth: int


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.RLock()


def _key(root: Path) -> str:
    return os.path.realpath(root)


def _holder_text(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    since = info.get("since")
    held = f", for {time.time() - float(since):.0f} s" if isinstance(since, (int, float)) else ""
    command = str(info.get("command", ""))[:80]
    return f"pid {info.get('pid')} on {info.get('host', '?')} ({command}{held})"


@contextlib.contextmanager
def codebook_lock(path: Union[str, Path], *, shared: bool = False,
                  timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the codebook's lock (exclusive for writers, shared for readers) for the ``with`` block.

    An exclusive lock creates the folder if needed. A read-only folder without a ``LOCK`` file is read
    without locking (nothing can write it). Raises :class:`CodebookBusyError` after ``timeout`` seconds."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ReasonEditError(f"{str(root)!r} is a file, not a codebook folder; give a folder path.")
    if timeout < 0:
        raise ReasonEditError(f"lock timeout {timeout!r} must be >= 0 seconds.")
    key = _key(root)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held.shared and not shared:
                raise ReasonEditError(f"cannot write {str(root)!r} while this process reads it under a shared "
                                      "lock; finish reading first.")
            held.depth += 1
    if held is not None:
        try:
            yield
        finally:
            with _HELD_GUARD:
                held.depth -= 1
        return
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    lock = root / LOCK_FILE
    deadline = time.monotonic() + timeout
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:  # until we hold a lock on the file that is (still) <root>/LOCK
        if not shared:
            root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if not shared:
                raise
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:  # read-only copy without a LOCK file: nothing can write it concurrently
                yield
                return
        if _acquire(fd, mode, deadline, timeout, root, lock):
            break
        os.close(fd)  # the holder removed the folder it had created: start again
    try:
        if not shared:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                    "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))}
            with contextlib.suppress(OSError):  # the holder note is a courtesy; a full disk must not block
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
        with _HELD_GUARD:
            _HELD[key] = _Held(fd, shared, 1)
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            if not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, mode: int, deadline: float, timeout: float, root: Path, lock: Path) -> bool:
    """flock ``fd`` (polling until ``deadline``); False if the locked file is no longer ``lock``."""
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise CodebookBusyError(
                    f"codebook {str(root)!r} is busy: {_holder_text(lock)} holds its lock; waited {timeout:g} s. "
                    "Try again when that writer has finished (or raise --lock-timeout).") from None
            time.sleep(_POLL)
    try:
        same = os.path.samestat(os.fstat(fd), os.stat(lock))
    except FileNotFoundError:
        same = False
    if not same:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return same


# ---------------------------------------------------------------------- optimistic versioning
def current_snapshot_name(path: Union[str, Path]) -> str | None:
    """The snapshot ``CURRENT`` names, or None when the folder holds no codebook."""
    try:
        return read_current(Path(path)) or None
    except (OSError, UnicodeDecodeError):
        return None


def editor_token(editor: Any, path: Union[str, Path]) -> None:
    """Remember that ``editor`` now mirrors the snapshot at ``path`` (after loading or saving it)."""
    tokens = getattr(editor, "_snapshot_tokens", None)
    if tokens is None:
        tokens = {}
        editor._snapshot_tokens = tokens
    tokens[_key(Path(path))] = current_snapshot_name(path)


def check_unchanged(editor: Any, path: Union[str, Path]) -> None:
    """Refuse to save ``editor`` to ``path`` if that would overwrite edits it has not seen.

    Call with the codebook's exclusive lock held."""
    root = Path(path)
    live = current_snapshot_name(root)
    if live is None:
        return
    seen = (getattr(editor, "_snapshot_tokens", None) or {}).get(_key(root), False)
    if seen is False:
        raise CodebookChangedError(
            f"{str(root)!r} already holds a codebook that this editor did not load; saving would replace "
            "its edits. Load it with ReasonEditor.load(path) and add to it, or save to another folder.")
    if seen != live:
        raise CodebookChangedError(
            f"the codebook at {str(root)!r} was changed by another writer since this editor loaded it "
            f"({seen} -> {live}); saving would lose that writer's edits. Load it again and re-apply your "
            "edits (the CLI does this under the codebook lock).")


# ---------------------------------------------------------------------- write errors
_WHY = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted", errno.EFBIG: "file size limit exceeded (ulimit -f)"}


@contextlib.contextmanager
def write_errors(path: Union[str, Path], action: str = "save the codebook") -> Iterator[None]:
    """Turn an ``OSError`` in the block into a one-line :class:`CodebookWriteError`; temporary snapshot
    folders left by the failed write are removed (the committed snapshot is never touched)."""
    root = Path(path)
    try:
        yield
    except OSError as exc:
        why = _WHY.get(exc.errno or -1, exc.strerror or str(exc))
        where = exc.filename or root
        if root.is_dir():
            for child in root.iterdir():
                if child.name.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
        live = current_snapshot_name(root)
        state = (f"the folder still holds its last complete snapshot ({live}), nothing in it was lost"
                 if live else "nothing was saved")
        raise CodebookWriteError(f"cannot {action} at {str(root)!r}: {why} (writing {str(where)!r}); {state}. "
                                 "Free space or choose a writable folder, then run the command again.") from None
