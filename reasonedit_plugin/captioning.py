"""Captioning edits: records with a caption target, fused into the captioning prompt, and their metrics.

A caption edit is an ordinary edit record whose ``prompt`` is a captioning instruction ("Describe this
image.") and whose ``target`` is the caption; its rationale becomes codebook entries exactly as for VQA,
and retrieved facts are fused into the captioning prompt (METHOD.md §4.5). Records may use EasyEdit's
E-IC / ``CaptionDataset`` field names (``src``, ``alt``, ``pred``, ``rephrase``, ``image_rephrase``,
``loc``, ``loc_ans``, ``m_loc``, ``m_loc_q``, ``m_loc_a``): :func:`caption_records` maps them.

Metrics (:func:`evaluate_captions`), after all edits are applied one after another:

- EasyEdit's caption metrics: teacher-forced token accuracy of the target caption under the (fused)
  prompt — ``rewrite_acc`` (the edit), ``rephrase_acc`` (rephrased prompt), ``image_rephrase_acc``
  (another image of the same content) — and ``multimodal_locality_acc``, the top-10 token agreement
  with the unedited model on an unrelated image's caption;
- the paper's view: reliability / T-Gen / I-Gen as exact match of the greedy caption with the target
  (normalised), and locality as the share of unrelated images whose greedy caption is unchanged;
  overall = harmonic mean of reliability, generality (HM of T/I-Gen) and locality.

The text-only locality question of E-IC (``loc`` / ``loc_ans``) is kept on the record but not scored here
(it has no image); EasyEdit's own ``edit_dataset`` scores it (``locality_acc``).

:func:`caption_split` writes caption edits over easy-vqa images (a caption plus a rule that only the
rationale carries: "A red circle of the Tor tribe."). ``reasonedit caption`` runs it all from the
command line.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from tqdm.auto import tqdm

from .data.language import CAPTION_TRIBES
from .errors import RecordError
from .records import EditRecord, ImageLike, load_image, make_records, normalize_answer

logger = logging.getLogger(__name__)

__all__ = ["CAPTION_PROMPT", "EIC_FIELDS", "CaptionProbe", "CaptionResult", "caption_records", "caption_split",
           "evaluate_captions"]

CAPTION_PROMPT = "Describe this image."
"""The captioning instruction when a record gives none (METHOD.md §6 uses the same one)."""
REPHRASED_PROMPT = "What does this image show?"

EIC_FIELDS = {
    "src": "prompt",
    "alt": "target",
    "rephrase": "rephrase_prompt",
    "image_rephrase": "image_rephrase",
    "loc": "locality_prompt",
    "loc_ans": "locality_ground_truth",
    "m_loc": "multimodal_locality_image",
    "m_loc_q": "multimodal_locality_prompt",
    "m_loc_a": "multimodal_locality_ground_truth",
}
"""EasyEdit E-IC (``CaptionDataset``) field -> edit-record field."""
_EIC_META = ("pred", "cond")
"""E-IC fields kept as provenance under ``meta`` (the model's original caption, EasyEdit's condition)."""


def caption_records(rows: Iterable[Mapping[str, Any]], image_root: Union[str, Path, None] = None,
                    rephrase_root: Union[str, Path, None] = None) -> list[EditRecord]:
    """Edit records from caption rows in E-IC or edit-record field names (mixing is an error per field).

    As EasyEdit's ``CaptionDataset``: ``image`` and ``m_loc`` are relative to ``image_root`` (its
    ``coco_image``), ``image_rephrase`` to ``rephrase_root`` (``rephrase_image``; defaults to
    ``image_root``). A row without a prompt gets :data:`CAPTION_PROMPT`; rows without ``id`` get
    ``caption-<n>``. E-IC rows whose ``alt`` is empty are skipped, as EasyEdit does."""
    out = []
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise RecordError(f"caption rows must be mappings, got {type(row).__name__}.", f"caption-{n}")
        data = dict(row)
        rid = str(data.get("id", f"caption-{n}"))
        if "alt" in data and not str(data["alt"]).strip():
            logger.info("caption row %s skipped: empty 'alt' (EasyEdit skips these too)", rid)
            continue
        meta = dict(data.pop("meta", {}) or {})
        for key in _EIC_META:
            if key in data:
                meta[key] = data.pop(key)
        for eic, ours in EIC_FIELDS.items():
            if eic in data:
                if ours in data and eic != ours:
                    raise RecordError(f"gives both {eic!r} (E-IC) and {ours!r}; keep one.", rid, eic)
                data[ours] = data.pop(eic)
        if "multimodal_locality_image" in data and "multimodal_locality_prompt" not in data:
            data["multimodal_locality_prompt"] = CAPTION_PROMPT
        data.setdefault("prompt", CAPTION_PROMPT)
        data["id"] = rid
        if meta:
            data["meta"] = meta
        rephrased = data.get("image_rephrase")
        if rephrase_root is not None and isinstance(rephrased, str) and not Path(rephrased).is_absolute():
            data["image_rephrase"] = str(Path(rephrase_root) / rephrased)
        out.append(data)
    return make_records(out, image_root)


def load_caption_records(path: Union[str, Path], image_root: Union[str, Path, None] = None,
                         rephrase_root: Union[str, Path, None] = None) -> list[EditRecord]:
    """Caption records from a JSON list or JSON lines file (paths relative to the file's folder unless
    ``image_root`` is given)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"caption file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                         if line.strip()]
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not JSON / JSON lines ({exc}).") from exc
    return caption_records(rows, image_root if image_root is not None else path.parent, rephrase_root)


# ------------------------------------------------------------------------------------------ metrics

@dataclass
class CaptionProbe:
    """One scored (image, prompt, caption) probe."""

    kind: str
    """``rel``, ``tgen``, ``igen`` or ``loc``."""
    record_id: str
    prompt: str
    """What the model read as the user text (facts fused in when retrieved)."""
    target: str
    generated: str
    token_accuracy: float
    """Teacher-forced token accuracy of ``target`` (EasyEdit's rewrite/rephrase accuracy)."""
    correct: bool
    """rel/tgen/igen: the greedy caption equals the target (normalised); loc: it equals the unedited one."""
    retrieved: bool
    top10_match: float | None = None
    """loc only: EasyEdit's top-10 token agreement with the unedited model over the locality caption."""


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _hm(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals or len(vals) != len(values):
        return None
    if any(v <= 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


@dataclass
class CaptionResult:
    """Caption metrics of one method after a sequence of caption edits (fractions in [0, 1])."""

    method: str
    edited: list[str]
    skipped: list[str]
    probes: list[CaptionProbe]
    seconds_per_edit: float | None = None
    easyedit: dict[str, float | None] = field(default_factory=dict)
    paper: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def of(kind: str) -> list[CaptionProbe]:
            return [p for p in self.probes if p.kind == kind]

        self.easyedit = {
            "rewrite_acc": _mean([p.token_accuracy for p in of("rel")]),
            "rephrase_acc": _mean([p.token_accuracy for p in of("tgen")]),
            "image_rephrase_acc": _mean([p.token_accuracy for p in of("igen")]),
            "multimodal_locality_acc": _mean([p.top10_match for p in of("loc") if p.top10_match is not None]),
        }
        rel, tgen, igen, loc = (_mean([float(p.correct) for p in of(k)]) for k in ("rel", "tgen", "igen", "loc"))
        gen = _hm([v for v in (tgen, igen) if v is not None]) if (tgen, igen) != (None, None) else None
        self.paper = {"reliability": rel, "t_gen": tgen, "i_gen": igen, "generality": gen, "locality": loc,
                      "overall_hm": _hm([rel, gen, loc])}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _probe(editor: Any, kind: str, record_id: str, image: ImageLike, prompt: str, target: str,
           max_new_tokens: int, use_codebook: bool) -> tuple[CaptionProbe, Any]:
    img = load_image(image)
    if use_codebook:
        retrieval = editor.retrieve(img, prompt)
        text = editor.fused_question(prompt, retrieval)
        retrieved = bool(retrieval.accepted)
    else:
        text, retrieved = prompt, False
    (scores,) = editor.vlm.token_scores(img, text, [target])
    generated = editor.vlm.generate(img, text, max_new_tokens)
    correct = normalize_answer(generated) == normalize_answer(target)
    return CaptionProbe(kind, record_id, text, target, generated, scores.accuracy, correct, retrieved), scores


def _edit_probes(r: EditRecord) -> list[tuple[str, ImageLike, str]]:
    probes = [("rel", r.image, r.prompt)]
    if r.rephrase_prompt:
        probes.append(("tgen", r.image, r.rephrase_prompt))
    if r.image_rephrase is not None:
        probes.append(("igen", r.image_rephrase, r.prompt))
    return probes


def _locality(r: EditRecord) -> tuple[ImageLike, str, str] | None:
    if r.multimodal_locality_image is None or not r.multimodal_locality_ground_truth:
        return None
    return (r.multimodal_locality_image, r.multimodal_locality_prompt or CAPTION_PROMPT,
            r.multimodal_locality_ground_truth)


def _score_all(editor: Any, records: Sequence[EditRecord], max_new_tokens: int, use_codebook: bool,
               reference: Mapping[str, tuple[str, Any]] | None, progress: bool, desc: str) -> list[CaptionProbe]:
    probes: list[CaptionProbe] = []
    for r in tqdm(records, desc=desc, disable=not progress, unit="record"):
        for kind, image, prompt in _edit_probes(r):
            probes.append(_probe(editor, kind, r.id, image, prompt, r.target, max_new_tokens, use_codebook)[0])
        loc = _locality(r)
        if loc is None or reference is None:
            continue
        probe, scores = _probe(editor, "loc", r.id, loc[0], loc[1], loc[2], max_new_tokens, use_codebook)
        ref_caption, ref_top = reference[r.id]
        probe.correct = normalize_answer(probe.generated) == normalize_answer(ref_caption)
        probe.top10_match = float((scores.top_ids == ref_top).float().mean())
        probes.append(probe)
    return probes


def evaluate_captions(editor: Any, records: Sequence[EditRecord | Mapping[str, Any]], max_new_tokens: int = 16,
                      progress: bool = False) -> tuple[CaptionResult, CaptionResult]:
    """Apply the caption edits one after another to ``editor`` (whose codebook should start empty), then
    score every record; returns (ReasonEdit, unedited). With ``only_edit_errors`` (the paper's rule) an
    edit the unedited model already captions exactly is skipped."""
    recs = [r if isinstance(r, EditRecord) else caption_records([r])[0] for r in records]
    reference: dict[str, tuple[str, Any]] = {}
    for r in recs:  # the unedited model on the locality images: greedy caption and top-10 ids
        loc = _locality(r)
        if loc is not None:
            probe, scores = _probe(editor, "loc", r.id, loc[0], loc[1], loc[2], max_new_tokens, False)
            reference[r.id] = (probe.generated, scores.top_ids)
    # the unedited row: locality is its own reference (100 % by definition), so it has no loc probes
    unedited = CaptionResult("unedited", [], [], _score_all(editor, recs, max_new_tokens, False, None, progress,
                                                            "captions: unedited"))
    start = time.perf_counter()
    edited, skipped = [], []
    for r in tqdm(recs, desc="captions: editing", disable=not progress, unit="edit"):
        report = editor.edit([r])
        (edited if report.added else skipped).append(r.id)
    seconds = (time.perf_counter() - start) / max(1, len(recs))
    probes = _score_all(editor, recs, max_new_tokens, True, reference, progress, "captions: edited")
    return CaptionResult("ReasonEdit", edited, skipped, probes, seconds), unedited


TABLE_COLUMNS = ("method", "edits", "Rel.", "T-Gen", "I-Gen", "Loc.", "Overall (HM)", "rewrite_acc", "rephrase_acc",
                 "image_rephrase_acc", "multimodal_locality_acc")
_PAPER_KEYS = ("reliability", "t_gen", "i_gen", "locality", "overall_hm")
_EASYEDIT_KEYS = ("rewrite_acc", "rephrase_acc", "image_rephrase_acc", "multimodal_locality_acc")


def table_rows(results: Sequence[CaptionResult]) -> list[dict[str, str]]:
    """One row per result, cells in percent, keyed by :data:`TABLE_COLUMNS` (the demo report's table)."""
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    rows = []
    for r in results:
        cells = [pct(r.paper[k]) for k in _PAPER_KEYS] + [pct(r.easyedit[k]) for k in _EASYEDIT_KEYS]
        rows.append(dict(zip(TABLE_COLUMNS, [r.method, str(len(r.edited)), *cells])))
    return rows


def results_table(results: Sequence[CaptionResult]) -> str:
    """A markdown table of both metric families, in percent."""
    head = "| " + " | ".join(TABLE_COLUMNS) + " |\n" + "| --- " * len(TABLE_COLUMNS) + "|\n"
    return head + "\n".join("| " + " | ".join(row[c] for c in TABLE_COLUMNS) + " |"
                             for row in table_rows(results)) + "\n"


def write_results(results: Sequence[CaptionResult], out: Union[str, Path],
                  extra: Mapping[str, Any] | None = None) -> Path:
    """``<out>/caption_results.json`` (every probe) and ``<out>/caption_report.md`` (the table)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"results": [r.to_dict() for r in results], **dict(extra or {})}
    (out / "caption_results.json").write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    (out / "caption_report.md").write_text("# Caption edits\n\n" + results_table(results), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------ data



def caption_split(n: int, seed: int = 0, image_split: str = "test") -> list[dict[str, Any]]:
    """``n`` caption edits over easy-vqa images (paths relative to the easy-vqa data folder).

    Each record asks for a caption of an image showing a ``colour shape`` and targets
    ``"A <colour> <shape> of the <Tribe> tribe."``; the tribe of that colour + shape is a seeded choice
    that only the rationale states, so the unedited model cannot know it. T-Gen rephrases the
    instruction, I-Gen shows another image of the same colour and shape, and the locality probe is an
    image of another colour and shape captioned plainly ("A blue square."), of a colour + shape no record
    of the split edits while there is one (up to 23 records: easy-vqa has 24 combinations)."""
    from .data.shaperules import image_catalogue

    rng = random.Random(f"captions:{seed}")
    images = list(image_catalogue(image_split))
    by_kind: dict[tuple[str, str], list[Any]] = {}
    for info in images:
        by_kind.setdefault((info.colour, info.shape), []).append(info)
    kinds = sorted(k for k, v in by_kind.items() if len(v) >= 2)
    tribe = {k: rng.choice(CAPTION_TRIBES) for k in kinds}
    rng.shuffle(kinds)
    edited = set(kinds[:n])
    records = []
    for i in range(n):
        colour, shape = kinds[i % len(kinds)]
        first, second = rng.sample(by_kind[(colour, shape)], 2)
        unrelated = [x for x in images if x.colour != colour and x.shape != shape]
        unedited = [x for x in unrelated if (x.colour, x.shape) not in edited]
        other = rng.choice(unedited or unrelated)
        name = tribe[(colour, shape)]
        records.append({
            "id": f"caption-{seed}-{i}",
            "image": first.path,
            "prompt": CAPTION_PROMPT,
            "target": f"A {colour} {shape} of the {name} tribe.",
            "rationale": f"The shape in the image is a {colour} {shape}. "
                         f"{colour.capitalize()} {shape}s belong to the {name} tribe.",
            "rephrase_prompt": REPHRASED_PROMPT,
            "image_rephrase": second.path,
            "multimodal_locality_image": other.path,
            "multimodal_locality_prompt": CAPTION_PROMPT,
            "multimodal_locality_ground_truth": f"A {other.colour} {other.shape}.",
        })
    return records
