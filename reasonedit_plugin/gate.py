"""The null-set gate: which retrieved entries may speak for a query, and which edit wins (extension).

The paper's gate (``retrieval.gate: percentile``, ``retriever.py``) compares the best hubness-scaled
distance with a percentile of the codebook's own pairwise distances. With few edits that percentile is
large (p = 100 / #edits), so unrelated questions get facts fused in; and because one number summarises
the whole key, an answer entry can be retrieved by its question wording alone when the image belongs to
another edit. This gate instead tests the two halves of the key separately, per entry, with thresholds
built from what the method already stores:

* **image test** — the query's image part (``v``) must be within ``image_factor × radius`` of the entry's
  (the radius is the distance to the entry's own augmented copy, METHOD.md §2), and within
  ``conflict_share`` of the way to the nearest image of a *conflicting* edit. The conflicting edits are the
  editor's own null set: re-pairing edit j's image with edit k's question gives a query that must NOT get
  k's answer whenever k and j answer the same question (text cosine >= ``same_question_cos``) differently.
  Those re-paired queries are known in closed form from the stored keys (a key is [v; λ·t]), so the null
  set costs no model call; each new edit updates it in O(#answer entries) (``gate_tables.py``: the tables
  follow the codebook's change journal, so an edit touches only what it changed, never a scan of the
  codebook).
* **text test** — the cosine between the query's text part and the entry's must be >= ``text_min_cos``
  (scale-free: λ cancels), or, for answer entries (``relative_text``), >= ``text_floor`` and at least
  ``text_margin`` above the query's cosine with every *rival question*: the questions of the other
  candidates' answer entries that are not paraphrases of this entry's (cosine with it below
  ``text_min_cos``) and the gate's ``null_questions`` (generic questions about any image, or the model
  domain's question types named in the YAML, so the test has rivals from the first edit; those that are
  paraphrases of the edit's question are not rivals either). A user's rephrase ("Score for this one?") is far from the edit's
  question in absolute terms but still nearer to it than to any other question; a question about another
  property of the same image ("What colour is it?") is nearer to a rival.
  With ``names_option`` an answer entry's text test also passes when the query's question names one of the
  edit's answer options ("Is the point value of this triangle nine?" for "How many points is it worth?",
  choices two / five / seven / nine) and is at least ``text_floor`` from the edit's question: a yes/no
  question about the edited property is far from a wh-question in sentence space, and nearer to generic
  yes/no questions than to it, though the edit's rationale answers it (R-Gen). Words are compared normalised
  (case, punctuation and articles aside) and a number names its option in words or digits ("9" names "nine").

An edit is *matched* when its answer entry passes both tests (``match_on: answer``; an edit stored without
answer entries matches through its sentences); its entries that pass the image test are retrieved. Matched edits whose answer entries answer the same question differently compete, and the one
that matches best wins: the smallest worst-test ratio max(d_v / τ_v, (1 - cos) / (1 - text_min_cos)) — image AND text.
With ``evidence_check`` a matched edit must also pass the **evidence test** (``evidence.py``): the query
image shows what the edit's rationale says its own image shows, asked of the VLM. The caller passes it per
query (``decide(..., evidence=)``), since it needs the query's image.
Everything is deterministic (no sampling) and works from one edit (then only the radius bounds the image
test) to any number (per-entry work; the candidate list comes from the retriever's top-k search).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .codebook import Codebook
from .evidence import EvidenceProbe, EvidenceTest
from .gate_config import ANSWER_OPTIONS, UNINFORMATIVE_OPTIONS
from .gate_config import DEFAULT_NULL_QUESTIONS, NullSetGateConfig  # noqa: F401 - re-exported
from .gate_tables import AnswerTable, NullSample
from .guard_claims import canonical_numbers
from .records import normalize_answer

logger = logging.getLogger(__name__)

DOMAIN_PREFIX = "\x00domain:"
"""Null-sample ids of the configured domain images (no edit id can start with a NUL character)."""

_PRESCREEN_MAX = 1 << 22
"""Answer rows x vision dims up to which ``image_prescreen`` compares a query image with every row."""

_ROWS_CACHED = 4096
"""Entries whose contributions the gate keeps as arrays between queries (then it starts over)."""


@dataclass
class EntryTest:
    """The gate's verdict on one candidate entry, with the numbers behind it."""

    entry_id: int
    edit_id: str
    """One edit's contribution to the entry (tested with its own key and radius)."""
    kind: str
    value: str
    image_distance: float
    image_threshold: float
    image_reason: str
    """How ``image_threshold`` was set: 'radius' or 'conflict with <edit>'."""
    text_cos: float | None
    """None when the keys have no text part (vision_dim unknown)."""
    image_ok: bool
    text_ok: bool
    text_reason: str = ""
    """How the text test was decided when not by ``text_min_cos`` alone (the relative test's numbers)."""

    @property
    def passed(self) -> bool:
        return self.image_ok and self.text_ok

    def ratio(self, text_min_cos: float) -> float:
        """The worst of the two tests, as a fraction of its threshold (< 1 passes both)."""
        img = self.image_distance / max(self.image_threshold, 1e-12)
        if self.text_cos is None:
            return img
        return max(img, (1.0 - self.text_cos) / max(1.0 - text_min_cos, 1e-12))

    def explain(self) -> str:
        img = (f"image d={self.image_distance:.3f} {'<=' if self.image_ok else '>'} "
               f"{self.image_threshold:.3f} ({self.image_reason})")
        txt = "" if self.text_cos is None else \
            f", text cos={self.text_cos:.3f} {'passes' if self.text_ok else 'fails'}" + \
            (f" ({self.text_reason})" if self.text_reason else "")
        return f"#{self.entry_id} {self.kind} of {self.edit_id}: {img}{txt}  {self.value[:60]!r}"


@dataclass
class GateVerdict:
    """What the gate accepted (entry ids in the candidates' order), and why."""

    accepted: list[int]
    tests: list[EntryTest] = field(default_factory=list)
    winner: str | None = None
    dropped_edits: dict[str, str] = field(default_factory=dict)
    """Matched edits that lost to a better-matching edit answering the same question differently:
    edit -> winner."""
    reason: str = ""
    kept_edits: list[str] = field(default_factory=list)
    """The matched edits whose entries are retrieved (a merged entry contributes only their values)."""
    evidence: list[EvidenceTest] = field(default_factory=list)
    """The evidence check's tests of the edits that passed both key tests (``nullset.evidence_check``)."""


@dataclass
class KeyScreen:
    """The key tests of one query over its candidates (:meth:`NullSetGate.screen`), before the evidence check:
    a decision taken inside another model pass stops here when ``matched`` is not empty and resumes later."""

    candidates: list[int]
    tests: list[EntryTest]
    matched: dict[str, float]
    """Edit id -> its best worst-test ratio, for the edits that passed both key tests."""


@dataclass
class _EntryRows:
    """An entry's contributions with their key halves as the tests use them (cached until a change touches
    the entry)."""

    contributions: list[Any]
    vision: np.ndarray
    """float64 [m, vision_dim]"""
    text_unit: np.ndarray | None
    """float64 [m, text dim], unit rows (None without a text part)."""
    radius_reasons: list[str]
    """Per contribution, how its radius bounds the image test (formatted once, not per query)."""


def _answer_of(value: str, pattern: re.Pattern[str]) -> str:
    """The answer inside an answer entry's value, read with the codebook's answer template's pattern."""
    m = pattern.fullmatch(value)
    return (m.group("answer") if m else value).strip().lower()


def _words(text: str) -> list[str]:
    """``text``'s words as :func:`_names` compares them: normalised (lower case, no punctuation or articles),
    numbers as digits ("twenty-five" -> "25")."""
    return canonical_numbers(normalize_answer(text).split())


def _names(asked: list[str], option: str) -> bool:
    """Whether a question, as its :func:`_words` ``asked``, contains ``option`` as a whole word or phrase: case,
    punctuation and articles aside, and a number alike in words or digits ("Are there 9?" names "nine",
    "twenty-five points" names "25")."""
    want = _words(option)
    return bool(want) and any(asked[i:i + len(want)] == want for i in range(len(asked) - len(want) + 1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _as_float64(x: torch.Tensor) -> np.ndarray:
    """A tensor (any float dtype, any device) as a float64 numpy array of the same shape."""
    return x.detach().to("cpu", torch.float64).numpy()


class NullSetGate:
    """Per-entry image and text tests with a conflict-aware image threshold (see the module doc)."""

    def __init__(self, codebook: Codebook, config: NullSetGateConfig, vision_dim: int | None = None,
                 seed: int = 0, encode_text: Any = None, domain_images: Any = None):
        """``encode_text``: texts -> their sentence embeddings (the key's text encoder), for the relative
        text test's ``null_questions`` (None: no null questions; rivals come from the codebook only).
        ``domain_images``: () -> the image parts of ``null_images`` [n, vision_dim] (None: none)."""
        self.codebook = codebook
        self._domain_images = domain_images
        self._domain: dict[str, np.ndarray] = {}
        self._encode_text = encode_text
        self._null_text: np.ndarray | None = None
        self.seed = seed
        self.null_threshold: float | None = None
        """The null-percentile image bound (None with fewer than two edits)."""
        self.null_pairs = 0
        self._null_reason = ""
        self.config = config
        self._config_seen = copy.deepcopy(config)
        """The config the tables below were derived from (a config changed in place rebuilds them)."""
        self.vision_dim = vision_dim if vision_dim is not None else codebook.dim
        self.has_text = self.vision_dim < codebook.dim
        self._version: int | None = None
        self._table: AnswerTable | None = None
        self._sample: NullSample | None = None
        self._rows: dict[int, _EntryRows] = {}
        """Per candidate entry, its contributions as arrays (dropped when a change touches the entry)."""
        self._reach: tuple[int, np.ndarray, np.ndarray] | None = None
        """(codebook version, image parts of the live answer rows float64, their image-test bounds); no rows
        past ``_PRESCREEN_MAX``."""

    # ------------------------------------------------------------------ the null set
    def refresh(self) -> None:
        """Bring the tables up to date with the codebook. From the codebook's change journal only the edits
        a change named are updated (their answer rows, conflicts and null-sample membership) and only the
        entries it touched leave the per-entry cache; a codebook without a journal that reaches back
        (first use, a reload, a rebuild) builds the tables from scratch."""
        cb = self.codebook
        if self.config != self._config_seen:  # changed in place: nothing derived from the old one is kept
            if self.config.null_images != self._config_seen.null_images:
                self._domain = {}  # read again through ``domain_images`` (which reads the live config)
            self._config_seen = copy.deepcopy(self.config)
            self._version = self._table = self._reach = self._null_text = None
        if self._version == cb.version:
            return
        changes = None if self._table is None or self._version is None else cb.changes_since(self._version)
        if changes is None:
            self._build()
        else:
            for entry_id in {e for c in changes for e in c.entry_ids}:
                self._rows.pop(entry_id, None)
            edits = list(dict.fromkeys(c.edit_id for c in changes))
            for edit_id in edits:
                self._table.remove(edit_id)
                self._sample.discard(edit_id, sync=False)
            for edit_id in edits:
                if cb.has_edit(edit_id):
                    self._table.add(edit_id, self._answer_rows(edit_id))
                    self._sample.offer(edit_id, sync=False)
            self._sample.sync()
        self.null_threshold = self._sample.threshold(self.config.null_percentile)
        self.null_pairs = self._sample.pairs
        self._null_reason = (f"{self.config.null_percentile:g}th percentile of {self.null_pairs} image distances "
                             "between different edits" + (f" and {len(self._domain)} domain images" if self._domain else ""))
        self._version = cb.version

    def _build(self) -> None:
        cb = self.codebook
        self._rows.clear()
        self._table = AnswerTable(self.vision_dim, cb.dim, cb.store.dtype, self.config.same_question_cos)
        for edit_id in cb.edit_ids():
            self._table.add(edit_id, self._answer_rows(edit_id))
        if self._domain_images is not None and not self._domain:
            images = self._domain_images()
            self._domain = {f"{DOMAIN_PREFIX}{n}": np.asarray(v, np.float64) for n, v in
                            enumerate([] if images is None else images)}
        domain = list(self._domain)
        self._sample = NullSample(self.config.null_sample, self.seed, self._image_of,
                                  (lambda: cb.edit_ids() + domain) if domain else cb.edit_ids)

    def _answer_rows(self, edit_id: str) -> list[tuple[int, np.ndarray, str, float]]:
        """An edit's answer contributions, each with its OWN key (a merged entry keeps each edit's key; the
        gate tests those, not the merged centre)."""
        cb, pattern = self.codebook, self.codebook.config.answer_pattern()
        return [(eid, cb.stored_key(eid, p), _answer_of(p.value, pattern), float(p.radius))
                for eid, p in cb.edit_parts(edit_id) if p.kind == "answer"]

    def _image_of(self, edit_id: str) -> np.ndarray | None:
        """One image per edit for the null set: its first non-patch contribution's (by entry id); a domain
        image (``null_images``) is its own."""
        if edit_id.startswith(DOMAIN_PREFIX):
            return self._domain.get(edit_id)
        cb = self.codebook
        for eid, p in cb.edit_parts(edit_id):
            if p.kind != "patch":
                return cb.stored_key(eid, p)[: self.vision_dim].astype(np.float64)
        return None

    def conflicts(self) -> dict[str, tuple[float, str]]:
        """edit id -> (image distance to the nearest edit answering the same question differently, it);
        ties go to the other edit of smallest id."""
        self.refresh()
        return dict(self._table.conflict)

    # ------------------------------------------------------------------ one query
    def can_prescreen(self) -> bool:
        """Whether :meth:`out_of_reach` can reject anything now: not with ``match_on: any``, an edit without
        answer entries or more than ``_PRESCREEN_MAX`` values (then every query goes the full way)."""
        return len(self._reach_rows()[1]) > 0

    def _reach_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Image parts of the live answer rows (float64) and their image bounds, remembered per codebook
        version; none when the answer rows cannot tell (see :meth:`can_prescreen`)."""
        self.refresh()
        table = self._table
        if self._reach is None or self._reach[0] != self._version:
            rows = np.flatnonzero(table.live)
            if (self.config.match_on != "answer" or len(table.rows_of) != self.codebook.num_edits
                    or len(rows) * self.vision_dim > _PRESCREEN_MAX):
                rows = rows[:0]
            bound = self.config.image_factor * table.radius[rows]
            if self.null_threshold is not None:
                bound = np.minimum(bound, self.null_threshold)
            self._reach = (self._version, table.keys[rows, : self.vision_dim].astype(np.float64), bound)
        return self._reach[1], self._reach[2]

    def out_of_reach(self, q_vision: torch.Tensor) -> str | None:
        """Why no edit can match a query whose image part is ``q_vision`` [Dv], whatever its question: no
        answer row is within its image bound min(``image_factor`` x radius, the null percentile), which is at
        least its image test's threshold. None when some row is within reach, or when the answer rows cannot
        tell (:meth:`can_prescreen`)."""
        vision, bound = self._reach_rows()
        if not len(bound):
            return None
        ratio = np.linalg.norm(vision - _as_float64(q_vision), axis=1) / np.maximum(bound, 1e-300)
        nearest = float(ratio.min())
        if nearest <= 1 + 1e-9:  # (a margin for the rounding of another summation order)
            return None
        return (f"no edit's image is within reach of the query image (nearest at {nearest:.3f} of its bound); "
                "the question was not embedded")

    def test(self, query: torch.Tensor, entry_id: int) -> list[EntryTest]:
        """The image and text tests of every contribution of entry ``entry_id``."""
        self.refresh()
        return self._tests(*self._halves(query), [entry_id])

    def _halves(self, query: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """A query key's image part and unit text part (None without one), float64."""
        q = _as_float64(query).reshape(-1)
        return q[: self.vision_dim], _unit(q[self.vision_dim:]) if self.has_text else None

    def contributions(self, entry_id: int) -> list[Any]:
        """The contribution records of entry ``entry_id`` (:meth:`Codebook.entry_parts`; cached until a change
        touches the entry)."""
        self.refresh()
        return self._entry_rows(entry_id).contributions

    def _entry_rows(self, entry_id: int) -> _EntryRows:
        rows = self._rows.get(entry_id)
        return rows if rows is not None else self._entries([entry_id])[0]

    def _entries(self, entry_ids: list[int]) -> list[_EntryRows]:
        """The cached rows of ``entry_ids``; those not cached are read together (one gather of their entry
        keys, one split and normalisation: a query's first look at 16 new candidates paid ~30 small
        operations a candidate one by one)."""
        missing = [i for i in dict.fromkeys(entry_ids) if i not in self._rows]
        if missing:
            if len(self._rows) + len(missing) > _ROWS_CACHED:
                self._rows.clear()
                missing = list(dict.fromkeys(entry_ids))
            cb = self.codebook
            parts = [cb.entry_parts(i) for i in missing]
            own = [i for i, ps in zip(missing, parts) for p in ps if p.key is None]  # the entry's own key
            own_keys = iter(cb.keys(own).numpy())
            keys = np.stack([next(own_keys) if p.key is None else p.key for ps in parts for p in ps]).astype(np.float64)
            dv, factor = self.vision_dim, self.config.image_factor
            vision, text = keys[:, :dv], _unit(keys[:, dv:]) if self.has_text else None
            start = 0
            for i, ps in zip(missing, parts):
                end = start + len(ps)
                self._rows[i] = _EntryRows(ps, vision[start:end], None if text is None else text[start:end],
                                           [f"{factor:g} x radius {c.radius:.3f}" for c in ps])
                start = end
        return [self._rows[i] for i in entry_ids]

    def _tests(self, q_vision: np.ndarray, q_text: np.ndarray | None, entry_ids: list[int]) -> list[EntryTest]:
        """The tests of every contribution of ``entry_ids``, in order (one batched distance and cosine)."""
        cfg = self.config
        entries = self._entries(entry_ids)
        if not entries:
            return []
        conflict = self._table.conflict
        vision = entries[0].vision if len(entries) == 1 else np.concatenate([r.vision for r in entries])
        d_img = np.linalg.norm(vision - q_vision, axis=1).tolist()
        if q_text is None:
            cos: list[Any] = [None] * len(d_img)
        else:
            text = entries[0].text_unit if len(entries) == 1 else np.concatenate([r.text_unit for r in entries])
            cos = (text @ q_text).tolist()
        owners = [(entry_id, c, why) for entry_id, rows in zip(entry_ids, entries)
                  for c, why in zip(rows.contributions, rows.radius_reasons)]
        null_thr = self.null_threshold
        out = []
        for (entry_id, c, why), d, cs in zip(owners, d_img, cos):
            thr = cfg.image_factor * c.radius
            if null_thr is not None and null_thr < thr:
                thr, why = null_thr, self._null_reason
            if c.edit_id in conflict:
                dc, other = conflict[c.edit_id]
                if cfg.conflict_share * dc < thr:
                    thr, why = cfg.conflict_share * dc, f"{cfg.conflict_share:g} x d to conflicting edit {other}"
            out.append(EntryTest(entry_id, c.edit_id, c.kind, c.value, d, thr, why, cs, d <= thr,
                                 cs is None or cs >= cfg.text_min_cos))
        return out

    def decide(self, query: torch.Tensor, candidates: list[int], evidence: EvidenceProbe | None = None,
               question: str | None = None) -> GateVerdict:
        """Test ``candidates`` (nearest first) and pick what is retrieved. ``evidence``: the evidence check
        for the query's image (edit id -> tests); an edit that passed both key tests but fails one of its
        evidence tests is not matched. ``question``: the query's question text, for ``names_option`` (None:
        that test is skipped). The same as :meth:`conclude` of :meth:`screen`."""
        return self.conclude(self.screen(query, candidates, question), evidence)

    def screen(self, query: torch.Tensor, candidates: list[int], question: str | None = None) -> KeyScreen:
        """The key tests of ``candidates`` (nearest first) for a query key [D] (and its question's text, for
        ``names_option``): the gate's first phase, which needs no model pass (:meth:`conclude` finishes it)."""
        self.refresh()
        q_vision, q_text = self._halves(query)
        tests = self._tests(q_vision, q_text, candidates)
        if self.config.relative_text and q_text is not None:
            self._relative_text(q_text, candidates, tests)
        if self.config.names_option and question and q_text is not None:
            self._option_text(question, tests)
        return KeyScreen(list(candidates), tests, self._matched(tests))

    def conclude(self, screened: KeyScreen, evidence: EvidenceProbe | None = None) -> GateVerdict:
        """The gate's second phase: the evidence check of the edits that passed both key tests (``evidence``;
        None: not checked), then the winners."""
        cfg = self.config
        tests, candidates = screened.tests, screened.candidates
        matched = dict(screened.matched)
        checked: list[EvidenceTest] = []
        if evidence is not None and matched:
            for edit, found in evidence(list(matched)).items():
                checked += found
                if not all(e.passed for e in found):
                    del matched[edit]
        if not matched:
            best = min(tests, key=lambda t: t.ratio(cfg.text_min_cos)) if tests else None
            failed = next((e for e in checked if not e.passed), None)
            reason = ("no edit's evidence is shown by the query image; " + failed.explain() if failed else
                      "no entry passed both tests" + (f"; nearest: {best.explain()}" if best else ""))
            return GateVerdict([], tests, reason=reason, evidence=checked)
        order, kept, dropped = self._winners(matched, candidates)
        keep = set(kept)
        accepted = list(dict.fromkeys(t.entry_id for t in tests if t.image_ok and t.edit_id in keep))
        reason = (f"edit {order[0]} matched best (worst-test ratio {matched[order[0]]:.3f} < 1)"
                  + (f"; {len(kept) - 1} other matched edit(s) kept" if len(kept) > 1 else "")
                  + (f"; dropped {', '.join(f'{e} (answers the same question as {w}, differently)' for e, w in dropped.items())}"
                     if dropped else ""))
        return GateVerdict(accepted, tests, order[0], dropped, reason, kept, checked)

    def _matched(self, tests: list[EntryTest]) -> dict[str, float]:
        """Edit id -> its best worst-test ratio, for the edits whose answer entry passed both key tests (an
        edit without answer entries, or with ``match_on: any``, through any of its entries)."""
        cfg = self.config
        matched: dict[str, float] = {}
        with_answer = self._table.rows_of if cfg.match_on == "answer" else {}
        for t in tests:
            if t.passed and (t.kind == "answer" or t.edit_id not in with_answer):
                r = t.ratio(cfg.text_min_cos)
                matched[t.edit_id] = min(matched.get(t.edit_id, r), r)
        return matched

    def _winners(self, matched: dict[str, float], candidates: list[int]
                 ) -> tuple[list[str], list[str], dict[str, str]]:
        """Matched edits best first, those kept, and those dropped (edit -> the kept edit answering the same
        question differently). Ties (e.g. the same image and question edited twice) go to the later edit:
        a re-edit overrides."""
        created: dict[str, float] = {}
        for i in candidates:
            for c in self._entry_rows(i).contributions:
                created[c.edit_id] = max(created.get(c.edit_id, c.created), c.created)
        order = sorted(matched, key=lambda e: (round(matched[e], 9), -created.get(e, 0.0), e))
        kept: list[str] = []
        dropped: dict[str, str] = {}
        for edit in order:
            rival = next((k for k in kept if self._conflicting(edit, k)), None)
            if rival is None:
                kept.append(edit)
            else:
                dropped[edit] = rival
        return order, kept, dropped

    def null_text(self) -> np.ndarray | None:
        """Unit sentence embeddings of ``null_questions`` [n, text dim], float64 (None without an encoder)."""
        if self._null_text is None and self._encode_text is not None and self.config.null_questions:
            self._null_text = _unit(_as_float64(self._encode_text(list(self.config.null_questions))))
        return self._null_text

    def _relative_text(self, q_text: np.ndarray, candidates: list[int], tests: list[EntryTest]) -> None:
        """Answer entries that failed ``text_min_cos``: pass if the query is nearer to their question than
        to every rival question by ``text_margin`` (module doc). Updates ``tests`` in place; called only
        when keys have a text part."""
        cfg = self.config
        # tests follow candidates and their contributions, as do the rows of the candidates' text parts
        at = [n for n, t in enumerate(tests) if t.kind == "answer"]
        if not any(not tests[n].text_ok and tests[n].text_cos >= cfg.text_floor for n in at):
            return
        answers = [tests[n] for n in at]
        text = np.concatenate([self._entry_rows(i).text_unit for i in candidates])
        rows = rows_all = text[at]
        q_cos = np.array([t.text_cos for t in answers], dtype=np.float64)
        null = self.null_text()
        if null is not None and len(null):  # null questions are rivals too, unless paraphrases of the edit's
            rows_all = np.concatenate([rows, null])
            q_cos = np.concatenate([q_cos, null @ q_text])
        same = (rows @ rows_all.T) >= cfg.text_min_cos  # paraphrases of each other's question: not rivals
        for n, t in enumerate(answers):
            if t.text_ok or t.text_cos < cfg.text_floor:
                continue
            others = q_cos[~same[n]]
            rival = float(others.max()) if len(others) else -1.0
            t.text_ok = t.text_cos >= rival + cfg.text_margin
            t.text_reason = (f"relative: nearest rival question cos {rival:.3f}, needs "
                             f"{rival + cfg.text_margin:.3f}; absolute threshold {cfg.text_min_cos:g}")

    def _option_text(self, question: str, tests: list[EntryTest]) -> None:
        """Answer entries that failed both text tests: pass if ``question`` names one of the edit's answer
        options and their cosine is at least ``text_floor`` (``names_option``). Updates ``tests`` in place."""
        floor = self.config.text_floor
        asked = _words(question)  # once per query, not per entry and option
        for t in tests:
            if t.kind != "answer" or t.text_ok or t.text_cos is None or t.text_cos < floor:
                continue
            named = next((o for o in self._options(t) if _names(asked, o)), None)
            if named is not None:
                t.text_ok = True
                t.text_reason = f"names the answer option {named!r} (cos {t.text_cos:.3f} >= text_floor {floor:g})"

    def _options(self, test: EntryTest) -> list[str]:
        """The answer options of the edit behind an answer test: its record's choices as stored in the
        codebook meta, else the answer its entry states; uninformative options left out."""
        part = next(c for c in self._entry_rows(test.entry_id).contributions
                    if c.edit_id == test.edit_id and c.kind == "answer" and c.value == test.value)
        options = part.meta.get(ANSWER_OPTIONS) or [_answer_of(part.value, self.codebook.config.answer_pattern())]
        return [o for o in options if o.strip().lower() not in UNINFORMATIVE_OPTIONS]

    def _conflicting(self, a: str, b: str) -> bool:
        """Two edits answer the same question differently (judged by each one's first answer row)."""
        table = self._table
        ra, rb = table.first_row(a), table.first_row(b)
        if ra is None or rb is None or not self.has_text or table.answer[ra] == table.answer[rb]:
            return False
        return table.cos(ra, rb) >= self.config.same_question_cos


def describe(verdict: GateVerdict, text_min_cos: float, limit: int = 10) -> list[str]:
    """Lines for ``reasonedit inspect``: every tested entry (pass/fail per test, with numbers)."""
    lines = [f"null-set gate (text cos threshold {text_min_cos:g}): {verdict.reason}"]
    for t in verdict.tests[:limit]:
        mark = "PASS" if t.passed else ("image only" if t.image_ok else "text only" if t.text_ok else "FAIL")
        used = "retrieved" if t.image_ok and t.edit_id in verdict.kept_edits else "not retrieved"
        lines.append(f"  {mark:<10} {used:<13} {t.explain()}")
    if len(verdict.tests) > limit:
        lines.append(f"  ... {len(verdict.tests) - limit} more candidates")
    lines += [f"  {'PASS' if e.passed else 'FAIL':<10} {'':<13} {e.explain()}" for e in verdict.evidence]
    return lines


def as_dict(verdict: GateVerdict) -> dict[str, Any]:
    return {"accepted": verdict.accepted, "winner": verdict.winner, "dropped_edits": verdict.dropped_edits,
            "reason": verdict.reason,
            "tests": [{**t.__dict__, "passed": t.passed} for t in verdict.tests],
            "evidence": [{**e.__dict__, "passed": e.passed} for e in verdict.evidence]}
