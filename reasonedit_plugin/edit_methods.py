"""What the evaluation runs: the small :class:`EditMethod` interface, its predictions and teacher-forced
scores, and the two methods every comparison has (the unedited model and ReasonEdit); ablations and
EasyEdit baselines implement the same interface in ``baselines.py``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from .errors import ReasonEditError
from .records import EditRecord, ImageLike, load_image
from .retriever import Retrieval


logger = logging.getLogger(__name__)





@dataclass
class Prediction:
    """A method's answer to one probe; ``retrieval`` and the timings only for retrieval-based methods."""

    text: str
    retrieval: Retrieval | None = None
    retrieval_seconds: float | None = None
    """Query key (vision + text encoder) plus codebook search."""
    lookup_seconds: float | None = None
    """Codebook search only."""


@dataclass
class TeacherForced:
    """Logits [L, V] of chat-prompt + target under a method, and labels [L] (-100 outside the target)."""

    logits: torch.Tensor
    labels: torch.Tensor


@runtime_checkable
class EditMethod(Protocol):
    """What the protocols need from an editing method (ReasonEdit, the unedited model, a baseline)."""

    name: str

    def reset(self) -> None:
        """Forget every edit (a fresh, unedited method)."""

    def apply(self, record: EditRecord) -> None:
        """Apply one edit."""

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        """Answer one question (the option of lowest summed NLL when ``choices`` are given)."""

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        """Logits for EasyEdit's token metrics, or None when the method cannot provide them."""


def _pick(choices: Sequence[str], nll: Sequence[float]) -> str:
    return choices[min(range(len(choices)), key=lambda i: (nll[i], i))]


def _text_only_inputs(vlm: Any, user_text: str) -> Any:
    """Processor outputs of a text-only user turn (EasyEdit's ``file_type="text"`` locality prompts)."""
    messages = [{"role": "user", "content": [{"type": "text", "text": user_text}]}]
    render = getattr(vlm.processor, "apply_chat_template", None) or vlm.tokenizer.apply_chat_template
    try:
        chat = render(messages, add_generation_prompt=True, tokenize=False)
    except (ValueError, TypeError):  # no template: the bare question
        chat = user_text
    return vlm.tokenizer([chat], return_tensors="pt")


def vlm_teacher_forced(vlm: Any, image: ImageLike | None, user_text: str, target: str) -> TeacherForced | None:
    """Teacher-forced logits of ``target`` after the chat prompt of ``user_text`` (EasyEdit's
    ``prepare_multimodal_hf_edit``: the chat template with a generation prompt, then the target's tokens;
    the labels mark the target at the end). Uses ``vlm.teacher_forced(image, text, target)`` when the VLM
    provides one, else ``vlm.build_inputs`` and ``vlm.model``; None when the VLM has neither."""
    own = getattr(vlm, "teacher_forced", None)
    if callable(own):
        out = own(image, user_text, target)
        if out is None or isinstance(out, TeacherForced):
            return out
        logits, labels = out
        return TeacherForced(torch.as_tensor(logits), torch.as_tensor(labels))
    if not all(hasattr(vlm, name) for name in ("build_inputs", "model", "tokenizer")):
        return None
    spec = getattr(vlm, "spec", None)
    if getattr(spec, "scorer", "causal_lm") != "causal_lm":  # BLIP VQA, CLIP: no decoder-only logits
        return None
    target_ids = vlm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not target_ids:
        raise ReasonEditError(f"target {target!r} tokenizes to nothing; EasyEdit metrics need a non-empty target.")
    if image is not None:
        base = vlm.build_inputs([load_image(image)], [user_text])
    else:
        base = _text_only_inputs(vlm, user_text)
    prompt_ids = base["input_ids"]
    device = prompt_ids.device
    cont = torch.tensor([target_ids], dtype=prompt_ids.dtype, device=device)
    if hasattr(spec, "token_inputs"):  # per-token inputs extended as the family's row says (scoring.py)
        from .scoring import extend_token_inputs

        inputs = extend_token_inputs(spec, base, cont, torch.ones_like(cont, dtype=torch.bool))
    else:
        inputs = dict(base)
        for key, value in base.items():  # extend every per-token tensor (attention mask, token types)
            if key == "input_ids" or not (torch.is_tensor(value) and value.shape == prompt_ids.shape):
                continue
            tail = torch.ones_like(cont, dtype=value.dtype) if key == "attention_mask" else \
                torch.zeros_like(cont, dtype=value.dtype)
            inputs[key] = torch.cat([value, tail], dim=1)
        inputs["input_ids"] = torch.cat([prompt_ids, cont], dim=1)
    model = vlm.model
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device=model.device if hasattr(model, "device") else device, dtype=dtype)
              if torch.is_tensor(v) and v.is_floating_point() else
              v.to(model.device if hasattr(model, "device") else device) if torch.is_tensor(v) else v
              for k, v in inputs.items()}
    with torch.inference_mode():
        logits = model(**inputs).logits[0].detach().float().cpu()
    offset = logits.shape[0] - inputs["input_ids"].shape[1]  # image embeddings outside input_ids
    logits = logits[offset:]
    labels = torch.full((inputs["input_ids"].shape[1],), -100, dtype=torch.long)
    labels[-len(target_ids):] = torch.tensor(target_ids, dtype=torch.long)
    return TeacherForced(logits, labels)


class DirectAnswers:
    """``predict`` and ``teacher_forced`` from the model as it now is (``self.vlm``, ``self.max_new_tokens``):
    the unedited model, and every method that edits the model's weights in place."""

    vlm: Any
    max_new_tokens: int

    def query_image(self, image: ImageLike) -> Any:
        """The image a probe shows the model: the record's image as loaded (a method that edits with other
        image preparation overrides this, so that its probes reach the model as its edits did)."""
        return load_image(image)

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        img = self.query_image(image) if image is not None else None
        if choices:
            return Prediction(_pick(list(choices), self.vlm.option_nll(img, question, list(choices))))
        return Prediction(self.vlm.generate(img, question, self.max_new_tokens))

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        img = self.query_image(image) if image is not None else None
        return vlm_teacher_forced(self.vlm, img, question, target)


class UneditedMethod(DirectAnswers):
    """The unedited model: edits are ignored."""

    def __init__(self, vlm: Any, max_new_tokens: int = 16, name: str = "unedited"):
        self.vlm = vlm
        self.max_new_tokens = max_new_tokens
        self.name = name

    def reset(self) -> None:
        pass

    def apply(self, record: EditRecord) -> None:
        pass


class ReasonEditMethod:
    """ReasonEdit behind the :class:`EditMethod` interface.

    ``factory`` builds a fresh :class:`~reasonedit_plugin.editor.ReasonEditor`; when it calibrated
    (AutoLayer/AutoScaler), ``reset`` keeps the chosen layer and λ instead of calibrating again.
    Answers are the editor's (retrieve, fuse, option NLL / generate), with the retrieval timed.
    """

    def __init__(self, factory: Callable[[], Any], name: str = "ReasonEdit"):
        self.name = name
        self._factory = factory
        self.editor = factory()
        self.last_edit: Any = None

    def reset(self) -> None:
        from .editor import ReasonEditor

        old = self.editor
        if old.topology_report is not None:  # keep the calibrated key setup
            config = old.config.replace(embedding={"layer": old.keys.vision_module, "scale": old.keys.scale})
            self.editor = ReasonEditor(old.vlm, config, text_encoder=old.text_encoder)
            self.editor.topology_report = old.topology_report
        else:
            self.editor = self._factory()

    def apply(self, record: EditRecord) -> None:
        self.last_edit = self.editor.edit([record])

    def _retrieve(self, image: Any, question: str) -> tuple[Retrieval, float | None, float | None]:
        editor = self.editor
        if len(editor.codebook) == 0:
            return Retrieval(False, reason="the codebook is empty"), None, None
        start = time.perf_counter()
        key = editor.keys.encode([image], [question])[0]
        mid = time.perf_counter()
        retrieval = editor.retriever.search(key, evidence=editor.evidence_probe(image), question=question)
        end = time.perf_counter()
        return retrieval, end - start, end - mid

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        editor = self.editor
        if image is None:  # text-only: no key can be built, the model answers unedited
            return UneditedMethod(editor.vlm, editor.config.max_new_tokens).predict(None, question, choices)
        img = load_image(image)
        retrieval, total, lookup = self._retrieve(img, question)
        fused = editor.fused_question(question, retrieval)
        with editor.fusion_context(question, retrieval):  # hidden-state fusions; a no-op for prompt fusion
            if choices:
                text = _pick(choices, editor.vlm.option_nll(img, fused, list(choices)))
            else:
                text = editor.vlm.generate(img, fused, editor.config.max_new_tokens)
        return Prediction(text, retrieval, total, lookup)

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        fused, retrieval = question, None
        if image is not None:
            retrieval, _, _ = self._retrieve(load_image(image), question)
            fused = self.editor.fused_question(question, retrieval)
        with self.editor.fusion_context(question, retrieval):
            return vlm_teacher_forced(self.editor.vlm, image, fused, target)
