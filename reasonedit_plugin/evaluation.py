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
in ``edit_methods.py``, ablations and EasyEdit baselines in ``baselines.py``. The probes of a record are
built in ``probes.py`` and the metric arithmetic is ``metrics.py``; this module re-exports their names.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from .errors import ReasonEditError
from .records import EditRecord, ImageLike, make_records
from .metrics import (  # noqa: F401 (re-exported: the evaluation's public names)
    EDIT_KINDS, UNRELATED_KINDS, PAPER_METRICS, EASYEDIT_KEYS, LOCALITY_TOPK, harmonic_mean,
    is_correct, accuracy, percentile, token_accuracy, topk_ids, topk_token_match, checkpoint_steps,
)
from .probes import (  # noqa: F401 (re-exported: the evaluation's public names)
    Probe, edit_probes, multimodal_locality_probe, hard_locality_probe, _edit_surface, locality_pool,
)
from .edit_methods import (  # noqa: F401 (re-exported: the evaluation's public names)
    Prediction, TeacherForced, EditMethod, _pick, _text_only_inputs, vlm_teacher_forced,
    UneditedMethod, ReasonEditMethod,
)

logger = logging.getLogger(__name__)

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
