"""The comparison: ReasonEdit, the unedited model, ReasonEdit's ablations and EasyEdit's baselines, on the
same model and the same records, in one run (METHOD.md §7).

Every method is evaluated by the same protocol (``evaluation.py``) against the same :class:`Reference`
(the unedited model's errors and locality filter), so rows are comparable. A method that cannot run
gives a row with ``status="skipped"`` and the exact reason — never zeros.

- ``ReasonEdit``: the configuration of the hparams YAML; with ``balance="auto"`` its layer and λ are chosen
  by AutoLayer/AutoScaler (METHOD.md §5) on the run's images and questions, and with ``patches="auto"``
  patch entries are on (METHOD.md §6).
- ``unedited``: the model without edits.
- ablations (:data:`ABLATIONS`): one config change each against the ReasonEdit row. An ablation whose
  config equals the ReasonEdit row's is reported as skipped ("identical to ReasonEdit").
- EasyEdit baselines (:data:`EASYEDIT_METHODS`): need ``easyeditor`` importable and a runner registered
  with :func:`register_easyedit_runner` (the EasyEdit-specific code lives with the adapter).
- this project's baselines (:data:`OWN_BASELINES`) for Hugging Face VLMs: FT (``finetune_baseline.py``,
  EasyEdit's FT settings from ``hparams/FT/<model>.yaml``) and SERAC (``serac_baseline.py``: scope
  classifier + counterfactual model, trained on a disjoint split); no EasyEdit needed.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from .baseline_registry import (  # noqa: F401 -- re-exported: the comparison's public names
    EASYEDIT_METHODS, OWN_BASELINES, BaselineUnavailable, EasyEditRunner, easyedit_commit, easyedit_runners, easyedit_status,
    register_easyedit_runner,
)
from .config import ReasonEditConfig
from .errors import ConfigError, ReasonEditError, did_you_mean
from .evaluation import (
    EditMethod, EvaluationResult, Probe, ProtocolConfig, ReasonEditMethod, Reference, UneditedMethod,
    evaluate_sequential, evaluate_single, prepare_reference,
)
from .records import EditRecord, load_image, make_records

logger = logging.getLogger(__name__)

REASONEDIT = "ReasonEdit"
UNEDITED = "unedited"


@dataclass(frozen=True)
class Ablation:
    """One change to the ReasonEdit configuration."""

    name: str
    label: str
    changes: Mapping[str, Mapping[str, Any]]
    """Config sections to update, e.g. ``{"retrieval": {"gate": False}}``."""
    note: str


ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("answer-only", "answer-only (no rationale)", {"codebook": {"rationale_entries": False}},
             "only the answer entry is stored (the paper's 'no rationale' ablation)"),
    Ablation("no-hubness", "no hubness scaling", {"retrieval": {"hubness": False, "gate": False}},
             "raw L2 distances; the rejection gate is defined on scaled distances, so it is off too"),
    Ablation("no-gate", "no rejection gate", {"retrieval": {"gate": False}},
             "hubness scaling kept; the nearest entries are always retrieved"),
    Ablation("percentile-gate", "paper's percentile gate", {"retrieval": {"gate": "percentile"}},
             "the reference gate: best scaled distance vs the p = max(1, 100/#edits) percentile of pairwise "
             "scaled distances (the default is the null-set gate)"),
    Ablation("no-balance", "no topology balance", {"embedding": {"layer": None, "scale": 30.0}},
             "the model-spec default vision layer and the paper's default λ = 30, nothing searched"),
    Ablation("no-patches", "no patch entries", {"patches": {"enabled": False}},
             "no image-region entries for rationale sentences"),
)}

BASELINE_ORDER: tuple[str, ...] = ("IKE", "GRACE", "WISE", "LoRA", "FT", "MEND", "SERAC")
"""The baseline rows, in the report's order (EasyEdit's and this project's)."""
assert set(BASELINE_ORDER) == set(EASYEDIT_METHODS) | set(OWN_BASELINES)

DEFAULT_METHODS: tuple[str, ...] = (REASONEDIT, UNEDITED) + tuple(ABLATIONS) + BASELINE_ORDER


# ================================================================================================
# Results
# ================================================================================================

@dataclass
class MethodResult:
    """One row of the comparison."""

    name: str
    kind: str
    """``reasonedit``, ``unedited``, ``ablation``, ``easyedit`` or ``baseline`` (this project's FT)."""
    status: str
    """``ok``, ``skipped`` (could not or need not run; see ``reason``) or ``failed`` (an error; see ``reason``)."""
    reason: str | None = None
    label: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationResult | None = None
    seconds: float = 0.0
    """Wall time of the whole row (setup, edits, evaluation)."""
    topology: Any = None
    """The Calibration behind the row's key setup (AutoLayer/AutoScaler), when one ran."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        topo = self.topology.to_dict() if hasattr(self.topology, "to_dict") else self.topology
        return {"name": self.name, "label": self.label or self.name, "kind": self.kind, "status": self.status,
                "reason": self.reason, "config": self.config, "seconds": self.seconds,
                "evaluation": self.evaluation.to_dict() if self.evaluation is not None else None,
                "topology": topo}


# ================================================================================================
# EasyEdit baselines (the registry lives in baseline_registry.py, shared with easyedit_baselines.py)
# ================================================================================================

def _easyedit_runner(name: str) -> EasyEditRunner:
    ok, reason = easyedit_status()
    if not ok:
        raise BaselineUnavailable(reason or "easyeditor is not importable")
    if name not in easyedit_runners():
        try:  # the EasyEdit side registers its runners when imported
            importlib.import_module(".easyedit_baselines", __package__)
        except ImportError:
            pass
    runner = easyedit_runners().get(name)
    if runner is None:
        raise BaselineUnavailable(
            f"no EasyEdit runner is registered for {name} in this version of reasonedit_plugin "
            "(reasonedit_plugin.baselines.register_easyedit_runner)")
    return runner


# ================================================================================================
# Running
# ================================================================================================

@dataclass
class RunContext:
    """What every row of one comparison shares: the model, the text encoder, the records, the reference."""

    vlm: Any
    records: list[EditRecord]
    config: ReasonEditConfig
    """The ReasonEdit configuration from the hparams (before ``balance``/``patches`` are applied)."""
    protocol: ProtocolConfig
    reference: Reference
    model_path: str | None = None
    text_encoder: Any = None
    hparams_path: str | None = None
    easyedit_hparams_dir: str | None = None
    """Folder with EasyEdit hparams YAMLs per method (``<dir>/<METHOD>/<model>.yaml`` or ``<dir>/<METHOD>.yaml``)."""
    single: bool = False
    """Single-edit protocol instead of sequential."""
    progress: bool = False
    calibration: list[tuple[Any, str]] = field(default_factory=list)
    """(image, question) pairs for AutoLayer/AutoScaler."""


def _text_encoder(ctx: RunContext) -> Any:
    if ctx.text_encoder is None:
        from .text_encoder import shared_text_encoder

        ctx.text_encoder = shared_text_encoder(ctx.config.embedding.text_encoder)
    return ctx.text_encoder


def patches_available() -> tuple[bool, str | None]:
    try:
        importlib.import_module(".patches", __package__)
    except ImportError as exc:
        return False, f"patch entries are not available ({exc})"
    return True, None


def full_config(config: ReasonEditConfig, balance: str = "yaml", patches: str = "yaml") -> ReasonEditConfig:
    """The ReasonEdit row's configuration: ``balance="auto"`` sets layer and λ to "auto" (AutoLayer then
    AutoScaler); ``patches="on"``/``"auto"`` turns patch entries on (``auto``: when the module is present)."""
    if balance not in ("yaml", "auto"):
        raise ConfigError(f"balance={balance!r} is not one of ['yaml', 'auto'].")
    if patches not in ("yaml", "auto", "on", "off"):
        raise ConfigError(f"patches={patches!r} is not one of ['yaml', 'auto', 'on', 'off'].")
    changes: dict[str, dict[str, Any]] = {}
    if balance == "auto":
        changes["embedding"] = {"layer": "auto", "scale": "auto"}
    if patches == "on" or (patches == "auto" and patches_available()[0]):
        changes["patches"] = {"enabled": True}
    elif patches == "off":
        changes["patches"] = {"enabled": False}
    return config.replace(**changes) if changes else config


def ablation_config(base: ReasonEditConfig, ablation: Ablation) -> ReasonEditConfig:
    return base.replace(**{k: dict(v) for k, v in ablation.changes.items()})


def _reasonedit_method(ctx: RunContext, config: ReasonEditConfig, name: str) -> ReasonEditMethod:
    from .editor import ReasonEditor

    text_encoder = _text_encoder(ctx)
    needs_calibration = config.embedding.layer == "auto" or config.embedding.scale == "auto"
    calibration = ctx.calibration if needs_calibration else None
    if needs_calibration and len(calibration or []) < 2:
        raise ReasonEditError("AutoLayer/AutoScaler need calibration pairs; none were given.")
    return ReasonEditMethod(lambda: ReasonEditor(ctx.vlm, config, text_encoder=text_encoder,
                                                 calibration=calibration), name=name)


def _evaluate(ctx: RunContext, method: EditMethod) -> EvaluationResult:
    if ctx.single:
        result = evaluate_single(method, ctx.reference, ctx.protocol, progress=ctx.progress)
    else:
        result = evaluate_sequential(method, ctx.reference, ctx.protocol, progress=ctx.progress)
    extra = getattr(method, "extra", None)  # e.g. EasyEdit's own per-edit metrics of a baseline
    if extra:
        result.extra["method"] = extra() if callable(extra) else extra
    return result


def _config_dict(config: ReasonEditConfig) -> dict[str, Any]:
    return config.to_dict()


def _resolved(method: ReasonEditMethod, config: ReasonEditConfig) -> dict[str, Any]:
    """The config as run (AutoLayer/AutoScaler's choice filled in)."""
    values = config.to_dict()
    keys = method.editor.keys
    values["embedding"] = {**values["embedding"], "layer": keys.vision_module, "scale": keys.scale}
    return values


def run_method(name: str, ctx: RunContext, reasonedit_config: ReasonEditConfig | None = None) -> MethodResult:
    """One row. ``reasonedit_config`` is the ReasonEdit row's configuration (ablations change it)."""
    start = time.perf_counter()
    base = reasonedit_config or ctx.config
    try:
        if name == REASONEDIT:
            method = _reasonedit_method(ctx, base, REASONEDIT)
            ev = _evaluate(ctx, method)
            return MethodResult(name, "reasonedit", "ok", label=REASONEDIT, config=_resolved(method, base),
                                evaluation=ev, seconds=time.perf_counter() - start,
                                topology=method.editor.topology_report)
        if name == UNEDITED:
            method = UneditedMethod(ctx.vlm, ctx.config.max_new_tokens)
            ev = _evaluate(ctx, method)
            return MethodResult(name, "unedited", "ok", label="unedited model", evaluation=ev,
                                seconds=time.perf_counter() - start)
        if name in ABLATIONS:
            ablation = ABLATIONS[name]
            config = ablation_config(base, ablation)
            if config == base:
                return MethodResult(name, "ablation", "skipped", label=ablation.label,
                                    reason=_identical_reason(ablation, base), config=_config_dict(config))
            if name == "no-patches" and not base.patches.enabled:  # pragma: no cover - caught above
                raise BaselineUnavailable("patches are off in the ReasonEdit row")
            method = _reasonedit_method(ctx, config, name)
            ev = _evaluate(ctx, method)
            return MethodResult(name, "ablation", "ok", label=ablation.label, config=_resolved(method, config),
                                evaluation=ev, seconds=time.perf_counter() - start,
                                topology=method.editor.topology_report)
        if name in OWN_BASELINES:
            method = _finetune_method(ctx) if name == "FT" else _serac_method(ctx)
            ev = _evaluate(ctx, method)
            return MethodResult(name, "baseline", "ok", label=method.label, evaluation=ev, config=method.config,
                                seconds=time.perf_counter() - start)
        if name in EASYEDIT_METHODS:
            runner = _easyedit_runner(name)
            method = runner(model_path=ctx.model_path, hparams_path=_easyedit_hparams(ctx, name),
                            records=ctx.reference.errors, reference=ctx.reference, protocol=ctx.protocol,
                            vlm=ctx.vlm)
            ev = _evaluate(ctx, method)
            return MethodResult(name, "easyedit", "ok", label=name, evaluation=ev,
                                config=dict(getattr(method, "config", {}) or {}),
                                seconds=time.perf_counter() - start)
    except BaselineUnavailable as exc:
        kind = _kind(name)
        return MethodResult(name, kind, "skipped", reason=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one failing row must not sink the comparison
        logger.exception("method %s failed", name)
        kind = _kind(name)
        return MethodResult(name, kind, "failed", reason=f"{type(exc).__name__}: {exc}",
                            seconds=time.perf_counter() - start)
    raise ConfigError(f"unknown method {name!r}.{did_you_mean(name, DEFAULT_METHODS)} "
                      f"Known: {list(DEFAULT_METHODS)}.")


def _kind(name: str) -> str:
    return ("easyedit" if name in EASYEDIT_METHODS else "baseline" if name in OWN_BASELINES
            else "ablation" if name in ABLATIONS else name)


def _identical_reason(ablation: Ablation, base: ReasonEditConfig) -> str:
    if ablation.name == "no-patches":
        ok, why = patches_available()
        detail = why if not ok else "patch entries are off in the ReasonEdit row (patches.enabled: false)"
        return f"identical to the ReasonEdit row: {detail}"
    if ablation.name == "no-balance":
        return ("identical to the ReasonEdit row: it already uses the default layer and λ = 30 "
                "(run with balance='auto' to compare against AutoLayer/AutoScaler)")
    return f"identical to the ReasonEdit row ({ablation.note})"


def _own_hparams(ctx: RunContext, name: str) -> str:
    model = Path(ctx.model_path or "").name or "tiny-qwen2-vl-shapes"
    path = _easyedit_hparams(ctx, name) or str(Path(__file__).resolve().parent.parent / "hparams" / name /
                                                f"{model}.yaml")
    if not Path(path).is_file():
        raise BaselineUnavailable(f"no {name} hparams for this model: {path} does not exist")
    return path


def _finetune_method(ctx: RunContext) -> Any:
    from .finetune_baseline import FineTuneConfig, FineTuneMethod

    config = FineTuneConfig.from_yaml(_own_hparams(ctx, "FT"), seed=ctx.config.seed)
    return FineTuneMethod(ctx.vlm, config, ctx.config.max_new_tokens)


def _serac_method(ctx: RunContext) -> Any:
    from .serac_baseline import SeracConfig, SeracMethod

    config = SeracConfig.from_yaml(_own_hparams(ctx, "SERAC"), seed=ctx.config.seed)
    return SeracMethod(ctx.vlm, config, _text_encoder(ctx), ctx.config.max_new_tokens)


def _easyedit_hparams(ctx: RunContext, name: str) -> str | None:
    if ctx.easyedit_hparams_dir is None:
        return None
    root = Path(ctx.easyedit_hparams_dir)
    model = Path(ctx.model_path or "").name
    for candidate in (root / name / f"{model}.yaml", root / f"{name}.yaml", root / name.upper() / f"{model}.yaml"):
        if candidate.is_file():
            return str(candidate)
    raise BaselineUnavailable(f"no EasyEdit hparams for {name} under {root} (looked for {name}/{model}.yaml "
                              f"and {name}.yaml)")


def run_baseline(name: str, model_path: Union[str, Path, None], records: Sequence[EditRecord | Mapping[str, Any]],
                 *, config: ReasonEditConfig | None = None, protocol: ProtocolConfig | None = None,
                 reference: Reference | None = None, vlm: Any = None, text_encoder: Any = None,
                 easyedit_hparams_dir: Union[str, Path, None] = None, single: bool = False,
                 progress: bool = False, extra_locality: Iterable[Probe] = ()) -> MethodResult:
    """Run one method (``ReasonEdit``, ``unedited``, an ablation name or an EasyEdit method) on
    ``records`` and the model at ``model_path`` (or an already loaded ``vlm``).

    Without a ``reference`` the unedited model is asked first (which records are errors, which locality
    probes it gets right). Never raises for a method that cannot run: the row says ``skipped`` / ``failed``
    with the reason."""
    if vlm is None:
        if model_path is None:
            raise ConfigError("run_baseline needs model_path or vlm.")
        from .vlm import VLM

        vlm = VLM.from_pretrained(model_path)
    config = config or ReasonEditConfig()
    protocol = protocol or ProtocolConfig(seed=config.seed)
    recs = make_records(list(records))
    if reference is None:
        reference = prepare_reference(UneditedMethod(vlm, config.max_new_tokens), recs, protocol,
                                      extra_locality, progress)
    ctx = RunContext(vlm, recs, config, protocol, reference, str(model_path) if model_path else None,
                     text_encoder, easyedit_hparams_dir=str(easyedit_hparams_dir) if easyedit_hparams_dir else None,
                     single=single, progress=progress, calibration=calibration_pairs(recs, reference))
    return run_method(name, ctx)


def calibration_pairs(records: Sequence[EditRecord], reference: Reference | None = None) -> list[tuple[Any, str]]:
    """(image, question) pairs for AutoLayer/AutoScaler: every record's edit question (and its
    rephrasings) plus the locality pool's questions. No answers are used."""
    pairs: list[tuple[Any, str]] = []
    for r in records:
        pairs.append((r.image, r.prompt))
        if r.image_rephrase is not None:
            pairs.append((r.image_rephrase, r.prompt))
    if reference is not None:
        pairs.extend((p.image, p.question) for p in reference.locality if p.image is not None)
    return pairs


@dataclass
class Comparison:
    """Every row of one comparison and what they share."""

    methods: list[MethodResult]
    reference: dict[str, Any]
    protocol: ProtocolConfig
    config: dict[str, Any]
    """The ReasonEdit row's configuration as given (before AutoLayer/AutoScaler filled it in)."""
    model_path: str | None
    seconds: float
    single: bool = False
    shared: Reference | None = field(default=None, repr=False, compare=False)
    """The reference object itself (not serialised; ``reference`` is its summary)."""
    topology: Any = None
    """The topology-balance sweep for the report (:func:`topology_sweep`)."""

    def method(self, name: str) -> MethodResult | None:
        return next((m for m in self.methods if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"methods": [m.to_dict() for m in self.methods], "reference": self.reference,
                "protocol": self.protocol.to_dict(), "config": self.config, "model_path": self.model_path,
                "seconds": self.seconds, "protocol_name": "single" if self.single else "sequential"}


def topology_sweep(ctx: RunContext, row: MethodResult) -> Any:
    """The topology-balance sweep the report shows for the ReasonEdit row: its own AutoLayer/AutoScaler
    run when it balanced; else AutoScaler's λ sweep at the row's layer on the run's calibration pairs
    (images and questions, no answers), with the λ the row used marked. ``None`` when the row failed,
    there are fewer than two pairs, or the sweep cannot be computed (logged: it is a diagnostic)."""
    from .topology import calibrate

    if row.topology is not None and getattr(row.topology, "balanced", False):
        return row.topology
    if not row.ok or len(ctx.calibration or []) < 2:
        return None
    emb = row.config["embedding"]
    try:
        images = [load_image(image) for image, _ in ctx.calibration]
        questions = [question for _, question in ctx.calibration]
        result = calibrate(ctx.vlm, _text_encoder(ctx), images, questions, ctx.config.topology,
                           seed=ctx.config.seed, layer=emb["layer"], scale="auto")
    except Exception as exc:  # a diagnostic for the report: it must not fail the comparison
        logger.warning("topology-balance sweep for the report skipped: %s: %s", type(exc).__name__, exc)
        return None
    result.scale_sweep.used = float(emb["scale"])
    return dataclasses.replace(result, balanced=False, scale=float(emb["scale"]))


def run_comparison(vlm: Any, records: Sequence[EditRecord | Mapping[str, Any]], config: ReasonEditConfig,
                   methods: Sequence[str] = DEFAULT_METHODS, protocol: ProtocolConfig | None = None,
                   *, model_path: Union[str, Path, None] = None, text_encoder: Any = None,
                   balance: str = "yaml", patches: str = "yaml", extra_locality: Iterable[Probe] = (),
                   easyedit_hparams_dir: Union[str, Path, None] = None, single: bool = False,
                   progress: bool = False, on_method: Callable[[MethodResult], None] | None = None,
                   jobs: int = 1, vlm_loader: Callable[[], Any] | None = None) -> Comparison:
    """Run every method in ``methods`` against one shared reference (see the module docstring).

    ``jobs > 1`` runs the rows in that many worker processes (spawned; each loads its own model with the
    picklable ``vlm_loader`` and gets a copy of the reference), so a comparison whose rows take hours runs
    as one command in a fraction of the wall time. Rows are independent and seeded, so they are the same as
    with ``jobs=1``; the slow EasyEdit rows start first. Runners registered with
    :func:`register_easyedit_runner` at run time are not seen by the workers (the shipped ones are)."""
    unknown = [m for m in methods if m not in DEFAULT_METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}.{did_you_mean(unknown[0], DEFAULT_METHODS)} "
                          f"Known: {list(DEFAULT_METHODS)}.")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}.")
    if jobs > 1 and vlm_loader is None:
        raise ConfigError("jobs > 1 needs vlm_loader: a picklable callable that loads the model in each worker "
                          "(e.g. functools.partial(VLM.from_pretrained, path)).")
    start = time.perf_counter()
    protocol = protocol or ProtocolConfig(seed=config.seed)
    recs = make_records(list(records))
    reference = prepare_reference(UneditedMethod(vlm, config.max_new_tokens), recs, protocol, extra_locality,
                                  progress)
    ctx = RunContext(vlm, recs, config, protocol, reference, str(model_path) if model_path else None,
                     text_encoder, easyedit_hparams_dir=str(easyedit_hparams_dir) if easyedit_hparams_dir else None,
                     single=single, progress=progress, calibration=calibration_pairs(recs, reference))
    row_config = full_config(config, balance, patches)
    results: list[MethodResult] = []

    def row_base(name: str) -> ReasonEditConfig:
        """An ablation reuses the ReasonEdit row's AutoLayer/AutoScaler choice (except no-balance)."""
        full = next((r for r in results if r.name == REASONEDIT and r.ok), None)
        if name in ABLATIONS and name != "no-balance" and full is not None and full.topology is not None:
            emb = full.config["embedding"]
            return row_config.replace(embedding={"layer": emb["layer"], "scale": emb["scale"]})
        return row_config

    def finished(result: MethodResult) -> None:
        results.append(result)
        if on_method is not None:
            on_method(result)

    # ReasonEdit first: the ablations depend on its choice when it balanced itself
    ordered = sorted(methods, key=lambda m: 0 if m == REASONEDIT else 1)
    if jobs > 1:
        first = [m for m in ordered if m == REASONEDIT and balance == "auto" and len(ordered) > 1]
        for name in first:
            finished(run_method(name, ctx, row_base(name)))
        _run_in_workers([m for m in ordered if m not in first], ctx, row_base, jobs, vlm_loader, finished)
    else:
        for name in ordered:
            logger.info("comparison: running %s", name)
            finished(run_method(name, ctx, row_base(name)))
    results.sort(key=lambda r: list(methods).index(r.name))
    full = next((r for r in results if r.name == REASONEDIT), None)
    topology = topology_sweep(ctx, full) if full is not None else None
    return Comparison(results, reference.summary(), protocol, row_config.to_dict(),
                      str(model_path) if model_path else None, time.perf_counter() - start, single, reference,
                      topology)


# ================================================================================================
# Rows in worker processes (run_comparison(jobs=N))
# ================================================================================================

_WORKER_CONTEXT: dict[str, RunContext] = {}


def _log_state() -> tuple[int, int]:
    """The parent's logging levels that a spawned worker must repeat: this package's and transformers'."""
    from transformers.utils import logging as hf_logging

    return logging.getLogger(__package__).getEffectiveLevel(), hf_logging.get_verbosity()


def _worker_start(ctx: RunContext, vlm_loader: Callable[[], Any], threads: int, log_state: tuple[int, int]) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    own = logging.getLogger(__package__)
    if not own.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        own.addHandler(handler)
        own.propagate = False
    own.setLevel(log_state[0])
    hf_logging.set_verbosity(log_state[1])
    hf_logging.disable_progress_bar()  # rows in workers run without progress bars (they would interleave)
    ctx.vlm = vlm_loader()
    _WORKER_CONTEXT["ctx"] = ctx


def _worker_row(name: str, base: ReasonEditConfig) -> MethodResult:
    return run_method(name, _WORKER_CONTEXT["ctx"], base)


def _run_in_workers(names: Sequence[str], ctx: RunContext, row_base: Callable[[str], ReasonEditConfig],
                    jobs: int, vlm_loader: Callable[[], Any] | None,
                    finished: Callable[[MethodResult], None]) -> None:
    """Run ``names`` in ``jobs`` spawned processes, slowest kinds first (EasyEdit's, then this project's
    baselines, then ReasonEdit's rows), calling ``finished`` as each row ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    if not names:
        return
    slow_first = sorted(names, key=lambda m: 0 if m in EASYEDIT_METHODS else 1 if m in OWN_BASELINES else 2)
    shipped = dataclasses.replace(ctx, vlm=None, text_encoder=None, progress=False)
    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(max_workers=min(jobs, max(1, len(names))),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_start, initargs=(shipped, vlm_loader, threads, _log_state())) as pool:
        futures = {}
        for name in slow_first:
            logger.info("comparison: starting %s in a worker process", name)
            futures[pool.submit(_worker_row, name, row_base(name))] = name
        for future in as_completed(futures):
            name = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died must not sink the other rows
                result = MethodResult(name, _kind(name), "failed", reason=f"worker process: "
                                      f"{type(exc).__name__}: {exc}")
            finished(result)
