"""Typed configuration of every ReasonEdit component.

One dataclass per component; :class:`ReasonEditConfig` composes them. The EasyEdit-facing
``ReasonEditHyperParams`` (``hparams.py``) is this config plus EasyEdit's bookkeeping fields.
Paper values cite METHOD.md sections (the reference behaviour of arXiv 2602.02408).

YAML sections map one to one onto the dataclasses below; unknown keys are an error with a
did-you-mean, values are type-checked (``config_types.py``), and every ``__post_init__`` checks its fields
against each other.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Union

from .config_types import build_section, check_choice, check_types, require
from .errors import ConfigError, did_you_mean

LayerSpec = Union[str, int, None]
"""A vision layer: ``None`` (the model-spec default), an int block index, a module path, or ``"auto"``."""


TEXT_DTYPES = ("float32", "bfloat16")
"""The dtypes the sentence encoder's weights may run in (``embedding.text_dtype``; torch dtype names)."""


@dataclass
class EmbeddingConfig:
    """The key embedding E(image, text) = [v(image); scale * t(text)] (METHOD.md §3)."""

    layer: LayerSpec = None
    """Vision MLP whose INPUT is captured: block index, module path, ``"auto"`` (AutoLayer), or None
    for the model-spec default."""
    scale: Union[float, str] = 30.0
    """lambda, the weight of the sentence embedding; ``"auto"`` runs AutoScaler. Paper default 30."""
    text_encoder: str = "all-MiniLM-L6-v2"
    """A local sentence-transformers folder, or the name of the packaged MiniLM-L6 (offline)."""
    text_dtype: str = "float32"
    """The text encoder's weights: ``float32``, or ``bfloat16`` (a serving setting for CPUs with native
    bfloat16: a question embedded in ~60 % of the time; cosine to float32's >= 0.9995)."""
    batch_size: int = 16
    max_image_side: int = 512
    """Images are thumbnailed to this long side before the vision tower (reference: 512)."""

    def __post_init__(self) -> None:
        require(self.text_dtype in TEXT_DTYPES,
                f"embedding.text_dtype={self.text_dtype!r} must be one of {', '.join(TEXT_DTYPES)}.")
        if isinstance(self.scale, str):
            require(self.scale == "auto", f"embedding.scale={self.scale!r}: give a positive number or 'auto'.")
        else:
            require(float(self.scale) > 0, f"embedding.scale={self.scale!r} must be > 0 (paper default: 30).")
            self.scale = float(self.scale)
        if isinstance(self.layer, str) and self.layer.lstrip("-").isdigit():
            self.layer = int(self.layer)
        if isinstance(self.layer, bool):
            raise ConfigError("embedding.layer must be a block index, a module path, 'auto' or null.")
        require(self.batch_size >= 1, f"embedding.batch_size={self.batch_size} must be >= 1.")
        require(self.max_image_side >= 16, f"embedding.max_image_side={self.max_image_side} must be >= 16.")


@dataclass
class AugmentConfig:
    """The seeded augmentation whose key distance sets an entry's radius (METHOD.md §2)."""

    enabled: bool = True
    """Off: every entry gets ``default_radius``."""
    max_side: int = 512
    mosaic_ratio: float = 0.9
    """The image covers this fraction of the mosaic canvas's area (canvas side = side / sqrt(ratio))."""
    rotation_degrees: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.05
    paraphrase: str = "template"
    """Text side of the augmented copy: ``"none"`` (same text) or ``"template"`` (a cheap seeded
    rule-based rephrasing; the reference used a 1.5B instruction LLM, which this project cannot ship)."""
    default_radius: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.mosaic_ratio <= 1, f"augment.mosaic_ratio={self.mosaic_ratio} must be in (0, 1].")
        require(self.rotation_degrees >= 0, "augment.rotation_degrees must be >= 0.")
        for name in ("brightness", "contrast", "saturation"):
            require(0 <= getattr(self, name) < 1, f"augment.{name} must be in [0, 1).")
        require(0 <= self.hue <= 0.5, "augment.hue must be in [0, 0.5].")
        check_choice("augment.paraphrase", self.paraphrase, ("none", "template"))
        require(self.default_radius > 0, "augment.default_radius must be > 0.")


@dataclass
class CodebookConfig:
    """What an edit stores and how keys merge (METHOD.md §2)."""

    answer_entries: bool = True
    rationale_entries: bool = True
    """False gives the 'no rationale' (answer-only) ablation."""
    merge: bool = True
    merge_center_ratio: float = 0.1
    """Merge when d < ratio * r for both radii (reference: 0.1) ..."""
    merge_overlap: float = 0.9
    """... or when the balls' overlap covers more than this of both (reference: 0.9)."""
    answer_template: str = "The answer to '{question}' is {answer}."
    """The answer entry's text (:meth:`answer_entry`). It may also name the edited image with ``{image}``
    (the model's own caption of it, "a red circle"), so that a model reading the entry can tell whether it
    is about the image asked about (``"For {image}, the answer to '{question}' is {answer}."``)."""
    key_dtype: str = "float16"
    """Precision keys are stored in, in memory and on disk: ``float16`` (half the memory; queries are
    rounded to it, scores computed in float32) or ``float32`` (the reference's precision)."""
    exact_search_below: int = 4096
    """Below this many entries every query scores every key; from it on the keys are partitioned into
    IVF lists and searched with exact triangle-inequality bounds (same answers, less work)."""
    ivf_lists: Union[int, None] = None
    """Number of IVF lists; None: 2 * sqrt(N), retrained when the codebook has grown fourfold."""
    seed: int = 0
    """Seeds the IVF k-means sample."""
    graph_probe: Union[int, None] = None
    """None: the hubness K-NN graph is kept exact under edits (an edit's work grows with N where the
    IVF bounds prune little). An int: an edit's neighbour searches visit only that many IVF lists, nearest
    first (approximate sigma, bounded work per edit). Searches stay exact for the sigma stored."""
    evict_unretrieved_after: Union[float, None] = None
    """Pruning (off by default): ``editor.save()`` first removes edits none of whose entries was ever
    retrieved and that are older than this many seconds; each is logged as ``evicted`` in the audit log."""

    def __post_init__(self) -> None:
        check_choice("codebook.key_dtype", self.key_dtype, ("float16", "float32"))
        require(self.exact_search_below >= 1, "codebook.exact_search_below must be >= 1.")
        require(self.ivf_lists is None or self.ivf_lists >= 1, "codebook.ivf_lists must be >= 1 or null.")
        require(self.graph_probe is None or self.graph_probe >= 1, "codebook.graph_probe must be >= 1 or null.")
        require(self.evict_unretrieved_after is None or self.evict_unretrieved_after >= 0,
                "codebook.evict_unretrieved_after must be >= 0 seconds or null (off).")
        require(self.answer_entries or self.rationale_entries,
                "codebook: answer_entries and rationale_entries are both false; nothing would be stored.")
        require(0 <= self.merge_center_ratio < 1, "codebook.merge_center_ratio must be in [0, 1).")
        require(0 < self.merge_overlap <= 1, "codebook.merge_overlap must be in (0, 1].")
        for key in ("{question}", "{answer}"):
            require(key in self.answer_template, f"codebook.answer_template must contain {key}.")

    @property
    def names_image(self) -> bool:
        """Whether :attr:`answer_template` names the edited image (``{image}``)."""
        return "{image}" in self.answer_template

    def answer_pattern(self) -> "re.Pattern[str]":
        """Reads an answer entry back (``fullmatch``): groups ``question``, ``answer`` and, when the
        template names it, ``image``."""
        return _template_pattern(self.answer_template)

    def answer_entry(self, question: str, answer: str, image: str | None = None) -> str:
        """The answer entry of an edit: :attr:`answer_template` filled in. A target that ends a sentence
        ("A red circle.") does not get a second period from a template that puts one after it. ``image``:
        the edited image's description (a caption; its final period and a leading article's capital are
        dropped: "a red circle"), needed when the template names it."""
        if answer.endswith(".") and "{answer}." in self.answer_template:
            answer = answer[:-1]
        if self.names_image:
            if not image or not image.strip(" ."):
                raise ConfigError("codebook.answer_template names {image}: the edit needs a description of "
                                  "its image (the model's caption of it).")
            first, space, rest = image.strip().rstrip(".").partition(" ")
            image = (first.lower() if first in ("A", "An", "The") else first) + space + rest
        return self.answer_template.format(question=question, answer=answer, image=image or "")


@functools.lru_cache(maxsize=32)
def _template_pattern(template: str) -> "re.Pattern[str]":
    """The regex reading back entries made from ``template`` (one per template string: the config is
    mutable, so the cache is keyed by the text, not the config)."""
    pattern = re.escape(template)
    for name, group in (("question", ".*"), ("answer", ".*?"), ("image", ".*?")):
        pattern = pattern.replace(re.escape("{%s}" % name), f"(?P<{name}>{group})", 1)
    return re.compile(pattern, re.S)


GATES = ("nullset", "percentile", "off")
"""``nullset``: per-entry image and text tests with an editor-built null set (default, ``gate.py``);
``percentile``: the paper's percentile threshold (reference behaviour, METHOD.md §4.3); ``off``: none."""


KEY_SEARCHES = ("faiss", "torch", "milvus")
"""``retrieval.backend``: where the codebook's queries run (``key_search.py``). ``faiss`` (default): in-process
key store, IVF lists trained with faiss k-means, exact bounds; ``torch``: in-process, every key scored (the
reference); ``milvus``: a Milvus collection shared by replicas (extra ``milvus``; ``retrieval.milvus``)."""


@dataclass
class RetrievalConfig:
    """Nearest-entry search with hubness correction and the rejection gate (METHOD.md §4)."""

    backend: str = "faiss"
    """Where the codebook's queries run: ``faiss`` (default, in-process key store with exact IVF bounds),
    ``torch`` (in-process, every key scored) or ``milvus`` (a shared Milvus collection; see ``milvus``).
    All three return the same entries in the same order."""
    milvus: Any = None
    """``backend: milvus``: where the collection is (a mapping of ``milvus_backend.MilvusConfig`` fields:
    ``uri``, ``token`` / ``token_env``, ``collection``, ...)."""
    hubness: bool = True
    hubness_k: int = 30
    gate: Union[str, bool] = "nullset"
    """Which rejection gate: ``nullset`` (default, an extension: ``gate.py``), ``percentile`` (the paper's;
    needs hubness) or ``off``. ``true`` means ``nullset``, ``false`` means ``off``."""
    gate_sample: int = 2000
    """percentile gate: keys sampled for the pairwise-distance percentile."""
    gate_percentile: Union[float, None] = None
    """percentile gate: None is the paper's p = max(1, 100 / number of distinct edits)."""
    nullset: Any = None
    """null-set gate thresholds (a mapping of ``gate.NullSetGateConfig`` fields; None: its defaults)."""
    cap_keys: int = 5
    """Paper: 5 (7 for Qwen models)."""
    tuning: str = "off"
    """``off`` (paper: a fixed key encoder) or ``contrastive`` (extension: a projection over keys trained
    with InfoNCE as edits accumulate; settings in the ``key_tuning`` section)."""

    def __post_init__(self) -> None:
        from .gate_config import NullSetGateConfig  # the gate owns its config; imported here, no circle

        check_choice("retrieval.backend", self.backend, KEY_SEARCHES)
        require(self.hubness_k >= 1, "retrieval.hubness_k must be >= 1.")
        if isinstance(self.gate, bool):
            self.gate = "nullset" if self.gate else "off"
        check_choice("retrieval.gate", str(self.gate), GATES)
        require(not (self.gate == "percentile" and not self.hubness),
                "retrieval.gate: percentile needs retrieval.hubness (the gate is defined on hubness-scaled "
                "distances); set gate: nullset or off, or hubness: true.")
        require(self.gate_sample >= 2, "retrieval.gate_sample must be >= 2.")
        if self.gate_percentile is not None:
            require(0 < self.gate_percentile <= 100, "retrieval.gate_percentile must be in (0, 100].")
        require(self.cap_keys >= 1, "retrieval.cap_keys must be >= 1.")
        check_choice("retrieval.tuning", self.tuning, ("off", "contrastive"))
        self.nullset = build_section(NullSetGateConfig, self.nullset, "retrieval.nullset")
        require(not (self.nullset.image_prescreen and self.tuning != "off"),
                "retrieval.nullset.image_prescreen needs untuned keys (retrieval.tuning: off): a tuned projection "
                "mixes the question into the key's image part, so the image alone cannot reject a query.")
        if self.milvus is not None or self.backend == "milvus":
            from .milvus_backend import MilvusConfig  # pymilvus itself is imported only when connecting

            self.milvus = build_section(MilvusConfig, self.milvus, "retrieval.milvus")
            require(self.backend != "milvus" or self.milvus.uri is not None,
                    "retrieval.backend: milvus needs retrieval.milvus.uri (a milvus-lite file such as "
                    "./codebook.db, or http://host:19530 for a server).")

    @property
    def gated(self) -> bool:
        return self.gate != "off"


@dataclass
class FusionConfig:
    """How retrieved facts enter the model (METHOD.md §4.5; §4 (a) for the hidden-state extensions)."""

    kind: str = "prompt"
    """``prompt`` (paper: facts in the text), ``hidden_bias`` (extension: each fact's LM vector, scaled,
    added to the hidden states at ``layer``) or ``gated`` (extension: the same bias through a learned gate)."""
    template: str = "{facts} {question}"
    """Paper: facts joined by single spaces, one space, the question, no header."""
    fact_separator: str = " "
    layer: Union[int, None] = None
    """Hidden-state kinds: the language-model block whose OUTPUT gets the bias and whose output, mean-pooled
    over a fact's tokens, is that fact's vector (negative counts from the end); None: the last block."""
    scale: float = 1.0
    """Hidden-state kinds: the bias is ``scale * sum_i g_i * v(fact_i)`` (g_i = 1 for ``hidden_bias``)."""
    max_facts: int = 0
    """Hidden-state kinds: bias with only the first this many retrieved facts (they come ordered by score,
    best entry first); 0: all of them. A sum of vectors cannot pick the relevant fact as attention over a
    prompt can, so the nearest facts alone may work better (chosen by calibration)."""
    positions: str = "text"
    """Hidden-state kinds: where the bias is added: ``question`` (the question's tokens) or ``text`` (every
    non-special text token, generated ones included)."""
    gate_hidden: int = 16
    """``gated``: hidden width of the gate MLP over [h; v; h*v] (h: the query's mean hidden state)."""
    gate_steps: int = 200
    """``gated``: Adam steps each time the gate is trained (on CPU, a few hundred)."""
    gate_lr: float = 0.01
    gate_every: int = 1
    """``gated``: train the gate after every this many edits (examples accumulate in between)."""
    null_prompts: tuple[str, ...] = ("What shape is this?", "What color is the shape?", "Is there a shape in the image?",
                           "Describe this image.")
    """``gated`` negatives: questions unrelated to any edit, asked about the edit's own image (null probes)."""

    def __post_init__(self) -> None:
        for key in ("{facts}", "{question}"):
            require(key in self.template, f"fusion.template must contain {key}, got {self.template!r}.")
        if self.layer is not None:
            require(isinstance(self.layer, int) and not isinstance(self.layer, bool),
                    f"fusion.layer={self.layer!r} must be a language-model block index or null.")
        require(float(self.scale) >= 0, f"fusion.scale={self.scale!r} must be >= 0 (0 adds nothing).")
        self.scale = float(self.scale)
        check_choice("fusion.positions", self.positions, ("question", "text"))
        require(self.max_facts >= 0, f"fusion.max_facts={self.max_facts} must be >= 0 (0: all facts).")
        require(self.gate_hidden >= 1 and self.gate_steps >= 1 and self.gate_every >= 1,
                "fusion.gate_hidden, gate_steps and gate_every must be >= 1.")
        require(self.gate_lr > 0, f"fusion.gate_lr={self.gate_lr} must be > 0.")
        self.null_prompts = tuple(self.null_prompts)
        require(all(isinstance(q, str) and q.strip() for q in self.null_prompts),
                "fusion.null_prompts must be non-empty strings.")

    @property
    def hidden(self) -> bool:
        """True for the kinds that act on hidden states (the prompt text stays the question)."""
        return self.kind in HIDDEN_FUSIONS


HIDDEN_FUSIONS = ("hidden_bias", "gated")


@dataclass
class KeyTuningConfig:
    """Contrastive tuning of a projection over keys (METHOD.md §4 (b), an extension; on with
    ``retrieval.tuning: contrastive``)."""

    every: int = 1
    """Train after every this many edits."""
    steps: int = 50
    """Adam steps per training round."""
    lr: float = 0.001
    temperature: float = 0.1
    """InfoNCE temperature on negative squared L2 distances divided by the mean positive distance."""
    identity_weight: float = 1.0
    """Weight of ||P - I||^2 (keeps the projection near the identity it starts from)."""
    null_prompts: tuple[str, ...] = ("What shape is this?", "What color is the shape?", "Describe this image.")
    """Negatives besides other edits' keys: these questions on each edit's image."""

    def __post_init__(self) -> None:
        require(self.every >= 1 and self.steps >= 1, "key_tuning.every and key_tuning.steps must be >= 1.")
        require(self.lr > 0 and self.temperature > 0 and self.identity_weight >= 0,
                "key_tuning: lr and temperature must be > 0, identity_weight >= 0.")
        self.null_prompts = tuple(self.null_prompts)


@dataclass
class PatchConfig:
    """Patch entries grounding rationale sentences in image regions (METHOD.md §6)."""

    enabled: bool = False
    grid: int = 3
    max_side: int = 512
    yes_threshold: float = 0.5
    question_template: str = "Does the image show {claim}"
    describe_prompt: str = "Describe this image."
    max_aspect: float = 3.0
    """Crops whose aspect ratio exceeds this are skipped (the reference's wrong-aspect rule)."""

    def __post_init__(self) -> None:
        require(self.grid >= 2, "patches.grid must be >= 2.")
        require(0 < self.yes_threshold < 1, "patches.yes_threshold must be in (0, 1).")
        require("{claim}" in self.question_template, "patches.question_template must contain {claim}.")


@dataclass
class TopologyConfig:
    """AutoLayer / AutoScaler calibration (METHOD.md §5)."""

    layer_samples: int = 20
    scale_samples: int = 10
    runs: int = 10
    scale_min_exp: float = -1.0
    scale_max_exp: float = 2.0
    scale_steps: int = 41
    include_projector: bool = True

    def __post_init__(self) -> None:
        require(self.layer_samples >= 2 and self.scale_samples >= 2, "topology: need >= 2 samples.")
        require(self.runs >= 1, "topology.runs must be >= 1.")
        require(self.scale_steps >= 1 and self.scale_max_exp >= self.scale_min_exp,
                "topology: need scale_steps >= 1 and scale_max_exp >= scale_min_exp.")


@dataclass
class GuardConfig:
    """Checks run on a rationale before its edit is committed (issue: bad rationales)."""

    policy: str = "quarantine"
    """``off`` (the paper: no guard), ``warn`` (log and commit), ``quarantine`` (hold for approval: the default,
    ``reasonedit approve`` commits), ``reject`` (raise, nothing added)."""
    injection: bool = True
    contradiction: bool = True
    visual: bool = False
    """Ask the VLM whether the image shows each claim (costs one forward pass per sentence)."""
    visual_threshold: float = 0.2
    max_rationale_chars: int = 4000
    max_sentences: int = 32

    def __post_init__(self) -> None:
        check_choice("guard.policy", self.policy, ("off", "warn", "quarantine", "reject"))
        require(0 < self.visual_threshold < 1, "guard.visual_threshold must be in (0, 1).")
        require(self.max_rationale_chars > 0 and self.max_sentences > 0, "guard limits must be > 0.")


SECTIONS: dict[str, type] = {
    "embedding": EmbeddingConfig,
    "augment": AugmentConfig,
    "codebook": CodebookConfig,
    "retrieval": RetrievalConfig,
    "fusion": FusionConfig,
    "patches": PatchConfig,
    "topology": TopologyConfig,
    "guard": GuardConfig,
    "key_tuning": KeyTuningConfig,
}


@dataclass
class ReasonEditConfig:
    """Everything the engine needs, independent of EasyEdit."""

    seed: int = 0
    only_edit_errors: bool = True
    """Paper: an edit the unedited model already answers correctly adds nothing."""
    max_new_tokens: int = 16
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    key_tuning: KeyTuningConfig = field(default_factory=KeyTuningConfig)

    def __post_init__(self) -> None:
        check_types(type(self), {k: getattr(self, k) for k in ("seed", "only_edit_errors", "max_new_tokens")}, "")
        for name, cls in SECTIONS.items():
            setattr(self, name, build_section(cls, getattr(self, name), name))
        require(self.max_new_tokens >= 1, "max_new_tokens must be >= 1.")
        require(not (self.codebook.names_image and self.codebook.answer_entries and not self.patches.describe_prompt),
                "codebook.answer_template names {image}, the model's caption of the edited image, asked for with "
                "patches.describe_prompt, which is empty; set one or drop {image} from the template.")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ReasonEditConfig":
        if not isinstance(values, Mapping):
            raise ConfigError(f"a ReasonEdit config must be a mapping, got {type(values).__name__}.")
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown key {str(key)[:40]!r}.{did_you_mean(str(key), known)} Valid keys: "
                                  f"{sorted(known)}.")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> "ReasonEditConfig":
        """A copy with some fields replaced; nested dicts update a section and its sub-sections, e.g.
        ``cfg.replace(retrieval={"gate": "nullset", "nullset": {"evidence_check": False}})`` keeps the other
        nullset settings."""
        def update(old: Any, new: Any) -> Any:
            if isinstance(old, Mapping) and isinstance(new, Mapping):
                return {**old, **{k: update(old.get(k), v) for k, v in new.items()}}
            return new

        values = self.to_dict()
        for key, value in sections.items():
            values[key] = update(values[key], value) if key in SECTIONS else value
        return type(self).from_dict(values)
