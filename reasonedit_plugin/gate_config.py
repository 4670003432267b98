"""The null-set gate's settings (``retrieval.nullset`` in the YAML): :class:`NullSetGateConfig`, checked on
creation; the gate itself is :mod:`.gate`."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .evidence import CAPTION_EVIDENCE

DEFAULT_NULL_QUESTIONS = (
    "What color is it?", "What shape is this?", "What is in the image?", "How many objects are there?",
    "Is there anything else in the picture?", "What is the background like?", "What size is it?",
    "Is the object on the left or on the right?", "What is this made of?", "What is written here?",
)
"""Generic visual questions (colour, shape, content, count, position, material, text): what an unrelated
question about an edited image usually asks."""


ANSWER_OPTIONS = "answer_options"
"""The codebook meta key holding an edit's answer options (its record's ``choices``), for ``names_option``."""
UNINFORMATIVE_OPTIONS = frozenset({"yes", "no"})
"""Options that name no property: a question containing them is not about the edit's question."""


@dataclass
class NullSetGateConfig:
    """Thresholds of the null-set gate (``retrieval.nullset`` in the YAML). The defaults were chosen on the
    generator's ShapeRules ``calib`` split (72 records, seed 1; 53 sequential edits) only: text_min_cos
    0.6 vs 0.5 gave the same overall HM (90.5 / 90.4) with fewer unrelated probes accepted (3.7 % / 5.6 %);
    match_on 'answer' vs 'any' cut that rate from 15.9 % to 3.7 %; null_percentile 5 vs 10 kept hard
    locality (92.2 / 88.2). Reported on other sets: ``benchmarks/bench_sequential.py``."""

    image_factor: float = 1.0
    """An entry accepts query images within this many of its radii (image part of the key)."""
    null_percentile: float = 5.0
    """... and within this percentile of the image distances between the images of DIFFERENT edits (the
    null set: re-pairing edits gives queries that must not match; accepting only images closer than
    ``null_percentile`` % of those pairs bounds the false-accept rate). Needs two edits."""
    null_sample: int = 2000
    """Edits whose images make the null distribution: all of them up to this many, else this many of lowest
    seeded priority (a hash of the edit id; an edit changes the sample by at most one member)."""
    conflict_share: float = 0.5
    """... and within this share of the distance to the nearest image of an edit that answers the same
    question differently (0.5: the midpoint, a Voronoi boundary between the two edits)."""
    text_min_cos: float = 0.6
    """The query's text must have at least this cosine with the entry's text (question or sentence)."""
    same_question_cos: float = 0.8
    """Answer entries of two edits whose questions have at least this cosine answer 'the same question':
    with different answers they conflict (the Voronoi bound), and only the better match is retrieved."""
    match_on: str = "answer"
    """Which entries can make an edit match a query: ``answer`` (its answer entry's question, compared with
    the query's question; an edit without answer entries matches through its sentences) or ``any`` (any
    entry, the rationale's sentences too: statements like 'The picture shows a red rectangle.' are close to
    many questions about a picture, so this lets more unrelated queries in)."""
    candidates: int = 32
    """How many nearest entries (the retriever's top-k) the gate examines per query."""
    relative_text: bool = True
    """Also pass an answer entry's text test when the query's question is nearer to its question than to
    every rival question by ``text_margin`` (and at least ``text_floor``): see the module doc."""
    text_floor: float = 0.3
    """The lowest cosine the relative text test accepts."""
    text_margin: float = 0.1
    """How much nearer than every rival question the edit's question must be."""
    names_option: bool = False
    """Also pass an answer entry's text test when the query's question names one of the edit's answer
    options as a word (a multiple-choice edit's ``choices``, else its answer; "yes" and "no" name no
    property and are left out; case, punctuation and articles aside, and a number alike in words or
    digits: "Is it worth 9 points?" names "nine") and its cosine with the edit's question is at least
    ``text_floor``: "Is the point value of this triangle nine?" asks about the property "How many points is
    this shape worth?" was edited on, whatever its wording. The image test and the evidence check still
    apply."""
    null_questions: tuple[str, ...] = DEFAULT_NULL_QUESTIONS
    """Generic questions about any image: rivals of every edit's question from the first edit on."""
    null_images: tuple[str, ...] = ()
    """Images of the model's domain (files or folders; ``package://<folder>`` for a packaged one) that join
    the null set as if they were other edits' images, so the ``null_percentile`` bound exists from the
    first edit (with one edit and none of these, only the entry's radius bounds the image test)."""
    image_prescreen: bool = False
    """Before a query's question is embedded, test its image against every edit's answer image bound
    (``image_factor`` x radius and the null percentile, vectorised): with no edit in reach the query is
    rejected then (the same decision as the full gate, as no answer entry can pass its image test), and
    ``ReasonEditor.answer`` takes the key's image part from the unedited answer's own vision pass, so such
    a query costs neither a second vision pass nor a sentence embedding. Its ``Retrieval`` then lists no
    candidates (reports plot fewer scores), hence off by default; for serving. Applies with ``match_on:
    answer``, every edit holding an answer entry, and answer rows x vision dims up to 2**22."""
    evidence_check: bool = False
    """Also ask the VLM whether the query image shows each matched edit's evidence (``evidence.py``): the
    rationale sentences it affirms on the edit's own image (asked on the query image, or on EasyEdit's tensor
    inputs by the adapter)."""
    evidence_own_yes: float = 0.5
    """A rationale sentence is evidence when the model's P(yes) on the edit's own image exceeds this."""
    evidence_min_yes: float = 0.5
    """The query image must get at least this P(yes) for every evidence sentence of the edit (at most
    ``evidence_own_yes``, so that the edit's own image always passes)."""
    evidence_caption: str = "none"
    """The model's own caption of the edited image (``patches.describe_prompt``, "A brown circle.") as evidence:
    ``none``; ``fallback``: for an edit none of whose rationale sentences the model affirms on its image (a rule
    stated alone, "Count nine points for any brown circle.", would otherwise go unchecked); ``always``: beside
    the affirmed sentences. Either narrows the edit's scope to images that look like the edited one."""

    def __post_init__(self) -> None:
        if not self.image_factor > 0:
            raise ConfigError(f"retrieval.nullset.image_factor={self.image_factor} must be > 0 (default 1.0).")
        if not 0 < self.conflict_share <= 1:
            raise ConfigError(f"retrieval.nullset.conflict_share={self.conflict_share} must be in (0, 1] "
                              "(default 0.5).")
        if not -1 <= self.text_min_cos < 1:
            raise ConfigError(f"retrieval.nullset.text_min_cos={self.text_min_cos} must be in [-1, 1) "
                              "(default 0.6).")
        if not -1 <= self.same_question_cos <= 1:
            raise ConfigError(f"retrieval.nullset.same_question_cos={self.same_question_cos} must be in "
                              "[-1, 1] (default 0.8).")
        if not 0 < self.null_percentile <= 100:
            raise ConfigError(f"retrieval.nullset.null_percentile={self.null_percentile} must be in (0, 100] "
                              "(default 5).")
        if self.null_sample < 2:
            raise ConfigError(f"retrieval.nullset.null_sample={self.null_sample} must be >= 2.")
        if self.match_on not in ("answer", "any"):
            raise ConfigError(f"retrieval.nullset.match_on={self.match_on!r} must be 'answer' or 'any'.")
        if self.candidates < 1:
            raise ConfigError(f"retrieval.nullset.candidates={self.candidates} must be >= 1 (default 32).")
        if not -1 <= self.text_floor <= 1 or not 0 <= self.text_margin <= 2:
            raise ConfigError(f"retrieval.nullset.text_floor={self.text_floor} must be in [-1, 1] and text_margin="
                              f"{self.text_margin} in [0, 2] (defaults 0.3, 0.1).")
        if not 0 <= self.evidence_min_yes <= self.evidence_own_yes < 1:
            raise ConfigError(f"retrieval.nullset.evidence_min_yes={self.evidence_min_yes} and evidence_own_yes="
                              f"{self.evidence_own_yes} must satisfy 0 <= evidence_min_yes <= evidence_own_yes < 1 "
                              "(defaults 0.5, 0.5: above evidence_own_yes an edit's own image could fail its evidence).")
        if self.evidence_caption not in CAPTION_EVIDENCE:
            raise ConfigError(f"retrieval.nullset.evidence_caption={self.evidence_caption!r} must be one of "
                              f"{', '.join(CAPTION_EVIDENCE)}.")
        self.null_questions = tuple(self.null_questions)
        self.null_images = tuple(self.null_images)
