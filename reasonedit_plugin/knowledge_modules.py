"""Knowledge modules: a codebook's edits written out as a portable folder (keys, entries, raw records,
their audit history) and read into another editor — re-embedded through it when its key setup differs —
plus the editor's list of its edits. The folder format and durable writes are :mod:`.storage`'s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from .audit import AuditLog, EditInfo, who_why
from .codebook import Codebook, PendingEntry
from .errors import CodebookMismatchError, ReasonEditError
from .codebook_setup import check_setup, setup_dict, setup_differences
from .editor_storage import saved_config
from .storage import load_codebook, read_meta, save_codebook


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
    # a module is a folder to import elsewhere, not a served collection: its search stays in-process
    module = Codebook(editor.codebook.dim, editor.config.codebook,
                      dataclasses.replace(editor.config.retrieval, backend="faiss", milvus=None))
    for edit_id, (pending, meta) in _pending_by_edit(editor.codebook, _edit_order(editor.codebook, wanted)).items():
        module.add_edit(edit_id, pending, meta)
    log = AuditLog([e for e in editor.audit if e.edit_id in set(wanted)])
    log.record("exported", None, edit_ids=wanted, source=str(path))
    snapshot = save_codebook(path, module, editor.keys.setup, config=saved_config(editor),
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
    diffs = setup_differences(meta["setup"], setup_dict(editor.keys.setup))
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
    carried = set(order)  # the module's own history of these edits comes along (issue 14)
    editor.audit.adopt([e for e in stored.audit if e.edit_id in carried], imported_from=str(path))
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
