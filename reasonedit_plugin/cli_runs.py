"""The ``reasonedit`` commands that apply edits and evaluate them::

    reasonedit demo                     # the main job: ShapeRules edits on the embedded tiny VLM, evaluated
    reasonedit eval    --edits E.jsonl [--codebook CODEBOOK] [--hparams YAML] [--out DIR]
    reasonedit compare [--edits E.jsonl | --split small | --dataset FORMAT PATH] [--methods ...] [--out DIR]
    reasonedit caption --edits E.json | --generate N

Each writes a report (``report.py``) of the same protocol (``evaluation.py``).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Any, Sequence

from . import cli_inputs as inputs
from .cli_inputs import (add_model, add_records, check_rationales, codebook_folder, command_line, load_edit_records,
                         load_hparams, needs_calibration, say, shaperules_plain_probes)
from .errors import ReasonEditError


def _protocol(args: argparse.Namespace, seed: int) -> Any:
    from .evaluation import ProtocolConfig

    return ProtocolConfig(eval_every=args.eval_every, eval_subsample=args.subsample,
                          locality_size=args.locality_size, seed=seed,
                          easyedit_metrics=not args.no_easyedit_metrics)


def _run_and_report(args: argparse.Namespace, hparams: Any, records: list, methods: Sequence[str], title: str,
                    balance: str = "yaml", patches: str = "yaml", single: bool = False,
                    command: str | None = None, after: Any = None) -> Any:
    from .baselines import run_comparison
    from .report import summary_text, write_report

    vlm = inputs.load_vlm(hparams)
    config = hparams.to_config()
    protocol = _protocol(args, config.seed)
    extra = shaperules_plain_probes(2 * args.locality_size, config.seed) if args.plain_locality else []
    progress = not args.quiet

    def announce(result: Any) -> None:
        msg = f"  {result.name}: {result.status}" + (f" ({result.reason})" if result.reason else "") + \
              f" [{result.seconds:.0f} s]"
        say(args, msg)

    say(args, f"{len(records)} records, model {hparams.model_name}; methods: {', '.join(methods)}")
    comparison = run_comparison(vlm, records, config, methods, protocol, model_path=hparams.model_name,
                                balance=balance, patches=patches, extra_locality=extra,
                                easyedit_hparams_dir=getattr(args, "easyedit_hparams", None), single=single,
                                progress=progress, on_method=announce, jobs=getattr(args, "jobs", 1),
                                vlm_loader=functools.partial(inputs.load_vlm, hparams))
    extra_report = {"hparams_path": getattr(hparams, "source_path", None),
                    "warnings": inputs.report_warnings(hparams)}
    if after is not None:
        extra_report.update(after(comparison, vlm) or {})
    files = write_report(comparison, args.out, title=title, command=command or command_line(),
                         hparams=hparams, extra=extra_report)
    say(args, "")
    say(args, summary_text(comparison))
    say(args, "")
    say(args, f"report: {files.markdown}  ({files.html.name}, {files.json.name}, "
                 f"{', '.join(p.name for p in files.plots) or 'no plots'})")
    failed = [m for m in comparison.methods if m.status == "failed"]
    if failed:
        print(f"reasonedit: {len(failed)} method(s) failed: "
              + "; ".join(f"{m.name}: {m.reason}" for m in failed), file=sys.stderr)
    return comparison


def cmd_demo(args: argparse.Namespace) -> int:
    hparams = load_hparams(args.hparams, args.model, args.device)
    records = load_edit_records(None, args.split, None, args.limit)
    methods = ["ReasonEdit"] + ([] if args.no_unedited else ["unedited"])
    after = _demo_captions(args, hparams) if args.captions else None
    _run_and_report(args, hparams, records, methods,
                    title=f"ReasonEdit demo: ShapeRules '{args.split}' on the embedded tiny Qwen2-VL", after=after)
    return 0


def _demo_captions(args: argparse.Namespace, hparams: Any) -> Any:
    """The demo's caption section: ``args.captions`` generated caption edits on a fresh editor of the
    same model (what ``reasonedit caption --generate N`` runs), every probe in ``caption_results.json``."""
    def run(comparison: Any, vlm: Any) -> dict[str, Any]:
        from . import captioning

        command = f"reasonedit caption --generate {args.captions} --seed 0"
        records = _generated_captions(args.captions, 0)
        results = _caption_run(args, hparams, vlm, records, args.out, command)
        return {"captions": {"records": len(records), "command": command, "columns": list(captioning.TABLE_COLUMNS),
                             "rows": captioning.table_rows(results)}}

    return run


def _generated_captions(n: int, seed: int) -> list:
    from . import captioning
    from .data import easy_vqa_root

    return captioning.caption_records(captioning.caption_split(n, seed), easy_vqa_root())


def _caption_run(args: argparse.Namespace, hparams: Any, vlm: Any, records: list, out: Any, command: str,
                 max_new_tokens: int = 16) -> Any:
    """Apply caption edits one after another on a fresh editor, print and write the caption metrics."""
    from . import captioning
    from .editor import ReasonEditor

    editor = ReasonEditor(vlm, hparams.to_config(), calibration=records if needs_calibration(hparams) else None)
    say(args, f"{len(records)} caption records, model {hparams.model_name}")
    results = captioning.evaluate_captions(editor, records, max_new_tokens, progress=not args.quiet)
    folder = captioning.write_results(results, out, {"command": command, "model": hparams.model_name})
    say(args, captioning.results_table(results) + f"\nwritten: {folder / 'caption_results.json'}, "
                 f"{folder / 'caption_report.md'}")
    return results


def cmd_compare(args: argparse.Namespace) -> int:
    from .baselines import DEFAULT_METHODS

    hparams = load_hparams(args.hparams, args.model, args.device)
    records = load_edit_records(args.edits, args.split, args.image_root, args.limit, args.dataset)
    check_rationales(records, hparams)
    methods = args.methods or list(DEFAULT_METHODS)
    source = args.edits or f"ShapeRules '{args.split or 'small'}'"
    _run_and_report(args, hparams, records, methods, title=f"ReasonEdit vs baselines on {source}",
                    balance=args.balance, patches=args.patches, single=args.protocol == "single")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.codebook is None:
        hparams = load_hparams(args.hparams, args.model, args.device)
        records = load_edit_records(args.edits, args.split, args.image_root, args.limit, args.dataset)
        check_rationales(records, hparams)
        methods = ["ReasonEdit"] + ([] if args.no_unedited else ["unedited"])
        after = _edit_k(args, hparams) if args.edit_k else None
        _run_and_report(args, hparams, records, methods, title="ReasonEdit evaluation",
                        single=args.protocol == "single", after=after)
        return 0
    return _eval_codebook(args)


def _edit_k(args: argparse.Namespace, hparams: Any) -> Any:
    """Edit-k generality (METHOD.md §7) after the main evaluation, on the same reference."""
    def run(comparison: Any, vlm: Any) -> dict[str, Any]:
        from .editor import ReasonEditor
        from .evaluation import ReasonEditMethod, evaluate_edit_k

        config = hparams.to_config()
        method = ReasonEditMethod(lambda: ReasonEditor(vlm, config))
        result = evaluate_edit_k(method, comparison.shared, args.edit_k, args.rounds, config.seed,
                                 progress=not args.quiet)
        say(args, "edit-k generality (accuracy on the edit questions of records not edited): " + ", ".join(
            f"k={k}: {'—' if v is None else f'{100 * v:.1f}%'}" for k, v in result.accuracy.items()))
        return {"edit_k": result.to_dict()}

    return run


def _eval_codebook(args: argparse.Namespace) -> int:
    """Evaluate a saved codebook on the records' probes (no edits are applied)."""
    from .baselines import Comparison, MethodResult
    from .cli_codebook import open_editor
    from .evaluation import ReasonEditMethod, UneditedMethod, evaluate_sequential, prepare_reference
    from .report import summary_text, write_report

    hparams = load_hparams(args.hparams, args.model, args.device)
    vlm = inputs.load_vlm(hparams)
    codebook = codebook_folder(args.codebook)
    start = time.perf_counter()
    editor = open_editor(codebook, hparams, vlm, "eval")
    stored = set(editor.edit_ids())
    records = [r for r in load_edit_records(args.edits, args.split, args.image_root, args.limit, args.dataset) if r.id in stored]
    if not records:
        raise ReasonEditError(f"none of the records' ids is an edit of the codebook {str(codebook)!r} "
                              f"({len(stored)} edits); evaluate the edit file the codebook was built from.")
    config = editor.config
    protocol = _protocol(args, config.seed)
    protocol.only_errors = False
    protocol.eval_every = 0
    extra = shaperules_plain_probes(2 * args.locality_size, config.seed) if args.plain_locality else []
    reference = prepare_reference(UneditedMethod(vlm, config.max_new_tokens), records, protocol, extra,
                                  progress=not args.quiet)

    class _Loaded(ReasonEditMethod):
        def reset(self) -> None:  # keep the saved codebook
            pass

        def apply(self, record: Any) -> None:  # already in the codebook
            pass

    method = _Loaded(lambda: editor, name="ReasonEdit (saved codebook)")
    ev = evaluate_sequential(method, reference, protocol, progress=not args.quiet)
    ev.edit_seconds = []
    row = MethodResult("ReasonEdit", "reasonedit", "ok", label=f"ReasonEdit ({codebook.name})",
                       config=config.to_dict(), evaluation=ev, seconds=time.perf_counter() - start)
    comparison = Comparison([row], reference.summary(), protocol, config.to_dict(), hparams.model_name,
                            time.perf_counter() - start)
    files = write_report(comparison, args.out, title=f"ReasonEdit codebook {codebook}", command=command_line(),
                         hparams=hparams, extra={"warnings": inputs.report_warnings(hparams)})
    say(args, summary_text(comparison))
    say(args, f"report: {files.markdown}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption edits (captioning.py): apply them one after another, write the caption metrics."""
    from . import captioning

    hparams = load_hparams(args.hparams, args.model, args.device)
    if args.edits:
        records = captioning.load_caption_records(args.edits, args.image_root, args.rephrase_root)
    else:
        records = _generated_captions(args.generate, args.seed)
    records = records[: args.limit] if args.limit else records
    _caption_run(args, hparams, inputs.load_vlm(hparams), records, args.out, command_line(), args.max_new_tokens)
    return 0


def _add_protocol(p: argparse.ArgumentParser, eval_every: int, subsample: int, out: str) -> None:
    g = p.add_argument_group("evaluation (METHOD.md §7)")
    g.add_argument("--eval-every", type=inputs.count(0), default=eval_every, metavar="K",
                   help=f"evaluate after every K sequential edits and at the end; 0: only at the end "
                        f"(default {eval_every})")
    g.add_argument("--subsample", type=inputs.count(), default=subsample, metavar="N",
                   help=f"intermediate evaluations probe a seeded subsample of N edited records and N "
                        f"locality probes; the final one probes everything (default {subsample})")
    g.add_argument("--locality-size", type=inputs.count(0), default=100, metavar="N",
                   help="seeded pool of unrelated locality probes, before the unedited-model filter (default 100)")
    g.add_argument("--no-plain-locality", dest="plain_locality", action="store_false",
                   help="use only the records' multimodal_locality probes, not plain easy-vqa questions")
    g.add_argument("--no-easyedit-metrics", action="store_true",
                   help="skip EasyEdit's teacher-forced keys (rewrite_acc, ..., multimodal_locality_acc)")
    g.add_argument("--out", default=out, metavar="DIR", help=f"report folder (default {out})")


def add_parsers(sub: Any) -> None:
    """Register demo, eval, compare and caption on the ``reasonedit`` parser."""
    demo = sub.add_parser(
        "demo", help="the main job: ShapeRules edits on the embedded tiny VLM, applied and evaluated",
        description="Apply the shipped ShapeRules edits one after another with ReasonEdit on the embedded "
                    "tiny Qwen2-VL (CPU, a few minutes) and print/save the evaluation: reliability, T/I/R-Gen, "
                    "locality, hard locality, time per edit, plus EasyEdit's keys.")
    add_model(demo)
    demo.add_argument("--split", default="small", help="shipped ShapeRules split (default: small)")
    demo.add_argument("--limit", type=inputs.count(), metavar="N", help="use only the first N records")
    demo.add_argument("--no-unedited", action="store_true", help="skip the unedited model's row")
    demo.add_argument("--captions", type=inputs.count(0), default=12, metavar="N",
                      help="also apply N generated caption edits on a fresh codebook and add their section to "
                           "the report (default 12; 0: none)")
    _add_protocol(demo, eval_every=10, subsample=20, out="runs/demo")
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="evaluate ReasonEdit on edit records (or a saved codebook)",
                        description="Sequentially apply the records' edits and evaluate (as `demo`, on your "
                                    "model and records), or with --codebook evaluate a saved codebook on the "
                                    "records it holds.")
    add_model(ev)
    add_records(ev)
    ev.add_argument("--codebook", metavar="DIR", help="evaluate this saved codebook instead of editing")
    ev.add_argument("--protocol", choices=("sequential", "single"), default="sequential",
                    help="sequential edits (default) or single-edit (fresh codebook per edit)")
    ev.add_argument("--no-unedited", action="store_true", help="skip the unedited model's row")
    ev.add_argument("--edit-k", nargs="+", type=inputs.count(), metavar="K",
                    help="also measure edit-k generality: edit K random records on a fresh codebook, test the "
                         "edit questions of the rest (paper: 1 5 10)")
    ev.add_argument("--rounds", type=inputs.count(), default=10, metavar="N", help="edit-k rounds per K (default 10)")
    _add_protocol(ev, eval_every=200, subsample=50, out="runs/eval")
    ev.set_defaults(func=cmd_eval)

    from .baselines import DEFAULT_METHODS

    cmp_ = sub.add_parser(
        "compare", help="ReasonEdit vs the unedited model, ablations and EasyEdit baselines; writes a report",
        description="Run every method on the same model and records with the same protocol and write "
                    "report.md / report.html / results.json / PNGs. EasyEdit baselines need easyeditor "
                    "importable; otherwise their rows say 'skipped' and why.")
    add_model(cmp_)
    add_records(cmp_)
    cmp_.add_argument("--methods", nargs="+", choices=DEFAULT_METHODS, metavar="NAME",
                      help=f"methods to run (default: all): {', '.join(DEFAULT_METHODS)}")
    cmp_.add_argument("--balance", choices=("auto", "yaml"), default="auto",
                      help="ReasonEdit row: 'auto' chooses layer and λ with AutoLayer/AutoScaler on the run's "
                           "images and questions (default); 'yaml' keeps the YAML's")
    cmp_.add_argument("--patches", choices=("auto", "on", "off", "yaml"), default="yaml",
                      help="ReasonEdit row: patch entries (METHOD.md §6); 'auto' = on when available (slow on "
                           "CPU); default: as the YAML says")
    cmp_.add_argument("--protocol", choices=("sequential", "single"), default="sequential",
                      help="sequential edits (default) or single-edit (fresh state per edit)")
    cmp_.add_argument("--easyedit-hparams", metavar="DIR",
                      help="folder of EasyEdit hparams YAMLs (<DIR>/<METHOD>/<model>.yaml) for the baselines")
    cmp_.add_argument("--jobs", type=inputs.count(), default=1, metavar="N",
                      help="run the rows in N worker processes, each with its own copy of the model (rows are "
                           "seeded and independent: same results, less wall time; default 1)")
    _add_protocol(cmp_, eval_every=10, subsample=20, out="runs/compare")
    cmp_.set_defaults(func=cmd_compare)

    cap = sub.add_parser("caption", help="caption edits: apply them and report caption metrics",
                         description="Apply caption edits (EasyEdit E-IC fields or edit-record fields) one after "
                                     "another and report EasyEdit's caption token accuracies and the paper's "
                                     "reliability / generality / locality on captions (docs/ARCHITECTURE.md).")
    add_model(cap)
    src = cap.add_mutually_exclusive_group(required=True)
    src.add_argument("--edits", metavar="JSON", help="caption records (JSON list or JSON lines)")
    src.add_argument("--generate", type=inputs.count(), metavar="N", help="N generated caption edits over easy-vqa images")
    cap.add_argument("--seed", type=int, default=0, help="seed of --generate (default 0)")
    cap.add_argument("--image-root", metavar="DIR", help="root of image and m_loc paths (EasyEdit's coco_image)")
    cap.add_argument("--rephrase-root", metavar="DIR", help="root of image_rephrase paths (rephrase_image)")
    cap.add_argument("--limit", type=inputs.count(), metavar="N", help="use only the first N records")
    cap.add_argument("--max-new-tokens", type=inputs.count(), default=16, metavar="N", help="caption length (default 16)")
    cap.add_argument("--out", default="runs/captions", metavar="DIR", help="report folder (default runs/captions)")
    cap.set_defaults(func=cmd_caption)
