"""How edits are scored (METHOD.md §7), in the paper's vocabulary and in EasyEdit's.

Paper metrics, per probe kind, each the fraction of probes answered correctly:

- ``reliability`` (the edited question), ``t_gen`` (its rephrasing, same image), ``i_gen`` (same question,
  another image needing the same rule), ``r_gen`` (another question answered by the rationale);
- ``locality``: a seeded pool of up to 100 unrelated probes (the records' ``multimodal_locality_*`` and
  optional plain questions) sharing neither image nor question with any edit, kept only if the unedited
  model answered them correctly; the score is the fraction still right;
- ``hard_locality``: the records' ``hard_locality_*`` near-miss probes, same filter;
- ``gen`` = harmonic mean of T/I/R-Gen; ``overall`` = the TRUE harmonic mean of reliability, gen,
  locality AND hard locality (the reference code summed three of them under the name "hm"; we do not);
  ``overall_no_hard`` = the previous formula, HM of reliability, gen and locality only (hard locality left
  out, which hid near-miss failures), reported beside it;
- ``accepted_unrelated``: the fraction of locality and hard-locality probes for which retrieval accepted
  something (the gate's false-accept rate; None for methods without retrieval);
- time per edit, and retrieval latency per query (p50 / p95).

Multiple-choice probes are answered by the lowest summed option NLL (the model sees only the question)
and compared case-insensitively; open probes by :func:`~reasonedit_plugin.records.normalize_answer`.

EasyEdit keys (``rewrite_acc``, ``rephrase_acc``, ``image_rephrase_acc``, ``locality_acc``,
``multimodal_locality_acc``) follow ``easyeditor/evaluate/multimodal_evaluate.py`` and
``easyeditor/editors/multimodal_editor.py``: teacher-forced token accuracy of the target appended to the
chat prompt, and for locality the agreement of the post-edit top-1 (text) / top-10 (multimodal) token ids
with the pre-edit ones at every position, sequences aligned from the end.

Protocols: :func:`evaluate_sequential` (only base-model errors, in dataset order, one at a time, evaluated
every ``eval_every`` edits on a seeded subsample and at the end on everything), :func:`evaluate_single`
(a fresh method per edit) and :func:`evaluate_edit_k` (edit k random records, test on the rest).
Methods are anything with the small :class:`EditMethod` interface; ReasonEdit and the unedited model are
here, ablations and EasyEdit baselines in ``baselines.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from tqdm.auto import tqdm

from .errors import ReasonEditError
from .records import EditRecord, ImageLike, load_image, make_records, normalize_answer
from .retriever import Retrieval

logger = logging.getLogger(__name__)

EDIT_KINDS = ("reliability", "t_gen", "i_gen", "r_gen")
"""Probes built from the edited record itself (they should change)."""
UNRELATED_KINDS = ("locality", "hard_locality")
"""Probes that should not change."""
PAPER_METRICS = EDIT_KINDS + UNRELATED_KINDS + ("gen", "overall", "overall_no_hard")
EASYEDIT_KEYS = ("rewrite_acc", "rephrase_acc", "image_rephrase_acc", "locality_acc",
                 "multimodal_locality_acc")
LOCALITY_TOPK = {"locality_acc": 1, "multimodal_locality_acc": 10}
"""EasyEdit compares the top-1 token ids for text locality and the top-10 for multimodal locality."""


# ================================================================================================
# Pure metrics
# ================================================================================================

def harmonic_mean(values: Iterable[float | None]) -> float | None:
    """The true harmonic mean of the values that are present (None is skipped).

    0 if any present value is <= 0; None if no value is present.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    if any(v <= 0 for v in present):
        return 0.0
    return len(present) / sum(1.0 / v for v in present)


def is_correct(predicted: str, expected: str, multiple_choice: bool) -> bool:
    """Multiple choice: case-insensitive exact match of the option; open: normalised exact match."""
    if multiple_choice:
        return predicted.strip().lower() == expected.strip().lower()
    return normalize_answer(predicted) == normalize_answer(expected)


def accuracy(flags: Sequence[bool]) -> float | None:
    return sum(bool(f) for f in flags) / len(flags) if flags else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """EasyEdit's teacher-forced token accuracy: logits [L, V] (or [1, L, V]) of prompt+target, labels [L]
    with -100 outside the target. Position t predicts label t+1; the score is the fraction of target
    tokens whose argmax is right (``compute_multimodal_hf_edit_quality``, exact_match=False)."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels)
    if logits.dim() == 3:
        logits, labels = logits[0], labels.reshape(-1)
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"token_accuracy needs logits [L, V] and labels [L], got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}.")
    pred = logits[:-1].argmax(-1)
    targ = labels[1:]
    mask = targ != -100
    if not bool(mask.any()):
        raise ValueError("token_accuracy: the labels mark no target token.")
    return float(((pred == targ) & mask).sum()) / float(mask.sum())


def topk_ids(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k token ids per position, [L, k] (k clipped to the vocabulary)."""
    logits = torch.as_tensor(logits)
    if logits.dim() == 3:
        logits = logits[0]
    return torch.topk(logits.float(), k=min(k, logits.shape[-1]), dim=-1).indices


def topk_token_match(pre_ids: torch.Tensor, post_ids: torch.Tensor) -> float:
    """EasyEdit's locality: fraction of equal entries of the pre- and post-edit top-k id lists [L, k],
    the longer sequence cut to the shorter one's last positions (``topk_token_match`` in vl_utils)."""
    pre_ids, post_ids = torch.as_tensor(pre_ids), torch.as_tensor(post_ids)
    n = min(pre_ids.shape[0], post_ids.shape[0])
    k = min(pre_ids.shape[1], post_ids.shape[1])
    a, b = pre_ids[-n:, :k], post_ids[-n:, :k]
    return float((a.reshape(-1) == b.reshape(-1)).float().mean())


def checkpoint_steps(num_edits: int, every: int | None) -> list[int]:
    """After which edit counts the sequential protocol evaluates: every ``every`` edits and at the end."""
    if num_edits <= 0:
        return []
    if not every or every <= 0 or every >= num_edits:
        return [num_edits]
    steps = list(range(every, num_edits + 1, every))
    if steps[-1] != num_edits:
        steps.append(num_edits)
    return steps


# ================================================================================================
# Probes
# ================================================================================================

@dataclass(frozen=True)
class Probe:
    """One question put to a (possibly edited) model, with the answer it should give."""

    kind: str
    edit_id: str
    """The record the probe comes from."""
    image: ImageLike | None
    question: str
    answer: str
    choices: tuple[str, ...] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, str(self.image), self.question)


def edit_probes(record: EditRecord) -> list[Probe]:
    """Reliability, T-Gen, I-Gen and R-Gen probes of one record (those its fields allow)."""
    choices = tuple(record.choices) if record.choices else None
    probes = [Probe("reliability", record.id, record.image, record.prompt, record.target, choices)]
    if record.rephrase_prompt:
        probes.append(Probe("t_gen", record.id, record.image, record.rephrase_prompt, record.target, choices))
    if record.image_rephrase is not None:
        probes.append(Probe("i_gen", record.id, record.image_rephrase, record.prompt, record.target, choices))
    if record.rgen_prompt and record.rgen_target:
        rc = tuple(record.rgen_choices) if record.rgen_choices else None
        probes.append(Probe("r_gen", record.id, record.image, record.rgen_prompt, record.rgen_target, rc))
    return probes


def multimodal_locality_probe(record: EditRecord) -> Probe | None:
    if (record.multimodal_locality_image is None or not record.multimodal_locality_prompt
            or record.multimodal_locality_ground_truth is None):
        return None
    c = record.multimodal_locality_choices
    return Probe("locality", record.id, record.multimodal_locality_image, record.multimodal_locality_prompt,
                 record.multimodal_locality_ground_truth, tuple(c) if c else None)


def hard_locality_probe(record: EditRecord) -> Probe | None:
    if record.hard_locality_image is None or not record.hard_locality_prompt \
            or record.hard_locality_ground_truth is None:
        return None
    c = record.hard_locality_choices
    return Probe("hard_locality", record.id, record.hard_locality_image, record.hard_locality_prompt,
                 record.hard_locality_ground_truth, tuple(c) if c else None)


def _edit_surface(records: Sequence[EditRecord]) -> tuple[set[str], set[str]]:
    """Every image and every question the edits touch (to keep the locality pool unrelated)."""
    images: set[str] = set()
    questions: set[str] = set()
    for r in records:
        for im in (r.image, r.image_rephrase):
            if im is not None:
                images.add(str(im))
        for q in (r.prompt, r.rephrase_prompt, r.rgen_prompt):
            if q:
                questions.add(normalize_answer(q))
    return images, questions


def locality_pool(records: Sequence[EditRecord], extra: Iterable[Probe] = (), size: int = 100,
                  seed: int = 0, edited: Sequence[EditRecord] | None = None) -> list[Probe]:
    """Candidate locality probes: each record's multimodal-locality probe plus ``extra`` (e.g. plain
    questions), deduplicated, minus any that share an image or a question with an ``edited`` record
    (default: all ``records``); a seeded sample of at most ``size`` of them, in a deterministic order.
    The unedited-model filter comes later (:func:`prepare_reference`)."""
    images, questions = _edit_surface(records if edited is None else edited)
    seen: set[tuple[str, str]] = set()
    pool: list[Probe] = []
    candidates = [p for p in (multimodal_locality_probe(r) for r in records) if p is not None]
    candidates += [dataclasses.replace(p, kind="locality") for p in extra]
    for p in candidates:
        ident = (str(p.image), p.question)
        if ident in seen or str(p.image) in images or normalize_answer(p.question) in questions:
            continue
        seen.add(ident)
        pool.append(p)
    if len(pool) > size:
        rng = random.Random(f"{seed}:locality-pool")
        chosen = sorted(rng.sample(range(len(pool)), size))
        pool = [pool[i] for i in chosen]
    return pool


# ================================================================================================
# Methods
# ================================================================================================

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


class UneditedMethod:
    """The unedited model: edits are ignored."""

    def __init__(self, vlm: Any, max_new_tokens: int = 16, name: str = "unedited"):
        self.vlm = vlm
        self.max_new_tokens = max_new_tokens
        self.name = name

    def reset(self) -> None:
        pass

    def apply(self, record: EditRecord) -> None:
        pass

    def predict(self, image: ImageLike | None, question: str, choices: Sequence[str] | None) -> Prediction:
        img = load_image(image) if image is not None else None
        if choices:
            return Prediction(_pick(choices, self.vlm.option_nll(img, question, list(choices))))
        return Prediction(self.vlm.generate(img, question, self.max_new_tokens))

    def teacher_forced(self, image: ImageLike | None, question: str, target: str) -> TeacherForced | None:
        return vlm_teacher_forced(self.vlm, image, question, target)


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
        retrieval = editor.retriever.search(key)
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


# ================================================================================================
# Results
# ================================================================================================

@dataclass
class ProbeOutcome:
    """One probe's answer, with what was retrieved (distances, scaled scores, gate decision)."""

    kind: str
    edit_id: str
    question: str
    expected: str
    predicted: str
    correct: bool
    accepted: bool | None = None
    best_distance: float | None = None
    best_score: float | None = None
    threshold: float | None = None
    facts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Scores:
    """Paper metrics (fractions in [0, 1]; None when no probe of that kind exists) and EasyEdit keys."""

    reliability: float | None = None
    t_gen: float | None = None
    i_gen: float | None = None
    r_gen: float | None = None
    locality: float | None = None
    hard_locality: float | None = None
    gen: float | None = None
    overall: float | None = None
    """HM of reliability, gen, locality and hard locality."""
    overall_no_hard: float | None = None
    """The previous formula: HM of reliability, gen and locality (hard locality left out)."""
    accepted_unrelated: float | None = None
    """Fraction of locality + hard-locality probes for which retrieval accepted something."""
    counts: dict[str, int] = field(default_factory=dict)
    """Number of probes behind each metric."""
    easyedit: dict[str, float] = field(default_factory=dict)
    """EasyEdit's keys (mean over records), when computed."""

    @classmethod
    def from_outcomes(cls, outcomes: Sequence[ProbeOutcome], easyedit: Mapping[str, float] | None = None
                      ) -> "Scores":
        by_kind: dict[str, list[bool]] = {}
        for o in outcomes:
            by_kind.setdefault(o.kind, []).append(o.correct)
        values = {k: accuracy(by_kind.get(k, [])) for k in EDIT_KINDS + UNRELATED_KINDS}
        gen = harmonic_mean([values["t_gen"], values["i_gen"], values["r_gen"]])
        overall = harmonic_mean([values["reliability"], gen, values["locality"], values["hard_locality"]])
        old = harmonic_mean([values["reliability"], gen, values["locality"]])
        gated = [o.accepted for o in outcomes if o.kind in UNRELATED_KINDS and o.accepted is not None]
        return cls(**values, gen=gen, overall=overall, overall_no_hard=old, accepted_unrelated=accuracy(gated),
                   counts={k: len(v) for k, v in sorted(by_kind.items())}, easyedit=dict(easyedit or {}))

    def metric(self, name: str) -> float | None:
        if name in EASYEDIT_KEYS:
            return self.easyedit.get(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Checkpoint:
    num_edits: int
    evaluated_edits: int
    """How many edited records were probed (the seeded subsample, or all at the end)."""
    scores: Scores

    def to_dict(self) -> dict[str, Any]:
        return {"num_edits": self.num_edits, "evaluated_edits": self.evaluated_edits,
                "scores": self.scores.to_dict()}


@dataclass
class LatencyStats:
    n: int
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "LatencyStats":
        ms = [1000.0 * s for s in seconds]
        return cls(len(ms), percentile(ms, 50), percentile(ms, 95), statistics.fmean(ms) if ms else None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Reference:
    """What the unedited model did; shared by every method of a run, so all see the same probes.

    Records the unedited model already answers correctly are not edited (METHOD.md §7)."""

    errors: list[EditRecord]
    already_correct: list[str]
    locality: list[Probe]
    """The locality pool after the filter (the unedited model answered them right)."""
    locality_candidates: int
    hard_locality: dict[str, Probe]
    hard_locality_candidates: int
    pre_topk: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict)
    """EasyEdit locality: the unedited model's top-10 token ids per position, per locality probe."""
    easyedit_unavailable: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"records_edited": len(self.errors), "already_correct": list(self.already_correct),
                "locality_candidates": self.locality_candidates, "locality_kept": len(self.locality),
                "hard_locality_candidates": self.hard_locality_candidates,
                "hard_locality_kept": len(self.hard_locality),
                "easyedit_unavailable": self.easyedit_unavailable}


@dataclass
class EvaluationResult:
    """Everything one method's evaluation produced (``to_dict`` gives plain JSON values)."""

    method: str
    protocol: str
    num_records: int
    num_edited: int
    final: Scores
    checkpoints: list[Checkpoint] = field(default_factory=list)
    edit_seconds: list[float] = field(default_factory=list)
    retrieval_latency: LatencyStats | None = None
    lookup_latency: LatencyStats | None = None
    gate_threshold: float | None = None
    probes: list[ProbeOutcome] = field(default_factory=list)
    """The final evaluation's probes (all edited records, the whole locality pool)."""
    reference: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def time_per_edit(self) -> float | None:
        return statistics.fmean(self.edit_seconds) if self.edit_seconds else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "protocol": self.protocol, "num_records": self.num_records,
            "num_edited": self.num_edited, "final": self.final.to_dict(),
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "time_per_edit_s": self.time_per_edit, "edit_seconds": list(self.edit_seconds),
            "retrieval_latency": self.retrieval_latency.to_dict() if self.retrieval_latency else None,
            "lookup_latency": self.lookup_latency.to_dict() if self.lookup_latency else None,
            "gate_threshold": self.gate_threshold,
            "probes": [p.to_dict() for p in self.probes],
            "reference": dict(self.reference), "extra": dict(self.extra),
        }


@dataclass
class ProtocolConfig:
    """How a method is evaluated (METHOD.md §7)."""

    eval_every: int = 200
    """Sequential protocol: evaluate after every this many edits (and at the end); 0: only at the end."""
    eval_subsample: int = 50
    """Intermediate checkpoints probe a seeded subsample of this many edited records (and this many
    locality probes); the final evaluation probes everything."""
    locality_size: int = 100
    """Size of the seeded locality pool (before the unedited-model filter)."""
    seed: int = 0
    easyedit_metrics: bool = True
    """Also compute EasyEdit's token-level keys at the end (two extra forward passes per probe)."""
    only_errors: bool = True
    """Edit only records the unedited model gets wrong (paper)."""

    def __post_init__(self) -> None:
        if self.eval_every < 0 or self.eval_subsample < 1 or self.locality_size < 0:
            raise ReasonEditError("protocol: eval_every >= 0, eval_subsample >= 1 and locality_size >= 0 "
                                  f"are required (got {self.eval_every}, {self.eval_subsample}, "
                                  f"{self.locality_size}).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ================================================================================================
# Protocols
# ================================================================================================

def _bar(items: Sequence[Any], desc: str, progress: bool, unit: str = "probe") -> Any:
    return tqdm(items, desc=desc, disable=not progress, unit=unit, leave=False)


def _ask(method: EditMethod, probe: Probe) -> tuple[ProbeOutcome, Prediction]:
    pred = method.predict(probe.image, probe.question, list(probe.choices) if probe.choices else None)
    r = pred.retrieval
    outcome = ProbeOutcome(
        probe.kind, probe.edit_id, probe.question, probe.answer, pred.text,
        is_correct(pred.text, probe.answer, probe.choices is not None),
        accepted=None if r is None else bool(r.accepted),
        best_distance=(r.distances[0] if r is not None and r.distances else None),
        best_score=(r.scores[0] if r is not None and r.scores else None),
        threshold=None if r is None else r.threshold,
        facts=0 if r is None else len(r.facts) if r.accepted else 0,
    )
    return outcome, pred


def _teacher_forced_unavailable(method: EditMethod, record: EditRecord) -> str | None:
    try:
        out = method.teacher_forced(record.image, record.prompt, record.target)
    except NotImplementedError as exc:
        return f"{method.name} gives no logits ({exc})"
    return None if out is not None else f"{method.name} exposes no model/processor for teacher-forced logits"


def prepare_reference(unedited: EditMethod, records: Sequence[EditRecord | Mapping[str, Any]],
                      config: ProtocolConfig | None = None, extra_locality: Iterable[Probe] = (),
                      progress: bool = False) -> Reference:
    """Ask the unedited model once: which records are errors, which locality probes it gets right, and
    (for EasyEdit's locality keys) its top-10 tokens on every locality probe."""
    config = config or ProtocolConfig()
    recs = make_records(list(records))
    errors, correct = [], []
    for r in _bar(recs, "unedited: edit questions", progress):
        outcome, _ = _ask(unedited, edit_probes(r)[0])
        if config.only_errors and outcome.correct:
            correct.append(r.id)
        else:
            errors.append(r)
    pool = locality_pool(recs, extra_locality, config.locality_size, config.seed, edited=errors)
    kept = [p for p in _bar(pool, "unedited: locality", progress) if _ask(unedited, p)[0].correct]
    hard = [p for p in (hard_locality_probe(r) for r in errors) if p is not None]
    hard_kept = {p.edit_id: p for p in _bar(hard, "unedited: hard locality", progress) if _ask(unedited, p)[0].correct}
    ref = Reference(errors, correct, kept, len(pool), hard_kept, len(hard))
    if config.easyedit_metrics and errors:
        reason = _teacher_forced_unavailable(unedited, errors[0])
        if reason is not None:
            ref.easyedit_unavailable = reason
        else:
            for r in _bar(errors, "unedited: EasyEdit locality logits", progress, "record"):
                for kind, image, question, target in _locality_requests(r):
                    tf = unedited.teacher_forced(image, question, target)
                    ref.pre_topk[(kind, r.id, question)] = topk_ids(tf.logits, 10)
    elif config.easyedit_metrics:
        ref.easyedit_unavailable = "no record to edit"
    else:
        ref.easyedit_unavailable = "disabled (easyedit_metrics=False)"
    return ref


def _locality_requests(record: EditRecord) -> list[tuple[str, ImageLike | None, str, str]]:
    out: list[tuple[str, ImageLike | None, str, str]] = []
    if record.locality_prompt and record.locality_ground_truth is not None:
        out.append(("locality_acc", None, record.locality_prompt, record.locality_ground_truth))
    if (record.multimodal_locality_image is not None and record.multimodal_locality_prompt
            and record.multimodal_locality_ground_truth is not None):
        out.append(("multimodal_locality_acc", record.multimodal_locality_image,
                    record.multimodal_locality_prompt, record.multimodal_locality_ground_truth))
    return out


def easyedit_scores(method: EditMethod, records: Sequence[EditRecord], reference: Reference,
                    progress: bool = False) -> dict[str, float]:
    """EasyEdit's keys for the method in its current (edited) state, averaged over ``records``."""
    if reference.easyedit_unavailable is not None or not records:
        return {}
    if _teacher_forced_unavailable(method, records[0]) is not None:
        return {}
    values: dict[str, list[float]] = {k: [] for k in EASYEDIT_KEYS}
    for r in _bar(list(records), f"{method.name}: EasyEdit metrics", progress, "record"):
        tf = method.teacher_forced(r.image, r.prompt, r.target)
        values["rewrite_acc"].append(token_accuracy(tf.logits, tf.labels))
        if r.rephrase_prompt:
            tf = method.teacher_forced(r.image, r.rephrase_prompt, r.target)
            values["rephrase_acc"].append(token_accuracy(tf.logits, tf.labels))
        if r.image_rephrase is not None:
            tf = method.teacher_forced(r.image_rephrase, r.prompt, r.target)
            values["image_rephrase_acc"].append(token_accuracy(tf.logits, tf.labels))
        for kind, image, question, target in _locality_requests(r):
            pre = reference.pre_topk.get((kind, r.id, question))
            if pre is None:
                continue
            post = topk_ids(method.teacher_forced(image, question, target).logits, 10)
            k = LOCALITY_TOPK[kind]
            values[kind].append(topk_token_match(pre[:, :k], post[:, :k]))
    return {k: statistics.fmean(v) for k, v in values.items() if v}


class _Recorder:
    """Collects probe outcomes and retrieval latencies of one evaluation pass."""

    def __init__(self, method: EditMethod):
        self.method = method
        self.outcomes: list[ProbeOutcome] = []
        self.retrieval: list[float] = []
        self.lookup: list[float] = []

    def ask(self, probes: Sequence[Probe], desc: str, progress: bool) -> None:
        for p in _bar(probes, desc, progress):
            outcome, pred = _ask(self.method, p)
            self.outcomes.append(outcome)
            if pred.retrieval_seconds is not None:
                self.retrieval.append(pred.retrieval_seconds)
            if pred.lookup_seconds is not None:
                self.lookup.append(pred.lookup_seconds)


def _probes_for(records: Sequence[EditRecord], reference: Reference) -> list[Probe]:
    probes: list[Probe] = []
    for r in records:
        probes.extend(edit_probes(r))
        if r.id in reference.hard_locality:
            probes.append(reference.hard_locality[r.id])
    return probes


def _gate_threshold(method: EditMethod) -> float | None:
    """The rejection gate's tau of a ReasonEdit method (None for other methods, e.g. EasyEdit baselines,
    whose ``editor`` is EasyEdit's)."""
    if not isinstance(method, ReasonEditMethod) or len(method.editor.codebook) == 0:
        return None
    return method.editor.retriever.threshold()


def evaluate_state(method: EditMethod, records: Sequence[EditRecord], reference: Reference,
                   locality: Sequence[Probe] | None = None, easyedit: bool = False,
                   progress: bool = False) -> tuple[Scores, list[ProbeOutcome]]:
    """Score a method in its current (edited) state: the edit probes and hard-locality probes of
    ``records``, the ``locality`` probes (default: the reference's whole pool) and, with ``easyedit``,
    EasyEdit's keys on ``records``. Applies nothing; for protocols written outside this module
    (``benchmarks/bench_sequential.py``)."""
    loc = list(reference.locality if locality is None else locality)
    recorder = _Recorder(method)
    recorder.ask(_probes_for(list(records), reference) + loc, f"{method.name}: eval", progress)
    easy = easyedit_scores(method, list(records), reference, progress) if easyedit else {}
    return Scores.from_outcomes(recorder.outcomes, easy), recorder.outcomes


def evaluate_sequential(method: EditMethod, reference: Reference, config: ProtocolConfig | None = None,
                        progress: bool = False, on_checkpoint: Callable[[Checkpoint], None] | None = None
                        ) -> EvaluationResult:
    """Apply the reference's error records one after another, in dataset order; evaluate after every
    ``eval_every`` edits on a seeded subsample of the records edited so far (and as many locality probes),
    and at the end on all edited records and the whole locality pool."""
    config = config or ProtocolConfig()
    method.reset()
    records = reference.errors
    steps = set(checkpoint_steps(len(records), config.eval_every))
    result = EvaluationResult(method.name, "sequential", len(records) + len(reference.already_correct),
                              len(records), Scores(), reference=reference.summary(),
                              extra={"protocol": config.to_dict()})
    recorder = _Recorder(method)
    bar = tqdm(records, desc=f"{method.name}: editing", disable=not progress, unit="edit")
    for i, record in enumerate(bar, 1):
        start = time.perf_counter()
        method.apply(record)
        result.edit_seconds.append(time.perf_counter() - start)
        if i not in steps:
            continue
        final = i == len(records)
        done = records[:i]
        if final:
            subset, loc = list(done), list(reference.locality)
        else:
            rng = random.Random(f"{config.seed}:checkpoint:{i}")
            subset = sorted(rng.sample(done, min(config.eval_subsample, len(done))), key=done.index)
            loc = list(reference.locality)
            if len(loc) > config.eval_subsample:
                loc = [loc[j] for j in sorted(rng.sample(range(len(loc)), config.eval_subsample))]
        pass_ = _Recorder(method)
        pass_.ask(_probes_for(subset, reference) + loc, f"{method.name}: eval @{i}", progress)
        easy = easyedit_scores(method, subset, reference, progress) if final and config.easyedit_metrics else {}
        checkpoint = Checkpoint(i, len(subset), Scores.from_outcomes(pass_.outcomes, easy))
        result.checkpoints.append(checkpoint)
        recorder.retrieval += pass_.retrieval
        recorder.lookup += pass_.lookup
        if final:
            result.final = checkpoint.scores
            result.probes = pass_.outcomes
            result.gate_threshold = _gate_threshold(method)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)
    if not records:
        result.final = Scores()
    if recorder.retrieval:
        result.retrieval_latency = LatencyStats.of(recorder.retrieval)
        result.lookup_latency = LatencyStats.of(recorder.lookup)
    return result


def evaluate_single(method: EditMethod, reference: Reference, config: ProtocolConfig | None = None,
                    progress: bool = False) -> EvaluationResult:
    """Single-edit protocol: for every error record, a fresh method, that one edit, its own probes (and
    its own hard-locality probe), and the locality pool probed after the edit (a seeded subsample of
    ``eval_subsample`` probes per edit, so the cost stays linear)."""
    config = config or ProtocolConfig()
    records = reference.errors
    result = EvaluationResult(method.name, "single", len(records) + len(reference.already_correct),
                              len(records), Scores(), reference=reference.summary(),
                              extra={"protocol": config.to_dict()})
    recorder = _Recorder(method)
    easy: dict[str, list[float]] = {}
    for i, record in enumerate(tqdm(records, desc=f"{method.name}: single edits", disable=not progress,
                                    unit="edit")):
        method.reset()
        start = time.perf_counter()
        method.apply(record)
        result.edit_seconds.append(time.perf_counter() - start)
        loc = list(reference.locality)
        if len(loc) > config.eval_subsample:
            rng = random.Random(f"{config.seed}:single:{i}")
            loc = [loc[j] for j in sorted(rng.sample(range(len(loc)), config.eval_subsample))]
        recorder.ask(_probes_for([record], reference) + loc, f"{method.name}: eval {record.id}", False)
        if config.easyedit_metrics:
            for k, v in easyedit_scores(method, [record], reference).items():
                easy.setdefault(k, []).append(v)
    result.final = Scores.from_outcomes(recorder.outcomes, {k: statistics.fmean(v) for k, v in easy.items()})
    result.probes = recorder.outcomes
    result.checkpoints = [Checkpoint(len(records), len(records), result.final)] if records else []
    if recorder.retrieval:
        result.retrieval_latency = LatencyStats.of(recorder.retrieval)
        result.lookup_latency = LatencyStats.of(recorder.lookup)
    method.reset()
    return result


@dataclass
class EditKResult:
    """Edit-k generality: accuracy on the edit questions of records NOT edited, after k random edits."""

    method: str
    accuracy: dict[int, float | None]
    """k -> mean accuracy over rounds."""
    per_round: dict[int, list[float]]
    rounds: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "accuracy": {str(k): v for k, v in self.accuracy.items()},
                "per_round": {str(k): v for k, v in self.per_round.items()}, "rounds": self.rounds,
                "seed": self.seed}


def evaluate_edit_k(method: EditMethod, reference: Reference, ks: Sequence[int] = (1, 5, 10),
                    rounds: int = 10, seed: int = 0, progress: bool = False) -> EditKResult:
    """METHOD.md §7: edit k random records on a fresh method, test the edit questions of the rest."""
    records = reference.errors
    acc: dict[int, float | None] = {}
    per_round: dict[int, list[float]] = {}
    for k in ks:
        if k >= len(records):
            acc[k], per_round[k] = None, []
            continue
        scores = []
        for rnd in tqdm(range(rounds), desc=f"{method.name}: edit-{k}", disable=not progress, unit="round"):
            rng = random.Random(f"{seed}:edit-k:{k}:{rnd}")
            chosen = set(rng.sample(range(len(records)), k))
            method.reset()
            for j in sorted(chosen):
                method.apply(records[j])
            rest = [edit_probes(r)[0] for j, r in enumerate(records) if j not in chosen]
            scores.append(accuracy([_ask(method, p)[0].correct for p in rest]) or 0.0)
        per_round[k] = scores
        acc[k] = statistics.fmean(scores)
    method.reset()
    return EditKResult(method.name, acc, per_round, rounds, seed)
