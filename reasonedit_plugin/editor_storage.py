"""The editor's side of a codebook folder: save an editor under the writer's lock, open one from a folder.

The folder format, its durable writes and its reads are :mod:`.storage`'s; this module adds what an editor
brings to them: its config (with what calibration chose), its records, quarantine, audit log and side files,
and the check that no other writer changed the folder since the editor loaded it (:mod:`.locking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from .audit import AuditLog
from .codebook_layout import SNAPSHOT_PREFIX
from .config import ReasonEditConfig
from .errors import ReasonEditError
from .locking import check_unchanged, codebook_lock, editor_token, write_errors
from .manifest import require_intact
from .storage import current_snapshot, is_codebook, load_codebook, migrate_folder, read_meta, save_codebook


def saved_config(editor: Any) -> dict[str, Any]:
    """The editor's config with 'auto' layer/scale replaced by what calibration chose."""
    values = editor.config.to_dict()
    values["embedding"]["layer"] = editor.keys.vision_module
    values["embedding"]["scale"] = editor.keys.scale
    milvus = values["retrieval"].get("milvus")
    if milvus and milvus.get("token"):  # credentials stay in the YAML / environment, never in the folder
        milvus["token"] = ""
    return values


def save_editor(editor: Any, path: Union[str, Path]) -> Path:
    """Save under the codebook lock, refusing when another writer changed the folder since ``editor``
    loaded it (locking.check_unchanged)."""
    with write_errors(path), codebook_lock(path):
        check_unchanged(editor, path)
        snapshot = save_codebook(path, editor.codebook, editor.keys.setup, config=saved_config(editor),
                                 records=editor.edit_records, quarantine=editor.quarantine, audit=editor.audit,
                                 extra=editor.side_files())
        editor_token(editor, path)
    return snapshot


def codebook_root(path: Union[str, Path]) -> Path:
    """The codebook folder ``path`` names: itself, or, for the live snapshot inside one (what ``editor.save()``
    returns), its parent. An older snapshot is refused: it is not what the folder holds now."""
    root = Path(path)
    if is_codebook(root) or not root.name.startswith(SNAPSHOT_PREFIX) or not is_codebook(root.parent):
        return root
    live = current_snapshot(root.parent)
    if live != root.name:
        raise ReasonEditError(f"{str(root)!r} is an older snapshot of the codebook folder {str(root.parent)!r} "
                              f"(its live one is {live}); give that folder.")
    return root.parent


def load_editor(cls: type, path: Union[str, Path], vlm: Any, config: Any = None, text_encoder: Any = None,
                **kwargs: Any) -> Any:
    path = codebook_root(path)
    meta = read_meta(path)
    if config is None and meta.get("config"):
        try:
            config = ReasonEditConfig.from_dict(meta["config"])
        except ReasonEditError:  # a damaged meta.json is named as such, not as a bad setting
            require_intact(Path(path), current_snapshot(Path(path)))
            raise
    editor = cls(vlm, config, text_encoder=text_encoder, **kwargs)
    with codebook_lock(path, shared=True):
        stored = load_codebook(path, editor.keys.setup, codebook_config=editor.config.codebook,
                               retrieval_config=editor.config.retrieval, migrate=False)
        editor_token(editor, path)
    if migrate_folder(stored):  # outside the read lock: migrating writes a snapshot
        editor_token(editor, path)
    editor._codebook = stored.codebook
    editor._retriever = None
    editor.edit_records = dict(stored.records)
    editor.quarantine = dict(stored.quarantine)
    editor.audit = AuditLog(stored.audit)
    editor.load_side_files(stored.extra)
    return editor
