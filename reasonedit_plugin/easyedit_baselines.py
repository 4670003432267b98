"""EasyEdit's own multimodal editors as baselines of the comparison (``baselines.py``), on the same model
and the same records as ReasonEdit.

Each baseline is EasyEdit's real ``MultimodalEditor`` with EasyEdit's hparams class for the method, loaded
from ``hparams/<METHOD>/<model>.yaml`` (``easyedit_setup.py``), wrapped in the comparison's ``EditMethod``
interface (``easyedit_methods.py``); MEND's weights are trained with EasyEdit's trainer
(``easyedit_mend.py``). This module builds them (:func:`make_method`) and registers one runner per
method in ``baseline_registry`` when imported (``baselines.py`` imports it on demand). A method that
cannot run raises :class:`~reasonedit_plugin.baseline_registry.BaselineUnavailable` with the exact reason.

Nothing here is imported by the engine; ``easyeditor`` is imported lazily, when a runner runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import yaml

from .baseline_registry import EASYEDIT_METHODS, BaselineUnavailable, register_easyedit_runner
from .easyedit_mend import (  # noqa: F401 -- public names of the EasyEdit baselines, kept importable here
    EASY_VQA_ROOT, MendTraining, train_mend, training_hparams_path, vqa_record,
)
from .easyedit_methods import (  # noqa: F401
    EasyEditMethod, IKEMethod, MENDMethod, edit_arguments, train_request,
)
from .easyedit_setup import (  # noqa: F401
    ALGORITHMS, DEFAULT_MODEL, HPARAMS_ROOT, NOT_SUPPORTED, ModelFolder, easyeditor, hparams_path,
    load_hparams,
)
from .errors import ConfigError, did_you_mean
from .hparams import PACKAGE_SCHEME, resolve_model_name


# ================================================================================================
# Runners
# ================================================================================================

def _source_folder(model_path: str | None, hparams: Mapping[str, Any]) -> Path:
    if model_path:
        return Path(model_path)
    value = hparams.get("model_name")
    if isinstance(value, str) and value.startswith(PACKAGE_SCHEME):
        return Path(resolve_model_name(value))
    if isinstance(value, str):
        return Path(value)
    raise BaselineUnavailable("no model: give model_path (EasyEdit loads models by path)")


def _check_archive(name: str, hparams: Any, path: Path) -> None:
    archive = getattr(hparams, "archive", None)
    if archive in (None, "", "."):
        raise BaselineUnavailable(
            f"{name} needs weights trained by EasyEdit's MultimodalTrainer and {path} sets no archive; "
            f"train them with `python -m reasonedit_plugin.easyedit_baselines train-{name.lower()}` "
            "(see docs/BASELINES.md) and set archive:")
    if not Path(archive).is_file():
        raise BaselineUnavailable(f"{name}: the trained weights {archive} do not exist; train them with "
                                  f"`python -m reasonedit_plugin.easyedit_baselines train-{name.lower()}` "
                                  "(docs/BASELINES.md)")


def make_method(name: str, model_path: Union[str, Path, None] = None,
                hparams_file: Union[str, Path, None] = None, *, vlm: Any = None,
                max_new_tokens: int = 16) -> EasyEditMethod:
    """Build the :class:`EasyEditMethod` for ``name`` (raises :class:`BaselineUnavailable` with the reason
    when it cannot run here)."""
    if name in NOT_SUPPORTED:
        raise BaselineUnavailable(NOT_SUPPORTED[name])
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown EasyEdit method {name!r}.{did_you_mean(name, EASYEDIT_METHODS)}")
    easyeditor()
    path = Path(hparams_file) if hparams_file else hparams_path(name, Path(model_path).name if model_path
                                                                  else DEFAULT_MODEL)
    if not path.is_file():
        raise BaselineUnavailable(f"no EasyEdit hparams for {name}: {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    folder = ModelFolder(_source_folder(str(model_path) if model_path else None, raw))
    overrides: dict[str, Any] = {}
    if name == "IKE":
        from .text_encoder import resolve_text_encoder_path

        overrides["sentence_model_name"] = str(resolve_text_encoder_path(str(raw.get("sentence_model_name")
                                                                           or "all-MiniLM-L6-v2")))
        if raw.get("results_dir") in (None, "", "."):
            overrides["results_dir"] = str(folder.scratch)
    hparams = load_hparams(name, path, folder.path, overrides)
    if ALGORITHMS[name].training:
        _check_archive(name, hparams, path)
    processor = vlm.processor if vlm is not None else None
    if processor is None:
        from .vlm import load_processor
        from .model_specs import get_model_spec
        import transformers

        processor = load_processor(folder.path, get_model_spec(transformers.AutoConfig.from_pretrained(
            str(folder.path), local_files_only=True)))
    if name == "MEND":
        for key in ("coco_image", "rephrase_image"):
            if getattr(hparams, key, None) == EASY_VQA_ROOT:
                from .data.shaperules import easy_vqa_root

                setattr(hparams, key, str(easy_vqa_root()) + "/")
    cls = {"IKE": IKEMethod, "MEND": MENDMethod}.get(name, EasyEditMethod)
    return cls(name, hparams, processor, folder, max_new_tokens=max_new_tokens, hparams_file=str(path))


def _runner(name: str) -> Any:
    def run(*, model_path: str | None = None, hparams_path: str | None = None, records: Any = None,
            reference: Any = None, protocol: Any = None, vlm: Any = None, **_: Any) -> EasyEditMethod:
        return make_method(name, model_path, hparams_path, vlm=vlm)

    run.__name__ = f"run_easyedit_{name.lower()}"
    return run


for _name in EASYEDIT_METHODS:
    register_easyedit_runner(_name, _runner(_name), overwrite=True)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reasonedit_plugin.easyedit_baselines train-mend [--results-dir runs/easyedit] ...``"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m reasonedit_plugin.easyedit_baselines",
                                     description="Train EasyEdit's MEND for the embedded default model.")
    sub = parser.add_subparsers(dest="command", required=True)
    tm = sub.add_parser("train-mend", help="EasyEdit's MultimodalTrainer on ShapeRules (easy-vqa train images)")
    tm.add_argument("--results-dir", default="runs/easyedit", help="EasyEdit's results_dir (archive under models/MEND)")
    tm.add_argument("--hparams", default=None, help="training YAML (default hparams/TRAINING/MEND/tiny-qwen2-vl-shapes.yaml)")
    tm.add_argument("--train-n", type=int, default=200)
    tm.add_argument("--val-n", type=int, default=20)
    tm.add_argument("--seed", type=int, default=1)
    tm.add_argument("--max-iters", type=int, default=None, help="override the YAML's max_iters")
    args = parser.parse_args(argv)
    result = train_mend(args.results_dir, args.hparams, args.train_n, args.val_n, args.seed, args.max_iters)
    print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
