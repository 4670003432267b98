"""ReasonEditor: the engine that the EasyEdit adapter, the command line and the evaluation call.

An edit adds codebook entries built from the VLM's own vision activations and the rationale; answering
(``answering.py``, the query side of the same class) retrieves entries for the query, fuses their text into
the prompt, and runs the unchanged model.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .answering import Answer, QueryPath  # noqa: F401  (Answer: importable from here as before)
from .audit import AuditLog, EditInfo, who_why
from .augment import augment_image, paraphrase
from .codebook import Codebook, PendingEntry
from .config import ReasonEditConfig
from .embedding import KeyEncoder
from .errors import ConfigError, ReasonEditError
from .evidence import EvidenceCheck
from .fusion import get_fusion
from .gate_config import ANSWER_OPTIONS
from .records import EditRecord, check_batch, load_image, make_records, normalize_answer, open_image
from .retriever import Retriever
from .text_encoder import TextEncoder, shared_text_encoder

logger = logging.getLogger(__name__)

DESCRIPTION_TOKENS = 24
"""Longest caption generated for an answer template that names the edited image (``{image}``)."""

RecordsLike = Union[EditRecord, Mapping[str, Any], Iterable[Union[EditRecord, Mapping[str, Any]]]]


@dataclass
class EditOutcome:
    """What happened to one record."""

    edit_id: str
    status: str
    """``added``, ``skipped_correct`` (the unedited model already answers it), or ``quarantined``."""
    entry_ids: list[int] = field(default_factory=list)
    merged: list[bool] = field(default_factory=list)
    base_answer: str | None = None
    flags: list[Any] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class EditReport:
    outcomes: list[EditOutcome]

    def ids(self, status: str) -> list[str]:
        return [o.edit_id for o in self.outcomes if o.status == status]

    @property
    def added(self) -> list[str]:
        return self.ids("added")

    @property
    def skipped(self) -> list[str]:
        return self.ids("skipped_correct")

    @property
    def quarantined(self) -> list[str]:
        return self.ids("quarantined")


@dataclass
class _Prepared:
    record: EditRecord
    pending: list[PendingEntry]
    base_answer: str | None
    flags: list[Any]
    seconds: float
    image: Any = None


def _entry_meta(record: EditRecord, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What the codebook stores with an edit's entries: ``meta`` (its provenance) plus the record's answer
    options (``ANSWER_OPTIONS``: its choices, for the gate's ``names_option`` test)."""
    return {**meta, ANSWER_OPTIONS: list(record.choices)} if record.choices else dict(meta)


class ReasonEditor(QueryPath):
    """Edit a VLM with human reasoning, without touching its weights.

    >>> editor = ReasonEditor(VLM.from_pretrained(path), ReasonEditConfig())   # doctest: +SKIP
    >>> editor.edit([{"id": "e1", "image": "cat.png", "prompt": "...", "target": "...",
    ...               "rationale": "..."}])                                     # doctest: +SKIP
    >>> editor.answer("cat.png", "...").text                                    # doctest: +SKIP
    """

    def __init__(self, vlm: Any, config: ReasonEditConfig | Mapping[str, Any] | None = None,
                 text_encoder: TextEncoder | None = None, codebook: Codebook | None = None,
                 calibration: RecordsLike | None = None):
        if config is None:
            config = ReasonEditConfig()
        elif isinstance(config, Mapping):
            config = ReasonEditConfig.from_dict(config)
        elif callable(getattr(config, "to_config", None)):  # ReasonEditHyperParams: its engine part, copied
            config = config.to_config()
        elif not isinstance(config, ReasonEditConfig):
            raise ConfigError(f"config must be a ReasonEditConfig, a mapping or ReasonEditHyperParams, "
                              f"got {type(config).__name__}.")
        get_fusion(config.fusion.kind)
        self.config = config
        self.vlm = vlm
        self.text_encoder = text_encoder or shared_text_encoder(config.embedding.text_encoder,
                                                                  dtype=config.embedding.text_dtype)
        self.topology_report: Any = None
        module, scale = config.embedding.layer, config.embedding.scale
        if module == "auto" or scale == "auto":
            if calibration is None:
                raise ConfigError(
                    "embedding.layer or embedding.scale is 'auto': pass calibration= (records or "
                    "(image, question) pairs, >= topology.layer_samples of them) so AutoLayer/AutoScaler "
                    "can choose, or give a fixed layer and scale.")
            module, scale = self._calibrate(calibration)
        self.keys: Any = KeyEncoder(vlm, self.text_encoder, vlm.resolve_layer(module), float(scale),
                                    batch_size=config.embedding.batch_size)
        if config.retrieval.tuning == "contrastive":  # extension: keys go through a tuned projection
            from .key_tuning import KeyTuner, ProjectedKeys

            self.keys = ProjectedKeys(self.keys, lambda dim: KeyTuner(dim, config.key_tuning, config.seed))
        self.hidden: Any = None
        """Hidden-state fusion (fusion.kind hidden_bias / gated; extension): fact vectors, hook, gate."""
        if config.fusion.hidden:
            from .hidden_fusion import HiddenFusion

            self.hidden = HiddenFusion(vlm, config.fusion, config.seed)
        self.learning_seconds: list[float] = []
        """Per committed edit() call: seconds spent training the fusion gate and the key projection."""
        self._codebook = codebook
        self._retriever: Retriever | None = None
        self._one_pass: bool | None = None  # False once an answer's pass proved not to run the key's module
        self.quarantine: dict[str, EditRecord] = {}
        self.edit_records: dict[str, EditRecord] = {}
        """Raw records of committed edits (kept for export and re-embedding; see storage.py)."""
        self.audit = AuditLog()
        """Who/when/why of every change; appended to the codebook folder's audit.jsonl on save."""
        self.evidence = EvidenceCheck.from_config(vlm, config, lambda edit_id: self.edit_records.get(edit_id))
        """The null-set gate's evidence check (``retrieval.nullset.evidence_check``; extension), or None."""
        self.guard = None
        if config.guard.policy != "off":
            from .guards import RationaleGuard  # optional component, imported when configured

            self.guard = RationaleGuard(config.guard, self)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_pretrained(cls, model_path: Union[str, Path], config: ReasonEditConfig | None = None,
                        device: str = "cpu", **kwargs: Any) -> "ReasonEditor":
        from .vlm import VLM

        return cls(VLM.from_pretrained(model_path, device=device), config, **kwargs)

    def _calibrate(self, calibration: RecordsLike) -> tuple[Any, float]:
        from .topology import calibrate

        pairs = self._calibration_pairs(calibration)
        report = calibrate(self.vlm, self.text_encoder, [p[0] for p in pairs], [p[1] for p in pairs],
                           self.config.topology, seed=self.config.seed,
                           layer=self.config.embedding.layer, scale=self.config.embedding.scale)
        self.topology_report = report
        return report.layer, report.scale

    @staticmethod
    def _calibration_pairs(calibration: RecordsLike) -> list[tuple[Image.Image, str]]:
        items = list(calibration) if not isinstance(calibration, (EditRecord, Mapping)) else [calibration]
        pairs = []
        for item in items:
            if isinstance(item, tuple) and len(item) == 2:
                pairs.append((load_image(item[0]), str(item[1])))
            else:
                rec = make_records([item])[0]
                pairs.append((load_image(rec.image), rec.prompt))
        if len(pairs) < 2:
            raise ConfigError("calibration needs at least two (image, question) pairs.")
        return pairs

    @property
    def codebook(self) -> Codebook:
        if self._codebook is None:
            self._codebook = Codebook(self.keys.setup.dim, self.config.codebook, self.config.retrieval)
        return self._codebook

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None or self._retriever.codebook is not self.codebook:
            self._retriever = Retriever(self.codebook, self.config.retrieval, self.config.seed,
                                        vision_dim=self.keys.setup.vision_dim, encode_text=self.keys.text,
                                        domain_images=self._domain_images)
        return self._retriever

    def _domain_images(self) -> np.ndarray | None:
        """The image parts of the null-set gate's ``null_images`` (read and encoded on the gate's first use)."""
        from .hparams import resolve_image_paths

        paths = resolve_image_paths(self.config.retrieval.nullset.null_images)
        return self.keys.vision([load_image(p) for p in paths]).double().numpy() if paths else None

    # ------------------------------------------------------------------ editing
    def edit(self, records: RecordsLike, image_root: Union[str, Path, None] = None,
             progress: bool = False, **meta: Any) -> EditReport:
        """Apply edits. All-or-nothing: if any record is invalid or any step fails, the codebook is left
        exactly as it was. ``meta`` (e.g. author=, reason=) is stored as provenance on every entry."""
        guard = self.config.guard
        check_batch(records, meta)
        records = make_records(records, image_root, max_rationale_chars=guard.max_rationale_chars,
                               max_sentences=guard.max_sentences)
        existing = set(self.codebook.edit_ids()) | set(self.quarantine)
        for r in records:
            if r.id in existing:
                raise ReasonEditError(f"edit {r.id!r} already exists; remove it first (editor.remove) or give "
                                      "the record another id.")
        prepared: list[_Prepared] = []
        outcomes: dict[str, EditOutcome] = {}
        for r in tqdm(records, desc="ReasonEdit: preparing edits", disable=not progress, unit="edit"):
            start = time.perf_counter()
            image = open_image(r.image, r.id)
            base = None
            if self.config.only_edit_errors:
                base = self._ask(image, r.prompt, r.choices)[0]
                if normalize_answer(base) == normalize_answer(r.target):
                    outcomes[r.id] = EditOutcome(r.id, "skipped_correct", base_answer=base,
                                                 seconds=time.perf_counter() - start)
                    continue
            flags = (self.guard.check(r, image, [(p.record, p.pending) for p in prepared])
                     if self.guard is not None else [])
            if flags and guard.policy == "reject":
                self.audit.record("rejected", r.id, who=who_why({**meta, **r.meta})[0],
                                  why=who_why({**meta, **r.meta})[1], flags=[str(f) for f in flags])
                raise ReasonEditError(f"edit {r.id!r} was rejected by the rationale guard: "
                                      f"{'; '.join(str(f) for f in flags)}. Nothing was added.")
            if flags and guard.policy == "quarantine":
                outcomes[r.id] = EditOutcome(r.id, "quarantined", base_answer=base, flags=flags,
                                             seconds=time.perf_counter() - start)
                continue
            if flags:
                logger.warning("edit %s: rationale guard flags: %s", r.id, "; ".join(map(str, flags)))
            pending = self._pending_entries(r, image)
            prepared.append(_Prepared(r, pending, base, flags, time.perf_counter() - start, image))

        committed: list[str] = []
        try:
            for p in prepared:
                stored = _entry_meta(p.record, {**meta, **p.record.meta})
                result = self.codebook.add_edit(p.record.id, p.pending, stored)
                committed.append(p.record.id)
                outcomes[p.record.id] = EditOutcome(p.record.id, "added", [i for i, _ in result],
                                                    [m for _, m in result], p.base_answer, p.flags, p.seconds)
            self._after_commit([(p.record, p.image, p.pending) for p in prepared])
        except BaseException:
            for edit_id in reversed(committed):
                self.codebook.remove_edit(edit_id)
            raise
        for r in records:
            outcome = outcomes.get(r.id)
            who, why = who_why({**meta, **r.meta})
            if outcome is not None and outcome.status == "quarantined":
                self.quarantine[r.id] = r
                self.audit.record("quarantined", r.id, who=who, why=why, flags=[str(f) for f in outcome.flags])
            elif outcome is not None and outcome.status == "added":
                self.edit_records[r.id] = r
                self._audit_added(outcome, who, why, [str(f) for f in outcome.flags])
                self._read_evidence(r.id)
        return EditReport([outcomes[r.id] for r in records])

    def _read_evidence(self, edit_id: str) -> None:
        """Read an added edit's evidence now (the gate's evidence check), so its first query pays nothing."""
        if self.evidence is not None:
            self.evidence.evidence(edit_id)

    def approve(self, edit_id: str) -> EditOutcome:
        """Commit a quarantined edit as it is (its guard flags are kept in the outcome)."""
        if edit_id not in self.quarantine:
            raise ReasonEditError(f"no quarantined edit {edit_id!r}; quarantined: {sorted(self.quarantine)}")
        record = self.quarantine[edit_id]
        image = load_image(record.image)
        pending = self._pending_entries(record, image)
        result = self.codebook.add_edit(edit_id, pending, _entry_meta(record, {**record.meta, "approved": True}))
        self._after_commit([(record, image, pending)])
        del self.quarantine[edit_id]
        outcome = EditOutcome(edit_id, "added", [i for i, _ in result], [m for _, m in result])
        self.edit_records[edit_id] = record
        who, why = who_why(record.meta)
        self.audit.record("approved", edit_id, why=why, entry_ids=outcome.entry_ids, author=who)
        self._audit_added(outcome, who, why, [])
        self._read_evidence(edit_id)
        return outcome

    def remove(self, edit_id: str) -> list[int]:
        """Undo an edit by id: its entries go, merged entries are recomputed from what remains."""
        if edit_id in self.quarantine:
            del self.quarantine[edit_id]
            self.audit.record("removed", edit_id, status="quarantined")
            return []
        touched = self.codebook.remove_edit(edit_id)
        self.edit_records.pop(edit_id, None)
        if self.evidence is not None:
            self.evidence.forget(edit_id)
        tuner = getattr(self.keys, "tuner", None)
        if tuner is not None:
            tuner.forget(edit_id)
        if self.hidden is not None:
            self.hidden.forget(edit_id, [v for e in self.codebook.entries.values() for v in e.values])
        self.audit.record("removed", edit_id, entry_ids=touched)
        return touched

    def edit_ids(self) -> list[str]:
        return self.codebook.edit_ids()

    def _audit_added(self, outcome: EditOutcome, who: str | None, why: str | None, flags: list[str]) -> None:
        self.audit.record("added", outcome.edit_id, who=who, why=why, entry_ids=outcome.entry_ids,
                          merged=outcome.merged, flags=flags)
        merged = [i for i, m in zip(outcome.entry_ids, outcome.merged) if m]
        if merged:
            self.audit.record("merged", outcome.edit_id, who=who, why=why, entry_ids=merged,
                              with_edits={str(i): self.codebook.entries[i].edit_ids for i in merged
                                          if i in self.codebook.entries})

    # ------------------------------------------------------------------ storage (storage.py)
    def save(self, path: Union[str, Path]) -> Path:
        """Atomically save the codebook, raw edit records, quarantine and audit log to folder ``path``. Returns
        the snapshot folder written inside it; :meth:`load` takes ``path`` or that snapshot while it is the live one."""
        from .editor_storage import save_editor

        after = self.config.codebook.evict_unretrieved_after
        if after is not None and self._codebook is not None:
            self.evict_unretrieved(after)
        return save_editor(self, path)

    @classmethod
    def load(cls, path: Union[str, Path], vlm: Any, config: ReasonEditConfig | None = None,
             text_encoder: TextEncoder | None = None, **kwargs: Any) -> "ReasonEditor":
        """An editor for ``vlm`` with the codebook saved at ``path`` (config from the folder unless given).
        Raises CodebookMismatchError if ``vlm`` / layer / scale / text encoder differ from the saved setup."""
        from .editor_storage import load_editor

        return load_editor(cls, path, vlm, config, text_encoder, **kwargs)

    def export_edits(self, edit_ids: Iterable[str], path: Union[str, Path]) -> Path:
        """Write the given edits as a portable knowledge module (keys, entries, raw records with images)."""
        from .knowledge_modules import export_edits

        return export_edits(self, edit_ids, path)

    def import_edits(self, path: Union[str, Path], reembed: Union[bool, str] = "auto", guard: bool = True) -> Any:
        """Add the edits of a module or codebook folder: keys as they are for the same setup, re-embedded
        from the raw records otherwise. All-or-nothing; returns an ``ImportReport``."""
        from .knowledge_modules import import_edits

        return import_edits(self, path, reembed, guard)

    def list_edits(self) -> list[EditInfo]:
        """Every active and quarantined edit with its entries, provenance and guard flags."""
        from .knowledge_modules import list_edits

        return list_edits(self)

    def quarantined(self) -> list[EditInfo]:
        """Edits held by the rationale guard, waiting for ``approve`` (or ``remove``)."""
        return [info for info in self.list_edits() if info.status == "quarantined"]

    def _entry_texts(self, record: EditRecord, image: Image.Image) -> list[tuple[str, str, str]]:
        """(kind, key text, value) for the answer entry and one reasoning entry per sentence. An answer
        template naming ``{image}`` gets the model's own caption of the edit's image."""
        cfg = self.config.codebook
        items = []
        if cfg.answer_entries:
            described = None
            if cfg.names_image:
                described = self.vlm.generate(image, self.config.patches.describe_prompt, DESCRIPTION_TOKENS)
                if not described.strip(" ."):
                    raise ReasonEditError(f"edit {record.id!r}: the model gave no caption of its image for the "
                                          "answer template's {image}; check patches.describe_prompt or drop {image}.")
            items.append(("answer", record.prompt, cfg.answer_entry(record.prompt, record.target, described)))
        if cfg.rationale_entries:
            items.extend(("reasoning", s, s) for s in record.rationale)
        return items

    def _pending_entries(self, record: EditRecord, image: Image.Image) -> list[PendingEntry]:
        items = self._entry_texts(record, image)
        if not items:
            raise ReasonEditError(f"edit {record.id!r} has no rationale and answer entries are off; nothing "
                                  "to store.")
        images = [image] * len(items)
        texts = [t for _, t, _ in items]
        if self.config.patches.enabled and record.rationale:
            from .patches import find_patches

            for crop, sentence in find_patches(self.vlm, image, record.rationale, self.config.patches):
                items.append(("patch", sentence, sentence))
                images.append(crop)
                texts.append(sentence)
        encoder = getattr(self.keys, "raw", self.keys)  # unprojected when keys are tuned
        keys = encoder.encode(images, texts)
        aug_keys = self._augmented_keys(record.id, images, texts, encoder)
        tuner = getattr(self.keys, "tuner", None)
        if tuner is not None:  # contrastive tuning: store projected keys, keep the raw ones for retraining
            from .key_tuning import RawKeys

            nulls = list(self.config.key_tuning.null_prompts)
            raw = RawKeys(keys, aug_keys, encoder.encode([image] * len(nulls), nulls) if nulls
                          else torch.zeros(0, keys.shape[1]), self.config.augment.default_radius,
                          [kind for kind, _, _ in items], [value for _, _, value in items])
            tuner.stage(record.id, raw)
            keys, radii = tuner.project(keys), tuner.radii(raw)
        elif aug_keys is None:
            radii = [self.config.augment.default_radius] * len(texts)
        else:  # distance from each key to the key of ONE seeded augmented copy of its (image, text)
            radii = torch.linalg.vector_norm(keys - aug_keys, dim=1).tolist()
        return [PendingEntry(kind, value, key, radius)
                for (kind, _, value), key, radius in zip(items, keys, radii)]

    def _augmented_image(self, edit_id: str, image: Image.Image) -> Image.Image:
        return augment_image(image, random.Random(f"{self.config.seed}:{edit_id}:img"), self.config.augment)

    def _augmented_keys(self, edit_id: str, images: Sequence[Image.Image], texts: Sequence[str],
                        encoder: Any) -> torch.Tensor | None:
        """Keys of ONE seeded augmented copy of each (image, text); None when augmentation is off."""
        aug = self.config.augment
        if not aug.enabled:
            return None
        aug_images, aug_texts, cache = [], [], {}
        for i, (image, text) in enumerate(zip(images, texts)):
            rng = random.Random(f"{self.config.seed}:{edit_id}:{i}")
            if id(image) not in cache:  # one augmented copy per distinct image, as in the reference
                cache[id(image)] = self._augmented_image(edit_id, image)
            aug_images.append(cache[id(image)])
            aug_texts.append(paraphrase(text, rng, aug.paraphrase))
        return encoder.encode(aug_images, aug_texts)

    # ------------------------------------------------------------------ continual learning (extensions)
    def _after_commit(self, committed: Sequence[tuple[EditRecord, Image.Image, Sequence[PendingEntry]]]) -> None:
        """After edits are in the codebook: train the key projection (``retrieval.tuning: contrastive``)
        and re-project the stored keys when due; encode the facts and train the gate (hidden fusion)."""
        if not committed:
            return
        start = time.perf_counter()
        tuner = getattr(self.keys, "tuner", None)
        if tuner is not None:
            tuner.commit([r.id for r, _, _ in committed])
            if tuner.due:
                tuner.train()
                tuner.rekey(self.codebook)
        if self.hidden is not None:
            self.hidden.on_edits([self._gate_edit(r, image, pending) for r, image, pending in committed])
        if tuner is not None or (self.hidden is not None and self.hidden.gate is not None):
            self.learning_seconds.append(time.perf_counter() - start)

    def _gate_edit(self, record: EditRecord, image: Image.Image, pending: Sequence[PendingEntry]) -> Any:
        """The gate's training material of one edit (see fusion_gate.py): facts (the values of its answer and
        reasoning entries, as stored), positives, null probes."""
        from .fusion_gate import GateEdit

        facts = list(dict.fromkeys(e.value for e in pending if e.kind != "patch"))
        positives = [(image, record.prompt)]
        if self.config.augment.enabled:
            rng = random.Random(f"{self.config.seed}:{record.id}:gate")
            positives.append((self._augmented_image(record.id, image),
                              paraphrase(record.prompt, rng, self.config.augment.paraphrase)))
        nulls = [(image, q) for q in self.config.fusion.null_prompts]
        return GateEdit(record.id, facts, positives, nulls)

    def side_files(self) -> dict[str, bytes]:
        """Files saved next to the codebook: fact vectors and gate (hidden fusion), key projection (tuning)."""
        files: dict[str, bytes] = {}
        if self.hidden is not None:
            files.update(self.hidden.side_files())
        tuner = getattr(self.keys, "tuner", None)
        if tuner is not None:
            files.update(tuner.side_files())
        return files

    def load_side_files(self, files: Mapping[str, bytes]) -> None:
        if self.hidden is not None:
            self.hidden.load_side_files(files)
        tuner = getattr(self.keys, "tuner", None)
        if tuner is not None:
            tuner.load_side_files(files)

    def evict_unretrieved(self, older_than: float) -> list[str]:
        """Remove edits none of whose entries was ever retrieved and older than ``older_than`` seconds;
        each is logged as ``evicted``. Returns their ids."""
        evicted = self.codebook.unretrieved_edits(older_than)
        for edit_id in evicted:
            touched = self.codebook.remove_edit(edit_id)
            self.edit_records.pop(edit_id, None)
            self.audit.record("evicted", edit_id, entry_ids=touched,
                              why=f"never retrieved in {older_than:g} s (codebook.evict_unretrieved_after)")
        return evicted
