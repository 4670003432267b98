"""What every ``reasonedit`` command reads: the hparams YAML, the model, edit records, codebook folders;
the options that select them; and the one helper that prints (unless ``-q``).

Commands call ``cli_inputs.load_vlm`` through this module, so a test can replace the model loader in one
place (``monkeypatch.setattr(cli_inputs, "load_vlm", ...)``).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, ReasonEditError, RecordError

logger = logging.getLogger("reasonedit_plugin.cli")

DEFAULT_HPARAMS_NAME = "tiny-qwen2-vl-shapes.yaml"


def count(minimum: int = 1):
    """An argparse ``type`` for a whole number >= ``minimum``: ``--generate 0`` (an empty report) or ``--limit -1``
    is refused with argparse's one-line usage error naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


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


def other_answer_template(model_path: Path, template: str) -> str | None:
    """A model trained by ``train_default_model`` records the answer-entry wording it learnt to read; what to
    say when the hparams store entries in another one (None: the same, or not such a model)."""
    from .data.default_model_build import trained_answer_template

    trained = trained_answer_template(model_path)
    if trained is None or trained == template:
        return None
    return (f"{model_path} was trained on answer entries worded {trained!r}, the hparams store them as "
            f"{template!r}; set codebook.answer_template to the model's.")


def warn_on_other_answer_template(model_path: Path, template: str) -> str | None:
    """:func:`other_answer_template`, logged as a warning (and returned)."""
    message = other_answer_template(model_path, template)
    if message is not None:
        logger.warning(message)
    return message


def report_warnings(hparams: Any) -> list[str]:
    """What a report states above its tables (``-q`` hides the log's warnings; a report keeps them)."""
    message = other_answer_template(Path(hparams.model_name), hparams.codebook.answer_template)
    return [message] if message else []


def load_vlm(hparams: Any) -> Any:
    from .vlm import VLM

    model_path = Path(hparams.model_name)
    if not model_path.exists():
        raise ReasonEditError(f"model folder {str(model_path)!r} does not exist; set model_name in the hparams "
                              "YAML or pass --model PATH.")
    device = resolve_device(hparams.device)
    warn_on_other_answer_template(model_path, hparams.codebook.answer_template)
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
    from .data.split_files import load_split

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


def codebook_folder(path: str) -> Path:
    from .storage import is_codebook

    p = Path(path)
    if not p.is_dir():
        raise ReasonEditError(f"codebook folder {path!r} does not exist; create one with `reasonedit edit`.")
    if not is_codebook(p):
        raise ReasonEditError(f"{path!r} is not a ReasonEdit codebook (no CURRENT file); `reasonedit verify "
                              f"--codebook {path} --repair` may restore it, or create one with `reasonedit edit`.")
    return p


def check_rationales(records: Sequence[Any], hparams: Any) -> None:
    """``missing_rationale: error`` (the default): every record needs a rationale."""
    if getattr(hparams, "missing_rationale", "error") != "error":
        return
    for r in records:
        if not r.rationale:
            raise RecordError("has no rationale, and the hparams say missing_rationale: error; add a 'rationale' "
                              "(the human reasoning) or set missing_rationale: answer_only.", r.id, "rationale")


def needs_calibration(hparams: Any) -> bool:
    return hparams.embedding.layer == "auto" or hparams.embedding.scale == "auto"


def say(args: argparse.Namespace, *text: Any) -> None:
    if not getattr(args, "quiet", False):
        print(*text)


def command_line() -> str:
    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else "reasonedit"
    if prog in ("__main__.py", "cli.py"):
        prog = "reasonedit"
    return " ".join([prog if prog.startswith("reasonedit") else argv[0]] + [shlex.quote(a) for a in argv[1:]])


def add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--hparams", metavar="YAML",
                   help="ReasonEdit hparams YAML (alg_name: ReasonEdit); default: the embedded "
                        f"hparams/ReasonEdit/{DEFAULT_HPARAMS_NAME}")
    g.add_argument("--model", metavar="PATH", help="local model folder; overrides model_name of the YAML")
    g.add_argument("--device", help="cpu, cuda or cuda:N; overrides device of the YAML")
    g.add_argument("--model-specs", nargs="+", metavar="MODULE",
                   help="Python modules that register ModelSpec rows for families not in the table "
                        "(as model_specs: in the YAML; see docs/ADDING_A_FAMILY.md)")


def add_records(p: argparse.ArgumentParser, split_default: str | None = None) -> None:
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
    g.add_argument("--limit", type=count(), metavar="N", help="use only the first N records")
