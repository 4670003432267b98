"""The language of ShapeRules: how evidence, rules and rationales are worded.

Every wording comes in three disjoint pools: ``"train"`` (what the embedded default model is trained on),
``"valid"`` (never trained on: the training run's checkpoint selection and restarts may read it, with
``TrainConfig.valid_wordings``) and ``"eval"`` (held out: edit splits and measurements only), so a measured
figure on ``eval`` wordings says how the model does on language it never saw and was not chosen on. Rationales vary in structure as a person
writes them: rule-first or evidence-first, one sentence ("This is a red circle, so it belongs to the
Kesh tribe.") or four to five sentences with sentences that do not matter, negations ("..., not
Vol") and punctuation (commas, semicolons, "!").

Property-specific templates (questions, rule forms) live with the properties in
:mod:`reasonedit_plugin.data.shaperules`; this module renders them.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .easyvqa import ImageInfo
    from .rule_properties import Property

POOLS = ("train", "valid", "eval")

EVIDENCE_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "colour+shape": {
        "train": ("The shape in the image is a {colour} {shape}.", "I can see a {colour} {shape} in the picture.",
                  "The picture shows a {colour} {shape}.", "This is a {colour} {shape}.",
                  "There is a {colour} {shape} here.", "The image contains one {colour} {shape}."),
        "valid": ("Here we see a {colour} {shape}.", "The drawing is of a {colour} {shape}."),
        "eval": ("What we have here is a {colour} {shape}.", "Looking at the image, it's a {colour} {shape}."),
    },
    "colour": {
        "train": ("The shape in the image is {colour}.", "The shape is coloured {colour}.",
                  "I can see a {colour} shape in the picture.", "Its colour is {colour}.",
                  "The shape here is {colour}."),
        "valid": ("This shape has been painted {colour}.", "The drawing uses {colour} for the shape."),
        "eval": ("The colour of this shape is {colour}.", "Looking at it, the shape is {colour}."),
    },
    "shape": {
        "train": ("The shape in the image is a {shape}.", "The picture shows a {shape}.",
                  "I can see a {shape} in the picture.", "This is a {shape}.", "The object here is a {shape}."),
        "valid": ("The drawing is of a {shape}.", "Here we see a {shape}."),
        "eval": ("What the image shows is a {shape}.", "Looking at it, the object is a {shape}."),
    },
}
"""Visual evidence, by what a property's rule is keyed by."""

SPLIT_EVIDENCE = {
    "train": ("The shape in the image is {colour}.", "It is a {shape}."),
    "valid": ("The paint used is {colour}.", "Its outline is that of a {shape}."),
    "eval": ("Its colour is clearly {colour}.", "As for the form, it's a {shape}."),
}
"""Colour and shape stated in two sentences (for rules keyed by both)."""

ONLY_MATTERS = {
    "train": {"colour": "Only the colour matters for this rule.", "shape": "Only the shape matters for this rule.",
              "colour+shape": "Both the colour and the shape matter here."},
    "valid": {"colour": "The colour settles it, whatever the outline.",
              "shape": "The outline settles it, whatever the paint.",
              "colour+shape": "It takes the colour and the outline together."},
    "eval": {"colour": "The form of the shape is irrelevant; colour decides.",
             "shape": "Colour plays no part, only the form does.",
             "colour+shape": "You need both its colour and its form for this."},
}

CONNECTORS = {"train": (", and ", "; ", ", so "), "valid": (", therefore ", ", hence "),
              "eval": (" - and ", ", which means ")}
"""Joins evidence and rule into one sentence ("This is a red circle, so red circles ...")."""

FILLER = {
    "train": ("The background is white.", "Shapes like this are easy to draw.",
              "Rules like these were agreed long ago.", "Nothing else is in the picture.",
              "The image is small.", "Colours and shapes can be combined freely."),
    "valid": ("The lines are sharp and clean.", "This was written down by a teacher."),
    "eval": ("The picture was drawn on a computer.", "Everyone in the rule world knows this."),
}
"""Sentences of a long rationale that carry no information."""

CAPTION_PROMPTS = {
    "train": ("Describe this image.", "What is in this picture?", "Caption this image.",
              "Describe the picture in a few words."),
    "valid": ("Say what you see here.", "Write a caption for this drawing."),
    "eval": ("What does this image show?", "Give a short caption for the picture."),
}
DESCRIBE_PROMPT = "Describe this image."
"""METHOD.md §6 scores rationale sentences under this prompt; the model answers it with a caption."""
CAPTION_TRIBES = ("Sio", "Kem", "Sar", "Tor", "Lun", "Pez", "Rua", "Dov", "Mik", "Hes", "Bal", "Quo")
"""Made-up names the generated caption edits (``reasonedit caption --generate``) attach to a colour + shape;
only the rationale says which. Training never uses them as caption names, and none is a value of the rule world
(until session 49 the first was "Vol", a tribe of the rule world that models write by default: it was held by
models that copied no other name, so it measured no copying). "Sio", like "Rua" and "Quo", pairs two vowels, which
``mix_text.letters_name`` never draws: replacing "Vol" left the training draws as they were."""
RETIRED_CAPTION_TRIBES = ("Vol",)
"""Former caption names, still never drawn as training names, so that training draws stay those of the
shipped command (``mix_text.letters_name``)."""


def caption(colour: str, shape: str) -> str:
    """The caption the default model gives an easy-vqa image ("A red circle.")."""
    return f"A {colour} {shape}."


APPLIES_PROMPTS = {
    "train": ("Do these facts apply to the shape in the image?", "Is this shape the one the rule is about?",
              "Does that rule cover the shape shown here?", "Are the facts above about this shape?"),
    "valid": ("Is the drawing here what those sentences describe?", "Does this shape match the rule given?"),
    "eval": ("Is what was just said true of the pictured shape?", "Do those statements fit this picture?"),
}
"""Wordings of the ``applies`` check (:mod:`.training_mix`): is an edit's rationale about the image's colour
and shape? Training asks the train ones; ``examples/measure_default_model.py`` the eval ones."""


def verify_prompt(sentence: str) -> str:
    """METHOD.md §6's patch check: "Does the image show <s lower-cased, '.' -> '?'>"."""
    body = sentence.strip()
    body = body[:1].lower() + body[1:]
    return "Does the image show " + (body[:-1] if body.endswith((".", "!")) else body) + "?"


def _check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ValueError(f"wording pool must be one of {POOLS}, got {pool!r}.")


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def decap(text: str) -> str:
    """Lower-case the first letter unless the sentence starts with a name ("The Kesh ..." stays)."""
    return text[:1].lower() + text[1:]


def other_value(prop: "Property", value: str) -> str:
    """A deterministic wrong value for negated rule forms ("..., not Vol")."""
    return prop.values[(prop.values.index(value) + 1) % len(prop.values)]


def rule_sentence(prop: "Property", key: str, value: str, form: int = 0, pool: str = "train",
                  forms: Sequence[str] | None = None) -> str:
    """The rule "<key> has <value>" in rule form ``form`` of ``pool`` (negated forms name another value), or of
    ``forms`` when given."""
    _check_pool(pool)
    forms = forms or prop.wordings("rule", pool)
    template = forms[form % len(forms)]
    subject, single = prop.subject(key), prop.single(key)
    text = template.format(Subject=cap(subject), subject=subject, single=single, value=value,
                           other=other_value(prop, value))
    return cap(text)


def evidence_sentence(prop: "Property", info: "ImageInfo", form: int = 0, pool: str = "train") -> str:
    _check_pool(pool)
    forms = EVIDENCE_FORMS[prop.keyed_by][pool]
    return forms[form % len(forms)].format(colour=info.colour, shape=info.shape)


RATIONALE_STYLES = ("rule", "evidence-first", "rule-first", "one-sentence", "long")
STYLE_WEIGHTS = (0.1, 0.25, 0.15, 0.15, 0.35)


def rationale_sentences(prop: "Property", info: "ImageInfo", value: str, rng: random.Random,
                        pool: str = "train", style: str | None = None,
                        rule_forms: Sequence[str] | None = None) -> list[str]:
    """A human-style rationale for "``prop`` of this image is ``value``", as a list of sentences.

    Styles (drawn with :data:`STYLE_WEIGHTS` unless given): the rule alone; evidence then rule; rule
    then evidence; evidence and rule joined into one sentence; or four to five sentences (evidence,
    possibly split into colour and shape, the rule, what matters for it, and sentences that do not matter).
    ``rule_forms``: the rule sentence's templates instead of ``pool``'s.
    """
    _check_pool(pool)
    style = style or rng.choices(RATIONALE_STYLES, STYLE_WEIGHTS)[0]
    if style not in RATIONALE_STYLES:
        raise ValueError(f"rationale style must be one of {RATIONALE_STYLES}, got {style!r}.")
    forms = rule_forms or prop.wordings("rule", pool)
    rule = rule_sentence(prop, prop.key_of(info), value, rng.randrange(len(forms)), pool, forms)
    evidence = evidence_sentence(prop, info, rng.randrange(len(EVIDENCE_FORMS[prop.keyed_by][pool])), pool)
    if style == "rule":
        return [rule]
    if style == "evidence-first":
        return [evidence, rule]
    if style == "rule-first":
        return [rule, evidence]
    if style == "one-sentence":
        connector = rng.choice(CONNECTORS[pool])
        return [evidence[:-1] + connector + decap(rule)]
    # long: 4-5 sentences
    if prop.keyed_by == "colour+shape" and rng.random() < 0.5:
        seen = [s.format(colour=info.colour, shape=info.shape) for s in SPLIT_EVIDENCE[pool]]
    else:
        seen = [evidence]
    body = seen + [rule] if rng.random() < 0.7 else [rule] + seen
    extra = [ONLY_MATTERS[pool][prop.keyed_by]] + rng.sample(FILLER[pool], 2)
    rng.shuffle(extra)
    out = body + extra[: max(0, rng.choice((4, 5)) - len(body))]
    # keep the reasoning in order, fillers anywhere
    fillers = [s for s in out if s not in body]
    for s in fillers:
        out.remove(s)
        out.insert(rng.randrange(len(out) + 1), s)
    return out


def all_wordings(pool: str, properties: Sequence["Property"]) -> set[str]:
    """Every template of ``pool`` (for disjointness checks)."""
    _check_pool(pool)
    out: set[str] = set()
    for prop in properties:
        for kind in ("question", "rephrase", "yes_no", "rule"):
            out.update(prop.wordings(kind, pool))
        if pool == "train":
            out.update(prop.late_negation_forms, prop.extra_questions)
    for forms in EVIDENCE_FORMS.values():
        out.update(forms[pool])
    out.update(SPLIT_EVIDENCE[pool], ONLY_MATTERS[pool].values(), FILLER[pool], CAPTION_PROMPTS[pool])
    return out
