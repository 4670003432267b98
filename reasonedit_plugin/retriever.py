"""Retrieval at inference: hubness-scaled nearest entries, the rejection gate, cap and dedupe (METHOD.md §4).

Two gates: ``retrieval.gate: nullset`` (the default, an extension; ``gate.py``: per-entry image and text
tests, the best-matching edit wins) and ``retrieval.gate: percentile`` (the paper's, below).

Percentile gate: score(q, k) = d(q, k) / (sigma_k + 1e-6); the query side is not scaled. The gate threshold
tau is the p-th percentile (p = max(1, 100 / distinct edits)) of the scaled pairwise distances
d_ij / (sigma_j + 1e-6) (the score's own denominator) over the upper triangle of up to ``gate_sample`` keys
(all of them when there are that few; else a seeded uniform sample the codebook maintains under edits). The
reference recomputes sigma and tau from scratch after every edit (O(N^2)); here sigma is incremental
(``hubness.py``) and tau is cached, with the same answers.

With hubness on, the scaled top-k is exact and sub-linear (the key store's IVF bounds, ``keystore.py``);
with hubness off the codebook's index (exact L2 over the same keys) serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .codebook import Codebook
from .config import RetrievalConfig
from .evidence import EvidenceProbe
from .gate import GateVerdict, KeyScreen, NullSetGate

EPS = 1e-6


@dataclass
class Retrieval:
    """What was retrieved for one query, and why."""

    accepted: bool
    facts: list[str] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    """Hubness-scaled distances (equal to distances when hubness is off)."""
    threshold: float | None = None
    """The gate's tau (None when the gate is off)."""
    reason: str = ""
    verdict: GateVerdict | None = None
    """The null-set gate's per-entry tests (None for the percentile gate or none)."""

    @property
    def best_score(self) -> float | None:
        return self.scores[0] if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        from .gate import as_dict

        out = {k: v for k, v in self.__dict__.items() if k != "verdict"}
        out["verdict"] = None if self.verdict is None else as_dict(self.verdict)
        return out


@dataclass
class Screened:
    """A null-set search stopped before the gate's evidence check (:meth:`Retriever.screen`)."""

    distances: list[float]
    scores: list[float]
    cap: int
    keys: KeyScreen
    """The gate's key tests of the candidates, nearest first (their ids: :attr:`ids`)."""

    @property
    def ids(self) -> list[int]:
        return self.keys.candidates

    @property
    def needs_evidence(self) -> bool:
        """Whether some edit passed both key tests: with the evidence check on, its evidence decides."""
        return bool(self.keys.matched)


def gate_percentile(num_edits: int, config: RetrievalConfig) -> float:
    if config.gate_percentile is not None:
        return float(config.gate_percentile)
    return max(1.0, 100.0 / max(1, num_edits))


def gate_threshold(keys: torch.Tensor, sigma: torch.Tensor, percentile: float) -> float:
    """tau: the ``percentile`` of d_ij / (sigma_j + eps) over i < j. Needs at least two keys."""
    d = torch.cdist(keys.double(), keys.double())
    scaled = d / (sigma.double()[None, :] + EPS)
    iu = torch.triu_indices(len(keys), len(keys), offset=1)
    values = scaled[iu[0], iu[1]].numpy()
    return float(np.percentile(values, percentile))


class Retriever:
    """Searches a codebook with hubness scaling and the rejection gate."""

    def __init__(self, codebook: Codebook, config: RetrievalConfig | None = None, seed: int = 0,
                 vision_dim: int | None = None, encode_text: Any = None, domain_images: Any = None):
        """``vision_dim``: where the image part of a key ends (``KeySetup.vision_dim``); the null-set gate
        tests the two parts separately. None: the whole key is treated as the image part (no text test).
        ``encode_text``: the key's sentence encoder (texts -> embeddings), for the gate's null questions;
        ``domain_images``: () -> the image parts of the gate's null images (the editor encodes them)."""
        self.codebook = codebook
        self.config = config or codebook.retrieval
        self.seed = seed
        self._tau: tuple[tuple[int, float, int], float] | None = None
        self._gate_args = (vision_dim, seed, encode_text, domain_images)
        self._nullset: NullSetGate | None = None

    @property
    def nullset(self) -> NullSetGate | None:
        """The null-set gate when ``config.gate`` is ``"nullset"`` (None otherwise); made on first use and made
        again when the config's gate section is another object (settings changed in place it follows itself)."""
        if self.config.gate != "nullset":
            return None
        if self._nullset is None or self._nullset.config is not self.config.nullset:
            self._nullset = NullSetGate(self.codebook, self.config.nullset, *self._gate_args)
        return self._nullset

    def prescreens(self) -> bool:
        """Whether a query may be rejected by its image alone (the null-set gate's ``image_prescreen``, where
        the codebook's answer rows can tell: :meth:`NullSetGate.can_prescreen`)."""
        return (self.nullset is not None and self.config.nullset.image_prescreen and len(self.codebook) > 0
                and self.nullset.can_prescreen())

    def out_of_reach(self, vision: torch.Tensor) -> Retrieval | None:
        """With ``nullset.image_prescreen``: the rejection of a query whose image part ``vision`` [Dv] is beyond
        every edit's image test, whatever its question (the decision :meth:`search` would take; the question is
        then not embedded, and no candidates are listed). None: search."""
        if not self.prescreens():
            return None
        why = self.nullset.out_of_reach(vision)
        return None if why is None else Retrieval(False, reason=why)

    def threshold(self) -> float | None:
        """The percentile gate's threshold tau (cached per codebook version and the settings it is computed
        with); None for the other gates or fewer than two keys (then each entry's own radius is the gate)."""
        cb = self.codebook
        if self.config.gate != "percentile" or not self.config.hubness or len(cb) < 2:
            return None
        stamp = (cb.version, gate_percentile(cb.num_edits, self.config), self.config.gate_sample)
        if self._tau is not None and self._tau[0] == stamp:
            return self._tau[1]
        tau = cb.gate_threshold(stamp[1], stamp[2], self.seed)
        self._tau = (stamp, tau)
        return tau

    def search(self, query: torch.Tensor, k: int | None = None, evidence: EvidenceProbe | None = None,
               question: str | None = None) -> Retrieval:
        """Retrieve for one query key [D]. ``evidence``: the null-set gate's evidence check for the query's
        image (``evidence.py``; None: not checked); ``question``: the query's question text, for the gate's
        ``names_option`` test (None: not tested)."""
        cb = self.codebook
        cap = k or self.config.cap_keys
        if len(cb) == 0:
            return Retrieval(False, reason="the codebook is empty")
        query = self._checked(query)
        if self.nullset is not None:
            return self.conclude(self._screen(query, cap, question), evidence)
        ids, dists, scores = self._scaled_topk(query, cap)
        tau = self.threshold()
        if self.config.gate == "percentile":
            if tau is None:  # a single key: its radius is the gate
                entry = cb.entries[ids[0]]
                accepted = dists[0] <= entry.radius
                reason = (f"single key: d={dists[0]:.4f} {'<=' if accepted else '>'} radius {entry.radius:.4f}")
            else:
                accepted = scores[0] <= tau
                reason = f"best scaled distance {scores[0]:.4f} {'<=' if accepted else '>'} tau {tau:.4f}"
        else:
            accepted, reason = True, "gate off"
        facts: list[str] = []
        if accepted:
            for eid in ids:
                for value in cb.entries[eid].values:
                    if value not in facts:
                        facts.append(value)
        return Retrieval(accepted, facts, ids, dists, scores, tau, reason)

    def nearest(self, query: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest entries by the retriever's (hubness-scaled) score, no gate: (id, distance)."""
        if len(self.codebook) == 0:
            return []
        ids, dists, _ = self._scaled_topk(self._checked(query), k)
        return list(zip(ids, dists))

    def screen(self, query: torch.Tensor, k: int | None = None, question: str | None = None) -> Screened:
        """The null-set gate's first phase for one query key [D] of a non-empty codebook: the candidates and
        their key tests, no model pass. ``conclude(screen(q), evidence)`` is ``search(q, evidence=evidence)``;
        a decision taken inside another model pass stops between the two when the evidence check is needed
        (``Screened.needs_evidence``)."""
        if self.nullset is None or len(self.codebook) == 0:
            raise ValueError("Retriever.screen needs retrieval.gate: nullset and a non-empty codebook; use search.")
        return self._screen(self._checked(query), k or self.config.cap_keys, question)

    def _checked(self, query: torch.Tensor) -> torch.Tensor:
        query = query.detach().float().reshape(1, -1)
        if query.shape[1] != self.codebook.dim:
            raise ValueError(f"query key has dim {query.shape[1]}, the codebook {self.codebook.dim}.")
        return query

    def _screen(self, query: torch.Tensor, cap: int, question: str | None = None) -> Screened:
        ids, dists, scores = self._scaled_topk(query, max(cap, self.config.nullset.candidates))
        return Screened(dists, scores, cap, self.nullset.screen(query[0], ids, question))

    def conclude(self, screened: Screened, evidence: EvidenceProbe | None = None) -> Retrieval:
        """The null-set gate over the screened candidates (:meth:`screen`); the accepted ones (at most the cap,
        nearest first) give the facts. A merged entry contributes only the values of kept edits."""
        ids, dists, scores, cap = screened.ids, screened.distances, screened.scores, screened.cap
        verdict = self.nullset.conclude(screened.keys, evidence)
        rank = {eid: n for n, eid in enumerate(ids)}
        chosen = verdict.accepted[:cap]
        kept = set(verdict.kept_edits)
        passed = {(t.entry_id, t.edit_id) for t in verdict.tests if t.image_ok and t.edit_id in kept}
        facts: list[str] = []
        for eid in chosen:
            for c in self.nullset.contributions(eid):
                if (eid, c.edit_id) in passed and c.value not in facts:
                    facts.append(c.value)
        if not chosen:
            chosen = ids[:cap]
        pick = [rank[e] for e in chosen]
        return Retrieval(bool(verdict.accepted), facts, list(chosen), [dists[j] for j in pick],
                         [scores[j] for j in pick], None, verdict.reason, verdict)

    def _scaled_topk(self, query: torch.Tensor, cap: int) -> tuple[list[int], list[float], list[float]]:
        cb = self.codebook
        want = min(cap, len(cb))
        if not self.config.hubness:
            res = cb.index.search(query.numpy(), want)
            d = res.distances[0].astype(np.float64).tolist()
            return [int(i) for i in res.ids[0]], d, d
        best = cb.scaled_topk(query[0], want, EPS)
        return [i for _, _, i in best], [d for _, d, _ in best], [s for s, _, _ in best]
