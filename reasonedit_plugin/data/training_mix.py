"""The training mix of the embedded default VLM: seeded examples on ShapeRules *train* rules, *train*
wordings and easy-vqa *train* images (``train_default_model.py`` turns them into batches).

Kinds (``TrainConfig.mix`` weighs them):

* ``plain``       easy-vqa questions, no facts;
* ``plain_noisy`` easy-vqa questions with irrelevant facts prepended (locality under retrieval noise);
* ``describe``    "Describe this image." (and other caption prompts) answered "A red circle.";
* ``verify``      METHOD.md §6's "Does the image show <evidence sentence>?" on true or altered evidence;
* ``facts``       rule questions (or yes/no questions about a value: R-Gen) with the relevant fact(s) in the
                  prompt as ReasonEdit retrieves them (answer entry, rationale, or both), shuffled among
                  distractors. The value is drawn at random (counterfactual), so the model must *read* it;
* ``near_miss``   a whole edit about a near miss (a key sharing the colour or the shape, or another property
                  of this image) is in the prompt and must be ignored: answered from the model's knowledge;
* ``known``       rule questions without their fact (sometimes with distractors), answered by the world's
                  value: the knowledge that hard-locality probes test and a stored fact must override
                  (``known_noise``: a share answered by a random value instead; ``known_yes``: how often a
                  yes/no one asks about the rule's own value);
* ``trivia``      text-only questions, no image (EasyEdit's text ``locality_prompt``);
* ``applies``     an edit's rationale (about this image or a near miss) and "Do these facts apply to the shape
                  in the image?": yes / no. The check a near miss needs, asked outright (off by default);
* ``caption_facts`` a caption instruction with an edited caption in the prompt ("A red circle of the Zubo
                  tribe.", names made up per example, so the caption can only be copied): caption edits;
* ``quote_copy``  a question of random words and an answer entry quoting it word for word, beside decoy entries
                  (another random question about this image; the same question about a near miss): only the
                  entry whose quote *and* image match answers it, so an entry is copied by its quote (off by
                  default; at 0.05 every eval wording was copied in three seeds and held-out + both rose, the
                  near miss did not: docs/RESULTS.md, session 44);
* ``name_facts``  a made-up name stated for the asked image's colour and shape ("Every red circle is named
                  Qavon.", half the time beside the same sentence naming another for a near miss) and a question
                  asking for it: the answer is the name alone, copied piece by piece from the prompt, so the
                  open-vocabulary copy that caption edits need gets the whole loss of an example (off by
                  default; at 0.05 a 2,500-step pilot copied no name, as its reference did not:
                  ``benchmarks/caption_names.py`` measures that copy, docs/RESULTS.md, session 46).

Held-out rules (the only ones edit splits use) and held-out wordings never occur.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .language import (APPLIES_PROMPTS, CAPTION_PROMPTS, DESCRIBE_PROMPT, EVIDENCE_FORMS, FILLER, ONLY_MATTERS, caption,
                       verify_prompt)
from .mix_text import (CAPTION_SUFFIXES, NAME_RELATIONS, SYLLABLES, fuse, letters_name, name_words, naming,
                       noise_vocabulary, split_question, word_noise, word_noise_inside)
from .shaperules import (
    COLOURS,
    PROPERTIES,
    PROPERTY_BY_NAME,
    SHAPES,
    TRIVIA,
    YES_NO,
    ImageInfo,
    Property,
    RuleWorld,
    answer_choices,
    answer_entry,
    entry_codebook,
    evidence_sentence,
    format_question,
    image_catalogue,
    plain_questions,
    rationale_sentences,
    rule_sentence,
)

if TYPE_CHECKING:  # pragma: no cover
    from .train_config import TrainConfig

FACT_MODES = ("answer", "rationale", "both")
MIX_KINDS = ("plain", "plain_noisy", "describe", "verify", "facts", "near_miss", "known", "trivia", "caption_facts",
             "applies", "quote_copy", "name_facts")


@dataclass(frozen=True)
class Example:
    """One training or evaluation sample: ``image`` relative to easy-vqa's data folder (None: text only)."""

    kind: str
    image: str | None
    text: str
    answer: str
    choices: tuple[str, ...] = ()
    copy: str = dataclasses.field(default="", repr=False)
    """The name ``answer`` copies from the prompt (caption edits, ``name_facts``): :class:`.aux_probes.CopyLens`
    (out of the repr, which the recorded training streams are digested from; the answer spells it anyway)."""


NOISY_KINDS = frozenset({"plain_noisy", "facts", "near_miss", "known"})
"""Kinds whose prompts get word noise (those with rule facts in them). Plain questions, captions and checks
keep the words easy-vqa asks in; caption edits keep theirs because their names (not protected) must be copied."""


class MixSampler:
    """Seeded generator of training examples; touches train rules, *train* wordings and easy-vqa *train*
    images only."""

    def __init__(self, world: RuleWorld, cfg: TrainConfig, rng: random.Random, image_split: str = "train"):
        self.world, self.cfg, self.rng = world, cfg, rng
        self.images = list(image_catalogue(image_split))
        self.questions = list(plain_questions(image_split))
        self.image_info = {x.path: x for x in self.images}
        self.described_questions = [q for q in self.questions if q.image in self.image_info]
        """Questions on images whose colour and shape are known (an edit about them can be written)."""
        self.train_keys = {(r.prop, r.key) for r in world.train_rules}
        self.rule_questions = {p.name: p.questions + (p.extra_questions if cfg.wide_questions else ())
                               for p in PROPERTIES}
        """Each property's train question frames (``cfg.wide_questions``: with its extra ones)."""
        # (property, image) pairs whose rule is a train rule
        self.rule_images = [(p, x) for p in PROPERTIES for x in self.images
                            if (p.name, p.key_of(x)) in self.train_keys]
        self.max_distractors = 4
        """Distractors next to relevant facts; the training loop ramps it up (noise curriculum)."""
        self.easy = False
        """Curriculum phase: ``cfg.easy_mix`` and ``cfg.easy_fact_modes``, answer entries quote the question."""
        self.noise_words = noise_vocabulary() if cfg.word_noise > 0 or cfg.question_noise > 0 else []
        self.name_words = name_words(self.noise_words or noise_vocabulary())
        """Real English words a caption edit may use as a name (most of them one WordPiece token)."""
        self.entries_name_image = entry_codebook(cfg.answer_template).names_image
        """Whether answer entries describe their image (an image-naming ``answer_template``)."""
        self._queued: list[Example] = []
        """Examples drawn as the twin of the previous one (``cfg.near_twin``), returned next."""

    def sample(self) -> Example:
        if self._queued:
            return self._queued.pop()
        if not self.easy and self.cfg.easy_share > 0 and self.rng.random() < self.cfg.easy_share:
            saved = self.max_distractors
            self.easy, self.max_distractors = True, 0  # one curriculum example, kept in the full mix
            try:
                return self._draw()
            finally:
                self.easy, self.max_distractors = False, saved
        return self._draw()

    def _draw(self) -> Example:
        mix = self.cfg.easy_mix if self.easy else self.cfg.mix
        kind = self.rng.choices(list(mix), list(mix.values()))[0]
        queued = len(self._queued)
        example = getattr(self, f"_{kind}")()
        if self.noise_words and not self.easy and kind in NOISY_KINDS:
            if len(self._queued) == queued:
                return dataclasses.replace(example, text=self._noisy(example.text, self.rng))
            seed = self.rng.random()  # a twin: its facts get the very same noise, only the image differs
            twin = self._queued[-1]
            self._queued[-1] = dataclasses.replace(twin, text=self._noisy(twin.text, random.Random(seed)))
            example = dataclasses.replace(example, text=self._noisy(example.text, random.Random(seed)))
        return example

    def _noisy(self, text: str, rng: random.Random) -> str:
        if self.cfg.quote_noise > 0 and rng.random() < self.cfg.quote_noise:  # (no draw when off)
            facts, question = split_question(text)
            quote = f"'{question}'"
            if facts and quote in facts:
                return self._noisy_with_quote(facts, question, rng)
        text = word_noise(text, self.cfg.word_noise, rng, self.noise_words)
        if self.cfg.question_noise > 0:  # no draw when off: the stream stays the recipe's
            facts, question = split_question(text)
            question = word_noise(question, self.cfg.question_noise, rng, self.noise_words) or question
            text = fuse([facts] if facts else [], question)
        return text

    def _noisy_with_quote(self, facts: str, question: str, rng: random.Random) -> str:
        """``_noisy`` for a prompt whose facts quote its question (``'<question>'``): the question is noised
        once and every quote of it carries that same noise; the rest of the facts get word noise."""
        noisy_q = word_noise(question, self.cfg.word_noise, rng, self.noise_words) or question
        if self.cfg.question_noise > 0:
            noisy_q = word_noise(noisy_q, self.cfg.question_noise, rng, self.noise_words) or noisy_q
        parts = [word_noise_inside(part, self.cfg.word_noise, rng, self.noise_words)
                 for part in facts.split(f"'{question}'")]
        return fuse([f"'{noisy_q}'".join(parts)], noisy_q)

    # --- pieces -------------------------------------------------------------------------------
    def _is_known(self, prop: Property, info: ImageInfo) -> bool:
        return (prop.name, prop.key_of(info)) in self.train_keys

    def _rule_question(self, prop: Property, info: ImageInfo, value: str,
                       pick: tuple[str, str | None] | None = None,
                       yes_share: float = 0.5) -> tuple[str, str, tuple[str, ...], tuple[str, str | None]]:
        """A property question (answer: value) or a yes/no question about a value (about ``value`` itself
        with probability ``yes_share``), and its ``pick`` (template, value asked or None): passing it back
        asks the same question of another image."""
        if pick is None:
            if self.rng.random() >= self.cfg.yes_no:
                pick = (self.rng.choice(self.rule_questions[prop.name]), None)
            else:
                asked = (value if self.rng.random() < yes_share
                         else self.rng.choice([v for v in prop.values if v != value]))
                pick = (self.rng.choice(prop.yes_no), asked)
        template, asked = pick
        if asked is None:
            return format_question(template, info), value, prop.values, pick
        return format_question(template, info, asked), "yes" if asked == value else "no", YES_NO, pick

    def _entry(self, question: str, answer: str, image: ImageInfo) -> str:
        """An answer entry in the configured template (one naming ``{image}`` describes ``image``)."""
        return answer_entry(question, answer, image, self.cfg.answer_template)

    def _edit_facts(self, prop: Property, info: ImageInfo, value: str, mode: str, entry_q: str | None = None,
                    entry_image: ImageInfo | None = None) -> list[str]:
        """What an edit "``prop`` of ``info`` is ``value``" stores: answer entry and/or rationale sentences.
        ``entry_image``: the image the edit was made on, when not ``info`` (another image of its rule key)."""
        facts: list[str] = []
        if mode in ("answer", "both"):
            question = entry_q or format_question(self.rng.choice(self.rule_questions[prop.name]), info)
            facts.append(self._entry(question, value, entry_image or info))
        if mode in ("rationale", "both"):
            facts += self._rationale(prop, info, value)
        return facts

    def _any_edit(self, prop: Property, info: ImageInfo) -> list[str]:
        """The facts of an edit "``prop`` of ``info`` is <a random value>", stored as answer entry, rationale or
        both (0.3 / 0.3 / 0.4)."""
        mode = self.rng.choices(FACT_MODES, (0.3, 0.3, 0.4))[0]
        return self._edit_facts(prop, info, self.rng.choice(prop.values), mode)

    def _evidence(self, prop: Property, info: ImageInfo) -> str:
        """A train-worded evidence sentence about ``info``, in one of the forms for ``prop``'s key."""
        return evidence_sentence(prop, info, self.rng.randrange(len(EVIDENCE_FORMS[prop.keyed_by]["train"])))

    def _rationale(self, prop: Property, info: ImageInfo, value: str) -> list[str]:
        """A train-worded rationale; its rule sentence in one of ``prop``'s late-negation forms ("..., not
        {other}") with probability ``cfg.late_negation`` (no draw when 0: the stream stays the recipe's)."""
        late = self.cfg.late_negation > 0 and self.rng.random() < self.cfg.late_negation
        return rationale_sentences(prop, info, value, self.rng, rule_forms=prop.late_negation_forms if late else None)

    def _near(self, prop: Property, info: ImageInfo) -> ImageInfo | None:
        """An image whose ``prop`` rule is another train rule, preferably sharing colour or shape with ``info``."""
        key = prop.key_of(info)
        attr = self.rng.choice(("colour", "shape", None))
        for _ in range(50):
            other = self.rng.choice(self.images)
            if prop.key_of(other) == key or not self._is_known(prop, other):
                continue
            if attr is None or getattr(other, attr) == getattr(info, attr):
                return other
        return None

    def _sibling(self, prop: Property, info: ImageInfo) -> ImageInfo | None:
        """Another image under ``info``'s ``prop`` rule that looks different (the other colour of a shape
        rule, the other shape of a colour rule); None for a colour + shape rule."""
        if prop.keyed_by == "colour+shape":
            return None
        key = prop.key_of(info)
        for _ in range(50):
            other = self.rng.choice(self.images)
            if prop.key_of(other) == key and (other.colour, other.shape) != (info.colour, info.shape):
                return other
        return None

    def distractors(self, n: int, avoid: tuple[str, str] | None, allow_same_question: bool = False,
                    info: ImageInfo | None = None) -> list[str]:
        """``n`` facts about other train rules, other images, or other questions (random values).

        With ``info`` (the image asked about), some are near misses: rules of the asked property for
        keys sharing its colour or shape."""
        facts: list[str] = []
        while len(facts) < n:
            u = self.rng.random()
            if u < 0.2 and info is not None and avoid is not None:
                prop = PROPERTY_BY_NAME[avoid[0]]
                other = self._near(prop, info)
                if other is None:
                    continue
                facts.append(rule_sentence(prop, prop.key_of(other), self.rng.choice(prop.values),
                                           self.rng.randrange(len(prop.rule_forms))))
                continue
            prop = self.rng.choice(PROPERTIES)
            other = self.rng.choice(self.images)
            key = prop.key_of(other)
            if (prop.name, key) not in self.train_keys or (prop.name, key) == avoid:
                continue
            value = self.rng.choice(prop.values)
            if u < 0.45:
                facts.append(rule_sentence(prop, key, value, self.rng.randrange(len(prop.rule_forms))))
            elif u < 0.62:
                facts.append(self._evidence(prop, other))
            elif u < 0.7:
                facts.append(self.rng.choice(FILLER["train"] + tuple(ONLY_MATTERS["train"].values())))
            else:
                if avoid is not None and prop.name == avoid[0] and not allow_same_question:
                    continue
                template = self.rng.choice(self.rule_questions[prop.name] + prop.yes_no)
                answer = self.rng.choice(YES_NO) if template in prop.yes_no else value
                facts.append(self._entry(format_question(template, other, value), answer, other))
        return facts

    # --- kinds --------------------------------------------------------------------------------
    def _plain(self) -> Example:
        q = self.rng.choice(self.questions)
        return Example("plain", q.image, q.question, q.answer, tuple(answer_choices(q.answer)))

    def _plain_noisy(self) -> Example:
        own = self.cfg.plain_own_edit > 0 and self.rng.random() < self.cfg.plain_own_edit  # (no draw when off)
        evidence = (not own and self.cfg.plain_own_evidence > 0
                    and self.rng.random() < self.cfg.plain_own_evidence)
        q = self.rng.choice(self.described_questions if own or evidence else self.questions)
        facts = self.distractors(self.rng.randint(1, 5), None)
        if own:
            facts = facts[:self.rng.randint(0, 3)] + self._own_edit(self.image_info[q.image])
            self.rng.shuffle(facts)
        elif evidence:
            prop = self.rng.choice(PROPERTIES)  # (its key names the colour, the shape or both)
            sentence = self._evidence(prop, self.image_info[q.image])
            facts.insert(self.rng.randint(0, len(facts)), sentence)
        return Example("plain_noisy", q.image, fuse(facts, q.question), q.answer, tuple(answer_choices(q.answer)))

    def _own_edit(self, info: ImageInfo) -> list[str]:
        """The facts of an edit about a train rule of ``info``'s own key (random property, value and mode),
        or none when no property of it has a train rule."""
        props = [p for p in PROPERTIES if self._is_known(p, info)]
        if not props:
            return []
        return self._any_edit(self.rng.choice(props), info)

    def _describe(self) -> Example:
        """A caption ("A red circle."), mostly for METHOD.md §6's "Describe this image."."""
        info = self.rng.choice(self.images)
        prompt = DESCRIBE_PROMPT if self.rng.random() < 0.6 else self.rng.choice(CAPTION_PROMPTS["train"])
        return Example("describe", info.path, prompt, caption(info.colour, info.shape))

    def _verify(self) -> Example:
        """METHOD.md §6's check "Does the image show <evidence sentence>?" on true or altered evidence."""
        info = self.rng.choice(self.images)
        shown = info
        if self.rng.random() < 0.5:
            colour, shape = info.colour, info.shape
            while (colour, shape) == (info.colour, info.shape):
                colour = self.rng.choice(COLOURS) if self.rng.random() < 0.6 else info.colour
                shape = self.rng.choice(SHAPES) if self.rng.random() < 0.6 else info.shape
            shown = ImageInfo(info.split, info.image_id, colour, shape)
        keyed = self.rng.choice(("colour+shape", "colour+shape", "colour", "shape"))
        forms = EVIDENCE_FORMS[keyed]["train"]
        sentence = self.rng.choice(forms).format(colour=shown.colour, shape=shown.shape)
        truth = all(getattr(shown, a) == getattr(info, a) for a in ("colour", "shape") if a in keyed)
        return Example("verify", info.path, verify_prompt(sentence), "yes" if truth else "no", YES_NO)

    def _applies(self) -> Example:
        """An edit's rationale (evidence and rule sentences, some fillers) about this image's rule key or a
        near miss's (sharing the colour or the shape, another key), and whether it applies to the image:
        the comparison of a fact's colour and shape with the picture that a near miss needs."""
        prop, info = self.rng.choice(self.rule_images)
        about = info if self.rng.random() < 0.5 else self._near(prop, info) or info
        facts = self._rationale(prop, about, self.rng.choice(prop.values))
        applies = prop.key_of(about) == prop.key_of(info)
        return Example("applies", info.path, fuse(facts, self.rng.choice(APPLIES_PROMPTS["train"])),
                       "yes" if applies else "no", YES_NO)

    def _name(self) -> str:
        """A name to copy from the prompt, never to remember: a real English word ("Harbor"; 70 %) or 2-3
        made-up syllables ("Zubo"). Syllable names alone taught the model to *write* syllables ("fisiz")
        instead of copying the name it was given."""
        if self.rng.random() < self.cfg.caption_word_names:
            return self.rng.choice(self.name_words).capitalize()
        if self.cfg.letter_names:
            return letters_name(self.rng)
        return "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 3))).capitalize()

    def _caption_facts(self) -> Example:
        """A caption edit's facts (answer entry and/or its rationale) and a caption instruction."""
        info = self.rng.choice(self.images)
        name = self._name()
        suffix, rule = self.rng.choice(CAPTION_SUFFIXES)
        fill = naming(info, name)
        target = f"A {info.colour} {info.shape} {suffix.format(**fill)}."
        prompt = DESCRIBE_PROMPT if self.rng.random() < 0.5 else self.rng.choice(CAPTION_PROMPTS["train"])
        entry_prompt = prompt if self.easy or self.rng.random() < 0.5 else self.rng.choice(CAPTION_PROMPTS["train"])
        facts = [self._entry(entry_prompt, target, info)]
        if self.rng.random() < 0.5:
            facts += [evidence_sentence(PROPERTY_BY_NAME["tribe"], info, self.rng.randrange(6)), rule.format(**fill)]
        if not self.easy:
            facts += self.distractors(self.rng.randint(0, min(3, self.max_distractors)), None, info=None)
        self.rng.shuffle(facts)
        return Example("caption_facts", info.path, fuse(facts, prompt), target, copy=name)

    def _random_question(self) -> str:
        """A question of 3-6 random English words, each one token of the vocabulary ("Fling celtics orlando?"):
        what it asks can only be matched word for word, never read."""
        words = self.rng.sample(self.name_words, self.rng.randint(3, 6))
        return " ".join(words).capitalize() + "?"

    def _quote_copy(self) -> Example:
        """A question of random words about a train-rule image, answered by the answer entry that quotes it
        and describes this image (a random value of a property). Decoys, each half the time: an entry quoting
        another random question about this image, and (with an image-naming ``answer_template``) one quoting
        the same question about a near miss, both naming other values of the property. The quote and the
        image both decide, so what is learnt is matching the asked question word for word, which held-out
        wordings need (session 43: models copied an entry by what its question asks, and missed a wording
        or two each, differently per seed)."""
        prop, info = self.rng.choice(self.rule_images)
        question = self._random_question()
        value = self.rng.choice(prop.values)
        others = [v for v in prop.values if v != value]
        facts = [self._entry(question, value, info)]
        if self.rng.random() < 0.5:
            facts.append(self._entry(self._random_question(), self.rng.choice(others), info))
        if self.entries_name_image and self.rng.random() < 0.5:
            near = self._near(prop, info)
            if near is not None:
                facts.append(self._entry(question, self.rng.choice(others), near))
        facts += self.distractors(self.rng.randint(0, min(2, self.max_distractors)), (prop.name, prop.key_of(info)),
                                  info=info)
        self.rng.shuffle(facts)
        return Example("quote_copy", info.path, fuse(facts, question), value, prop.values)

    def _name_facts(self) -> Example:
        """A name (:meth:`_name`) stated for the asked image's colour and shape and the question asking for it;
        half the time the same relation names another for an image sharing the colour or the shape, so the
        image decides which name is copied."""
        info = self.rng.choice(self.images)
        sentence, question = self.rng.choice(NAME_RELATIONS)
        name = self._name()
        facts = [sentence.format(**naming(info, name))]
        if self.rng.random() < 0.5:
            attr = self.rng.choice(("colour", "shape"))
            near = [x for x in self.images if getattr(x, attr) == getattr(info, attr)
                    and (x.colour, x.shape) != (info.colour, info.shape)]
            other, decoy = self.rng.choice(near), self._name()
            if decoy != name:
                facts.append(sentence.format(**naming(other, decoy)))
        if not self.easy:
            facts += self.distractors(self.rng.randint(0, min(2, self.max_distractors)), None, info=None)
        self.rng.shuffle(facts)
        return Example("name_facts", info.path, fuse(facts, question), name, copy=name)

    def _trivia(self) -> Example:
        question, answer = self.rng.choice(TRIVIA)
        return Example("trivia", None, question, answer)

    def _known(self) -> Example:
        prop, info = self.rng.choice(self.rule_images)
        rule = self.world.rule_for(prop, info)
        value = rule.value
        if self.cfg.known_noise > 0 and self.rng.random() < self.cfg.known_noise:
            value = self.rng.choice(prop.values)  # unsure without a fact: answered at random
        question, answer, choices, _ = self._rule_question(prop, info, value, yes_share=self.cfg.known_yes)
        n = self.rng.randint(1, 5) if self.rng.random() < 0.5 else 0
        facts = self.distractors(n, (prop.name, rule.key), info=info)
        self.rng.shuffle(facts)
        return Example("known", info.path, fuse(facts, question), answer, choices)

    def _near_miss(self) -> Example:
        """A whole edit about a near miss (another key sharing colour or shape, or another property of
        this image) is in the prompt; the question is answered by the model's own knowledge."""
        prop, info = self.rng.choice(self.rule_images)
        rule = self.world.rule_for(prop, info)
        question, answer, choices, (template, asked) = self._rule_question(prop, info, rule.value)
        wrong = self.rng.choice([v for v in prop.values if v != rule.value])
        other_props = [p for p in PROPERTIES if p is not prop and self._is_known(p, info)]
        near = self._near(prop, info)
        if near is None and not other_props:
            return self._known()
        if near is not None and (not other_props or self.rng.random() < 1.0 - self.cfg.near_other_property):
            mode = "both" if self.rng.random() < 0.6 else "rationale"
            entry_q = None  # (None: the entry quotes a random question of its own)
            if (self.cfg.near_same_question > 0 and mode == "both" and asked is None
                    and self.rng.random() < self.cfg.near_same_question):
                entry_q = format_question(template, near)  # the near miss's edit asked the same question
            facts = self._edit_facts(prop, near, wrong, mode, entry_q)
        else:
            facts = self._any_edit(self.rng.choice(other_props), info)
        room = max(0, self.cfg.max_facts - len(facts))
        facts += self.distractors(min(room, self.rng.randint(0, 2)), (prop.name, rule.key), info=info)
        self.rng.shuffle(facts)
        return Example("near_miss", info.path, fuse(facts, question), answer, choices)

    def _facts(self) -> Example:
        prop, info = self.rng.choice(self.rule_images)
        key = prop.key_of(info)
        value = self.rng.choice(prop.values)  # counterfactual: the prompt decides, not memory
        question, answer, choices, pick = self._rule_question(prop, info, value)
        if answer == value and (self.easy or self.rng.random() < self.cfg.same_question):  # reliability case
            entry_q = question
        else:  # a paraphrase (T-Gen) or a yes/no question (R-Gen)
            entry_q = format_question(self.rng.choice(self.rule_questions[prop.name]), info)
        modes = self.cfg.easy_fact_modes if self.easy else self.cfg.fact_modes
        mode = self.rng.choices(list(modes), list(modes.values()))[0]
        made_on = None
        if mode == "both" and not self.easy and self.cfg.entry_sibling > 0 and self.rng.random() < self.cfg.entry_sibling:
            made_on = self._sibling(prop, info)
            if made_on is not None:  # the edit's own question, asked of its own image
                entry_q = format_question(self.rng.choice(self.rule_questions[prop.name]), made_on)
        relevant = self._edit_facts(prop, info, value, mode, entry_q, made_on)
        if (mode == "both" and entry_q == question and not self.easy and self.cfg.entry_over_rationale > 0
                and self.rng.random() < self.cfg.entry_over_rationale):  # the entry outweighs its rationale
            other = self.rng.choice([v for v in prop.values if v != value])
            relevant = relevant[:1] + self._rationale(prop, info, other)
        room = max(0, self.cfg.max_facts - len(relevant))
        n = min(room, self.rng.randint(0, self.max_distractors))
        facts = relevant + self.distractors(n, (prop.name, key), allow_same_question=(mode == "both"), info=info)
        if not self.easy and mode != "answer" and self.rng.random() < 0.15 and len(facts) < self.cfg.max_facts:
            near = self._near(prop, info)  # another edit of the same property, about a near miss
            if near is not None:
                facts += self._rationale(prop, near, self.rng.choice(prop.values))[:2]
        self.rng.shuffle(facts)
        if not self.easy and mode != "answer" and self.cfg.near_twin > 0 and self.rng.random() < self.cfg.near_twin:
            self._twin_of(prop, info, pick, facts)
        return Example("facts", info.path, fuse(facts, question), answer, choices)

    def _twin_of(self, prop: Property, info: ImageInfo, pick: tuple[str, str | None], facts: list[str]) -> None:
        """Queue the near-miss twin of a ``facts`` example: the same facts and question on an image sharing
        the colour or the shape but governed by another train rule, answered by that rule's value. Only
        the image tells the two apart, so following every fact no longer pays (recipe 3 followed an edit's
        facts on a near-miss image 40 % of the time). Not for answer entries alone: their question names
        no colour or shape, and following one is right."""
        near = self._near(prop, info)
        if near is None:
            return
        question, answer, choices, _ = self._rule_question(prop, near, self.world.rule_for(prop, near).value, pick)
        self._queued.append(Example("near_miss", near.path, fuse(facts, question), answer, choices))


def copy_eval_examples(world: RuleWorld, cfg: TrainConfig, n: int, seed: int = 0) -> list[Example]:
    """``n`` caption edits (``caption_facts``, as the full mix draws them, distractors included) on easy-vqa *test*
    images, each naming a fresh made-up name (letters, never an English word): the open-vocabulary copy a
    caption edit needs, which training logs (``copy_name``) and never selects on."""
    sampler = MixSampler(world, dataclasses.replace(cfg, caption_word_names=0.0, letter_names=True, easy_share=0.0,
                                                    mix={"caption_facts": 1.0}),
                         random.Random(f"copy-eval:{seed}"), image_split="test")
    sampler.easy, sampler.max_distractors = False, 2
    return [sampler.sample() for _ in range(n)]
