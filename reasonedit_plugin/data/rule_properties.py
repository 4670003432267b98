"""The made-up properties of the ShapeRules world and how each is worded (data: one :class:`Property` row each).

Which key has which value is :mod:`.shaperules`' rule world; this module holds what a property is (what it
is keyed by, its values) and its question, rephrase, yes/no and rule templates in the three wording pools of
:mod:`.language`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .easyvqa import COLOURS, SHAPES, ImageInfo
from .language import POOLS

WORDING_KINDS = ("question", "rephrase", "yes_no", "rule")


@dataclass(frozen=True)
class Property:
    """A made-up property tied to what the image shows (``keyed_by``), with a small closed value set.

    Templates may use ``{colour}`` / ``{shape}`` (what the image shows), ``{subject}`` (plural key
    phrase, "red circles"), ``{single}`` (singular key phrase, "red circle"), ``{value}`` and
    ``{other}`` (another value, for negated rules). Each kind of wording has a *train* pool (the
    default model is trained on it), a disjoint *valid* pool (the training run's checkpoint selection
    only, :mod:`.language`) and a disjoint *eval* pool (edit splits and measurements only); valid and eval
    questions are split further into prompt wordings and rephrase wordings, so a record's rephrase is
    never another record's prompt.
    """

    name: str
    keyed_by: str
    values: tuple[str, ...]
    questions: tuple[str, ...]
    rule_forms: tuple[str, ...]
    yes_no: tuple[str, ...]
    eval_questions: tuple[str, ...] = ()
    eval_rephrases: tuple[str, ...] = ()
    eval_yes_no: tuple[str, ...] = ()
    eval_rule_forms: tuple[str, ...] = ()
    valid_questions: tuple[str, ...] = ()
    valid_rephrases: tuple[str, ...] = ()
    valid_yes_no: tuple[str, ...] = ()
    valid_rule_forms: tuple[str, ...] = ()
    late_negation_forms: tuple[str, ...] = ()
    """Train-pool negated rule forms naming the wrong value *after* the right one ("..., not {other}"), where
    the other train forms of three properties name it first ("do not belong to {other}; they belong to
    {value}"): a model taught only those takes the last value named. Used only as ``TrainConfig.late_negation``
    asks (off in the shipped recipe), so they are not in :meth:`wordings`' train pool."""
    extra_questions: tuple[str, ...] = ()
    """More train-pool question frames (imperatives, a fronted "In this image, ...", other verbs), used only as
    ``TrainConfig.wide_questions`` asks (off in the shipped recipe), so they are not in :meth:`wordings`' train
    pool either. Written after held-out question frames were misread wording by wording (docs/RESULTS.md,
    session 30), mostly in words the train pool already uses; none of the eval pool's own phrases ("point value",
    "claims", "tied to", "represent", "originate", "native") is among them."""

    def wordings(self, kind: str, pool: str = "train") -> tuple[str, ...]:
        """Templates of ``kind`` (question | rephrase | yes_no | rule) from ``pool`` (train | valid | eval)."""
        if kind not in WORDING_KINDS or pool not in POOLS:
            raise ValueError(f"wordings({kind!r}, {pool!r}): kind must be one of {WORDING_KINDS}, pool one of {POOLS}.")
        if pool == "train":
            return {"question": self.questions, "rephrase": self.questions, "yes_no": self.yes_no,
                    "rule": self.rule_forms}[kind]
        return getattr(self, f"{pool}_" + {"question": "questions", "rephrase": "rephrases", "yes_no": "yes_no",
                                       "rule": "rule_forms"}[kind])

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
                   "What tribe is this {shape} from?", "Which tribe owns the {colour} shape in the image?",
                   "Which tribe is the owner of this shape?", "Tell me which tribe this {colour} {shape} belongs to.",
                   "This shape belongs to which tribe?", "To which tribe does the shape in the picture belong?"),
        rule_forms=("{Subject} belong to the {value} tribe.", "The {value} tribe owns all {subject}.",
                    "Every {single} is owned by the {value} tribe.", "{Subject} are always members of the {value} tribe.",
                    "{Subject} do not belong to the {other} tribe; they belong to the {value} tribe.",
                    "If a shape is a {single}, it belongs to the {value} tribe!"),
        yes_no=("Does this shape belong to the {value} tribe?", "Is this {shape} owned by the {value} tribe?",
                "Is this shape a member of the {value} tribe?", "Does the {value} tribe own this {colour} shape?",
                "Is this shape from the {value} tribe?"),
        eval_questions=("This shape is part of which tribe?", "Which tribe claims the shape shown here?",
                        "What tribe does the {colour} {shape} in this image belong to?"),
        eval_rephrases=("Name the tribe that owns this shape.", "Which tribe is this {shape} a member of?",
                        "Can you tell me the tribe of this shape?"),
        eval_yes_no=("Is the shape in the image part of the {value} tribe?", "Would the {value} tribe claim this {shape}?",
                     "Is this {colour} shape one of the {value} tribe's?"),
        eval_rule_forms=("Any {single} you see is a member of the {value} tribe.",
                         "{Subject}, without exception, are {value} tribe property.",
                         "No {single} belongs to the {other} tribe: the {value} tribe owns them all."),
        valid_questions=("Whose tribe is this shape in?", "The {colour} {shape} here counts as which tribe's?"),
        valid_rephrases=("Say which tribe has this shape.", "Which tribe would list this {shape} as theirs?"),
        valid_yes_no=("Is the {value} tribe the owner of the shape pictured?", "Does this {shape} count as {value}?"),
        valid_rule_forms=("The {value} tribe holds every {single} there is.",
                          "{Subject} are counted as {value}, never as {other}."),
        late_negation_forms=("{Subject} belong to the {value} tribe, not to the {other} tribe.",
                             "The {value} tribe owns every {single}; the {other} tribe owns none."),
        extra_questions=("Give the tribe of this shape.", "In this image, which tribe has the {shape}?",
                         "Which tribe is this {colour} {shape} in?", "The shape here is owned by which tribe?",
                         "What is the tribe of the {colour} shape?", "Do you know which tribe owns this {shape}?"),
    ),
    Property(
        name="element", keyed_by="colour", values=("fire", "water", "stone", "wind"),
        questions=("Which element does this shape stand for?", "What element is this shape linked to?",
                   "Which element does this {shape} stand for?", "What is the element of this shape?",
                   "Which element goes with the {colour} shape here?", "This shape stands for which element?",
                   "Tell me the element of this {shape}."),
        rule_forms=("{Subject} stand for {value}.", "The element of {subject} is {value}.",
                    "Every {single} stands for {value}.", "{Subject} are linked to {value}, not to {other}.",
                    "A {single} always stands for {value}."),
        yes_no=("Does this shape stand for {value}?", "Is {value} the element of this {shape}?",
                "Is this shape linked to {value}?", "Does the {colour} shape stand for {value}?"),
        eval_questions=("Which element is tied to the shape in this picture?",
                        "What element does the {colour} {shape} represent?"),
        eval_rephrases=("Name the element this shape stands for.", "Which of the elements belongs to this {shape}?"),
        eval_yes_no=("Is this shape tied to the element {value}?", "Does the {shape} in the picture represent {value}?"),
        eval_rule_forms=("Whatever its form, a {single} represents {value}.",
                         "{Subject} do not stand for {other}; their element is {value}."),
        valid_questions=("The shape pictured is connected with what element?", "Which element fits the {colour} {shape}?"),
        valid_rephrases=("Say which element this shape is connected with.", "What element would this {shape} symbolise?"),
        valid_yes_no=("Would this shape symbolise {value}?", "Is the {shape} here connected with {value}?"),
        valid_rule_forms=("The element that {subject} symbolise is {value}.",
                          "{value} is what any {single} is connected with, and {other} is not."),
        late_negation_forms=("{Subject} stand for {value}, not for {other}.",
                             "Every {single} stands for {value} and never for {other}."),
        extra_questions=("Give the element of this shape.",
                         "In this image, what element does the {shape} stand for?",
                         "The {colour} shape here is linked to which element?", "What element goes with this {shape}?",
                         "Which element is this {colour} shape linked to?", "Do you know the element of this shape?"),
    ),
    Property(
        name="points", keyed_by="colour+shape", values=("two", "five", "seven", "nine"),
        questions=("How many points is this shape worth?", "What is this shape worth in points?",
                   "How many points does this {shape} score?", "What score does this shape give?",
                   "How many points would this {colour} {shape} earn?", "Tell me how many points this shape is worth.",
                   "This shape is worth how many points?"),
        rule_forms=("{Subject} are worth {value} points.", "Each {single} scores {value} points.",
                    "A {single} is worth {value} points.", "{Subject} never score {other} points; they score {value}.",
                    "You get {value} points for every {single}."),
        yes_no=("Is this shape worth {value} points?", "Does this {shape} score {value} points?",
                "Would this shape earn {value} points?", "Is the {colour} shape worth {value} points?"),
        eval_questions=("What is the point value of the shape shown?", "How many points do you get for this {colour} shape?"),
        eval_rephrases=("How much is this {shape} worth, in points?", "Count the points this shape scores."),
        eval_yes_no=("Do you get {value} points for this shape?", "Is the point value of this {shape} {value}?"),
        eval_rule_forms=("The point value of {subject} is {value}.", "Count {value} points for any {single}, not {other}."),
        valid_questions=("What number of points goes with the shape pictured?", "How high does the {colour} {shape} score?"),
        valid_rephrases=("Say how many points this shape earns.", "For this {shape}, how many points are given?"),
        valid_yes_no=("Are {value} points given for this shape?", "Does the {shape} pictured earn {value} points?"),
        valid_rule_forms=("Every {single} earns a score of {value}.",
                          "The score for {subject} is {value} points and not {other}."),
        late_negation_forms=("{Subject} score {value} points, not {other}.",
                             "A {single} is worth {value} points and never {other}."),
        extra_questions=("Give the number of points this shape is worth.",
                         "In this image, how many points is the {shape} worth?",
                         "What is the score of this {colour} {shape}?", "How many points does the shape here score?",
                         "What are the points for this shape?", "Do you know how many points this {shape} earns?"),
    ),
    Property(
        name="island", keyed_by="shape", values=("Arun", "Bexa", "Corra", "Dolo"),
        questions=("Which island does this shape come from?", "What island is this shape from?",
                   "From which island does this {colour} shape come?", "Which island is the home of this shape?",
                   "Tell me the island this {shape} comes from.", "This shape comes from which island?"),
        rule_forms=("{Subject} come from the island of {value}.", "All {subject} come from {value}.",
                    "Every {single} comes from the island of {value}.",
                    "{Subject} are not from {other}; they come from {value}.",
                    "The home of all {subject} is the island of {value}."),
        yes_no=("Does this shape come from {value}?", "Is this {colour} shape from the island of {value}?",
                "Is {value} the island this shape comes from?", "Was this {shape} made on {value}?"),
        eval_questions=("On which island did this shape originate?", "What is the home island of this {shape}?"),
        eval_rephrases=("Name the island this shape is from.", "Which island is this {colour} shape native to?"),
        eval_yes_no=("Is this shape native to {value}?", "Did the {shape} in the image come from the island of {value}?"),
        eval_rule_forms=("{Subject} originate on {value}.",
                         "Each {single} was made on the island of {value}, not on {other}."),
        valid_questions=("Where, by island, was this shape found?", "Which island gave us the {colour} {shape}?"),
        valid_rephrases=("Say the island where this shape was found.", "The {shape} pictured was found on what island?"),
        valid_yes_no=("Was the shape pictured found on {value}?", "Is this {shape} from the {value} island?"),
        valid_rule_forms=("{Subject} were all found on {value}.",
                          "Any {single} was found on {value} and never on {other}."),
        late_negation_forms=("{Subject} come from {value}, not from {other}.",
                             "Every {single} comes from the island of {value} and never from {other}."),
        extra_questions=("Give the island this shape comes from.",
                         "In this image, which island does the {shape} come from?",
                         "What is the island of this {colour} shape?", "The shape here comes from which island?",
                         "Where does this {shape} come from, which island?",
                         "Do you know which island this shape is from?"),
    ),
)
PROPERTY_BY_NAME = {p.name: p for p in PROPERTIES}
