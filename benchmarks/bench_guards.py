"""Detection and false-positive rates of the rationale guard (guards.py).

    python benchmarks/bench_guards.py            # FakeVLM (colour thumbnails) + the packaged MiniLM encoder

Sets:
* bad / injection      crafted instruction-like rationales (benchmarks/data/guard_rationales.jsonl, set=injection)
* bad / contradiction  generated: an edit is committed, then one that gives the same question another answer,
                       restates its rule with another value, or negates it (same or a near-identical image)
* bad / visual         rationales whose visual claim (the colour) the model rejects (FakeVLM.yes_probability)
* good / shaperules    the shipped ShapeRules split, checked one by one *while being committed* (so later edits
                       are also checked for contradictions against earlier ones)
* good / crafted       legitimate rationales with hard negatives ("always", "must", "answer", "AI", quotes),
                       checked against the codebook holding the ShapeRules edits (injection + contradiction only:
                       they describe other pictures than the random image they are put on)

A bad item is detected when the guard raises a flag of its kind; a good item is a false positive when the
guard raises any flag.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fakes import FakeVLM, pattern  # noqa: E402
from reasonedit_plugin.config import ReasonEditConfig  # noqa: E402
from reasonedit_plugin.editor import ReasonEditor  # noqa: E402
from reasonedit_plugin.records import load_image, make_record  # noqa: E402

DATA = Path(__file__).parent / "data" / "guard_rationales.jsonl"
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
TRIBES = ["Vol", "Kem", "Zib", "Tor"]


def noisy(colour: tuple[int, int, int], seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None] + rng.integers(-6, 7, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def rec(rid: str, image, rationale, prompt="Which tribe owns this shape?", target="Vol"):
    return make_record({"id": rid, "image": image, "prompt": prompt, "target": target, "rationale": rationale})


def contradiction_cases():
    """(seed record, conflicting record) pairs."""
    cases = []
    questions = ["Which tribe owns this shape?", "What is the element of this shape?", "How many points is it worth?"]
    values = [["Vol", "Kem"], ["fire", "water"], ["two", "five"]]
    relations = ["{C} shapes belong to the {v} tribe.", "The element of {c} shapes is {v}.",
                 "Every {c} shape is worth {v} points."]
    k = 0
    for ci, (c, rgb) in enumerate(COLOURS.items()):
        for qi, (q, (v1, v2), rel) in enumerate(zip(questions, values, relations)):
            img = noisy(rgb, 100 * ci + qi)
            seed = rec(f"seed{k}", img, [f"The shape in the image is {c}.", rel.format(C=c.title(), c=c, v=v1)],
                       q, v1)
            # (a) same image, same question, another answer (and its rule with another value)
            a = rec(f"bad{k}a", img, [f"The shape in the image is {c}.", rel.format(C=c.title(), c=c, v=v2)], q, v2)
            # (b) a near-identical image of the same colour, the rule restated with another value
            b = rec(f"bad{k}b", noisy(rgb, 100 * ci + qi + 50), [rel.format(C=c.title(), c=c, v=v2)],
                    f"Tell me about this {c} shape.", v2)
            # (c) the rule negated
            neg = rel.format(C=c.title(), c=c, v=v1).replace(" belong to", " do not belong to") \
                .replace(" is ", " is not ", 1)
            cc = rec(f"bad{k}c", noisy(rgb, 100 * ci + qi + 70), [neg], f"Describe the {c} shape.", v2)
            cases += [(seed, a), (seed, b), (seed, cc)]
            k += 1
    return cases


def main() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    cfg = ReasonEditConfig(guard={"policy": "off", "visual": True}, augment={"enabled": False},
                           only_edit_errors=False)
    ed = ReasonEditor(FakeVLM(), cfg)
    from reasonedit_plugin.guards import RationaleGuard

    guard = RationaleGuard(cfg.guard, ed)
    results: dict[str, dict] = {}
    times: list[float] = []

    def run(name, items, kind=None, commit=False, visual=True):
        flagged, examples = 0, []
        for record, image in items:
            t = time.perf_counter()
            guard.config.visual = visual
            flags = guard.check(record, image)
            times.append(time.perf_counter() - t)
            hit = any(f.kind == kind for f in flags) if kind else bool(flags)
            flagged += hit
            if (hit and not kind) or (not hit and kind):
                examples.append(f"{record.id}: {record.rationale} -> {[str(f) for f in flags][:2]}")
            if commit:
                ed.edit([record])
        results[name] = {"n": len(items), "flagged": flagged, "examples": examples}

    # good: ShapeRules, committed one by one
    try:
        from reasonedit_plugin.data.shaperules import load_split

        shape = [make_record(r) for r in load_split("small")]
    except (ImportError, FileNotFoundError) as exc:
        print(f"(ShapeRules split unavailable: {exc})")
        shape = []
    run("good / shaperules", [(r, load_image(r.image)) for r in shape], commit=True)
    crafted = [rec(f"good{i}", pattern(500 + i), r["text"], "What does the picture show?", "something")
               for i, r in enumerate(x for x in rows if x["set"] == "good")]
    # crafted texts describe other pictures than the random image they are put on: no visual check
    run("good / crafted", [(r, load_image(r.image)) for r in crafted], visual=False)
    inj = [rec(f"inj{i}", pattern(700 + i), r["text"]) for i, r in enumerate(x for x in rows if x["set"] == "injection")]
    run("bad / injection", [(r, load_image(r.image)) for r in inj], kind="injection")
    pairs = contradiction_cases()
    for seed, _ in pairs:
        if seed.id not in ed.edit_ids():
            ed.edit([seed])
    run("bad / contradiction", [(bad, load_image(bad.image)) for _, bad in pairs], kind="contradiction")
    visual = []
    for i, (c, rgb) in enumerate(COLOURS.items()):
        for j, other in enumerate(x for x in COLOURS if x != c):
            visual.append(rec(f"vis{i}{j}", noisy(rgb, 900 + 10 * i + j),
                              [f"The shape in the image is {other}.", f"{other.title()} shapes belong to the Vol tribe."]))
            visual.append(rec(f"vis{i}{j}p", noisy(rgb, 950 + 10 * i + j),
                              [f"I can see a {other} square in the picture."]))
    run("bad / visual", [(r, load_image(r.image)) for r in visual], kind="visual")

    print(f"\nRationale guard (FakeVLM, MiniLM-L6; injection threshold {guard.injection_threshold:g}; "
          f"codebook {len(ed.codebook)} entries)\n")
    print(f"| set | n | flagged | rate |\n|---|---:|---:|---:|")
    for name, r in results.items():
        rate = r["flagged"] / r["n"] if r["n"] else float("nan")
        label = "detection" if name.startswith("bad") else "false positive"
        print(f"| {name} ({label}) | {r['n']} | {r['flagged']} | {100 * rate:.1f} % |")
    bad = [r for k, r in results.items() if k.startswith("bad")]
    good = [r for k, r in results.items() if k.startswith("good")]
    print(f"| all bad (detection) | {sum(r['n'] for r in bad)} | {sum(r['flagged'] for r in bad)} | "
          f"{100 * sum(r['flagged'] for r in bad) / max(1, sum(r['n'] for r in bad)):.1f} % |")
    print(f"| all good (false positive) | {sum(r['n'] for r in good)} | {sum(r['flagged'] for r in good)} | "
          f"{100 * sum(r['flagged'] for r in good) / max(1, sum(r['n'] for r in good)):.1f} % |")
    print(f"\nmedian check time {1000 * float(np.median(times)):.1f} ms")
    for name, r in results.items():
        for line in r["examples"][:6]:
            print(f"  {'missed' if name.startswith('bad') else 'false positive'} [{name}] {line}")


if __name__ == "__main__":
    main()
