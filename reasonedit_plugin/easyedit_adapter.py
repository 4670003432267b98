"""ReasonEdit as an EasyEdit multimodal editing method (``alg_name: ReasonEdit``).

EasyEdit calls ``apply_reasonedit_to_multimodal_model(model, tok, requests, hparams, ...)`` and evaluates
the model it returns. ReasonEdit never changes weights: the returned :class:`ReasonEditModel` wraps the
unchanged base model and a :class:`~reasonedit_plugin.editor.ReasonEditor`, and at every forward pass
retrieves facts for (image, question), fuses them into the prompt and runs the base model. The
``weights_copy`` it returns is a :class:`RestoreEdits` callable that removes the edits again (EasyEdit's
``CALLABLE_RESTORE_ALGS`` protocol, as for GRACE and WISE).

Modes (EasyEdit's ``MultimodalEditor.edit``):

* single (``requests`` is a LIST): a fresh wrapper per call; EasyEdit restores after each request.
* sequential (``requests`` is a DICT): EasyEdit passes its unchanged base model on every call, so the
  wrapper is kept per base model (a weak reference, nothing is written on the model) and every call
  appends to the same codebook. Passing a :class:`ReasonEditModel` as ``model`` appends to it too. The
  session ends when its restore callable runs (or :func:`end_session`).

Rationales: ``easyedit_rationales.py`` (the request's ``rationale`` field, filled by
``MultimodalEditor.edit(..., rationales=[...])``; ``hparams.rationale_source``). Registration with EasyEdit:
``easyedit_registration.py``. Nothing here imports ``easyeditor``. See docs/EASYEDIT.md.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import logging
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from PIL import Image

from . import scoring
from .errors import ConfigError, ReasonEditError, RecordError, UnsupportedModelError
from .easyedit_rationales import RationaleSource, request_rationale
from .hparams import ReasonEditHyperParams

logger = logging.getLogger(__name__)

__all__ = [
    "ReasonEditModel",
    "RestoreEdits",
    "RationaleSource",
    "apply_reasonedit_to_multimodal_model",
    "end_session",
]

SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")
"""Per-token inputs that are spliced when facts enter the prompt (everything else passes unchanged)."""

_SENTINEL = "\u2063REASONEDIT_QUESTION\u2063"

EditorFactory = Callable[[torch.nn.Module, Any, ReasonEditHyperParams], Any]


# ==================================================================================== requests
def _request_image(request: Mapping[str, Any]) -> Image.Image:
    """EasyEdit's Qwen2VL / LLaVA-OneVision processors give a list with one PIL image per request."""
    image = request.get("image")
    file_type = request.get("file_type", "image")
    if file_type not in ("image", "single-image"):
        raise UnsupportedModelError(f"ReasonEdit edits single images; this request has file_type={file_type!r}.")
    if isinstance(image, (list, tuple)):
        if len(image) != 1:
            raise RecordError(f"ReasonEdit edits one image per request, got {len(image)}.", field="image")
        image = image[0]
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, Image.Image):
        return image
    if torch.is_tensor(image):
        raise UnsupportedModelError(
            "this request's image is a pre-processed tensor (EasyEdit's BLIP-2 / MiniGPT-4 path); the ReasonEdit "
            "engine builds its keys from PIL images through a Hugging Face VLM. Use a Hugging Face model "
            "(Qwen2-VL, Qwen3-VL, LLaVA-OneVision), or pass editor_factory= with an editor for your model.")
    raise RecordError(f"unsupported image of type {type(image).__name__}.", field="image")


def request_to_record(request: Mapping[str, Any], hparams: ReasonEditHyperParams, edit_id: str) -> dict[str, Any]:
    """An engine edit record (``records.py`` field names) from one EasyEdit request."""
    if not isinstance(request, Mapping) or "prompt" not in request or "target" not in request:
        raise RecordError("an EasyEdit request must be a dict with at least prompt, target and image.")
    record: dict[str, Any] = {
        "id": edit_id,
        "image": _request_image(request),
        "prompt": request["prompt"],
        "target": request["target"],
        "meta": {"source": "easyedit"},
    }
    rationale = request_rationale(request, hparams)
    if rationale is not None:
        record["rationale"] = rationale
    if request.get("choices") is not None:
        record["choices"] = list(request["choices"])
    return record


# ==================================================================================== the wrapper
@dataclass
class _Splice:
    """Where the question sits in one tokenised EasyEdit prompt, and what replaces it."""

    start: int
    end: int
    new_ids: list[int]

    @property
    def delta(self) -> int:
        return len(self.new_ids) - (self.end - self.start)


@dataclass
class _TemplateMarks:
    prefix_tail: list[int]
    suffix: list[int]
    suffix_head: list[int] = field(default_factory=list)


class ReasonEditModel(torch.nn.Module):
    """The base model plus a ReasonEditor, evaluated by EasyEdit in place of the edited model.

    * Hugging Face VLMs: ``model(**inputs)`` -- the question is recovered from ``input_ids`` (between the
      chat template's image/user marker and its end-of-turn marker), facts retrieved from the pixel
      tensors are fused into it, the base model runs on the spliced tokens, and ``logits`` are trimmed
      to the original length (right-aligned, so EasyEdit's right-aligned labels line up).
    * BLIP-2 / MiniGPT-4 style: ``model(batch)`` with ``text_input``, ``image``, ``labels``,
      ``prompts_len`` -- the prompt is fused, ``prompts_len`` recomputed, and ``logits``/``labels`` are
      trimmed by the number of inserted tokens.

    When nothing is retrieved the base model is called with the caller's inputs unchanged, so the
    outputs are identical to the unedited model's. The base model's weights are never touched.
    """

    def __init__(self, model: torch.nn.Module, editor: Any, processor: Any,
                 hparams: Optional[ReasonEditHyperParams] = None):
        super().__init__()
        self.model = model
        self.editor = editor
        self.processor = processor
        self.hparams = hparams
        self.edit_log: list[str] = []
        """Edit ids added through this wrapper, in order."""
        self.last_retrieval: Any = None
        """The Retrieval of the most recent forward pass (None when no query was made)."""
        self._marks: dict[bool, _TemplateMarks] = {}
        self._counter = 0
        self._hidden_plan: Optional[tuple[str, Any, tuple[int, int]]] = None

    # -- attribute fallback: EasyEdit and users may read .config, .device, .dtype of the model
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("model", "_modules", "_parameters", "_buffers"):
                raise
            return getattr(super().__getattr__("model"), name)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    # -- editing -------------------------------------------------------------------------------
    def next_edit_id(self) -> str:
        self._counter += 1
        return f"easyedit-{self._counter:05d}"

    def add_requests(self, requests: Sequence[Mapping[str, Any]], hparams: ReasonEditHyperParams) -> Any:
        """Apply EasyEdit requests to the codebook (all-or-nothing); returns the engine's report."""
        records = [request_to_record(r, hparams, self.next_edit_id()) for r in requests]
        report = self.editor.edit(records)
        outcomes = getattr(report, "outcomes", None) or []
        added = [o.edit_id for o in outcomes if getattr(o, "status", "added") != "skipped_correct"]
        self.edit_log.extend(added if outcomes else [r["id"] for r in records])
        for o in outcomes:
            if getattr(o, "status", None) == "skipped_correct":
                logger.info("ReasonEdit: %s not stored, the unedited model already answers it "
                            "(only_edit_errors: true).", o.edit_id)
        return report

    def undo(self, edit_id: str) -> None:
        self.editor.remove(edit_id)
        if edit_id in self.edit_log:
            self.edit_log.remove(edit_id)

    def reset(self) -> list[str]:
        """Remove every edit made through this wrapper; the model then behaves exactly like the base."""
        removed = []
        for edit_id in reversed(list(self.edit_log)):
            self.editor.remove(edit_id)
            removed.append(edit_id)
        self.edit_log.clear()
        return removed

    # -- forward -------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and isinstance(args[0], Mapping) and "text_input" in args[0]:
            return self._forward_blip(args[0])
        if args:
            raise TypeError("ReasonEditModel takes keyword inputs (model(**inputs)) or one EasyEdit batch "
                            "dict with text_input/image/labels/prompts_len.")
        if "input_ids" in kwargs:
            return self._forward_hf(kwargs)
        self.last_retrieval = None
        return self.model(**kwargs)

    def _forward_hf(self, inputs: dict[str, Any]) -> Any:
        splice = self._plan_hf(inputs)
        if splice is None:
            with self._hidden_fusion():  # hidden-state fusions: same tokens, a bias inside the model
                return self.model(**inputs)
        length = inputs["input_ids"].shape[1]
        outputs = self.model(**self._apply_splice(inputs, splice))
        return _trim_outputs(outputs, length, drop_left=None)

    def _hidden_fusion(self) -> Any:
        """The editor's hidden-state fusion for the query planned last (a no-op for prompt fusion)."""
        plan, self._hidden_plan = self._hidden_plan, None
        context = getattr(self.editor, "fusion_context", None)
        if plan is None or context is None:
            return contextlib.nullcontext()
        return context(*plan)

    @torch.no_grad()
    def generate(self, **inputs: Any) -> torch.Tensor:
        """Generate with the edits; the returned sequences start with the caller's own prompt ids."""
        splice = self._plan_hf(inputs) if "input_ids" in inputs else None
        if splice is None:
            with self._hidden_fusion():
                return self.model.generate(**inputs)
        new_inputs = self._apply_splice(inputs, splice)
        out = self.model.generate(**new_inputs)
        return torch.cat([inputs["input_ids"], out[:, new_inputs["input_ids"].shape[1]:]], dim=1)

    def _plan_hf(self, inputs: Mapping[str, Any]) -> Optional[_Splice]:
        self.last_retrieval = None
        self._hidden_plan = None
        ids = inputs["input_ids"]
        has_image = any(k.startswith("pixel_values") for k in inputs if inputs[k] is not None)
        if not has_image:
            return None  # a text-only query has no image key: the model answers unedited
        if len(self.editor.edit_ids()) == 0:
            return None
        if ids.shape[0] != 1:
            raise ReasonEditError(f"ReasonEditModel evaluates one example at a time (EasyEdit's batch_size is "
                                  f"1); got a batch of {ids.shape[0]}.")
        row = ids[0].tolist()
        start, end = self._question_span(row, with_image=True)
        tok = self.tokenizer
        question = tok.decode(row[start:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        retrieval = self.editor.retrieve_from_inputs(inputs, question, self._yes_on(inputs, row, start, end))
        self.last_retrieval = retrieval
        fused = self.editor.fused_question(question, retrieval)
        if fused == question:
            self._hidden_plan = (question, retrieval, (start, end))
            return None
        new_ids = tok(fused, add_special_tokens=False)["input_ids"]
        return _Splice(start, end, list(new_ids))

    def _yes_on(self, inputs: Mapping[str, Any], row: list[int], start: int, end: int
                ) -> Optional[Callable[[str], float]]:
        """Claim question -> P(yes) on these inputs: the question's tokens replaced by the claim's, cut after
        the generation prompt (the gate's evidence check; None when the prompt's end cannot be found)."""
        suffix = self._template_marks(True).suffix
        if row[end:end + len(suffix)] != suffix:
            return None

        def yes(question: str) -> float:
            ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
            spliced = self._apply_splice(inputs, _Splice(start, end, list(ids)))
            cut = start + len(ids) + len(suffix)
            spliced.pop("labels", None)
            for key in SEQUENCE_KEYS:
                if spliced.get(key) is not None:
                    spliced[key] = spliced[key][:, :cut]
            with torch.no_grad():
                logits = self.model(**spliced).logits[0, -1]
            return scoring.yes_share(self.tokenizer, logits)

        return yes

    def _apply_splice(self, inputs: Mapping[str, Any], splice: _Splice) -> dict[str, Any]:
        out = dict(inputs)
        s, e = splice.start, splice.end
        for key in SEQUENCE_KEYS:
            value = inputs.get(key)
            if value is None:
                continue
            if key == "input_ids":
                middle = torch.tensor([splice.new_ids], dtype=value.dtype, device=value.device)
            else:  # the question's tokens are ordinary text: copy the value its first token had
                fill = value[0, s] if e > s else (1 if key == "attention_mask" else 0)
                middle = torch.full((1, len(splice.new_ids)), int(fill), dtype=value.dtype, device=value.device)
            out[key] = torch.cat([value[:, :s], middle, value[:, e:]], dim=1)
        for key in ("position_ids", "cache_position"):
            out.pop(key, None)  # recomputed by the model for the longer sequence
        if inputs.get("labels") is not None:
            lab = inputs["labels"]
            middle = torch.full((1, len(splice.new_ids)), -100, dtype=lab.dtype, device=lab.device)
            out["labels"] = torch.cat([lab[:, :s], middle, lab[:, e:]], dim=1)
        return out

    # -- where the question is -------------------------------------------------------------------
    def _template_marks(self, with_image: bool) -> _TemplateMarks:
        if with_image in self._marks:
            return self._marks[with_image]
        processor, tok = self.processor, self.tokenizer
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": _SENTINEL}]
        render = getattr(processor, "apply_chat_template", None) or tok.apply_chat_template
        chat = render([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        from .model_specs import get_model_spec

        image_prefix = get_model_spec(self.model).easyedit_image_prefix  # e.g. Qwen-VL's vision tokens
        if with_image and image_prefix and image_prefix not in chat:
            chat = image_prefix + chat  # what EasyEdit prepends for templates that render no image
        if chat.count(_SENTINEL) != 1:
            raise UnsupportedModelError("the chat template does not place the question text exactly once; "
                                        "ReasonEditModel cannot locate the question in EasyEdit's prompts.")
        prefix, suffix = chat.split(_SENTINEL)
        special = set(getattr(tok, "all_special_ids", []) or [])
        special |= {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", True)}
        prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        suffix_ids = tok(suffix, add_special_tokens=False)["input_ids"]
        last = max((i for i, t in enumerate(prefix_ids) if t in special), default=None)
        if last is None or not suffix_ids:
            raise UnsupportedModelError("the chat template has no special token before the question or no text "
                                        "after it; ReasonEditModel cannot locate the question.")
        head_end = next((i + 1 for i, t in enumerate(suffix_ids) if t in special), len(suffix_ids))
        marks = _TemplateMarks(prefix_ids[last:], suffix_ids, suffix_ids[:head_end])
        self._marks[with_image] = marks
        return marks

    def _question_span(self, row: list[int], with_image: bool) -> tuple[int, int]:
        marks = self._template_marks(with_image)
        start = _rfind(row, marks.prefix_tail)
        if start < 0:
            raise ReasonEditError("could not find the chat template's user/image marker in the input ids; "
                                  "were they built with this model's processor and chat template?")
        start += len(marks.prefix_tail)
        end = _find(row, marks.suffix, start)
        if end < 0:
            end = _find(row, marks.suffix_head, start)
        if end < 0:
            raise ReasonEditError("could not find the end of the user turn in the input ids; were they built "
                                  "with this model's chat template (add_generation_prompt=True)?")
        return start, end

    # -- BLIP-2 / MiniGPT-4 contract ------------------------------------------------------------------
    def _forward_blip(self, batch: Mapping[str, Any]) -> Any:
        self.last_retrieval = None
        texts, prompts_len = list(batch["text_input"]), list(batch["prompts_len"])
        if len(self.editor.edit_ids()) == 0 or batch.get("image") is None:
            return self.model(batch)
        if len(texts) != 1:
            raise ReasonEditError(f"ReasonEditModel evaluates one example at a time; got {len(texts)}.")
        tok = self.tokenizer
        ids = tok.encode(texts[0], add_special_tokens=False)
        question = tok.decode(ids[:prompts_len[0]], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        rest = texts[0][len(question):] if texts[0].startswith(question) else \
            tok.decode(ids[prompts_len[0]:], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        image = batch["image"]
        retrieval = self.editor.retrieve_from_inputs({"pixel_values": image}, question)
        self.last_retrieval = retrieval
        fused = self.editor.fused_question(question, retrieval)
        if fused == question:
            return self.model(batch)
        new_len = len(tok.encode(fused, add_special_tokens=False))
        new_batch = dict(batch)
        new_batch["text_input"] = [fused + rest]
        new_batch["prompts_len"] = [new_len]
        outputs = self.model(new_batch)
        return _trim_outputs(outputs, None, drop_left=new_len - prompts_len[0])


def _find(row: list[int], pattern: list[int], start: int = 0) -> int:
    n = len(pattern)
    if n == 0:
        return -1
    for i in range(start, len(row) - n + 1):
        if row[i:i + n] == pattern:
            return i
    return -1


def _rfind(row: list[int], pattern: list[int]) -> int:
    n = len(pattern)
    for i in range(len(row) - n, -1, -1):
        if row[i:i + n] == pattern:
            return i
    return -1


def _trim_outputs(outputs: Any, length: Optional[int], drop_left: Optional[int]) -> Any:
    """Keep the last ``length`` positions (or drop ``drop_left`` from the left) of logits (and labels)."""

    def cut(t: torch.Tensor) -> torch.Tensor:
        return t[:, -length:] if length is not None else t[:, drop_left:]

    if torch.is_tensor(outputs):
        return cut(outputs)
    trimmed = copy_module.copy(outputs)
    for name in ("logits", "labels"):
        value = getattr(outputs, name, None)
        if torch.is_tensor(value) and value.dim() >= 2:
            setattr(trimmed, name, cut(value))
    return trimmed


# ==================================================================================== restore + sessions
class RestoreEdits:
    """EasyEdit's ``weights_copy`` for ReasonEdit: calling it removes the wrapper's edits (all of them,
    as GRACE's reset does) and ends its sequential session; the wrapper then equals the base model."""

    def __init__(self, wrapper: ReasonEditModel):
        self._wrapper = weakref.ref(wrapper)

    def __call__(self) -> list[str]:
        wrapper = self._wrapper()
        if wrapper is None:
            return []
        removed = wrapper.reset()
        end_session(wrapper.model)
        return removed


_SESSIONS: "weakref.WeakKeyDictionary[torch.nn.Module, ReasonEditModel]" = weakref.WeakKeyDictionary()
_SESSION_LOCK = threading.Lock()


def end_session(model: torch.nn.Module) -> None:
    """Forget the sequential-editing wrapper kept for ``model`` (the next sequential call starts empty)."""
    base = model.model if isinstance(model, ReasonEditModel) else model
    with _SESSION_LOCK:
        _SESSIONS.pop(base, None)


def _default_editor(model: torch.nn.Module, tok: Any, hparams: ReasonEditHyperParams) -> Any:
    from .editor import ReasonEditor
    from .vlm import VLM

    return ReasonEditor(VLM(model, tok), hparams.to_config())


def _as_hparams(hparams: Any) -> ReasonEditHyperParams:
    if isinstance(hparams, ReasonEditHyperParams):
        return hparams
    if isinstance(hparams, Mapping):
        return ReasonEditHyperParams.from_dict(hparams)
    raise ConfigError(f"hparams must be ReasonEditHyperParams (load hparams/ReasonEdit/<model>.yaml with "
                      f"ReasonEditHyperParams.from_hparams), got {type(hparams).__name__}.")


def apply_reasonedit_to_multimodal_model(
    model: torch.nn.Module,
    tok: Any,
    requests: Union[Sequence[Mapping[str, Any]], Mapping[str, Any]],
    hparams: ReasonEditHyperParams,
    copy: bool = False,
    return_orig_weights: bool = False,
    keep_original_weight: bool = False,
    **kwargs: Any,
) -> tuple[ReasonEditModel, RestoreEdits]:
    """EasyEdit's apply function for ReasonEdit; returns ``(edited_model, restore)``.

    ``requests``: a list of EasyEdit request dicts (single mode: a fresh wrapper) or one dict (sequential
    mode: appended to the wrapper kept for ``model``). ``model`` may also be a :class:`ReasonEditModel`,
    whose codebook is appended to. The base model is never modified; ``copy=True`` wraps a deep copy of
    it instead. ``return_orig_weights`` and ``keep_original_weight`` exist for EasyEdit's signature: the
    restore callable is always returned, and there are no weights to keep. ``editor_factory=`` (a
    callable ``(model, tok, hparams) -> editor``) replaces the default ``ReasonEditor(VLM(model, tok),
    hparams.to_config())``; other keyword arguments from EasyEdit (``train_ds``) are ignored."""
    hparams = _as_hparams(hparams)
    sequential = isinstance(requests, Mapping)
    request_list = [requests] if sequential else list(requests)
    if not request_list:
        raise RecordError("no requests to apply.")
    factory: EditorFactory = kwargs.pop("editor_factory", None) or _default_editor

    wrapper: Optional[ReasonEditModel] = None
    if isinstance(model, ReasonEditModel):
        wrapper = model
    else:
        if copy:
            model = copy_module.deepcopy(model)
        elif sequential:
            with _SESSION_LOCK:
                wrapper = _SESSIONS.get(model)
            if wrapper is not None and wrapper.hparams is not hparams:
                logger.info("ReasonEdit: new hparams object for this model; starting a new sequential session.")
                wrapper = None
        if wrapper is None:
            wrapper = ReasonEditModel(model, factory(model, tok, hparams), tok, hparams)
            if sequential and not copy:
                with _SESSION_LOCK:
                    _SESSIONS[model] = wrapper
    wrapper.add_requests(request_list, hparams)
    return wrapper, RestoreEdits(wrapper)
