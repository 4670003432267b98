"""The ``reasonedit`` verbs that change or check a saved codebook (issue 14)::

    reasonedit edit    --edits E.jsonl --out CODEBOOK [--hparams YAML]
    reasonedit inspect --codebook CODEBOOK [--image IMG --question Q [--choices A B C]]
    reasonedit remove  --codebook CODEBOOK ID [ID ...]
    reasonedit approve --codebook CODEBOOK [ID ...]          # no id: list the quarantined edits
    reasonedit export  --codebook CODEBOOK --ids ID [ID ...] --out MODULE
    reasonedit import  --codebook CODEBOOK --module MODULE [--reembed auto|yes|no] [--no-guard]
    reasonedit verify  --codebook CODEBOOK [--repair]

Every writer holds the codebook's lock (``locking.py``) from loading to saving, so concurrent commands
serialise instead of losing edits. The user's hparams YAML wins over the configuration stored in the
codebook; what it changes is said in one line, and a YAML whose key-defining settings (model, vision
layer, lambda, text encoder, image side) differ from the codebook's is refused naming each field.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from . import cli_inputs as inputs
from .cli_inputs import (add_model, add_records, check_rationales, codebook_folder, load_edit_records, load_hparams,
                         needs_calibration, say)
from .errors import CodebookMismatchError, ReasonEditError

KEY_FIELDS = ("embedding.max_image_side",)
"""Config fields that change keys but are not part of the saved KeySetup (that one is checked on load)."""
SETUP_FIELDS = ("embedding.layer", "embedding.scale", "embedding.text_encoder")
"""Checked by the KeySetup comparison when loading (resolved module path, lambda, encoder weights)."""


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, stored value, YAML value) for every field where the YAML differs from the codebook."""
    a, b = _flat(stored), _flat(wanted)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in SETUP_FIELDS and a.get(k) != b.get(k)]


def editor_config(path: Path, hparams: Any) -> tuple[Any, list[tuple[str, Any, Any]]]:
    """The config to open the codebook at ``path`` with: the YAML's, with 'auto' layer/scale replaced by
    what the codebook was built with. Raises CodebookMismatchError for key-defining differences."""
    from .config import ReasonEditConfig
    from .storage import read_meta

    stored = read_meta(path).get("config") or {}
    wanted = hparams.to_config().to_dict()
    for name in ("layer", "scale"):
        if wanted["embedding"][name] == "auto" and "embedding" in stored:
            wanted["embedding"][name] = stored["embedding"][name]
    diffs = config_differences(stored, wanted) if stored else []
    keyed = [d for d in diffs if d[0] in KEY_FIELDS]
    if keyed:
        raise CodebookMismatchError(
            f"the codebook at {str(path)!r} was built with "
            + ", ".join(f"{k}={old!r}" for k, old, _ in keyed) + "; your YAML says "
            + ", ".join(f"{k}={new!r}" for k, _, new in keyed)
            + ", so its keys are not comparable. Use the codebook's values in the YAML, or write a new codebook "
              "and bring its edits over with `reasonedit import` (re-embeds them).")
    return ReasonEditConfig.from_dict(wanted), diffs


def open_editor(path: Path, hparams: Any, vlm: Any, command: str) -> Any:
    """Load the codebook at ``path`` for ``vlm`` with the YAML's settings (see :func:`editor_config`)."""
    from .editor import ReasonEditor

    config, diffs = editor_config(path, hparams)
    if diffs:
        shown = ", ".join(f"{k} ({old!r} -> {new!r})" for k, old, new in diffs[:8])
        more = f" and {len(diffs) - 8} more" if len(diffs) > 8 else ""
        print(f"reasonedit {command}: note: your hparams YAML overrides the settings stored in the codebook: "
              f"{shown}{more}.", file=sys.stderr)
    return ReasonEditor.load(path, vlm, config=config)


def check_out_folder(out: Path, what: str = "codebook") -> None:
    """``--out`` must be a folder that is new, empty or already a codebook."""
    from .codebook_layout import foreign_files
    from .storage import is_codebook

    if out.exists() and not out.is_dir():
        raise ReasonEditError(f"--out {str(out)!r} is a file; give a folder for the {what}.")
    if out.is_dir() and not is_codebook(out):  # a writer may be creating it: its own files are not foreign
        foreign = foreign_files(out)
        if foreign:
            raise ReasonEditError(f"--out {str(out)!r} is a non-empty folder that is not a ReasonEdit codebook "
                                  f"(it holds {foreign[:3]}); give a new or empty folder.")


@contextlib.contextmanager
def writing(path: Path, timeout: float) -> Iterator[None]:
    """Hold the codebook lock over load -> change -> save; a folder this command created and did not
    manage to save into is removed again."""
    from .locking import codebook_lock
    from .storage import is_codebook

    created = not path.exists()
    with codebook_lock(path, timeout=timeout):
        try:
            yield
        finally:  # still under the lock; a waiting writer notices the removed LOCK file and retries
            if created and path.is_dir() and not is_codebook(path):
                shutil.rmtree(path, ignore_errors=True)


def report_quarantine(command: str, codebook: Path, outcomes: Sequence[Any]) -> None:
    """Quarantined edits are always shown (stderr, also with -q): they are NOT active until approved."""
    held = [o for o in outcomes if o.status == "quarantined"]
    if not held:
        return
    print(f"reasonedit {command}: {len(held)} edit(s) quarantined by the rationale guard (held, not active); "
          f"review them, then `reasonedit approve --codebook {codebook} ID` or `reasonedit remove --codebook "
          f"{codebook} ID`:", file=sys.stderr)
    for o in held:
        flags = "; ".join(str(f) for f in o.flags)
        print(f"  {o.edit_id}: {flags[:300]}", file=sys.stderr)


def _ids(editor: Any) -> set[str]:
    return set(editor.edit_ids()) | set(editor.quarantine)


def _unknown(editor: Any, ids: Sequence[str], path: Path) -> None:
    unknown = [i for i in ids if i not in _ids(editor)]
    if unknown:
        raise ReasonEditError(f"no edit {unknown[0]!r} in the codebook {str(path)!r} ({len(editor.edit_ids())} "
                              f"active, {len(editor.quarantine)} quarantined); `reasonedit approve --codebook "
                              f"{path}` lists the quarantined ones, `reasonedit inspect` the rest.")


# ---------------------------------------------------------------------- commands
def cmd_remove(args: argparse.Namespace) -> int:

    path = codebook_folder(args.codebook)
    hparams = load_hparams(args.hparams, args.model, args.device)
    vlm = inputs.load_vlm(hparams)
    with writing(path, args.lock_timeout):
        editor = open_editor(path, hparams, vlm, "remove")
        _unknown(editor, args.ids, path)
        for edit_id in dict.fromkeys(args.ids):
            editor.remove(edit_id)
        editor.save(path)
    say(args, f"removed {len(set(args.ids))} edit(s); codebook {path}: {len(editor.edit_ids())} edits")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:

    path = codebook_folder(args.codebook)
    hparams = load_hparams(args.hparams, args.model, args.device)
    vlm = inputs.load_vlm(hparams)
    if not args.ids:
        from .editor import ReasonEditor

        editor = ReasonEditor.load(path, vlm)
        held = editor.quarantined()
        print(f"{len(held)} quarantined edit(s) in {path}" + (":" if held else "."))
        for info in held:
            print(f"  {info.edit_id}" + (f" by {info.who}" if info.who else "") + f": {'; '.join(info.flags)[:300]}")
        return 0
    with writing(path, args.lock_timeout):
        editor = open_editor(path, hparams, vlm, "approve")
        not_held = [i for i in args.ids if i not in editor.quarantine]
        if not_held:
            raise ReasonEditError(f"edit {not_held[0]!r} is not quarantined in {str(path)!r}; quarantined: "
                                  f"{sorted(editor.quarantine)[:10]}.")
        for edit_id in dict.fromkeys(args.ids):
            editor.approve(edit_id)
        editor.save(path)
    say(args, f"approved {len(set(args.ids))} edit(s); codebook {path}: {len(editor.edit_ids())} active edits, "
                 f"{len(editor.quarantine)} quarantined")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .locking import codebook_lock

    path = codebook_folder(args.codebook)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReasonEditError(f"--out {str(out)!r} already exists; give a new folder for the module.")
    hparams = load_hparams(args.hparams, args.model, args.device)
    vlm = inputs.load_vlm(hparams)
    with codebook_lock(path, timeout=args.lock_timeout), writing(out, args.lock_timeout):
        editor = open_editor(path, hparams, vlm, "export")
        _unknown(editor, args.ids, path)
        quarantined = [i for i in args.ids if i in editor.quarantine]
        if quarantined:
            raise ReasonEditError(f"edit {quarantined[0]!r} is quarantined; approve it first "
                                  f"(`reasonedit approve --codebook {path} {quarantined[0]}`) or leave it out.")
        editor.export_edits(args.ids, out)
        editor.save(path)  # the 'exported' audit event
    say(args, f"exported {len(set(args.ids))} edit(s) to the module {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .editor import ReasonEditor
    from .storage import is_codebook

    module = codebook_folder(args.module)
    path = Path(args.codebook)
    check_out_folder(path)
    hparams = load_hparams(args.hparams, args.model, args.device)
    vlm = inputs.load_vlm(hparams)
    reembed = {"auto": "auto", "yes": True, "no": False}[args.reembed]
    with writing(path, args.lock_timeout):
        if is_codebook(path):
            editor = open_editor(path, hparams, vlm, "import")
        else:
            editor = ReasonEditor(vlm, hparams.to_config())
        report = editor.import_edits(module, reembed=reembed, guard=not args.no_guard)
        editor.save(path)
    say(args, f"imported {len(report.imported)} edit(s) from {module}" + (" (re-embedded)" if report.reembedded
                                                                             else "") + f" into {path}")
    if report.quarantined:
        from .editor import EditOutcome

        report_quarantine("import", path, [EditOutcome(e, "quarantined", flags=report.flags.get(e, []))
                                           for e in report.quarantined])
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .manifest import repair_codebook, verify_codebook

    path = Path(args.codebook)
    if not path.is_dir():
        raise ReasonEditError(f"codebook folder {args.codebook!r} does not exist.")
    if args.repair:
        done = repair_codebook(path)
        for line in done:
            print(f"repaired: {line}")
    report = verify_codebook(path)
    for p in report.problems:
        print(f"{'DAMAGED' if p.fatal else 'warning'}: {p}")
    if report.ok:
        print(f"codebook {path}: intact ({report.files_checked} files match the manifest of {report.snapshot})")
        return 0
    if report.fatal:
        print(f"reasonedit verify: error: the codebook at {str(path)!r} fails its checksums; "
              + ("" if args.repair else f"`reasonedit verify --codebook {path} --repair` rebuilds what can be "
                 "rebuilt, ") + "restore the rest from a backup.", file=sys.stderr)
        return 2
    return 1


def cmd_edit(args: argparse.Namespace) -> int:
    from .editor import ReasonEditor
    from .storage import is_codebook

    hparams = load_hparams(args.hparams, args.model, args.device)
    records = load_edit_records(args.edits, args.split, args.image_root, args.limit, args.dataset)
    check_rationales(records, hparams)
    out = Path(args.out)
    check_out_folder(out)
    vlm = inputs.load_vlm(hparams)
    with writing(out, args.lock_timeout):  # load -> edit -> save under the codebook lock
        check_out_folder(out)
        if is_codebook(out):
            editor = open_editor(out, hparams, vlm, "edit")
            say(args, f"adding to the codebook at {out} ({len(editor.edit_ids())} edits)")
        else:
            editor = ReasonEditor(vlm, hparams.to_config(),
                                  calibration=records if needs_calibration(hparams) else None)
        start = time.perf_counter()
        report = editor.edit(records, progress=not args.quiet)
        seconds = time.perf_counter() - start
        editor.save(out)
    say(args, f"added {len(report.added)}, already correct (skipped) {len(report.skipped)}, quarantined "
                 f"{len(report.quarantined)} of {len(records)} records in {seconds:.1f} s "
                 f"({seconds / max(1, len(records)):.2f} s per record)")
    say(args, f"codebook: {out} ({len(editor.codebook)} entries, {len(editor.edit_ids())} edits)")
    report_quarantine("edit", out, report.outcomes)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .editor import ReasonEditor

    if (args.image is None) != (args.question is None):
        raise ReasonEditError("give both --image and --question to inspect a query (or neither).")
    codebook = codebook_folder(args.codebook)
    hparams = load_hparams(args.hparams, args.model, args.device)
    if args.image is not None and not Path(args.image).is_file():
        raise ReasonEditError(f"image file {args.image!r} does not exist.")
    editor = ReasonEditor.load(codebook, inputs.load_vlm(hparams))
    cb = editor.codebook
    print(f"codebook {codebook}: {len(cb)} entries, {len(editor.edit_ids())} edits, "
          f"{len(editor.quarantine)} quarantined")
    setup = editor.keys.setup
    print(f"keys: {setup.model_type} vision module {setup.vision_module}, λ={setup.scale:g}, "
          f"dim {setup.dim} (vision {setup.vision_dim} + text {setup.text_dim})")
    cfg = editor.config.retrieval
    tau = editor.retriever.threshold() if len(cb) else None
    gate = cfg.gate if cfg.gate != "nullset" else (
        f"nullset (image <= {cfg.nullset.image_factor:g} x radius and <= {cfg.nullset.conflict_share:g} x "
        f"distance to a conflicting edit; text cos >= {cfg.nullset.text_min_cos:g})")
    print(f"retrieval: hubness {'on' if cfg.hubness else 'off'}, gate {gate}"
          + (f" (τ = {tau:.4f})" if tau is not None else "") + f", cap {cfg.cap_keys} keys")
    sigma = cb.sigma_table() if len(cb) else {}
    shown = sorted(cb.entries)[: args.limit]
    for eid in shown:
        e = cb.entries[eid]
        values = " | ".join(e.values)
        print(f"  #{eid:<4} {','.join(e.kinds):<10} r={e.radius:.3f} σ={sigma.get(eid, float('nan')):.3f} "
              f"edits={','.join(e.edit_ids)}  {values[:110]}")
    if len(cb) > len(shown):
        print(f"  ... {len(cb) - len(shown)} more (--limit)")
    if args.image is None:
        return 0
    ans = editor.answer(args.image, args.question, args.choices)
    r = ans.retrieval
    print(f"\nquery: {args.question!r} on {args.image}")
    print(f"gate: {'ACCEPTED' if r.accepted else 'REJECTED'}: {r.reason}")
    if r.verdict is not None:
        from .gate import describe

        for line in describe(r.verdict, cfg.nullset.text_min_cos, limit=args.limit)[1:]:
            print(line)
    for rank, (eid, d, s) in enumerate(zip(r.entry_ids, r.distances, r.scores), 1):
        values = " | ".join(cb.entries[eid].values) if eid in cb.entries else "?"
        print(f"  {rank}. entry #{eid}: distance {d:.4f}, scaled {s:.4f}  {values[:110]}")
    print(f"fused question: {ans.question!r}")
    print(f"prompt: {ans.prompt!r}")
    if ans.option_nll:
        print("option NLL: " + ", ".join(f"{k}={v:.3f}" for k, v in ans.option_nll.items()))
    print(f"answer: {ans.text}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register the codebook verbs on the ``reasonedit`` parser."""
    def lock(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lock-timeout", type=float, default=120.0, metavar="S",
                       help="seconds to wait for another writer of the codebook (default 120)")

    edit = sub.add_parser("edit", help="apply a JSONL of edits and save the codebook",
                          description="Apply edit records to a model (hparams YAML) and save the codebook "
                                      "folder (safetensors + JSON + audit log). An existing codebook at --out "
                                      "is extended.")
    add_model(edit)
    add_records(edit)
    edit.add_argument("--out", required=True, metavar="DIR", help="codebook folder to write")
    lock(edit)
    edit.set_defaults(func=cmd_edit)

    ins = sub.add_parser("inspect", help="show a codebook, and for one query what is retrieved and why",
                         description="List a saved codebook's entries (kinds, radius, hubness σ, edits, values) "
                                     "and, for --image/--question, the retrieved entries with distances and "
                                     "scaled scores, the gate decision, the fused prompt and the answer.")
    add_model(ins)
    ins.add_argument("--codebook", required=True, metavar="DIR", help="codebook folder (from `reasonedit edit`)")
    ins.add_argument("--image", metavar="IMG", help="query image")
    ins.add_argument("--question", metavar="TEXT", help="query question")
    ins.add_argument("--choices", nargs="+", metavar="OPTION", help="answer options (lowest summed NLL wins)")
    ins.add_argument("--limit", type=inputs.count(), default=40, metavar="N", help="entries to list (default 40)")
    ins.set_defaults(func=cmd_inspect)

    rm = sub.add_parser("remove", help="undo edits of a saved codebook (active or quarantined)",
                        description="Remove edits by id; merged entries are recomputed from what remains. "
                                    "The removal is recorded in the audit log.")
    add_model(rm)
    rm.add_argument("--codebook", required=True, metavar="DIR")
    rm.add_argument("ids", nargs="+", metavar="ID", help="edit ids")
    lock(rm)
    rm.set_defaults(func=cmd_remove)

    ap = sub.add_parser("approve", help="list quarantined edits, or commit them",
                        description="Without ids: list the edits the rationale guard quarantined, with its flags. "
                                    "With ids: commit them (recorded as approved in the audit log).")
    add_model(ap)
    ap.add_argument("--codebook", required=True, metavar="DIR")
    ap.add_argument("ids", nargs="*", metavar="ID", help="quarantined edit ids to commit")
    lock(ap)
    ap.set_defaults(func=cmd_approve)

    ex = sub.add_parser("export", help="write some edits as a portable knowledge module",
                        description="Write the given edits (keys, entries, raw records with images, their audit "
                                    "history) to a new module folder that `reasonedit import` reads.")
    add_model(ex)
    ex.add_argument("--codebook", required=True, metavar="DIR")
    ex.add_argument("--ids", nargs="+", required=True, metavar="ID", help="edit ids to export")
    ex.add_argument("--out", required=True, metavar="DIR", help="new module folder")
    lock(ex)
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="add the edits of a module (or another codebook) to a codebook",
                        description="Same key setup: keys are used as they are; another model / layer / lambda: "
                                    "the edits are re-embedded from their raw records. All or nothing. The "
                                    "module's audit history is carried over; the rationale guard checks them.")
    add_model(im)
    im.add_argument("--codebook", required=True, metavar="DIR", help="codebook to add to (created if missing)")
    im.add_argument("--module", required=True, metavar="DIR", help="module or codebook folder to import")
    im.add_argument("--reembed", choices=("auto", "yes", "no"), default="auto",
                    help="auto: re-embed only for another key setup (default)")
    im.add_argument("--no-guard", action="store_true", help="do not run the rationale guard on imported edits")
    lock(im)
    im.set_defaults(func=cmd_import)

    ve = sub.add_parser("verify", help="check a codebook's files against its checksums (and repair)",
                        description="Check every file against the snapshot's manifest. Exit 0: intact; 1: only "
                                    "missing images or audit log (the codebook still answers); 2: damaged. "
                                    "--repair rebuilds what can be rebuilt and says what it did.")
    ve.add_argument("--codebook", required=True, metavar="DIR")
    ve.add_argument("--repair", action="store_true", help="rebuild what can be rebuilt")
    ve.set_defaults(func=cmd_verify)
