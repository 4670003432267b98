"""The query side of :class:`~reasonedit_plugin.editor.ReasonEditor` (METHOD.md §4): the key of a query, the
codebook's answer to it with the gate's decision, the retrieved facts fused into the prompt, and the edited
model's answer. With ``retrieval.nullset.image_prescreen`` an answer shares its vision pass with the key (§4 (c)).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image

from .codebook import Codebook
from .config import ReasonEditConfig
from .evidence import EvidenceCheck, EvidenceProbe
from .fusion import fuse
from .records import ImageLike, check_question, open_image
from .retriever import Retrieval, Retriever, Screened

logger = logging.getLogger(__name__)


@dataclass
class Answer:
    """The edited model's answer to one query, with what was retrieved and why."""

    text: str
    question: str
    """The user-turn text the model saw (the fused question; the original when nothing was retrieved)."""
    prompt: str
    """The full templated prompt."""
    retrieval: Retrieval
    option_nll: dict[str, float] | None = None


class QueryPath:
    """Retrieval and answering for :class:`~reasonedit_plugin.editor.ReasonEditor`, which provides the state
    below (this class only reads it, except ``_one_pass``)."""

    vlm: Any
    config: ReasonEditConfig
    keys: Any
    """The editor's key encoder (:class:`~reasonedit_plugin.embedding.KeyEncoder`, or projected keys)."""
    evidence: EvidenceCheck | None
    hidden: Any
    codebook: Codebook
    retriever: Retriever
    _codebook: Codebook | None
    _one_pass: bool | None
    """False once an answer's pass proved not to run the key's module."""

    def _empty(self) -> bool:
        return self._codebook is None or len(self._codebook) == 0

    def retrieve(self, image: ImageLike, question: str) -> Retrieval:
        """What the codebook returns for (image, question), with distances and the gate decision."""
        check_question(question)
        if self._empty():
            return Retrieval(False, reason="the codebook is empty")
        img = open_image(image)
        return self._search(self.keys.vision([img]), question, lambda: self.evidence_probe(img))

    def _search(self, vision: torch.Tensor, question: str, evidence: Callable[[], EvidenceProbe | None]
                ) -> Retrieval:
        """The gate's decision for a query's image part [1, Dv] and question (``evidence``: its evidence check)."""
        early = self.retriever.out_of_reach(vision[0])  # nullset.image_prescreen: the question not embedded
        if early is not None:
            return early
        key = self.keys.combine(vision, [question])[0]
        return self._noted(self.retriever.search(key, evidence=evidence(), question=question))

    def evidence_probe(self, image: ImageLike) -> EvidenceProbe | None:
        """The gate's evidence check for one query image (None when ``nullset.evidence_check`` is off)."""
        return None if self.evidence is None else self.evidence.probe(image)

    def retrieve_from_inputs(self, inputs: Mapping[str, Any], question: str,
                             yes: Callable[[str], float] | None = None) -> Retrieval:
        """Like ``retrieve``, from processor outputs (pixel tensors) instead of a PIL image. ``yes``: claim
        question -> P(yes) on these inputs, for the gate's evidence check (None: not checked)."""
        if self._empty():
            return Retrieval(False, reason="the codebook is empty")
        return self._search(self.keys.vision_from_inputs(inputs), question, lambda: (
            None if self.evidence is None or yes is None else self.evidence.probe_inputs(inputs, yes)))

    def _noted(self, retrieval: Retrieval) -> Retrieval:
        if retrieval.accepted:  # usage counts for the optional eviction of never-retrieved edits
            self.codebook.note_retrieved(retrieval.entry_ids)
        return retrieval

    def fused_question(self, question: str, retrieval: Retrieval) -> str:
        """The user-turn text: the question with retrieved facts fused in (unchanged if none, and always
        unchanged for the hidden-state fusions)."""
        facts = retrieval.facts if retrieval.accepted else []
        return fuse(question, facts, self.config.fusion)

    def fusion_context(self, question: str, retrieval: Retrieval | None,
                       question_span: tuple[int, int] | None = None) -> Any:
        """A context manager inside which the model's forwards carry the hidden-state fusion of
        ``retrieval`` (fusion.kind hidden_bias / gated); a no-op for prompt fusion or when nothing was
        retrieved. ``question_span``: the question's token positions when the caller knows them."""
        if self.hidden is None or retrieval is None or not retrieval.accepted or not retrieval.facts:
            return contextlib.nullcontext({"gates": None})
        facts = retrieval.facts[:self.config.fusion.max_facts or None]
        return self.hidden.apply(question, facts, question_span)

    def answer(self, image: ImageLike, question: str, choices: Sequence[str] | None = None) -> Answer:
        """Answer with the edited model. With ``choices``, the option of lowest summed NLL wins."""
        check_question(question, choices)
        img = open_image(image)
        shared, retrieval = self._answer_in_one_pass(img, question, choices)
        if shared is not None:
            return shared
        if retrieval is None:
            retrieval = self.retrieve(img, question)
        fused = self.fused_question(question, retrieval)
        with self.fusion_context(question, retrieval):
            text, option_nll = self._ask(img, fused, choices)
        return Answer(text, fused, self.vlm.prompt_text(fused), retrieval, option_nll)

    def _ask(self, img: Image.Image, text: str, choices: Sequence[str] | None) -> tuple[str, dict[str, float] | None]:
        if not choices:
            return self.vlm.generate(img, text, self.config.max_new_tokens), None
        nll = self.vlm.option_nll(img, text, list(choices))
        return choices[min(range(len(choices)), key=lambda i: (nll[i], i))], dict(zip(choices, nll))

    def _answer_in_one_pass(self, img: Image.Image, question: str, choices: Sequence[str] | None
                            ) -> tuple[Answer | None, Retrieval | None]:
        """With ``nullset.image_prescreen``, a new image is answered unedited straight away and the key's vision
        part read from that answer's own vision pass (METHOD.md §4 (c)). At the key layer the pass asks: is no
        edit within the image's reach, or does the gate reject the query without its evidence check? Then that
        answer stands (what the full path gives: nothing retrieved, the prompt unchanged), without a second
        processor call and vision pass, and in the first case without the question's embedding. Otherwise (an
        accepted query, or one whose decision needs the evidence check's own model pass) the pass stops there
        and the full path follows, its search begun (the candidates and their key tests are not redone).
        Returns (the standing answer, None) or (None, the retrieval from the image's key vision part when the
        pass or the cache gave it, else None: the full path computes it)."""
        if self._one_pass is False or self._empty() or not self.retriever.prescreens():
            return None, None
        evidence = functools.partial(self.evidence_probe, img)
        digest, known = self.keys.cached_vision(img)
        if known is not None:  # a known image: the search costs no vision pass
            return None, self._search(known[None], question, evidence)
        decided: list[Retrieval | Screened] = []

        def check(feature: torch.Tensor) -> bool:  # go on answering only if the unedited answer stands
            decided.append(self._decide_in_pass(self.keys.remember_vision(digest, feature), question))
            return isinstance(decided[0], Retrieval) and not decided[0].accepted

        with self.vlm.vision_tap(self.keys.vision_module, check) as tapped:
            text, option_nll = self._ask(img, question, choices)
        if tapped.fired and not tapped.stopped:
            return Answer(text, question, self.vlm.prompt_text(question), decided[0], option_nll), None
        if not tapped.fired:  # the answer's pass does not run the key's module: never try again
            logger.info("%s does not run in an answer's pass: no shared vision", self.keys.vision_module)
            self._one_pass = False
            return None, None
        if isinstance(decided[0], Retrieval):  # accepted without an evidence check (it is off)
            return None, decided[0]
        return None, self._noted(self.retriever.conclude(decided[0], evidence()))  # resumed at the evidence

    def _decide_in_pass(self, feature: torch.Tensor, question: str) -> Retrieval | Screened:
        """The gate's decision for a query's image part [Dv], taken inside another model pass; when it needs
        the evidence check (whose model pass cannot run inside this one), the search stopped there, for
        :meth:`Retriever.conclude` to finish after the pass."""
        early = self.retriever.out_of_reach(feature)
        if early is not None:
            return early
        screened = self.retriever.screen(self.keys.combine(feature[None], [question])[0], question=question)
        if self.evidence is not None and screened.needs_evidence:
            return screened
        return self._noted(self.retriever.conclude(screened))
