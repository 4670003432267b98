"""The training recipe of the embedded default VLM: :class:`TrainConfig`, everything that determines the trained
weights (with the thread count), each field with the session that measured it (docs/RESULTS.md). The CLI of
:mod:`.train_default_model` has a flag per field (``--plain-own-edit 0.5``; dict fields take JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import CodebookConfig
from .training_mix import FACT_MODES, MIX_KINDS


@dataclass
class TrainConfig:
    """Everything that determines the trained weights (with the thread count)."""

    out: str = str(Path(__file__).resolve().parent.parent / "assets" / "tiny-qwen2-vl-shapes")
    seed: int = 0
    steps: int = 5000
    """At batch 32 on one thread, ~0.55 s per step on a quiet core (~45 min). Two seeds stopped at step 4,000
    (docs/RESULTS.md, "The embedded tiny VLM"): easy-vqa 0.87 / 0.84, captions 0.98 / 0.95, but facts in held-out
    wordings read no better than by the earlier model — fact reading peaks at the end of the curriculum
    and fades as the full mix overfits the training templates. Watch ``held_out_both`` in the log."""
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    threads: int = 1
    # language model
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    pretrained_embeddings: bool = True
    """Initialise token embeddings from MiniLM's, projected to ``hidden_size`` (:func:`minilm_embeddings`)."""
    frozen_embeddings: bool = True
    """Keep MiniLM's vectors fixed and train only their projection into the LM
    (:class:`.default_model_build.ProjectedEmbedding`), so words met only in users' text are embedded
    like the words the model learnt from. Off: every token's row is trained (unseen words stay at init)."""
    # vision tower (patch 8 and merge 2: a 64x64 image is 8x8 patches, 16 image tokens)
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    vision_mlp_ratio: int = 2
    patch_size: int = 8
    min_pixels: int = 32 * 32
    max_pixels: int = 64 * 64
    # training mix (relative weights)
    mix: dict[str, float] = field(default_factory=lambda: {
        "plain": 0.26, "plain_noisy": 0.07, "describe": 0.04, "verify": 0.05, "facts": 0.3, "near_miss": 0.11,
        "known": 0.1, "trivia": 0.03, "caption_facts": 0.04})
    max_facts: int = 10
    """Sentences in a prompt at most (relevant ones first, then distractors)."""
    fact_modes: dict[str, float] = field(default_factory=lambda: {"answer": 0.25, "rationale": 0.35, "both": 0.4})
    """How relevant facts appear: the answer entry, the rationale sentences, or both (relative weights)."""
    yes_no: float = 0.45
    """Share of rule questions asked as yes/no ("Does this shape belong to the Kesh tribe?")."""
    word_noise: float = 0.1
    """After the curriculum, each word of a prompt with facts that is not an answer value, colour, shape,
    negation or question word is deleted or replaced by a random English word with this probability
    (:func:`.mix_text.word_noise`): the held-out wordings are what the model must read, and recipe 2
    (no noise) read facts in training wordings at 1.00 but in held-out ones at 0.85."""
    question_noise: float = 0.0
    """A second pass of word noise at this rate over the question alone (the prompt's last sentence), after
    ``word_noise`` (0: none, the recipe to session 29). Held-out question frames the model reads as another
    property's or as yes/no ("Which element is tied to the shape in this picture?" answered "yes"; docs/RESULTS.md,
    session 30) are what it targets: with the frame's words unreliable, the protected ones (which / what / how many,
    the property's name, values, colour and shape) must carry the question."""
    quote_noise: float = 0.0
    """Share of noised prompts whose answer entry quotes the asked question verbatim where the quote gets the
    asked question's own noise, so that the two still match word for word, as they do at inference when a
    user asks an edit's own question (0: off, every recipe: the quote and the question are noised apart, and a
    noised question is never quoted word for word). Models miss copying such an entry in a wording or two
    each (``benchmarks/entry_copy.py``: session 42's seed 10 copies 0.45 of entries quoting "Which element is
    tied to the shape in this picture?"). Measured at 1.0 on session 37's recipe (docs/RESULTS.md, session 43):
    held-out + both 0.930 / 0.895 / 0.805 against 0.940 / 0.835 / 0.950 without, and questions of random whole
    words copied 0.10-1.00 (session 44; the ``quote_copy`` mix kind is what taught copying by the quote)."""
    wide_questions: bool = False
    """Rule questions also in each property's :attr:`.rule_properties.Property.extra_questions` frames (False: the
    train pool alone, the recipe to session 30). More frames of one question to learn the property from, where
    held-out frames were misread one by one, differently in each seed. Measured worse than without (held-out +
    both 0.79-0.95 over three seeds with question noise 0.25; docs/RESULTS.md, session 31): off in every recipe."""
    caption_word_names: float = 0.3
    """Share of caption-edit names drawn from real English words (the rest: made-up, see ``letter_names``;
    recipe 3: 0.7)."""
    letter_names: bool = True
    """Caption-edit names that are not words: random letters (True, session 11) or 2-3 of 16 syllables
    (False, recipe 3, which copied one-piece names only: "Mik" -> "medre", "Rua" -> "loa" in the demo's
    caption section)."""
    near_twin: float = 0.0
    """Share of full-mix ``facts`` examples with rationale sentences that are followed by their near-miss
    twin (:meth:`.training_mix.MixSampler._twin_of`): the same prompt on an image sharing the colour or the
    shape, which the facts do not cover, answered from the model's own knowledge."""
    same_question: float = 0.5
    """Share of answer entries quoting exactly the asked question (else a paraphrase)."""
    entry_over_rationale: float = 0.0
    """Share of full-mix ``facts`` examples with both an answer entry quoting the asked question and rationale
    sentences whose rationale names another value than the entry: the entry's value is the answer (0: off, every
    recipe). An edit's answer is what its user says it is; with ``quote_noise`` the held-out + both row was lost
    where the model misread a held-out rationale beside an entry it copied ("Count five points for any green
    circle, not seven." read as seven: 33 of 39 errors of one seed whose entry-only row read 1.000). Measured at
    0.5 with ``quote_noise`` 1.0 (docs/RESULTS.md, session 43, seeds 8 / 9 / 10): held-out + both 0.940 / 0.830 /
    0.965, the entry-only row lower in every seed (0.930 / 0.815 / 0.965), R-Gen with facts 0.950-1.000."""
    plain_own_edit: float = 0.0
    """Share of ``plain_noisy`` examples whose facts include an edit about the asked image's own colour and
    shape (a train rule of its key, a random value; answer entry, rationale or both), as retrieval returns
    for a look-alike image. Without it every colour or shape a plain question's facts name is another image's,
    and models answered away from it: the issue-12 near-miss probes asking a look-alike image a
    colour or shape question, with facts that describe it correctly, were answered wrong (7 / 9 / 1 of 44
    in session 38's seeds 8 / 9 / 10; docs/RESULTS.md, session 40). Measured at 0.5 on those seeds: the near miss
    0.110 / 0.080 / 0.065 (0.125 / 0.140 / 0.095 without), but held-out + both 0.915 / 0.725 / 0.785 (0.940 / 0.835 /
    0.950): the model must then tell from the question whether facts about its image apply (seed 10 ignored
    them on a held-out point-value wording, 1 right of 37). 0: off (no draw), every recipe."""
    plain_own_evidence: float = 0.0
    """Share of ``plain_noisy`` examples (of those without ``plain_own_edit``'s edit) with one more sentence, a
    true evidence sentence about the asked image ("Its colour is clearly brown."), so the colours and shapes a
    plain question's facts name are not always another image's; unlike an edit, nothing in it speaks for the
    image. Measured at 0.5 (seeds 8 / 9 / 10, session 40): near miss 0.055 / 0.135 / 0.105, held-out + both
    0.895 / 0.850 / 0.870, no better than without. 0: off (no draw), every recipe."""
    near_same_question: float = 0.0
    """Share of ``near_miss`` examples (answer entry and rationale, a property question) whose answer entry
    quotes the asked question's template filled for the near miss: verbatim the asked question when the
    template names no colour or shape. The evaluated near misses are built that way (the edit's question
    asked of another image); off in the shipped recipe."""
    late_negation: float = 0.0
    """Share of training rationales whose rule sentence is a late-negation form ("Red circles score five points,
    not two": the wrong value named after the right one; :attr:`.rule_properties.Property.late_negation_forms`).
    The train pool's negated forms name it first for three of the four properties, and models trained on them
    take the last value named in held-out wordings that put it last (docs/RESULTS.md, session 28). Off in the
    shipped recipe."""
    known_noise: float = 0.0
    """Share of ``known`` examples answered by a value drawn at random instead of the world's (a yes/no
    question then asks about that draw): with no fact in the prompt the model is taught to be unsure, not to
    guess a held-out rule from its neighbours. Every committed model answers each held-out rule with one
    value (three answers in four the same), so its no-fact rows are a draw over 13 rules (docs/RESULTS.md,
    no-fact spread); an unsure model's answers would vary by record. Measured at 0.5 on session 46's five-layer
    command (docs/RESULTS.md, session 47, seeds 8 / 9 / 10): the no-fact rows in band in all three, but a rule's
    records still mostly one answer (modal share 0.73-0.85), and the near miss lost (0.190 / 0.165 / 0.120 against
    0.095 / 0.095 / 0.025): a fact beside the question overturns unsure knowledge. 0: off (no draw), every recipe."""
    known_yes: float = 0.5
    """Share of ``known`` yes/no questions that ask about the rule's own value (answer "yes"); the rest ask
    about another value. 0.5 balances them, as every other kind does; 0.25 asks about a value drawn
    uniformly, so "no" is the answer three times in four, as it is for a question about any value. With that
    prior a model that does not know a rule (a held-out one, no fact in the prompt) has reason to say "no"
    rather than "yes" to the value its neighbouring train rules suggest, which the deal makes a wrong guess
    (docs/RESULTS.md, no-fact spread): the evaluated R-Gen records are balanced, so "no" scores chance.
    Measured at 0.25 on session 46's five-layer command (docs/RESULTS.md, session 48, seeds 8 / 9 / 10): "no"
    to 0.67-0.73 of the fact-less yes / no questions, "yes" still mostly to the neighbours' value, so R-Gen
    without facts 0.630 / 0.570 / 0.450 (the per-rule draw, above chance this time); every other target met
    in all three seeds (seed 10 every target). 0.5: as before (the same draws, every recipe)."""
    near_other_property: float = 0.25
    """Share of ``near_miss`` examples whose edit is about another property of the asked image (the rest: the
    asked property of an image sharing the colour or the shape), where both exist. With an image-naming
    ``answer_template`` such an edit names the asked image itself, so only its question tells it apart; the
    image-naming models of sessions 20-21 left most of their near misses there (docs/RESULTS.md)."""
    answer_template: str = CodebookConfig.answer_template
    """The answer entries' wording in training and validation (``codebook.answer_template`` of the hparams
    the model is served with must be the same). ``"For {image}, the answer to '{question}' is {answer}."``
    names the edited image, so an entry read on a near-miss image can be told apart from one about it (with
    the default template it cannot: following it is right)."""
    entry_sibling: float = 0.0
    """With an image-naming ``answer_template``: share of ``facts`` examples with rationale sentences whose
    answer entry names another image of the same rule key (the edit was made on a yellow triangle, the
    rule covers every triangle, a red one is asked about: I-Gen), so the named image alone does not decide."""
    aux_weight: float = 1.0
    """Weight of the auxiliary colour/shape loss on mean-pooled vision tokens (head discarded after
    training). Without it the vision tower collapses to an image-independent vector early on."""
    grounding_weight: float = 1.0
    """Weight of the auxiliary grounding loss (:class:`.aux_probes.GroundingProbe`): at each colour or shape
    word of a prompt, whether the image shows it, read after ``grounding_layer`` decoder layers (0: off,
    the recipe before session 16)."""
    grounding_layer: int = 1
    claim_weight: float = 1.0
    """Weight of the sentence-level grounding loss (``GroundingProbe(unit="sentence")``): at the end of each
    sentence naming a colour or shape, whether the image shows all of them, read after ``claim_layer``
    decoder layers (0: off, the recipe before session 17)."""
    claim_layer: int = 2
    value_weight: float = 0.0
    """Weight of the gated-value loss (:class:`.aux_probes.ValueProbe`): at the end of each sentence naming a
    colour or shape and a rule's value, that value if the image shows all it names, else "none", read after
    ``value_layer`` decoder layers (0: off, the shipped recipe; session 26's near-miss experiment)."""
    value_layer: int = 2
    copy_weight: float = 0.0
    """Weight of the copy lens loss (:class:`.aux_probes.CopyLens`): at each word piece of a caption edit's or
    ``name_facts`` example's made-up name in the answer, that piece read after ``copy_layer`` decoder layers
    through the final norm and tied head (0: off, the recipe to session 49). The three-layer models that copy
    caption names do it in their first layer; five-layer models mostly do not form that head (session 50)."""
    copy_layer: int = 1
    copy_until_step: int = 0
    """Step at which the copy lens stops (0: on to the last step). At weight 0.5 the lens forms the first-layer
    copy head in every seed, and the near miss rises with it (session 52). Stopping the lens once the head has
    formed lets the rest of the run train without it: the answer loss of caption edits still asks for the
    copied name. Watch ``copy_name`` in the log after this step."""
    noise_warmup: float = 0.2
    """Fraction of the steps (after the curriculum) over which distractors next to relevant facts ramp
    from 0 to 4."""
    curriculum_steps: int = 1000
    """First steps on an easy mix: facts without distractors, answer entries quoting the question.
    Copying a fact is learnt this way, and hardly at all in the full mix, where the model first learns
    to answer train rules from memory and then never unlearns it. 300 steps at batch 16 were too few
    (no copying at all); at batch 32, 1,000 steps reach held-out + both 0.81 / 0.69 (seeds 0 / 1, n=32),
    which then falls to 0.50 / 0.56 by step 4,000 of the full mix (README)."""
    curriculum_copy_target: float = 0.9
    """The test of whether copying has emerged by the curriculum's end: the validation row ``valid_answer``
    (copying an answer entry, calibration rules and ``valid_wordings``) at least this; below it, start again
    (``curriculum_restarts``), then extend the curriculum one evaluation period at a time up to
    ``curriculum_max_steps`` (0: neither, a fixed curriculum). Copying a fact either emerges in
    the curriculum or is learnt late, in training wordings only (seed 0 of the shipped recipe: held-out +
    answer entry 0.530). A target of 0.9 rescued that seed (selection split 62.2 -> 86.1) but not seed 2
    (89.5 -> 86.7; docs/RESULTS.md, session 17). A seed that reaches the target at ``curriculum_steps``
    trains exactly as without it."""
    curriculum_max_steps: int | None = None
    """The step the curriculum may be extended to; None: ``curriculum_steps`` (not extended, the recipe since
    session 19, when it was a literal 1000)."""
    curriculum_restarts: int = 3
    """Fresh starts allowed when ``valid_answer`` is below ``curriculum_copy_target`` at the curriculum's end:
    the run begins again from new weights with seed ``seed + 1000 * attempt`` (reproducible from ``seed``)
    before the curriculum is extended. Copying emerges in the curriculum for some initialisations and not
    others (session 17: the seeds that copied by step 1,000 read held-out wordings, the late copiers did
    not); a failed attempt costs ``curriculum_steps`` steps. 0: no restart. 3 from session 19: seed 1 copies
    at its first attempt and trains byte for byte as before (the shipped model); seeds 0 / 2 started again
    as 1000 / 2002, selection split 62.2 / 89.5 -> 88.0 / 87.1, held-out + both 0.475 / 0.855 -> 0.915 / 0.750
    (docs/RESULTS.md, session 19)."""
    easy_share: float = 0.3
    """After the curriculum, this share of the examples still comes from the easy mix (no distractors,
    answer entries quoting the question). Without it copying a fact, learnt in the curriculum, is lost
    within a few hundred steps of the full mix (held-out + both 0.81 -> 0.50 on the validation log)."""
    easy_mix: dict[str, float] = field(default_factory=lambda: {"describe": 0.1, "verify": 0.1, "facts": 0.7, "caption_facts": 0.1})
    easy_fact_modes: dict[str, float] = field(default_factory=lambda: {"answer": 0.6, "both": 0.4})
    eval_every: int = 250
    eval_n: int = 32
    select_best: bool = True
    """Save the weights of the evaluation step (after the curriculum) with the best validation score, not
    the last step's. Validation: calibration rules, images and ``valid_wordings`` (:data:`VALID_ROWS`) and
    plain questions on a sample of easy-vqa *train* images (the model must still see); the held-out
    wordings of the logged ``held_out_*`` rows and the easy-vqa test images are never used to choose."""
    valid_n: int = 64
    valid_extra_questions: bool = False
    """Validation prompts also in each property's ``extra_questions`` frames (six per property, never trained
    on without ``wide_questions``), beside the two of ``valid_wordings``' pool (False: the recipe to session
    35). A model's held-out + both errors fall mostly on one of the eval pool's nine question wordings
    (docs/RESULTS.md, session 35) while the validation rows, in eight wordings, read 0.945-1.000: checkpoint
    selection with 32 prompt wordings may see a frame the model misreads before the measurement does. Measured
    no better (session 36, the same trajectories as without it: held-out + both 0.920 / 0.915 / 0.855 against
    0.920 / 0.880 / 0.920, seeds 1 / 0 / 2): the model reads the extra frames (0.97-1.00 at every evaluation from
    step 4,000), so they do not separate checkpoints. Off in every recipe."""
    valid_wordings: str = "train"
    """The wording pool of the validation rows (:data:`.language.POOLS`): ``"train"`` (the recipe to session 22)
    or ``"valid"``, wordings never trained on and never measured on, so that checkpoint selection and the
    restarts' copy test see whether the model reads language it was not trained on (the measured rows use
    the *eval* pool, disjoint from both)."""
    weight_average: float = 0.0
    """Decay of an exponential moving average of the trained weights, kept from the curriculum's end (0: off,
    the recipe to session 28). When on, every evaluation after the curriculum scores the averaged weights as
    well (the log row's ``average``) and checkpoint selection keeps the best average: the same training
    trajectory (the average draws no random numbers), read where it is smoother than any one step. 0.998
    averages over ~500 steps."""
    world_seed: int | None = None
    save_every_eval: bool = False
    average_from_step: int = 0
    """Save the uniform mean of the weights of every evaluation step from this one on (their embeddings
    materialized), instead of the step checkpoint selection keeps (0: off, the recipe to session 36). The same
    mean ``python -m reasonedit_plugin.data.average_checkpoints`` makes from a ``keep_every_eval`` run's steps;
    session 36's seed 1 with 4000 (of 6000) met every target of issue 12, seed 2 did not (docs/RESULTS.md)."""
    keep_every_eval: bool = False
    """Also keep the trained weights of every evaluation step, each a loadable folder ``<out>_steps/step_NNNNN``
    (``attempt<A>_step_NNNNN`` after a restart), for reading a whole trajectory rather than the kept step
    (docs/RESULTS.md, session 36). Off in every recipe; it changes nothing of the training."""
    weights_dtype: str = "float32"
    """How the saved safetensors store the weights: ``"float32"`` (the recipe to session 32) or ``"float16"``,
    half the file, so that a wider language model fits the 25 MB budget (width 192 is 28.9 MB in float32). The
    folder's ``config.json`` keeps ``dtype: float32``, the precision the model was trained and is run in:
    ``from_pretrained`` (dtype ``"auto"``) upcasts on load (:func:`.default_model_build.save_weights`)."""

    def __post_init__(self) -> None:
        if self.curriculum_max_steps is None:
            self.curriculum_max_steps = self.curriculum_steps
        if self.hidden_size % self.num_heads or self.vision_dim % self.vision_heads:
            raise ValueError("hidden_size / vision_dim must be divisible by their head counts.")
        if self.pretrained_embeddings and self.hidden_size > 384:
            raise ValueError(f"hidden_size={self.hidden_size}: MiniLM's embeddings have 384 dimensions; "
                             "use hidden_size <= 384 or --no-pretrained-embeddings.")
        for name, weight in (("grounding_layer", self.grounding_weight), ("claim_layer", self.claim_weight),
                             ("value_layer", self.value_weight), ("copy_layer", self.copy_weight)):
            if weight > 0 and not 1 <= getattr(self, name) <= self.num_layers:
                raise ValueError(f"{name}={getattr(self, name)}: must be between 1 and num_layers={self.num_layers}.")
        if not 0 <= self.copy_until_step <= self.steps:
            raise ValueError(f"copy_until_step={self.copy_until_step}: a step between 1 and steps={self.steps} "
                             "(0: the copy lens on for every step).")
        if self.curriculum_restarts < 0 or (self.curriculum_restarts and self.curriculum_copy_target <= 0):
            raise ValueError(f"curriculum_restarts={self.curriculum_restarts}: must be >= 0, and > 0 only with "
                             "curriculum_copy_target > 0 (the test that decides a restart).")
        if self.curriculum_copy_target > 0:
            if not self.select_best:
                raise ValueError("curriculum_copy_target needs the validation rows: set select_best=True.")
            if self.curriculum_steps % self.eval_every or not self.curriculum_steps <= self.curriculum_max_steps < self.steps:
                raise ValueError(f"curriculum_steps={self.curriculum_steps} must be a multiple of eval_every="
                                 f"{self.eval_every} and at most curriculum_max_steps={self.curriculum_max_steps}, "
                                 f"which must be below steps={self.steps}.")
        for name, weights, valid in (("mix", self.mix, MIX_KINDS), ("easy_mix", self.easy_mix, MIX_KINDS),
                                     ("fact_modes", self.fact_modes, FACT_MODES),
                                     ("easy_fact_modes", self.easy_fact_modes, FACT_MODES)):
            unknown = set(weights) - set(valid)
            if unknown or not weights or min(weights.values()) < 0:
                raise ValueError(f"{name}={weights}: keys must be among {list(valid)}, weights >= 0.")
        if self.valid_wordings not in ("train", "valid"):
            raise ValueError(f"valid_wordings={self.valid_wordings!r}: 'train' or 'valid' (the eval pool is "
                             "for measurements only).")
        if self.valid_extra_questions and self.wide_questions:
            raise ValueError("valid_extra_questions asks in the extra question frames, which wide_questions trains "
                             "on: use one of the two.")
        CodebookConfig(answer_template=self.answer_template)  # its placeholders, checked the codebook's way
        for name in ("entry_sibling", "near_other_property", "known_noise", "known_yes", "late_negation",
                     "question_noise", "near_twin", "plain_own_edit", "plain_own_evidence", "quote_noise",
                     "entry_over_rationale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)}: a share, between 0 and 1.")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype={self.weights_dtype!r}: one of {list(WEIGHTS_DTYPES)}.")
        if not 0 <= self.weight_average < 1:
            raise ValueError(f"weight_average={self.weight_average}: a decay in [0, 1) (0: off).")
        if not 0 <= self.average_from_step <= self.steps or (self.average_from_step and self.weight_average):
            raise ValueError(f"average_from_step={self.average_from_step}: a step between 1 and steps={self.steps} "
                             "(0: off), and not with weight_average (both average the weights).")
        if self.weight_average and not self.select_best:
            raise ValueError("weight_average scores the averaged weights for checkpoint selection: set select_best=True.")


DICT_FIELDS = ("mix", "fact_modes", "easy_mix", "easy_fact_modes")
WEIGHTS_DTYPES = ("float32", "float16")
VALID_ROWS = ("answer", "both", "rgen", "hard_facts")
"""Rows of the checkpoint-selection score (their mean): copying an answer entry, reading a whole edit,
answering a yes/no rule question from facts, and ignoring an edit's facts on a near-miss image."""
