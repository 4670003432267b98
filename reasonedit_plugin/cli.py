"""The ``reasonedit`` command.

::

    reasonedit demo                     # the main job: ShapeRules edits on the embedded tiny VLM, evaluated
    reasonedit edit    --edits E.jsonl --out CODEBOOK [--hparams YAML]
    reasonedit eval    --edits E.jsonl [--codebook CODEBOOK] [--hparams YAML] [--out DIR]
    reasonedit compare [--edits E.jsonl | --split small] [--methods ...] [--out DIR]
    reasonedit inspect --codebook CODEBOOK [--image IMG --question Q [--choices A B C]]
    reasonedit remove | approve | export | import | verify ...
    reasonedit hparams --materialize YAML ... | upstream --easyedit PATH

The commands live in ``cli_runs.py`` (demo, eval, compare, caption) and ``cli_codebook.py`` (edit,
inspect and the codebook verbs); what they read is in ``cli_inputs.py``.

Without ``--hparams`` the embedded default (``hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml``: the tiny
Qwen2-VL shipped in the package) is used. A user error (bad path, bad config, bad record, a busy or
damaged codebook, a full disk) prints one line and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import __version__
from .cli_inputs import count, say
from .errors import ReasonEditError

EXIT_USAGE = 2


def cmd_hparams(args: argparse.Namespace) -> int:
    from .easyedit_materialize import materialize_command

    return materialize_command(args.materialize, args.out, args.model, args.check, lambda *t: say(args, *t))


def cmd_upstream(args: argparse.Namespace) -> int:
    from .upstream import upstream_command

    return upstream_command(args.easyedit, lambda *t: say(args, *t))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reasonedit",
        description="ReasonEdit: edit a vision-language model with human reasoning, without touching its "
                    "weights. Edits live in a codebook; answers retrieve from it.",
        epilog="Run `reasonedit <command> --help` for a command's options. Quick start: `reasonedit demo`.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only errors")
    parser.add_argument("--threads", type=count(), metavar="N",
                        help="torch CPU threads (default: 1 for `demo`, whose tiny model runs fastest on one "
                             "thread; torch's default otherwise)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    from . import cli_codebook, cli_runs

    cli_runs.add_parsers(sub)
    cli_codebook.add_parsers(sub)
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
    if quiet:  # transformers' own "Loading weights" bars and warnings too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


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
