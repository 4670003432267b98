"""A hand-written held-out edit set for the sequential benchmark (issue 11): the ShapeRules world's held-out
rules, asked and explained in wordings written here by hand, none of them the generator's templates
(``reasonedit_plugin/data/shaperules.py``), with hard locality probes.

    python benchmarks/make_heldout_set.py             # writes benchmarks/data/heldout_handwritten.jsonl
    python benchmarks/make_heldout_set.py --set tune  # writes benchmarks/data/tune_handwritten.jsonl

Two sets, each with its own hand-written wordings (disjoint from each other and from the generator's):
``heldout`` is what ``bench_sequential.py`` reports on; ``tune`` (written later, session 6) is where gate
settings that must survive human wording are chosen (``benchmarks/calibrate.py --edits``), so the
held-out set stays unseen while choosing.

Only the images are picked by program (seeded, from the easy-vqa test images the project already uses);
every question, rephrase, rationale and yes/no wording is in the tables below. The gate was tuned on the
generator's ``calib`` split only; this set was not looked at while tuning.

Hard locality probes rotate over three kinds (``meta.hard_locality``):
* ``shares_colour`` — the edit's own question wording on an image of the same colour and another shape,
  whose answer is a rule the model knows (a train rule);
* ``shares_shape``  — the same, on an image of the same shape and another colour;
* ``other_property`` — a question about another property of the edited image itself (a known rule of
  another property, or, where none is known, a plain easy-vqa question about that image).
For colour-keyed rules an image sharing the colour is a *generality* probe, not a locality one (and the
same for shape-keyed rules and shape), so those kinds are skipped for them.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasonedit_plugin.data import shaperules as sr  # noqa: E402

OUT = ROOT / "benchmarks" / "data" / "heldout_handwritten.jsonl"
TUNE_OUT = ROOT / "benchmarks" / "data" / "tune_handwritten.jsonl"
N = 40
SEED = "issue-11-heldout"

QUESTIONS = {
    "tribe": ["Tell me the tribe that this shape belongs to.", "Whose tribe is the pictured shape part of?",
              "Name the tribe of the shape shown here.", "To which tribe does the shape in this photo belong?"],
    "element": ["Name the element this shape represents.", "What element goes with the shape shown?",
                "Which element is tied to the shape in this photo?"],
    "points": ["What score does this shape give you?", "How much is the pictured shape worth, in points?",
               "Tell me the point value of this shape."],
    "island": ["Name the home island of the shape shown.", "On which island did this shape originate?",
               "Where does this shape come from, which island?"],
}
REPHRASES = {
    "tribe": ["Which tribe is the owner of the shape in this picture?", "The shape here is owned by what tribe?",
              "Who owns this shape, which of the tribes?"],
    "element": ["The shape in this photo represents which element?", "Tell me the element of this shape.",
                "What is the element of the figure shown?"],
    "points": ["What is the point value of the pictured shape?", "If you get this shape, how many points is it?",
               "Count the points this figure earns."],
    "island": ["What is this figure's home island?", "From what island is the shape shown?",
               "The shape here originated on which island?"],
}
YES_NO = {
    "tribe": ["Is the {value} tribe the owner of this shape?", "Would you say {value} owns the shape here?"],
    "element": ["Does this shape represent {value}?", "Is {value} the element tied to this figure?"],
    "points": ["Would this shape earn {value} points?", "Is the point value of this figure {value}?"],
    "island": ["Is {value} the home island of this shape?", "Did this shape originate on {value}?"],
}
EVIDENCE = {
    "colour+shape": ["What we have here is a {colour} {shape}.", "The figure is a {shape}, and it is {colour}."],
    "colour": ["Its colour is {colour}.", "The figure is painted {colour}."],
    "shape": ["The figure is a {shape}.", "What we have here is a {shape}."],
}
RULES = {
    "tribe": ["The {value} tribe claims every {key}.", "Any {key} is property of the {value} tribe."],
    "element": ["Anything coloured {key} represents {value}.", "The {key} figures are tied to {value}."],
    "points": ["A {key} earns {value} points.", "You get {value} points for any {key}."],
    "island": ["Every {key} originates on {value}.", "The home island of any {key} is {value}."],
}

TUNE = {
    "questions": {
        "tribe": ["Which tribe would claim this figure?", "What tribe is this shape a member of?",
                  "This figure is a member of what tribe?"],
        "element": ["What element does the figure in the picture correspond to?",
                    "Say which element this figure is linked with.", "The element of the shape pictured is?"],
        "points": ["How many points would I score for this figure?", "What's the point total for this shape?",
                   "Give the number of points this figure is worth."],
        "island": ["Which island is home to this figure?", "What island did the pictured figure come from?",
                   "Tell me which island this shape hails from."],
    },
    "rephrases": {  # the first of each is close to a question template; the others as people type
        "tribe": ["Which tribe does the figure in the image belong to?", "Any idea which tribe this thing is part of?",
                  "Tribe?", "If you had to name its tribe, what would you say?"],
        "element": ["Which element is this figure connected to?", "Which of the four elements matches it?",
                    "Element of this one, please."],
        "points": ["What number of points is this figure worth?", "Score for this one?",
                   "How much does it count for?"],
        "island": ["What's the island of origin of this figure?", "Home island?", "What place does it hail from?"],
    },
    "yes_no": {
        "tribe": ["Is this figure a member of the {value} tribe?", "Does the {value} tribe claim the figure here?"],
        "element": ["Is the pictured figure linked with {value}?", "Would you connect this shape to {value}?"],
        "points": ["Does this figure score {value} points?", "Are {value} points what this shape is worth?"],
        "island": ["Is this figure from {value}?", "Does the pictured shape hail from {value}?"],
    },
    "evidence": {
        "colour+shape": ["The picture has one {colour} {shape} in it.", "It is a {shape} drawn in {colour}."],
        "colour": ["The figure here is {colour}.", "This one is drawn in {colour}."],
        "shape": ["The figure here is a {shape}.", "This one is shaped like a {shape}."],
    },
    "rules": {
        "tribe": ["Every {key} is a member of the {value} tribe.", "{value} tribe members are always {key}s."],
        "element": ["Figures drawn in {key} are linked with {value}.", "{key} means {value}."],
        "points": ["Each {key} scores {value} points.", "Score {value} points for a {key}."],
        "island": ["{key}s all hail from {value}.", "A {key} comes from the island of {value}."],
    },
}
"""The tuning set's wordings (hand-written in session 6; none is the generator's or the held-out set's)."""
HELDOUT = {"questions": QUESTIONS, "rephrases": REPHRASES, "yes_no": YES_NO, "evidence": EVIDENCE, "rules": RULES}
SETS = {"heldout": (HELDOUT, SEED, "heldout", OUT), "tune": (TUNE, "issue-11-tune", "tune", TUNE_OUT)}


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=sorted(SETS), default="heldout")
    args = ap.parse_args(argv)
    tables, seed, prefix, out = SETS[args.set]
    records = build(tables, seed, prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    print(f"wrote {len(records)} records to {out}")


def build(tables: dict, seed: str, prefix: str) -> list[dict]:
    """``N`` records on the world's held-out rules in the wordings of ``tables`` (images seeded by ``seed``)."""
    questions, rephrases, yes_no = tables["questions"], tables["rephrases"], tables["yes_no"]
    world = sr.rule_world()
    rng = random.Random(seed)
    images = list(sr.image_catalogue("test"))
    plain: dict[int, list[sr.PlainQuestion]] = {}
    for q in sr.plain_questions("test"):
        plain.setdefault(q.image_id, []).append(q)
    held = sorted(world.held_out_rules, key=lambda r: (r.prop, r.key))
    train = {(r.prop, r.key): r for r in world.train_rules}
    kinds = ["shares_colour", "shares_shape", "other_property"]
    records = []
    for i in range(N):
        rule = held[i % len(held)]
        prop = sr.PROPERTY_BY_NAME[rule.prop]
        pool = [x for x in images if prop.key_of(x) == rule.key]
        info = rng.choice(pool)
        question = questions[prop.name][(i // len(held)) % len(questions[prop.name])]
        rephrase = rephrases[prop.name][i % len(rephrases[prop.name])]
        others = [x for x in pool if x != info]
        if prop.keyed_by == "colour":  # generality across shapes: prefer another shape
            others = [x for x in others if x.shape != info.shape] or others
        image_rephrase = rng.choice(others)
        evidence = tables["evidence"][prop.keyed_by][i % 2].format(colour=info.colour, shape=info.shape)
        key_words = rule.key if prop.keyed_by != "colour" else rule.key
        rule_text = tables["rules"][prop.name][(i // 2) % 2].format(value=rule.value, key=key_words)
        rule_text = rule_text[:1].upper() + rule_text[1:]
        yes = rng.random() < 0.5
        asked = rule.value if yes else rng.choice([v for v in prop.values if v != rule.value])
        rgen = yes_no[prop.name][i % 2].format(value=asked)

        trivia_q, trivia_a = sr.TRIVIA[i % len(sr.TRIVIA)]  # text-only: what the model knows without an image
        far = [x for x in images if x.colour != info.colour and x.shape != info.shape]
        loc_info = rng.choice(far)
        loc_q = rng.choice(plain[loc_info.image_id])

        hard = None
        kind_order = kinds[i % 3:] + kinds[:i % 3]
        for kind in kind_order:
            hard = _hard(kind, prop, info, question, world, train, images, plain, rng, questions)
            if hard is not None:
                break
        assert hard is not None, (rule, info)
        records.append({
            "id": f"{prefix}-{i:03d}",
            "image": info.path,
            "prompt": question,
            "target": rule.value,
            "rationale": f"{evidence} {rule_text}",
            "choices": list(prop.values),
            "rephrase_prompt": rephrase,
            "image_rephrase": image_rephrase.path,
            "rgen_prompt": rgen,
            "rgen_target": "yes" if yes else "no",
            "rgen_choices": ["yes", "no"],
            "locality_prompt": trivia_q,
            "locality_ground_truth": trivia_a,
            "multimodal_locality_image": loc_info.path,
            "multimodal_locality_prompt": loc_q.question,
            "multimodal_locality_ground_truth": loc_q.answer,
            "multimodal_locality_choices": sr.answer_choices(loc_q.answer),
            "hard_locality_image": hard["image"],
            "hard_locality_prompt": hard["prompt"],
            "hard_locality_ground_truth": hard["answer"],
            "hard_locality_choices": hard["choices"],
            "meta": {"source": f"handwritten-{prefix}", "property": prop.name, "key": rule.key,
                     "hard_locality": hard["kind"]},
        })
    return records


def _hard(kind, prop, info, question, world, train, images, plain, rng, questions):
    if kind in ("shares_colour", "shares_shape"):
        if (kind == "shares_colour" and prop.keyed_by == "colour") or \
                (kind == "shares_shape" and prop.keyed_by == "shape"):
            return None
        same = "colour" if kind == "shares_colour" else "shape"
        cands = [x for x in images if getattr(x, same) == getattr(info, same)
                 and (x.shape if same == "colour" else x.colour) != (info.shape if same == "colour" else info.colour)
                 and (prop.name, prop.key_of(x)) in train]
        if not cands:
            return None
        x = rng.choice(cands)
        return {"kind": kind, "image": x.path, "prompt": question,
                "answer": train[(prop.name, prop.key_of(x))].value, "choices": list(prop.values)}
    # another property of the edited image: a known rule of another property, else a plain question
    for other in sorted(sr.PROPERTIES, key=lambda p: (p.name == prop.name, rng.random())):
        if other.name != prop.name and (other.name, other.key_of(info)) in train:
            return {"kind": kind, "image": info.path, "prompt": questions[other.name][0],
                    "answer": train[(other.name, other.key_of(info))].value, "choices": list(other.values)}
    q = rng.choice(plain[info.image_id])
    return {"kind": kind, "image": info.path, "prompt": q.question, "answer": q.answer,
            "choices": sr.answer_choices(q.answer)}


if __name__ == "__main__":
    main()
