"""``reasonedit upstream --easyedit PATH``: write ReasonEdit into an EasyEdit checkout, as a pull request.

The contribution follows how methods are added to EasyEdit (its README's "New Method"; e.g. SimIE, DEFER,
UltraEdit): a method folder ``easyeditor/models/reasonedit/`` (``reasonedit_main.py`` with
``apply_reasonedit_to_multimodal_model``, ``reasonedit_hparams.py``, ``__init__.py``), its import in
``easyeditor/models/__init__.py``, the ``alg_dict.py`` entries (``ALG_MULTIMODAL_DICT``,
``MULTIMODAL_EDIT_ALGS``), ``CALLABLE_RESTORE_ALGS`` in ``editors/utils.py``, ``hparams/ReasonEdit/*.yaml``,
``examples/run_reasonedit_editing.py`` and a README section; plus one small change to
``MultimodalEditor._prepare_requests`` so that ``edit(..., rationales=[...])`` reaches the requests.

The method folder is thin: the engine is the pip-installed ``reasonedit-plugin``, imported lazily, so
``import easyeditor`` keeps working without it (``from_hparams`` / the apply function then say how to
install it). When EasyEdit carries the method natively the plugin's own registration hook stands down
(``easyedit_registration.NATIVE_MODULE``). Nothing of EasyEdit's code is copied: existing files get
insertions at named anchors; a missing anchor is an error naming the file and the anchor.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Union

import yaml

from .easyedit_registration import easyedit_can_load
from .errors import ConfigError

__all__ = ["write_contribution", "Contribution"]

HPARAMS_ROOT = Path(__file__).resolve().parent.parent / "hparams"
METHOD = "ReasonEdit"
MARK = "ReasonEdit"  # present in an edited file once the contribution is in

INIT_PY = '''from .reasonedit_hparams import ReasonEditHyperParams
from .reasonedit_main import apply_reasonedit_to_multimodal_model
'''

HPARAMS_PY = '''"""Hyper-parameters of ReasonEdit (``alg_name: ReasonEdit``; ``hparams/ReasonEdit/<model>.yaml``).

ReasonEdit's engine is the pip package ``reasonedit-plugin``; this module exposes its hyper-parameter
class, a subclass of EasyEdit's ``HyperParams`` loaded with ``ReasonEditHyperParams.from_hparams(path)``
(unknown keys are an error; ``model_name: package://tiny-qwen2-vl-shapes`` is the engine's embedded
CPU model). Without the package, EasyEdit imports as before and ``from_hparams`` says how to install it.
"""

from ...util.hparams import HyperParams

try:
    from reasonedit_plugin.hparams import ReasonEditHyperParams, adopt_easyedit_base
except ImportError as _missing:  # the engine is optional for the rest of EasyEdit
    _REASON = str(_missing)

    class ReasonEditHyperParams(HyperParams):
        """Placeholder while the ReasonEdit engine is not installed."""

        @classmethod
        def from_hparams(cls, hparams_name_or_path: str):
            raise ImportError(f"ReasonEdit needs its engine: pip install reasonedit-plugin ({_REASON})")
else:
    adopt_easyedit_base()  # ReasonEditHyperParams now subclasses EasyEdit's HyperParams
'''

MAIN_PY = '''"""ReasonEdit: editing a vision-language model with human reasoning, without changing its weights.

An edit is (image, question, answer, rationale). The edit is stored in a codebook outside the model
(keys from the vision MLP's input and the question, values: the answer and the rationale's sentences);
at every forward pass the wrapper returned here retrieves the facts for (image, question), fuses them into
the prompt and runs the unchanged base model. ``weights_copy`` is a callable that removes the edits
(``CALLABLE_RESTORE_ALGS``). Rationales come from ``MultimodalEditor.edit(..., rationales=[...])``, a
request's ``rationale`` field, or ``rationale_source`` in the YAML (for ``edit_dataset``).

The engine is the pip package ``reasonedit-plugin`` (imported when the method runs).
"""

from typing import Any, Dict, List, Tuple, Union

from .reasonedit_hparams import ReasonEditHyperParams


def apply_reasonedit_to_multimodal_model(
    model: Any,
    tok: Any,
    requests: Union[List[Dict], Dict],
    hparams: ReasonEditHyperParams,
    copy: bool = False,
    return_orig_weights: bool = False,
    keep_original_weight: bool = False,
    **kwargs: Any,
) -> Tuple[Any, Any]:
    """Apply ``requests`` (a list: single editing; a dict: sequential editing appends to the same codebook);
    returns ``(edited_model, restore)``. The base model's weights are never changed."""
    try:
        from reasonedit_plugin.easyedit_adapter import apply_reasonedit_to_multimodal_model as apply
    except ImportError as exc:
        raise ImportError(f"ReasonEdit needs its engine: pip install reasonedit-plugin ({exc})") from exc
    return apply(model, tok, requests, hparams, copy=copy, return_orig_weights=return_orig_weights,
                 keep_original_weight=keep_original_weight, **kwargs)
'''

EXAMPLE_PY = '''"""ReasonEdit with EasyEdit's MultimodalEditor: sequential edits of (image, question, answer, rationale).

Run from EasyEdit's root (needs ``pip install reasonedit-plugin``):

    # the engine's embedded tiny Qwen2-VL on ShapeRules edits (CPU, a few minutes)
    python examples/run_reasonedit_editing.py --hparams hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml --size 5
    # your model (set model_name in the YAML) on an E-VQA file whose records carry a "rationale" field
    python examples/run_reasonedit_editing.py --hparams hparams/ReasonEdit/qwen2vl-7b.yaml \\\\
        --data data/vqa_eval.json --image_root data/ --size 100
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from easyeditor import MultimodalEditor, ReasonEditHyperParams  # noqa: E402


def load_records(args):
    if args.data:
        from reasonedit_plugin.dataset_loaders import load_dataset

        return load_dataset(args.format, args.data, image_root=args.image_root, limit=args.size)
    from reasonedit_plugin.data.split_files import load_split
    from reasonedit_plugin.records import make_records

    return make_records(load_split("small")[: args.size])


def edit_kwargs(records):
    kwargs = {
        "prompts": [r.prompt for r in records],
        "targets": [r.target for r in records],
        "image": [str(r.image) for r in records],
        "rephrase_prompts": [r.rephrase_prompt or r.prompt for r in records],
        "rephrase_image": [str(r.image_rephrase or r.image) for r in records],
    }
    if all(r.rationale for r in records):
        kwargs["rationales"] = [r.rationale for r in records]
    if all(r.locality_prompt and r.locality_ground_truth for r in records):
        kwargs["locality_inputs"] = {"text": {"prompt": [r.locality_prompt for r in records],
                                              "ground_truth": [r.locality_ground_truth for r in records]}}
    if all(r.multimodal_locality_image and r.multimodal_locality_prompt for r in records):
        kwargs.setdefault("locality_inputs", {})["vision"] = {
            "image": [str(r.multimodal_locality_image) for r in records],
            "prompt": [r.multimodal_locality_prompt for r in records],
            "ground_truth": [r.multimodal_locality_ground_truth for r in records]}
    return kwargs


def mean(metrics, phase, key):
    values = [float(m[phase][key]) for m in metrics if key in m.get(phase, {})]
    return statistics.fmean(values) if values else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", required=True, help="hparams/ReasonEdit/<model>.yaml")
    parser.add_argument("--data", help="E-VQA / E-IC JSON or RationaleVQA records (default: ShapeRules demo)")
    parser.add_argument("--format", default="evqa", choices=["evqa", "eic", "rationalevqa"])
    parser.add_argument("--image_root", help="folder of the images (EasyEdit's coco_image)")
    parser.add_argument("--size", type=int, default=5, help="number of edits")
    parser.add_argument("--output_dir", default="./outputs")
    args = parser.parse_args()

    hparams = ReasonEditHyperParams.from_hparams(args.hparams)
    records = load_records(args)
    editor = MultimodalEditor.from_hparams(hparams)
    metrics, edited_model, _ = editor.edit(**edit_kwargs(records), sequential_edit=True, verbose=False)
    keys = ["rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc", "multimodal_locality_acc"]
    summary = {phase: {k: mean(metrics, phase, k) for k in keys} for phase in ("pre", "post")}
    summary["edits"] = len(records)
    summary["apply_function"] = editor.apply_algo.__module__
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "ReasonEdit_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
'''

PREPARE_REQUESTS_PATCH = '''        if kwargs.get('rationales') is not None:  # ReasonEdit: one rationale per edit
            rationales = kwargs['rationales']
            if isinstance(rationales, str):
                rationales = [rationales, ]
            if len(rationales) != len(requests):
                raise ValueError(f'rationales has {len(rationales)} items for {len(requests)} prompts; give one per prompt.')
            for request, rationale in zip(requests, rationales):
                request['rationale'] = rationale

'''

README_SECTION = '''
**ReasonEdit** (multimodal) edits a vision-language model with human reasoning, without changing its
weights: an edit is (image, question, answer, rationale), stored in a codebook outside the model and
retrieved for matching (image, question) at inference. It runs on Qwen2-VL / Qwen3-VL / LLaVA-OneVision
through `MultimodalEditor` (`alg_name: ReasonEdit`, `hparams/ReasonEdit/`), needs `pip install
reasonedit-plugin` (its engine), and takes rationales with `editor.edit(..., rationales=[...])`.
Example: `python examples/run_reasonedit_editing.py --hparams hparams/ReasonEdit/tiny-qwen2-vl-shapes.yaml`
(the engine's embedded tiny model; CPU).
'''


@dataclasses.dataclass
class Contribution:
    """What :func:`write_contribution` did to the checkout."""

    root: Path
    created: list[str]
    changed: list[str]
    unchanged: list[str]
    """Files that already carried the contribution (writing is idempotent)."""


def _insert_into_braces(text: str, name: str, entry: str, path: Path) -> str:
    """Add ``entry`` as the last element of the ``{...}`` literal assigned to ``name``."""
    match = re.search(rf"^{re.escape(name)}\s*=\s*{{", text, re.M)
    if match is None:
        raise ConfigError(f"{path}: no '{name} = {{' to add ReasonEdit to; is this EasyEdit's checkout "
                          "(git clone https://github.com/zjunlp/EasyEdit)?")
    depth, i = 1, match.end()
    while depth:
        if i >= len(text):
            raise ConfigError(f"{path}: '{name}' has no closing brace.")
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    close = i - 1
    body = text[match.end():close].rstrip()
    comma = "" if body.endswith((",", "{")) or not body.strip() else ","
    if "\n" in text[match.end():close]:
        return text[:match.end()] + body + comma + f"\n    {entry},\n" + text[close:]
    return text[:match.end()] + body + comma + f" {entry}" + text[close:]


def _edit(path: Path, change, report: Contribution, root: Path) -> None:  # noqa: ANN001
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; --easyedit must be the root of an EasyEdit checkout.")
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(root))
    new = change(text)
    if new == text:
        report.unchanged.append(rel)
        return
    path.write_text(new, encoding="utf-8")
    report.changed.append(rel)


def _write(path: Path, text: str, report: Contribution, root: Path) -> None:
    rel = str(path.relative_to(root))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        report.unchanged.append(rel)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    path.write_text(text, encoding="utf-8")
    (report.changed if existed else report.created).append(rel)


def write_contribution(easyedit: Union[str, Path]) -> Contribution:
    """Write ReasonEdit into the EasyEdit checkout at ``easyedit`` (idempotent)."""
    root = Path(easyedit).expanduser().resolve()
    package = root / "easyeditor"
    if not (package / "util" / "alg_dict.py").is_file():
        raise ConfigError(f"{root} is not an EasyEdit checkout (no easyeditor/util/alg_dict.py); give the folder "
                          "of `git clone https://github.com/zjunlp/EasyEdit`.")
    if not HPARAMS_ROOT.joinpath(METHOD).is_dir():
        raise ConfigError(f"no {HPARAMS_ROOT / METHOD}: run this from a checkout of reasonedit_plugin.")
    report = Contribution(root, [], [], [])
    method = package / "models" / "reasonedit"
    _write(method / "__init__.py", INIT_PY, report, root)
    _write(method / "reasonedit_hparams.py", HPARAMS_PY, report, root)
    _write(method / "reasonedit_main.py", MAIN_PY, report, root)
    _write(root / "examples" / "run_reasonedit_editing.py", EXAMPLE_PY, report, root)
    for yaml_file in sorted(HPARAMS_ROOT.joinpath(METHOD).glob("*.yaml")):
        model_name = (yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}).get("model_name", "")
        if not easyedit_can_load(str(model_name)):
            continue  # e.g. LLaVA-1.5, InstructBLIP: the engine runs them, EasyEdit has no loader for them
        target = root / "hparams" / METHOD / yaml_file.name
        _write(target, yaml_file.read_text(encoding="utf-8"), report, root)

    def models_init(text: str) -> str:
        line = "from .reasonedit import *\n"
        return text if line in text else text.rstrip("\n") + "\n" + line

    def alg_dict(text: str) -> str:
        if "apply_reasonedit_to_multimodal_model" in text:
            return text
        imports = list(re.finditer(r"^from \.\.\s?models\..*$", text, re.M))
        if not imports:
            raise ConfigError(f"{package / 'util' / 'alg_dict.py'}: no 'from ..models.<method> import' lines.")
        at = imports[-1].end()
        text = (text[:at] + "\nfrom ..models.reasonedit import ReasonEditHyperParams, "
                "apply_reasonedit_to_multimodal_model" + text[at:])
        text = _insert_into_braces(text, "MULTIMODAL_EDIT_ALGS", "'ReasonEdit'", package / "util" / "alg_dict.py")
        return _insert_into_braces(text, "ALG_MULTIMODAL_DICT", "'ReasonEdit': apply_reasonedit_to_multimodal_model",
                                   package / "util" / "alg_dict.py")

    def editor_utils(text: str) -> str:
        match = re.search(r"^CALLABLE_RESTORE_ALGS\s*=\s*{[^}]*}", text, re.M)
        if match is None:
            raise ConfigError(f"{package / 'editors' / 'utils.py'}: no 'CALLABLE_RESTORE_ALGS = {{...}}'.")
        if '"ReasonEdit"' in match.group(0) or "'ReasonEdit'" in match.group(0):
            return text
        return _insert_into_braces(text, "CALLABLE_RESTORE_ALGS", '"ReasonEdit"', package / "editors" / "utils.py")

    def multimodal_editor(text: str) -> str:
        if "kwargs.get('rationales')" in text:
            return text
        start = text.find("def _prepare_requests(")
        anchor = "\n        return requests\n"
        at = text.find(anchor, start)
        if start < 0 or at < 0:
            raise ConfigError(f"{package / 'editors' / 'multimodal_editor.py'}: no '_prepare_requests' ending in "
                              "'return requests' to add rationales to.")
        return text[:at + 1] + PREPARE_REQUESTS_PATCH + text[at + 1:]

    def readme(text: str) -> str:
        if "**ReasonEdit** (multimodal)" in text:
            return text
        rows = list(re.finditer(r"^\| WISE \|[^\n]*\|[ \t]*$", text, re.M))
        multimodal = [m for m in rows if "Qwen2-VL" in text[max(0, m.start() - 600):m.start()]]
        if not multimodal:
            raise ConfigError(f"{root / 'README.md'}: no multimodal method table (a '| WISE |' row after a "
                              "'Qwen2-VL' header) to add ReasonEdit to.")
        at = multimodal[0].end()
        return text[:at] + "\n| ReasonEdit |  |  | ✅ | ✅ |\n" + README_SECTION + text[at:]

    _edit(package / "models" / "__init__.py", models_init, report, root)
    _edit(package / "util" / "alg_dict.py", alg_dict, report, root)
    _edit(package / "editors" / "utils.py", editor_utils, report, root)
    _edit(package / "editors" / "multimodal_editor.py", multimodal_editor, report, root)
    _edit(root / "README.md", readme, report, root)
    return report



def upstream_command(easyedit: Union[str, Path], say: Callable[..., None] = print) -> int:
    """``reasonedit upstream --easyedit PATH``."""
    done = write_contribution(easyedit)
    for label, paths in (("created", done.created), ("changed", done.changed), ("already there", done.unchanged)):
        for path in paths:
            say(f"{label:>13}  {path}")
    say(f"ReasonEdit written into {done.root}; review with `git -C {done.root} diff --stat` (docs/UPSTREAM.md).")
    return 0
