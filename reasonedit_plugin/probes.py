"""The probes of an edit record (METHOD.md §7): its edit probes (reliability, T/I/R-Gen), its locality and
hard-locality probes, and the seeded locality pool that shares neither image nor question with any edit."""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from typing import Iterable, Sequence


from .records import EditRecord, ImageLike, normalize_answer


logger = logging.getLogger(__name__)

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
