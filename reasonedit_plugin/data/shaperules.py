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
whose location depends on the environment); :func:`load_split` and :func:`load_jsonl` make them absolute.

CLI::

    python -m reasonedit_plugin.data.shaperules --split big --n 600 --seed 1 --out shaperules_big.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

COLOURS: tuple[str, ...] = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
YES_NO: tuple[str, ...] = ("yes", "no")
WORLD_SEED = 5
"""Seed of the rule world (values and the train/held-out partition). The shipped model is trained on it."""

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
"""METHOD.md §1's rationale sentence splitter."""
DATA_DIR = Path(__file__).resolve().parent
IMAGE_FIELDS = ("image", "image_rephrase", "multimodal_locality_image", "hard_locality_image")
RECORD_FIELDS = (
    "id", "image", "prompt", "target", "rationale", "choices", "rephrase_prompt", "image_rephrase",
    "rgen_prompt", "rgen_target", "rgen_choices", "locality_prompt", "locality_ground_truth",
    "multimodal_locality_image", "multimodal_locality_prompt", "multimodal_locality_ground_truth",
    "multimodal_locality_choices", "hard_locality_image", "hard_locality_prompt",
    "hard_locality_ground_truth", "hard_locality_choices", "meta",
)


# --------------------------------------------------------------------------------------------------
# easy-vqa images and questions
# --------------------------------------------------------------------------------------------------

def easy_vqa_root() -> Path:
    """The easy-vqa package's ``data`` folder (holds ``train/`` and ``test/`` images and questions)."""
    try:
        import easy_vqa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ShapeRules needs the easy-vqa images: pip install easy-vqa") from exc
    root = Path(easy_vqa.__file__).resolve().parent / "data"
    if not (root / "test" / "questions.json").is_file():
        raise FileNotFoundError(f"easy-vqa data not found under {root}; reinstall easy-vqa.")
    return root


@dataclass(frozen=True)
class ImageInfo:
    """One easy-vqa image whose colour and shape are determined by its own questions."""

    split: str
    image_id: int
    colour: str
    shape: str

    @property
    def path(self) -> str:
        """Path relative to :func:`easy_vqa_root`."""
        return f"{self.split}/images/{self.image_id}.png"


@dataclass(frozen=True)
class PlainQuestion:
    """One easy-vqa question (``image`` relative to :func:`easy_vqa_root`)."""

    question: str
    answer: str
    image_id: int
    split: str

    @property
    def image(self) -> str:
        return f"{self.split}/images/{self.image_id}.png"


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"easy-vqa split must be 'train' or 'test', got {split!r}.")


@functools.lru_cache(maxsize=2)
def plain_questions(split: str) -> tuple[PlainQuestion, ...]:
    """All easy-vqa questions of ``split`` in the package's order."""
    _check_split(split)
    with open(easy_vqa_root() / split / "questions.json", encoding="utf-8") as fh:
        rows = json.load(fh)
    return tuple(PlainQuestion(q, a, int(i), split) for q, a, i in rows)


def answer_choices(answer: str) -> list[str]:
    """Multiple-choice options for a plain easy-vqa answer: yes/no, the 8 colours, or the 3 shapes."""
    for group in (YES_NO, COLOURS, SHAPES):
        if answer in group:
            return list(group)
    raise ValueError(f"{answer!r} is not an easy-vqa answer.")


@functools.lru_cache(maxsize=2)
def image_catalogue(split: str) -> tuple[ImageInfo, ...]:
    """Images of ``split`` whose colour and shape follow unambiguously from their own questions.

    Each easy-vqa image shows exactly one shape. Attribute questions ("what color is the shape?")
    give the value directly; yes/no questions ("is there not a red shape?") give presence or absence.
    Images whose questions leave colour or shape open (about a fifth) are left out.
    """
    positive: dict[int, set[str]] = {}
    negative: dict[int, set[str]] = {}
    attrs = set(COLOURS) | set(SHAPES)
    for q in plain_questions(split):
        if q.answer in attrs:
            positive.setdefault(q.image_id, set()).add(q.answer)
            continue
        words = set(re.findall(r"\w+", q.question))
        mentioned = sorted(words & attrs)
        if len(mentioned) != 1:
            continue
        negated = bool(words & {"not", "no"})
        present = (q.answer == "yes") != negated
        (positive if present else negative).setdefault(q.image_id, set()).add(mentioned[0])
    infos = []
    for image_id in sorted(set(positive) | set(negative)):
        pos, neg = positive.get(image_id, set()), negative.get(image_id, set())
        colour = _resolve(COLOURS, pos, neg)
        shape = _resolve(SHAPES, pos, neg)
        if colour is not None and shape is not None:
            infos.append(ImageInfo(split, image_id, colour, shape))
    return tuple(infos)


def _resolve(group: Sequence[str], pos: set[str], neg: set[str]) -> str | None:
    found = [x for x in group if x in pos]
    if not found:
        found = [x for x in group if x not in neg]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------------------------------
# Properties and the rule world
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Property:
    """A made-up property tied to what the image shows (``keyed_by``), with a small closed value set.

    Templates may use ``{colour}`` / ``{shape}`` (what the image shows), ``{subject}`` (plural key
    phrase, "red circles"), ``{single}`` (singular key phrase, "red circle") and ``{value}``.
    """

    name: str
    keyed_by: str
    values: tuple[str, ...]
    questions: tuple[str, ...]
    rule_forms: tuple[str, ...]
    yes_no: tuple[str, ...]

    def keys(self) -> list[str]:
        if self.keyed_by == "colour":
            return list(COLOURS)
        if self.keyed_by == "shape":
            return list(SHAPES)
        return [f"{c} {s}" for c in COLOURS for s in SHAPES]

    def key_of(self, info: ImageInfo) -> str:
        if self.keyed_by == "colour":
            return info.colour
        if self.keyed_by == "shape":
            return info.shape
        return f"{info.colour} {info.shape}"

    def subject(self, key: str) -> str:
        """Plural noun phrase for a key: 'red circles', 'red shapes', 'circles'."""
        return f"{self.single(key)}s"

    def single(self, key: str) -> str:
        return f"{key} shape" if self.keyed_by == "colour" else key


PROPERTIES: tuple[Property, ...] = (
    Property(
        name="tribe", keyed_by="colour+shape", values=("Vol", "Kesh", "Taro", "Mira"),
        questions=("Which tribe owns this shape?", "Which tribe does this shape belong to?",
                   "What tribe is this {shape} from?", "Which tribe owns the {colour} shape in the image?"),
        rule_forms=("{Subject} belong to the {value} tribe.", "The {value} tribe owns all {subject}.",
                    "Every {single} is owned by the {value} tribe."),
        yes_no=("Does this shape belong to the {value} tribe?", "Is this {shape} owned by the {value} tribe?"),
    ),
    Property(
        name="element", keyed_by="colour", values=("fire", "water", "stone", "wind"),
        questions=("Which element does this shape stand for?", "What element is this shape linked to?",
                   "Which element does this {shape} stand for?"),
        rule_forms=("{Subject} stand for {value}.", "The element of {subject} is {value}.",
                    "Every {single} stands for {value}."),
        yes_no=("Does this shape stand for {value}?", "Is {value} the element of this {shape}?"),
    ),
    Property(
        name="points", keyed_by="colour+shape", values=("two", "five", "seven", "nine"),
        questions=("How many points is this shape worth?", "What is this shape worth in points?",
                   "How many points does this {shape} score?"),
        rule_forms=("{Subject} are worth {value} points.", "Each {single} scores {value} points.",
                    "A {single} is worth {value} points."),
        yes_no=("Is this shape worth {value} points?", "Does this {shape} score {value} points?"),
    ),
    Property(
        name="island", keyed_by="shape", values=("Arun", "Bexa", "Corra", "Dolo"),
        questions=("Which island does this shape come from?", "What island is this shape from?",
                   "From which island does this {colour} shape come?"),
        rule_forms=("{Subject} come from the island of {value}.", "All {subject} come from {value}.",
                    "Every {single} comes from the island of {value}."),
        yes_no=("Does this shape come from {value}?", "Is this {colour} shape from the island of {value}?"),
    ),
)
PROPERTY_BY_NAME = {p.name: p for p in PROPERTIES}
HELD_OUT_PER_PROPERTY = {"tribe": 8, "element": 3, "points": 8, "island": 1}
"""How many keys of each property are held out of training (about a third)."""


@dataclass(frozen=True)
class Rule:
    """One assignment: property ``prop`` of key ``key`` is ``value``."""

    prop: str
    key: str
    value: str
    held_out: bool


@dataclass(frozen=True)
class RuleWorld:
    """All rules; ``held_out`` ones never appear in the default model's training data."""

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


PRIOR_TOLERANCE = 0.05
"""How far from chance (1 / number of values) :func:`neighbour_guess_accuracy` may be for a world."""


def neighbour_guess_accuracy(world: RuleWorld) -> float:
    """Expected accuracy on the held-out rules of a model-free guess from the train rules alone.

    For a held-out key, the guess is the most common value among the same property's train keys that
    share its colour or its shape (or among all of the property's train keys when none does); ties
    are split evenly. Averaged over held-out rules, which edit splits use round-robin. This is what a
    learner that generalises from neighbouring rules gets *without the fact*; it should be chance.
    """
    scores = []
    for rule in world.held_out_rules:
        train = [r for r in world.train_rules if r.prop == rule.prop]
        parts = set(rule.key.split())
        votes = Counter(r.value for r in train if parts & set(r.key.split())) or Counter(r.value for r in train)
        top = max(votes.values())
        best = [v for v, c in votes.items() if c == top]
        scores.append(1 / len(best) if rule.value in best else 0.0)
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
# Sentences
# --------------------------------------------------------------------------------------------------

def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def format_question(template: str, info: ImageInfo, value: str | None = None) -> str:
    return template.format(colour=info.colour, shape=info.shape, value=value)


def answer_entry(question: str, answer: str) -> str:
    """The codebook's answer entry (METHOD.md §2): ``The answer to '<question>' is <answer>.``"""
    return f"The answer to '{question}' is {answer}."


def rule_sentence(prop: Property, key: str, value: str, form: int = 0) -> str:
    template = prop.rule_forms[form % len(prop.rule_forms)]
    subject, single = prop.subject(key), prop.single(key)
    text = template.format(Subject=_cap(subject), subject=subject, single=single, value=value)
    return _cap(text)


EVIDENCE_FORMS = {
    "colour+shape": ("The shape in the image is a {colour} {shape}.", "I can see a {colour} {shape} in the picture.",
                     "The picture shows a {colour} {shape}."),
    "colour": ("The shape in the image is {colour}.", "The shape is coloured {colour}.",
               "I can see a {colour} shape in the picture."),
    "shape": ("The shape in the image is a {shape}.", "The picture shows a {shape}.",
              "I can see a {shape} in the picture."),
}
SPLIT_EVIDENCE = ("The shape in the image is {colour}.", "It is a {shape}.")
ONLY_MATTERS = {"colour": "Only the colour matters for this rule.", "shape": "Only the shape matters for this rule."}


def evidence_sentence(prop: Property, info: ImageInfo, form: int = 0) -> str:
    forms = EVIDENCE_FORMS[prop.keyed_by]
    return forms[form % len(forms)].format(colour=info.colour, shape=info.shape)


def rationale_sentences(prop: Property, info: ImageInfo, value: str, rng: random.Random) -> list[str]:
    """A 1-3 sentence human-style rationale: the visual evidence, then the rule."""
    rule = rule_sentence(prop, prop.key_of(info), value, rng.randrange(len(prop.rule_forms)))
    u = rng.random()
    if u < 0.15:
        return [rule]
    if u < 0.8:
        return [evidence_sentence(prop, info, rng.randrange(3)), rule]
    if prop.keyed_by == "colour+shape":
        return [s.format(colour=info.colour, shape=info.shape) for s in SPLIT_EVIDENCE] + [rule]
    return [evidence_sentence(prop, info, rng.randrange(3)), ONLY_MATTERS[prop.keyed_by], rule]


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

def _mentions(template: str) -> set[str]:
    return {a for a in ("colour", "shape") if "{" + a + "}" in template}


def _same_for(template: str, prop: Property, info: ImageInfo, other: ImageInfo) -> bool:
    """``other`` needs the same rule as ``info`` and matches whatever the question text mentions."""
    if prop.key_of(other) != prop.key_of(info):
        return False
    return all(getattr(other, a) == getattr(info, a) for a in _mentions(template))


def _overlap(a: str, b: str) -> int:
    return len(set(re.findall(r"\w+", a.lower())) & set(re.findall(r"\w+", b.lower())))


def generate_split(name: str, n: int, seed: int, world: RuleWorld | None = None,
                   image_split: str = "test") -> list[dict[str, Any]]:
    """``n`` ShapeRules edit records on held-out rules (image paths relative to :func:`easy_vqa_root`).

    Deterministic for (name, n, seed, world, image_split). Held-out rules are used round-robin in a
    seeded order, so a small split covers every held-out rule.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    world = world or rule_world()
    rng = random.Random(f"shaperules-split:{name}:{seed}")
    images = list(image_catalogue(image_split))
    by_id = {info.image_id: info for info in images}
    questions_by_image: dict[int, list[PlainQuestion]] = {}
    for q in plain_questions(image_split):
        if q.image_id in by_id:
            questions_by_image.setdefault(q.image_id, []).append(q)
    held = world.held_out_rules
    train_by_prop: dict[str, list[Rule]] = {}
    for r in world.train_rules:
        train_by_prop.setdefault(r.prop, []).append(r)

    records: list[dict[str, Any]] = []
    order: list[Rule] = []
    for i in range(n):
        if not order:
            order = list(held)
            rng.shuffle(order)
        rule = order.pop()
        prop = PROPERTY_BY_NAME[rule.prop]
        pool = [x for x in images if prop.key_of(x) == rule.key]
        info = rng.choice(pool)
        q_template, r_template = rng.sample(prop.questions, 2)
        prompt = format_question(q_template, info)
        rationale = rationale_sentences(prop, info, rule.value, rng)

        rephrase_pool = [x for x in pool if x != info and _same_for(q_template, prop, info, x)]
        image_rephrase = rng.choice(rephrase_pool)

        yes = rng.random() < 0.5
        asked = rule.value if yes else rng.choice([v for v in prop.values if v != rule.value])
        rgen_prompt = format_question(rng.choice(prop.yes_no), info, asked)

        trivia_q, trivia_a = rng.choice(TRIVIA)

        far = [x for x in images if x.colour != info.colour and x.shape != info.shape]
        loc_info = rng.choice(far)
        loc_q = rng.choice(questions_by_image[loc_info.image_id])

        if rng.random() < 2 / 3:  # same question wording, an image governed by a known (train) rule
            near_rule = rng.choice(train_by_prop[prop.name])
            near_pool = [x for x in images if prop.key_of(x) == near_rule.key]
            near_info = rng.choice(near_pool)
            hard = (near_info.path, format_question(q_template, near_info), near_rule.value, list(prop.values))
            hard_kind = "known_rule"
        else:  # a look-alike image (same colour and shape), a plain question with the most word overlap
            twins = [x for x in images if x.colour == info.colour and x.shape == info.shape
                     and x not in (info, image_rephrase)]
            near_info = rng.choice(twins)
            candidates = questions_by_image[near_info.image_id]
            best = max(_overlap(q.question, prompt) for q in candidates)
            near_q = rng.choice([q for q in candidates if _overlap(q.question, prompt) == best])
            hard = (near_info.path, near_q.question, near_q.answer, answer_choices(near_q.answer))
            hard_kind = "plain"

        records.append({
            "id": f"shaperules-{name}-{i:04d}",
            "image": info.path,
            "prompt": prompt,
            "target": rule.value,
            "rationale": " ".join(rationale),
            "choices": list(prop.values),
            "rephrase_prompt": format_question(r_template, info),
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
                     "held_out": rule.held_out, "world_seed": world.seed, "hard_locality": hard_kind},
        })
    return records


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def load_jsonl(path: str | Path, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Read a ShapeRules JSONL file; relative image paths are resolved against ``image_root``
    (default: :func:`easy_vqa_root`)."""
    root = Path(image_root) if image_root is not None else easy_vqa_root()
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            for name in IMAGE_FIELDS:
                if record.get(name) is not None and not Path(record[name]).is_absolute():
                    record[name] = str(root / record[name])
            records.append(record)
    return records


def shipped_splits() -> list[str]:
    return sorted(p.stem[len("shaperules_"):] for p in DATA_DIR.glob("shaperules_*.jsonl"))


def split_path(name: str) -> Path:
    return DATA_DIR / f"shaperules_{name}.jsonl"


def load_split(name: str = "small") -> list[dict[str, Any]]:
    """A shipped split (``reasonedit_plugin/data/shaperules_<name>.jsonl``) with absolute image paths."""
    path = split_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped ShapeRules split {name!r} (shipped: {shipped_splits()}). Generate one with "
            f"`python -m reasonedit_plugin.data.shaperules --split {name} --n 500 --seed 0 --out FILE` "
            "and load it with load_jsonl(FILE)."
        )
    return load_jsonl(path)


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = generate_split(args.split, args.n, args.seed, rule_world(args.world_seed), args.image_split)
    out = write_jsonl(records, args.out or Path(f"shaperules_{args.split}.jsonl"))
    logger.info("wrote %d records to %s (image paths relative to %s)", len(records), out, easy_vqa_root())


if __name__ == "__main__":
    main()
