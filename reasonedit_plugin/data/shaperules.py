"""ShapeRules: a rationale-VQA edit set on the real easy-vqa images.

easy-vqa (PyPI ``easy-vqa``) ships 5,000 real 64x64 PNG images, each showing one coloured shape
(8 colours x 3 shapes), with ~48k plain questions about them. ShapeRules adds questions whose answer
needs a *rule that cannot be seen in the picture*: a made-up property tied to the shape, the colour, or
both ("Which tribe owns this shape?" -> "Kesh"). The rationale states the visual evidence and the rule
("The shape in the image is a red circle. Red circles belong to the Kesh tribe.").

The rule world (which key has which value, and which rules are *held out*) is fixed by
:data:`WORLD_SEED`. The default model is trained on the **train rules** only (with the facts in its
prompt); every edit split uses **held-out rules** only, so an unedited model cannot know them and the
edits are genuinely needed. The held-out values are dealt so that the train rules do not predict them
either (:func:`neighbour_guess_accuracy` at chance): a model that generalises from neighbouring rules
("red circles are Kesh, so red triangles probably are too") still has to guess. Edit images come from
easy-vqa's *test* images; training uses its *train* images.

Image paths in the JSONL files are relative to :func:`easy_vqa_root` (the package's ``data`` folder,
whose location depends on the environment); :func:`.split_files.load_split` and :func:`.split_files.load_jsonl` make them absolute.

CLI::

    python -m reasonedit_plugin.data.shaperules --split big --n 600 --seed 1 --out shaperules_big.jsonl
    python -m reasonedit_plugin.data.shaperules --split calib --n 48 --seed 1 --out calib.jsonl   # calibration

Evaluated splits use held-out rules, images and *eval* wordings (:mod:`.language`) the default model
never saw; calibration splits use other held-out rules, other images and the train wordings.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .easyvqa import (  # noqa: F401 - re-exported: ShapeRules' public names
    COLOURS,
    SHAPES,
    YES_NO,
    ImageInfo,
    PlainQuestion,
    answer_choices,
    easy_vqa_root,
    image_catalogue,
    image_info,
    plain_questions,
)
from .language import (  # noqa: F401 - re-exported
    APPLIES_PROMPTS,
    CAPTION_PROMPTS,
    DESCRIBE_PROMPT,
    EVIDENCE_FORMS,
    FILLER,
    ONLY_MATTERS,
    POOLS,
    SPLIT_EVIDENCE,
    caption,
    evidence_sentence,
    rationale_sentences,
    rule_sentence,
    verify_prompt,
)
from ..config import CodebookConfig
from .rule_properties import PROPERTIES, PROPERTY_BY_NAME, WORDING_KINDS, Property  # noqa: F401 - re-exported
from .split_files import write_jsonl

logger = logging.getLogger(__name__)
_DEFAULT_CODEBOOK = CodebookConfig()

WORLD_SEED = 5
"""Seed of the rule world (values and the train/held-out partition). The shipped model is trained on it."""

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
"""METHOD.md §1's rationale sentence splitter."""
RECORD_FIELDS = (
    "id", "image", "prompt", "target", "rationale", "choices", "rephrase_prompt", "image_rephrase",
    "rgen_prompt", "rgen_target", "rgen_choices", "locality_prompt", "locality_ground_truth",
    "multimodal_locality_image", "multimodal_locality_prompt", "multimodal_locality_ground_truth",
    "multimodal_locality_choices", "hard_locality_image", "hard_locality_prompt",
    "hard_locality_ground_truth", "hard_locality_choices", "meta",
)


# --------------------------------------------------------------------------------------------------
# The rule world (the properties themselves: :mod:`.rule_properties`)
# --------------------------------------------------------------------------------------------------

HELD_OUT_PER_PROPERTY = {"tribe": 8, "element": 3, "points": 8, "island": 1}
"""How many keys of each property are held out of training (about a third)."""
CALIBRATION_PER_PROPERTY = {"tribe": 3, "element": 1, "points": 3, "island": 0}
"""How many of the held-out keys per property are kept for calibration splits (never in evaluated splits)."""
PURPOSES = ("eval", "calibration")
CALIBRATION_SPLITS = ("calib", "calibration")
"""Split names that default to ``purpose="calibration"`` in :func:`generate_split`."""


@dataclass(frozen=True)
class Rule:
    """One assignment: property ``prop`` of key ``key`` is ``value``."""

    prop: str
    key: str
    value: str
    held_out: bool


@dataclass(frozen=True)
class RuleWorld:
    """All rules; ``held_out`` ones never appear in the default model's training data.

    Held-out rules are partitioned further: a few per property are *calibration* rules (for choosing
    settings, :func:`generate_split` with ``purpose="calibration"``), the rest *eval* rules (for
    measuring); the two never share a rule.
    """

    seed: int
    rules: tuple[Rule, ...]

    @functools.cached_property
    def _by_key(self) -> dict[tuple[str, str], Rule]:
        return {(r.prop, r.key): r for r in self.rules}

    def rule(self, prop: str, key: str) -> Rule:
        return self._by_key[(prop, key)]

    def rule_for(self, prop: Property, info: ImageInfo) -> Rule:
        return self.rule(prop.name, prop.key_of(info))

    @property
    def train_rules(self) -> list[Rule]:
        return [r for r in self.rules if not r.held_out]

    @property
    def held_out_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.held_out]

    @functools.cached_property
    def calibration_keys(self) -> frozenset[tuple[str, str]]:
        keys: set[tuple[str, str]] = set()
        for prop in PROPERTIES:
            held = sorted(r.key for r in self.held_out_rules if r.prop == prop.name)
            rng = random.Random(f"shaperules-calibration:{self.seed}:{prop.name}")
            keys.update((prop.name, k) for k in rng.sample(held, min(len(held), CALIBRATION_PER_PROPERTY[prop.name])))
        return frozenset(keys)

    def held_out_for(self, purpose: str) -> list[Rule]:
        """Held-out rules of an evaluated (``"eval"``) or a ``"calibration"`` split."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}.")
        calib = purpose == "calibration"
        return [r for r in self.held_out_rules if ((r.prop, r.key) in self.calibration_keys) == calib]


def purpose_images(images: Sequence[ImageInfo], purpose: str) -> list[ImageInfo]:
    """Images an ``eval`` or ``calibration`` split may use (every fourth image id is calibration's)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}.")
    return [x for x in images if (x.image_id % 4 == 0) == (purpose == "calibration")]


PRIOR_TOLERANCE = 0.05
"""How far from chance (1 / number of values) :func:`neighbour_guess_accuracy` may be for a world."""


def neighbour_guess(world: RuleWorld, rule: Rule) -> float:
    """The probability that a model-free guess from the train rules alone is ``rule``'s value.

    The guess is the most common value among the same property's train keys that share the rule's colour or
    its shape (or among all of the property's train keys when none does), ties broken at random: 1 / (number
    of tied values) when the rule's value is among them, else 0. It is what a learner that generalises from
    neighbouring rules gets *without the fact*.
    """
    train = [r for r in world.train_rules if r.prop == rule.prop]
    parts = set(rule.key.split())
    votes = Counter(r.value for r in train if parts & set(r.key.split())) or Counter(r.value for r in train)
    top = max(votes.values())
    best = [v for v, c in votes.items() if c == top]
    return 1 / len(best) if rule.value in best else 0.0


def neighbour_guess_accuracy(world: RuleWorld) -> float:
    """Expected accuracy of :func:`neighbour_guess` on the held-out rules, averaged over them (edit splits use
    them round-robin); it should be chance."""
    scores = [neighbour_guess(world, rule) for rule in world.held_out_rules]
    return sum(scores) / len(scores)


@functools.lru_cache(maxsize=4)
def rule_world(seed: int = WORLD_SEED) -> RuleWorld:
    """The seeded rule world: balanced values per property, about a third of the keys held out.

    Held-out keys are chosen so every colour and shape still occurs among a property's train keys,
    and values are dealt round-robin so that both the train and the held-out rules use every value.
    Deals are redrawn (deterministically) until the train rules say nothing about the held-out
    values: :func:`neighbour_guess_accuracy` within :data:`PRIOR_TOLERANCE` of chance. Otherwise an
    unedited model could guess held-out answers from neighbouring rules, and edits would not be
    genuinely needed.
    """
    chance = sum(1 / len(p.values) for p in PROPERTIES) / len(PROPERTIES)
    for attempt in range(1000):
        world = RuleWorld(seed, _deal_rules(seed, attempt))
        if abs(neighbour_guess_accuracy(world) - chance) <= PRIOR_TOLERANCE:
            return world
    raise RuntimeError(f"no rule world for seed {seed} within {PRIOR_TOLERANCE} of chance in 1000 deals")


def _deal_rules(seed: int, attempt: int) -> tuple[Rule, ...]:
    rules = []
    for prop in PROPERTIES:
        rng = random.Random(f"shaperules-world:{seed}:{attempt}:{prop.name}")
        keys = prop.keys()
        n_held = HELD_OUT_PER_PROPERTY[prop.name]
        while True:
            held = set(rng.sample(keys, n_held))
            train = [k for k in keys if k not in held]
            if prop.keyed_by != "colour+shape" or (
                {k.split()[0] for k in train} == set(COLOURS) and {k.split()[1] for k in train} == set(SHAPES)
            ):
                break
        for group, is_held in ((sorted(held), True), (train, False)):
            group = list(group)
            rng.shuffle(group)
            offset = rng.randrange(len(prop.values))
            for j, key in enumerate(group):
                value = prop.values[(j + offset) % len(prop.values)]
                rules.append(Rule(prop.name, key, value, is_held))
    return tuple(sorted(rules, key=lambda r: (r.prop, r.key)))


# --------------------------------------------------------------------------------------------------
# Sentences (rendering lives in language.py)
# --------------------------------------------------------------------------------------------------

def format_question(template: str, info: ImageInfo, value: str | None = None) -> str:
    return template.format(colour=info.colour, shape=info.shape, value=value)


def answer_entry(question: str, answer: str, image: ImageInfo | None = None, template: str | None = None) -> str:
    """The codebook's answer entry (METHOD.md §2), by default ``The answer to '<question>' is <answer>.``
    (:meth:`reasonedit_plugin.config.CodebookConfig.answer_entry`: no doubled period). A ``template``
    naming ``{image}`` describes ``image`` as the model captions it ("a red circle")."""
    return entry_codebook(template).answer_entry(question, answer, caption(image.colour, image.shape) if image is not None else None)


def entry_codebook(template: str | None = None) -> CodebookConfig:
    """The codebook settings that write answer entries in ``template`` (None: the default wording), built once
    per template; its :attr:`~reasonedit_plugin.config.CodebookConfig.names_image` says whether entries
    describe their image."""
    return _DEFAULT_CODEBOOK if template is None else _codebook_with(template)


@functools.lru_cache(maxsize=8)
def _codebook_with(template: str) -> CodebookConfig:
    return CodebookConfig(answer_template=template)


TRIVIA: tuple[tuple[str, str], ...] = (
    ("How many sides does a triangle have?", "three"),
    ("How many sides does a rectangle have?", "four"),
    ("How many corners does a circle have?", "zero"),
    ("What colour is grass?", "green"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What colour is a ripe banana?", "yellow"),
    ("What colour is coal?", "black"),
    ("What colour is a ripe tomato?", "red"),
    ("What colour is an elephant?", "gray"),
    ("What colour is chocolate?", "brown"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("What colour do you get by mixing blue and green?", "teal"),
    ("Is a circle round?", "yes"),
    ("Does a triangle have four sides?", "no"),
    ("Does a rectangle have four sides?", "yes"),
    ("Is the sun cold?", "no"),
    ("Which shape has no corners?", "circle"),
    ("Which shape has three sides?", "triangle"),
    ("Which shape has four sides?", "rectangle"),
    ("What is the opposite of yes?", "no"),
)
"""Text-only questions (EasyEdit's ``locality_prompt``); the default model learns them without an image."""


# --------------------------------------------------------------------------------------------------
# Edit splits
# --------------------------------------------------------------------------------------------------

HARD_LOCALITY_KINDS = ("shares_colour", "shares_shape", "same_wording", "other_property", "plain")
"""Near misses of an edit: an image sharing its colour (or shape) but governed by another, known rule,
asked the edit's question; the edit's question on another image with a known rule; another property
of the edited image (a known rule); a look-alike image with the plain question closest in wording."""


def _mentions(template: str) -> set[str]:
    return {a for a in ("colour", "shape") if "{" + a + "}" in template}


def _same_for(template: str, prop: Property, info: ImageInfo, other: ImageInfo) -> bool:
    """``other`` needs the same rule as ``info`` and matches whatever the question text mentions."""
    if prop.key_of(other) != prop.key_of(info):
        return False
    return all(getattr(other, a) == getattr(info, a) for a in _mentions(template))


def _overlap(a: str, b: str) -> int:
    return len(set(re.findall(r"\w+", a.lower())) & set(re.findall(r"\w+", b.lower())))


def _hard_locality(kind: str, rng: random.Random, world: RuleWorld, prop: Property, info: ImageInfo,
                   q_template: str, prompt: str, images: list[ImageInfo], avoid: set[ImageInfo],
                   questions_by_image: dict[int, list[PlainQuestion]],
                   other_pool: str = "eval") -> tuple[str, str, str, list[str]] | None:
    """(image, prompt, ground truth, choices) of a near-miss probe of ``kind``, or None if none exists
    (``other_pool``: the wordings of an ``other_property`` probe's question)."""
    known = lambda p, x: not world.rule_for(p, x).held_out  # noqa: E731
    key = prop.key_of(info)
    if kind in ("shares_colour", "shares_shape", "same_wording"):
        attr = {"shares_colour": "colour", "shares_shape": "shape"}.get(kind)
        pool = [x for x in images if prop.key_of(x) != key and known(prop, x) and x not in avoid
                and (attr is None or getattr(x, attr) == getattr(info, attr))]
        if not pool:
            return None
        near = rng.choice(pool)
        return near.path, format_question(q_template, near), world.rule_for(prop, near).value, list(prop.values)
    if kind == "other_property":
        others = [p for p in PROPERTIES if p is not prop and known(p, info)]
        if not others:
            return None
        other = rng.choice(others)
        question = format_question(rng.choice(other.wordings("question", other_pool)), info)
        return info.path, question, world.rule_for(other, info).value, list(other.values)
    twins = [x for x in images if x.colour == info.colour and x.shape == info.shape and x not in avoid]
    near = rng.choice(twins)
    candidates = questions_by_image[near.image_id]
    best = max(_overlap(q.question, prompt) for q in candidates)
    near_q = rng.choice([q for q in candidates if _overlap(q.question, prompt) == best])
    return near.path, near_q.question, near_q.answer, answer_choices(near_q.answer)


def _prompt_and_rephrase_wordings(prop: Property, pool: str, extra_questions: bool = False
                                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Disjoint question wordings for prompts and rephrases (train pool: alternate templates), the prompts
    with the property's :attr:`~.rule_properties.Property.extra_questions` frames when asked."""
    extra = prop.extra_questions if extra_questions else ()
    if pool != "train":
        return prop.wordings("question", pool) + extra, prop.wordings("rephrase", pool)
    questions = prop.wordings("question", "train")
    return questions[::2] + extra, questions[1::2]


def generate_split(name: str, n: int, seed: int, world: RuleWorld | None = None, image_split: str = "test",
                   purpose: str | None = None, wordings: str | None = None,
                   extra_questions: bool = False) -> list[dict[str, Any]]:
    """``n`` ShapeRules edit records on held-out rules (image paths relative to :func:`easy_vqa_root`).

    ``purpose`` (default: ``"calibration"`` for the split names in :data:`CALIBRATION_SPLITS`, else
    ``"eval"``) picks disjoint rules (:meth:`RuleWorld.held_out_for`), images (:func:`purpose_images`)
    and wordings: evaluated splits use the *eval* wordings the default model never saw in training
    (prompts and rephrases from separate pools), calibration splits the *train* wordings; ``wordings``
    (a pool of :data:`POOLS`) overrides that choice (the training run's validation rows in the *valid*
    pool: ``TrainConfig.valid_wordings``). ``extra_questions`` adds each property's extra question frames
    (:attr:`.rule_properties.Property.extra_questions`, trained on only with ``TrainConfig.wide_questions``)
    to the prompts' wordings: ``TrainConfig.valid_extra_questions``. Within a
    split, no rephrase is another record's prompt. Deterministic for all arguments. Held-out rules are
    used round-robin in a seeded order, so a small split covers every rule of its purpose.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    purpose = purpose or ("calibration" if name in CALIBRATION_SPLITS else "eval")
    world = world or rule_world()
    pool_name = wordings or ("eval" if purpose == "eval" else "train")
    if pool_name not in POOLS:
        raise ValueError(f"wordings={wordings!r}: must be one of {POOLS}.")
    # other-property probes of train-worded (calibration) splits ask in eval wordings, as they always have
    # (the shipped model's validation rows depend on it); the other pools ask in their own
    other_pool = "eval" if pool_name == "train" else pool_name
    rng = random.Random(f"shaperules-split:{name}:{seed}")
    images = purpose_images(image_catalogue(image_split), purpose)
    by_id = {info.image_id: info for info in images}
    questions_by_image: dict[int, list[PlainQuestion]] = {}
    for q in plain_questions(image_split):
        if q.image_id in by_id:
            questions_by_image.setdefault(q.image_id, []).append(q)
    held = world.held_out_for(purpose)

    records: list[dict[str, Any]] = []
    prompts: set[str] = set()
    order: list[Rule] = []
    for i in range(n):
        if not order:
            order = list(held)
            rng.shuffle(order)
        rule = order.pop()
        prop = PROPERTY_BY_NAME[rule.prop]
        pool = [x for x in images if prop.key_of(x) == rule.key]
        info = rng.choice(pool)
        prompt_wordings, rephrase_wordings = _prompt_and_rephrase_wordings(prop, pool_name, extra_questions)
        q_template = rng.choice(prompt_wordings)
        prompt = format_question(q_template, info)
        prompts.add(prompt)
        rationale = rationale_sentences(prop, info, rule.value, rng, pool=pool_name)

        rephrase_pool = [x for x in pool if x != info and _same_for(q_template, prop, info, x)]
        image_rephrase = rng.choice(rephrase_pool)

        yes = rng.random() < 0.5
        asked = rule.value if yes else rng.choice([v for v in prop.values if v != rule.value])
        rgen_prompt = format_question(rng.choice(prop.wordings("yes_no", pool_name)), info, asked)

        trivia_q, trivia_a = rng.choice(TRIVIA)

        far = [x for x in images if x.colour != info.colour and x.shape != info.shape]
        loc_info = rng.choice(far)
        loc_q = rng.choice(questions_by_image[loc_info.image_id])

        kinds = list(HARD_LOCALITY_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            hard = _hard_locality(kind, rng, world, prop, info, q_template, prompt, images,
                                  {info, image_rephrase}, questions_by_image, other_pool)
            if hard is not None:
                break

        records.append({
            "id": f"shaperules-{name}-{i:04d}",
            "image": info.path,
            "prompt": prompt,
            "target": rule.value,
            "rationale": " ".join(rationale),
            "choices": list(prop.values),
            "rephrase_prompt": format_question(rng.choice(rephrase_wordings), info),
            "image_rephrase": image_rephrase.path,
            "rgen_prompt": rgen_prompt,
            "rgen_target": "yes" if yes else "no",
            "rgen_choices": list(YES_NO),
            "locality_prompt": trivia_q,
            "locality_ground_truth": trivia_a,
            "multimodal_locality_image": loc_info.path,
            "multimodal_locality_prompt": loc_q.question,
            "multimodal_locality_ground_truth": loc_q.answer,
            "multimodal_locality_choices": answer_choices(loc_q.answer),
            "hard_locality_image": hard[0],
            "hard_locality_prompt": hard[1],
            "hard_locality_ground_truth": hard[2],
            "hard_locality_choices": hard[3],
            "meta": {"source": "shaperules", "property": prop.name, "key": rule.key,
                     "held_out": rule.held_out, "world_seed": world.seed, "hard_locality": kind,
                     "purpose": purpose, "wordings": pool_name},
        })
    clash = [r["id"] for r in records if r["rephrase_prompt"] in prompts]
    if clash:  # pragma: no cover - prompt and rephrase pools are disjoint by construction
        raise RuntimeError(f"rephrases equal to other records' prompts: {clash[:5]}")
    return records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate a ShapeRules edit split (held-out rules only).")
    parser.add_argument("--split", default="small", help="split name (used in record ids)")
    parser.add_argument("--n", type=int, default=48, help="number of edit records")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--out", type=Path, default=None, help="output JSONL (default: shaperules_<split>.jsonl)")
    parser.add_argument("--image-split", default="test", choices=("train", "test"),
                        help="easy-vqa images to draw edits from (the default model trains on 'train')")
    parser.add_argument("--world-seed", type=int, default=WORLD_SEED,
                        help="rule-world seed; the shipped model is trained on the default")
    parser.add_argument("--purpose", default=None, choices=PURPOSES,
                        help="eval (held-out wordings) or calibration (disjoint rules, images and prompts); "
                             f"default: calibration for --split {' / '.join(CALIBRATION_SPLITS)}, else eval")
    parser.add_argument("--wordings", default=None, choices=POOLS,
                        help="wording pool (default: eval for evaluated splits, train for calibration ones; valid: "
                             "the pool the training run may select checkpoints on)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:  # generate_split's own checks (--n), as argparse's one-line error
        records = generate_split(args.split, args.n, args.seed, rule_world(args.world_seed), args.image_split,
                                 args.purpose, args.wordings)
    except ValueError as err:
        parser.error(str(err))
    out = write_jsonl(records, args.out or Path(f"shaperules_{args.split}.jsonl"))
    logger.info("wrote %d records to %s (image paths relative to %s)", len(records), out, easy_vqa_root())


if __name__ == "__main__":
    main()
