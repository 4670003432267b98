"""The ``reasonedit`` command.

::

    reasonedit demo                     # the main job: ShapeRules edits on the embedded tiny VLM, evaluated
    reasonedit edit    --edits E.jsonl --out CODEBOOK [--hparams YAML]
    reasonedit eval    --edits E.jsonl [--codebook CODEBOOK] [--hparams YAML] [--out DIR]
    reasonedit compare [--edits E.jsonl | --split small] [--methods ...] [--out DIR]
    reasonedit inspect --codebook CODEBOOK [--image IMG --question Q [--choices A B C]]
    reasonedit remove | approve | export | import | verify ...   (cli_codebook.py)

Without ``--hparams`` the embedded default (``hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml``: the tiny
Qwen2-VL shipped in the package) is used. A user error (bad path, bad config, bad record, a busy or
damaged codebook, a full disk) prints one line and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, ReasonEditError, RecordError

logger = logging.getLogger("reasonedit_plugin.cli")

DEFAULT_HPARAMS_NAME = "tiny-qwen2-vl-shapes.yaml"
EXIT_USAGE = 2


# ================================================================================================
# Shared helpers
# ================================================================================================

def default_hparams_path() -> Path:
    """The embedded default YAML: ``hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml`` of this checkout, or of
    the current folder."""
    candidates = [Path(__file__).resolve().parent.parent / "hparams" / "ReasonEdit" / DEFAULT_HPARAMS_NAME,
                  Path.cwd() / "hparams" / "ReasonEdit" / DEFAULT_HPARAMS_NAME]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"the default hparams {DEFAULT_HPARAMS_NAME} was not found (looked in "
                      f"{', '.join(str(c.parent) for c in candidates)}); pass --hparams YAML.")


def load_hparams(path: str | None, model: str | None = None, device: str | None = None) -> Any:
    from .hparams import ReasonEditHyperParams

    hp_path = Path(path) if path else default_hparams_path()
    hparams = ReasonEditHyperParams.from_hparams(str(hp_path))
    if model is not None or device is not None:
        values = hparams.to_dict()
        if model is not None:
            values["model_name"] = model
            values["name"] = None
        if device is not None:
            values["device"] = device
        hparams = ReasonEditHyperParams.from_dict(values)
    if hparams.is_placeholder:
        raise ConfigError(f"{hp_path}: model_name is still the placeholder {hparams.model_name!r}; set it to "
                          "your local model folder (or pass --model PATH).")
    hparams.source_path = str(hp_path)  # for the report
    return hparams


def resolve_device(device: Any) -> str:
    """``hparams.device`` -> a torch device string that exists on this machine, or a one-line error."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        device = f"cuda:{device}"
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d{1,3}))?", str(device))
    if m is None:
        raise ConfigError(f"device={device!r} is not a device; give cpu, cuda, cuda:N, mps or a GPU number.")
    kind, index = m.group(1), int(m.group(2)) if m.group(2) else 0
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ConfigError(f"device={device!r}: this machine has {count} CUDA device(s); use "
                              + ("cpu" if count == 0 else f"cuda:0..cuda:{count - 1} or cpu") + " (--device).")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={device!r}: MPS is not available here; use cpu (--device cpu).")
    return str(device)


def load_vlm(hparams: Any) -> Any:
    from .vlm import VLM

    model_path = Path(hparams.model_name)
    if not model_path.exists():
        raise ReasonEditError(f"model folder {str(model_path)!r} does not exist; set model_name in the hparams "
                              "YAML or pass --model PATH.")
    device = resolve_device(hparams.device)
    try:
        return VLM.from_pretrained(str(model_path), dtype=hparams.dtype, device=device)
    except ReasonEditError:
        raise
    except Exception as exc:  # noqa: BLE001 - the loading libraries raise their own types (e.g. SafetensorError)
        message = " ".join(str(exc).split())[:300]
        raise ReasonEditError(f"could not load the model from {str(model_path)!r} ({type(exc).__name__}: "
                              f"{message}); check that the folder holds a complete model (re-copy truncated "
                              "weight files).") from exc


def load_edit_records(edits: str | None, split: str | None, image_root: str | None, limit: int | None,
                      dataset: Sequence[str] | None = None) -> list:
    """Records from a JSONL/JSON file, a benchmark file (``dataset``: [format, path]; dataset_loaders.py),
    or a shipped ShapeRules split."""
    from .records import load_records, make_records

    if dataset:
        from .dataset_loaders import load_dataset

        return load_dataset(dataset[0], dataset[1], image_root=image_root, limit=limit)
    if edits is not None:
        path = Path(edits)
        if not path.is_file():
            raise ReasonEditError(f"edit file {edits!r} does not exist.")
        records = load_records(path, image_root=image_root, limit=limit)
        if not records:
            raise RecordError(f"{path} holds no edit records; one JSON object per line.")
        return records
    from .data.shaperules import load_split

    name = split or "small"
    try:
        rows = load_split(name)
    except FileNotFoundError as exc:
        raise ReasonEditError(str(exc)) from exc
    return make_records(rows[:limit] if limit else rows)


def shaperules_plain_probes(n: int, seed: int) -> list:
    """Up to ``n`` seeded plain easy-vqa test questions as locality candidates (empty without easy-vqa)."""
    from .evaluation import Probe

    try:
        from .data.shaperules import answer_choices, easy_vqa_root, plain_questions

        root = easy_vqa_root()
        questions = plain_questions("test")
    except (ImportError, FileNotFoundError) as exc:
        logger.warning("no plain easy-vqa locality questions (%s)", exc)
        return []
    rng = random.Random(f"{seed}:plain-locality")
    chosen = rng.sample(range(len(questions)), min(n, len(questions)))
    return [Probe("locality", f"easy-vqa-{questions[i].image_id}", str(root / questions[i].image),
                  questions[i].question, questions[i].answer, tuple(answer_choices(questions[i].answer)))
            for i in sorted(chosen)]


def _protocol(args: argparse.Namespace, seed: int) -> Any:
    from .evaluation import ProtocolConfig

    return ProtocolConfig(eval_every=args.eval_every, eval_subsample=args.subsample,
                          locality_size=args.locality_size, seed=seed,
                          easyedit_metrics=not args.no_easyedit_metrics)


def _command_line() -> str:
    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else "reasonedit"
    if prog in ("__main__.py", "cli.py"):
        prog = "reasonedit"
    return " ".join([prog if prog.startswith("reasonedit") else argv[0]] + [shlex.quote(a) for a in argv[1:]])


def _print(args: argparse.Namespace, *text: Any) -> None:
    if not getattr(args, "quiet", False):
        print(*text)


def _run_and_report(args: argparse.Namespace, hparams: Any, records: list, methods: Sequence[str], title: str,
                    balance: str = "yaml", patches: str = "yaml", single: bool = False,
                    command: str | None = None, after: Any = None) -> Any:
    from .baselines import run_comparison
    from .report import summary_text, write_report

    vlm = load_vlm(hparams)
    config = hparams.to_config()
    protocol = _protocol(args, config.seed)
    extra = shaperules_plain_probes(2 * args.locality_size, config.seed) if args.plain_locality else []
    progress = not args.quiet

    def announce(result: Any) -> None:
        msg = f"  {result.name}: {result.status}" + (f" ({result.reason})" if result.reason else "") + \
              f" [{result.seconds:.0f} s]"
        _print(args, msg)

    _print(args, f"{len(records)} records, model {hparams.model_name}; methods: {', '.join(methods)}")
    comparison = run_comparison(vlm, records, config, methods, protocol, model_path=hparams.model_name,
                                balance=balance, patches=patches, extra_locality=extra,
                                easyedit_hparams_dir=getattr(args, "easyedit_hparams", None), single=single,
                                progress=progress, on_method=announce)
    extra_report = {"hparams_path": getattr(hparams, "source_path", None)}
    if after is not None:
        extra_report.update(after(comparison, vlm) or {})
    files = write_report(comparison, args.out, title=title, command=command or _command_line(),
                         hparams=hparams, extra=extra_report)
    _print(args, "")
    _print(args, summary_text(comparison))
    _print(args, "")
    _print(args, f"report: {files.markdown}  ({files.html.name}, {files.json.name}, "
                 f"{', '.join(p.name for p in files.plots) or 'no plots'})")
    failed = [m for m in comparison.methods if m.status == "failed"]
    if failed:
        print(f"reasonedit: {len(failed)} method(s) failed: "
              + "; ".join(f"{m.name}: {m.reason}" for m in failed), file=sys.stderr)
    return comparison


# ================================================================================================
# Commands
# ================================================================================================

def cmd_demo(args: argparse.Namespace) -> int:
    hparams = load_hparams(args.hparams, args.model, args.device)
    records = load_edit_records(None, args.split, None, args.limit)
    methods = ["ReasonEdit"] + ([] if args.no_unedited else ["unedited"])
    _run_and_report(args, hparams, records, methods,
                    title=f"ReasonEdit demo: ShapeRules '{args.split}' on the embedded tiny Qwen2-VL")
    return 0


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
        _print(args, "edit-k generality (accuracy on the edit questions of records not edited): " + ", ".join(
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
    vlm = load_vlm(hparams)
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
    files = write_report(comparison, args.out, title=f"ReasonEdit codebook {codebook}", command=_command_line(),
                         hparams=hparams)
    _print(args, summary_text(comparison))
    _print(args, f"report: {files.markdown}")
    return 0


def codebook_folder(path: str) -> Path:
    from .storage import is_codebook

    p = Path(path)
    if not p.is_dir():
        raise ReasonEditError(f"codebook folder {path!r} does not exist; create one with `reasonedit edit`.")
    if not is_codebook(p):
        raise ReasonEditError(f"{path!r} is not a ReasonEdit codebook (no CURRENT file); `reasonedit verify "
                              f"--codebook {path} --repair` may restore it, or create one with `reasonedit edit`.")
    return p


def _codebook_path(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ReasonEditError(f"codebook folder {path!r} does not exist; create one with `reasonedit edit`.")
    return p


def check_rationales(records: Sequence[Any], hparams: Any) -> None:
    """``missing_rationale: error`` (the default): every record needs a rationale."""
    if getattr(hparams, "missing_rationale", "error") != "error":
        return
    for r in records:
        if not r.rationale:
            raise RecordError("has no rationale, and the hparams say missing_rationale: error; add a 'rationale' "
                              "(the human reasoning) or set missing_rationale: answer_only.", r.id, "rationale")


def cmd_edit(args: argparse.Namespace) -> int:
    from .cli_codebook import check_out_folder, open_editor, report_quarantine, writing
    from .editor import ReasonEditor
    from .storage import is_codebook

    hparams = load_hparams(args.hparams, args.model, args.device)
    records = load_edit_records(args.edits, args.split, args.image_root, args.limit, args.dataset)
    check_rationales(records, hparams)
    out = Path(args.out)
    check_out_folder(out)
    vlm = load_vlm(hparams)
    with writing(out, args.lock_timeout):  # load -> edit -> save under the codebook lock
        check_out_folder(out)
        if is_codebook(out):
            editor = open_editor(out, hparams, vlm, "edit")
            _print(args, f"adding to the codebook at {out} ({len(editor.edit_ids())} edits)")
        else:
            editor = ReasonEditor(vlm, hparams.to_config(),
                                  calibration=records if _needs_calibration(hparams) else None)
        start = time.perf_counter()
        report = editor.edit(records, progress=not args.quiet)
        seconds = time.perf_counter() - start
        editor.save(out)
    _print(args, f"added {len(report.added)}, already correct (skipped) {len(report.skipped)}, quarantined "
                 f"{len(report.quarantined)} of {len(records)} records in {seconds:.1f} s "
                 f"({seconds / max(1, len(records)):.2f} s per record)")
    _print(args, f"codebook: {out} ({len(editor.codebook)} entries, {len(editor.edit_ids())} edits)")
    report_quarantine("edit", out, report.outcomes)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption edits (captioning.py): apply them one after another, write the caption metrics."""
    from . import captioning
    from .editor import ReasonEditor

    hparams = load_hparams(args.hparams, args.model, args.device)
    if args.edits:
        records = captioning.load_caption_records(args.edits, args.image_root, args.rephrase_root)
    else:
        from .data import easy_vqa_root

        records = captioning.caption_records(captioning.caption_split(args.generate, args.seed), easy_vqa_root())
    records = records[: args.limit] if args.limit else records
    vlm = load_vlm(hparams)
    editor = ReasonEditor(vlm, hparams.to_config(), calibration=records if _needs_calibration(hparams) else None)
    _print(args, f"{len(records)} caption records, model {hparams.model_name}")
    results = captioning.evaluate_captions(editor, records, args.max_new_tokens, progress=not args.quiet)
    out = captioning.write_results(results, args.out, {"command": _command_line(), "model": hparams.model_name})
    _print(args, captioning.results_table(results) + f"\nwritten: {out / 'caption_results.json'}, "
                 f"{out / 'caption_report.md'}")
    return 0


def _needs_calibration(hparams: Any) -> bool:
    return hparams.embedding.layer == "auto" or hparams.embedding.scale == "auto"


def cmd_inspect(args: argparse.Namespace) -> int:
    from .editor import ReasonEditor

    codebook = _codebook_path(args.codebook)
    hparams = load_hparams(args.hparams, args.model, args.device)
    if (args.image is None) != (args.question is None):
        raise ReasonEditError("give both --image and --question to inspect a query (or neither).")
    if args.image is not None and not Path(args.image).is_file():
        raise ReasonEditError(f"image file {args.image!r} does not exist.")
    editor = ReasonEditor.load(codebook, load_vlm(hparams))
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


# ================================================================================================
# Parser
# ================================================================================================

def cmd_hparams(args: argparse.Namespace) -> int:
    from .easyedit_materialize import materialize_command

    return materialize_command(args.materialize, args.out, args.model, args.check, lambda *t: _print(args, *t))


def cmd_upstream(args: argparse.Namespace) -> int:
    from .upstream import upstream_command

    return upstream_command(args.easyedit, lambda *t: _print(args, *t))


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--hparams", metavar="YAML",
                   help="ReasonEdit hparams YAML (alg_name: ReasonEdit); default: the embedded "
                        f"hparams/ReasonEdit/{DEFAULT_HPARAMS_NAME}")
    g.add_argument("--model", metavar="PATH", help="local model folder; overrides model_name of the YAML")
    g.add_argument("--device", help="cpu, cuda or cuda:N; overrides device of the YAML")
    g.add_argument("--model-specs", nargs="+", metavar="MODULE",
                   help="Python modules that register ModelSpec rows for families not in the table "
                        "(as model_specs: in the YAML; see docs/ADDING_A_FAMILY.md)")


def _add_records(p: argparse.ArgumentParser, split_default: str | None = None) -> None:
    g = p.add_argument_group("edit records")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--edits", metavar="JSONL",
                     help="edit records (EasyEdit field names + rationale, choices, id; METHOD.md §8)")
    src.add_argument("--split", default=split_default,
                     help="a shipped ShapeRules split instead of --edits (default: small)")
    src.add_argument("--dataset", nargs=2, metavar=("FORMAT", "PATH"),
                     help="a benchmark file instead of --edits: evqa / eic (EasyEdit's E-VQA / E-IC JSON) or "
                          "rationalevqa (question, answer, rationale, image id); JSON, JSONL or Parquet")
    g.add_argument("--image-root", metavar="DIR",
                   help="folder that relative image paths (and RationaleVQA image ids) in --edits / --dataset "
                        "resolve against (EasyEdit's coco_image; default: the file's folder)")
    g.add_argument("--limit", type=int, metavar="N", help="use only the first N records")


def _add_protocol(p: argparse.ArgumentParser, eval_every: int, subsample: int, out: str) -> None:
    g = p.add_argument_group("evaluation (METHOD.md §7)")
    g.add_argument("--eval-every", type=int, default=eval_every, metavar="K",
                   help=f"evaluate after every K sequential edits and at the end; 0: only at the end "
                        f"(default {eval_every})")
    g.add_argument("--subsample", type=int, default=subsample, metavar="N",
                   help=f"intermediate evaluations probe a seeded subsample of N edited records and N "
                        f"locality probes; the final one probes everything (default {subsample})")
    g.add_argument("--locality-size", type=int, default=100, metavar="N",
                   help="seeded pool of unrelated locality probes, before the unedited-model filter (default 100)")
    g.add_argument("--no-plain-locality", dest="plain_locality", action="store_false",
                   help="use only the records' multimodal_locality probes, not plain easy-vqa questions")
    g.add_argument("--no-easyedit-metrics", action="store_true",
                   help="skip EasyEdit's teacher-forced keys (rewrite_acc, ..., multimodal_locality_acc)")
    g.add_argument("--out", default=out, metavar="DIR", help=f"report folder (default {out})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reasonedit",
        description="ReasonEdit: edit a vision-language model with human reasoning, without touching its "
                    "weights. Edits live in a codebook; answers retrieve from it.",
        epilog="Run `reasonedit <command> --help` for a command's options. Quick start: `reasonedit demo`.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only errors")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: 1 for `demo`, whose tiny model runs fastest on one "
                             "thread; torch's default otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    demo = sub.add_parser(
        "demo", help="the main job: ShapeRules edits on the embedded tiny VLM, applied and evaluated",
        description="Apply the shipped ShapeRules edits one after another with ReasonEdit on the embedded "
                    "tiny Qwen2-VL (CPU, a few minutes) and print/save the evaluation: reliability, T/I/R-Gen, "
                    "locality, hard locality, time per edit, plus EasyEdit's keys.")
    _add_model(demo)
    demo.add_argument("--split", default="small", help="shipped ShapeRules split (default: small)")
    demo.add_argument("--limit", type=int, metavar="N", help="use only the first N records")
    demo.add_argument("--no-unedited", action="store_true", help="skip the unedited model's row")
    _add_protocol(demo, eval_every=10, subsample=20, out="runs/demo")
    demo.set_defaults(func=cmd_demo)

    edit = sub.add_parser("edit", help="apply a JSONL of edits and save the codebook",
                          description="Apply edit records to a model (hparams YAML) and save the codebook "
                                      "folder (safetensors + JSON + audit log). An existing codebook at --out "
                                      "is extended.")
    _add_model(edit)
    _add_records(edit)
    edit.add_argument("--out", required=True, metavar="DIR", help="codebook folder to write")
    edit.add_argument("--lock-timeout", type=float, default=120.0, metavar="S",
                      help="seconds to wait while another command writes the codebook (default 120)")
    edit.set_defaults(func=cmd_edit)

    ev = sub.add_parser("eval", help="evaluate ReasonEdit on edit records (or a saved codebook)",
                        description="Sequentially apply the records' edits and evaluate (as `demo`, on your "
                                    "model and records), or with --codebook evaluate a saved codebook on the "
                                    "records it holds.")
    _add_model(ev)
    _add_records(ev)
    ev.add_argument("--codebook", metavar="DIR", help="evaluate this saved codebook instead of editing")
    ev.add_argument("--protocol", choices=("sequential", "single"), default="sequential",
                    help="sequential edits (default) or single-edit (fresh codebook per edit)")
    ev.add_argument("--no-unedited", action="store_true", help="skip the unedited model's row")
    ev.add_argument("--edit-k", nargs="+", type=int, metavar="K",
                    help="also measure edit-k generality: edit K random records on a fresh codebook, test the "
                         "edit questions of the rest (paper: 1 5 10)")
    ev.add_argument("--rounds", type=int, default=10, metavar="N", help="edit-k rounds per K (default 10)")
    _add_protocol(ev, eval_every=200, subsample=50, out="runs/eval")
    ev.set_defaults(func=cmd_eval)

    from .baselines import DEFAULT_METHODS

    cmp_ = sub.add_parser(
        "compare", help="ReasonEdit vs the unedited model, ablations and EasyEdit baselines; writes a report",
        description="Run every method on the same model and records with the same protocol and write "
                    "report.md / report.html / results.json / PNGs. EasyEdit baselines need easyeditor "
                    "importable; otherwise their rows say 'skipped' and why.")
    _add_model(cmp_)
    _add_records(cmp_)
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
    _add_protocol(cmp_, eval_every=10, subsample=20, out="runs/compare")
    cmp_.set_defaults(func=cmd_compare)

    hp = sub.add_parser(
        "hparams", help="write copies of hparams YAMLs that EasyEdit's own from_hparams reads (real paths)",
        description="Materialise shipped hparams YAMLs (package:// models, the packaged sentence encoder, "
                    "relative archives, named WISE margins) into copies with this machine's paths and EasyEdit's "
                    "own forms, for MultimodalEditor.from_hparams(<EasyEdit class>.from_hparams(copy)).")
    hp.add_argument("--materialize", nargs="+", required=True, metavar="YAML", help="hparams YAMLs to copy")
    hp.add_argument("--out", metavar="DIR", help="output folder (<DIR>/<METHOD>/<file>) or one .yaml file "
                                                 "(default runs/hparams)")
    hp.add_argument("--model", metavar="PATH", help="local model folder replacing model_name / name")
    hp.add_argument("--check", action="store_true",
                    help="load each copy with EasyEdit's own hyper-parameter class (needs easyeditor importable)")
    hp.set_defaults(func=cmd_hparams)

    up = sub.add_parser(
        "upstream", help="write ReasonEdit into an EasyEdit checkout (the upstream pull request)",
        description="Write easyeditor/models/reasonedit/ (importing the pip-installed engine), the alg_dict / "
                    "CALLABLE_RESTORE_ALGS entries, edit(rationales=...), hparams/ReasonEdit/*.yaml, "
                    "examples/run_reasonedit_editing.py and a README section into an EasyEdit checkout "
                    "(idempotent; see docs/UPSTREAM.md).")
    up.add_argument("--easyedit", required=True, metavar="PATH", help="root of an EasyEdit git checkout")
    up.set_defaults(func=cmd_upstream)

    ins = sub.add_parser("inspect", help="show a codebook, and for one query what is retrieved and why",
                         description="List a saved codebook's entries (kinds, radius, hubness σ, edits, values) "
                                     "and, for --image/--question, the retrieved entries with distances and "
                                     "scaled scores, the gate decision, the fused prompt and the answer.")
    _add_model(ins)
    ins.add_argument("--codebook", required=True, metavar="DIR", help="codebook folder (from `reasonedit edit`)")
    ins.add_argument("--image", metavar="IMG", help="query image")
    ins.add_argument("--question", metavar="TEXT", help="query question")
    ins.add_argument("--choices", nargs="+", metavar="OPTION", help="answer options (lowest summed NLL wins)")
    ins.add_argument("--limit", type=int, default=40, metavar="N", help="entries to list (default 40)")
    ins.set_defaults(func=cmd_inspect)

    cap = sub.add_parser("caption", help="caption edits: apply them and report caption metrics",
                         description="Apply caption edits (EasyEdit E-IC fields or edit-record fields) one after "
                                     "another and report EasyEdit's caption token accuracies and the paper's "
                                     "reliability / generality / locality on captions (docs/ARCHITECTURE.md).")
    _add_model(cap)
    src = cap.add_mutually_exclusive_group(required=True)
    src.add_argument("--edits", metavar="JSON", help="caption records (JSON list or JSON lines)")
    src.add_argument("--generate", type=int, metavar="N", help="N generated caption edits over easy-vqa images")
    cap.add_argument("--seed", type=int, default=0, help="seed of --generate (default 0)")
    cap.add_argument("--image-root", metavar="DIR", help="root of image and m_loc paths (EasyEdit's coco_image)")
    cap.add_argument("--rephrase-root", metavar="DIR", help="root of image_rephrase paths (rephrase_image)")
    cap.add_argument("--limit", type=int, metavar="N", help="use only the first N records")
    cap.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="caption length (default 16)")
    cap.add_argument("--out", default="runs/captions", metavar="DIR", help="report folder (default runs/captions)")
    cap.set_defaults(func=cmd_caption)

    from .cli_codebook import add_parsers

    add_parsers(sub, _add_model)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 \
        else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("reasonedit_plugin")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    dataset = getattr(args, "dataset", None)
    if dataset:
        from .dataset_loaders import DATASET_FORMATS

        if dataset[0] not in DATASET_FORMATS:
            parser.error(f"--dataset FORMAT must be one of {', '.join(DATASET_FORMATS)}, got {dataset[0]!r}")
    for name in ("limit", "eval_every", "subsample", "locality_size"):
        value = getattr(args, name, None)
        if value is not None and value < (1 if name in ("limit", "subsample") else 0):
            parser.error(f"--{name.replace('_', '-')} must be >= {1 if name in ('limit', 'subsample') else 0}, "
                         f"got {value}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    _configure_logging(args.verbose, args.quiet)
    threads = args.threads if args.threads is not None else 1 if args.command == "demo" else None
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        if getattr(args, "model_specs", None):
            from .model_specs import load_model_specs

            load_model_specs(args.model_specs)
        return int(args.func(args) or 0)
    except ReasonEditError as exc:
        print(f"reasonedit {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, UnicodeError, RecursionError, MemoryError) as exc:  # the environment, not the code
        print(f"reasonedit {args.command}: error: {_environment_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("reasonedit: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    """Error text on one line, control characters shown escaped (ids or paths must not drive the terminal)."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _environment_error(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return _one_line(f"{exc.strerror or exc}{where}; check the path, free space and permissions, then "
                         "run the command again.")
    if isinstance(exc, RecursionError):
        return "an input file is nested too deeply to read; flatten it."
    if isinstance(exc, MemoryError):
        return "out of memory while reading the inputs; use smaller files (--limit)."
    return _one_line(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
