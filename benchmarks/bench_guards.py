"""Detection and false-positive rates of the rationale guard (guards.py), measured honestly (issue 14).

    python benchmarks/bench_guards.py --set dev     # guard_dev + guard_dev2 + the older crafted set
    python benchmarks/bench_guards.py --set test    # guard_test.jsonl (now development data too)
    python benchmarks/bench_guards.py --file PATH   # any set in the same JSONL format, e.g. a new held-out set

Sets (benchmarks/data/). **All of them are development data now**: test and fresh were held out when they
were written, and have since been read while the guard was changed (issue 14, second round). An honest
figure needs a set nobody tuned on, run with ``--file``.
* ``guard_test.jsonl`` — written before the first round of rules and held out for it. 40 injections in 14
  styles (role play, hidden mid-sentence instructions, homoglyphs, encodings, other languages, markup, polite requests, authority claims, exfiltration,
  conditionals, fact-shaped commands, split words, questions, HTML comments), 12 contradictions phrased
  differently, 4 off-image claims, 44 unusual benign rationales (consistent restatements, benign "ignore",
  "always", "you", "answer", quotes, numbers, other languages, ...).
* ``guard_fresh.jsonl`` — 20 injections, 20 benign, written after the first round by someone who had not
  read its rules; it showed the gaps the second round closes (standing orders, leetspeak, conditionals).
* ``guard_dev.jsonl`` + ``guard_dev2.jsonl`` + ``guard_rationales.jsonl`` (the older crafted set) —
  ``--set dev``. ``guard_dev2.jsonl`` was written in the second round in batches (the ``style`` says which),
  each run once on the guard as it was before the batch was used to change it: Q/A transcripts, story,
  grader and reward framing, impersonal and passive orders, config/JSON syntax, Unicode tag characters,
  math and small-capital letters, reversed text, misspellings, a dozen more languages, contradictions as
  "not X but Y" / "rather than" / passive / value first / numbers past twenty / rules stated from another
  image, and unusual benign text (lowercase, typos, other languages, codes and units, rhetorical
  questions, imperatives to a human reader, restatements).
* ``--file PATH`` — any JSONL in this format (one object a line: ``kind`` injection / contradiction /
  offimage / benign, ``style``, ``colour`` red / green / blue / brown, ``prompt``, ``target``, ``text``, and
  optionally ``seed`` {colour, prompt, target, text}: the edit committed first); results in
  ``benchmarks/results/guards_<file stem>.json``.
* ``--set shaperules`` — the shipped ShapeRules split, committed one by one (later edits are checked against
  earlier ones): the false-positive rate on real, consistent edits.

Every item is checked on a fresh codebook (FakeVLM colour thumbnails + the packaged MiniLM encoder) that
holds only the item's ``seed`` edit, if it has one; the contradiction items' seeds are the edits they
contradict, the restatements' seeds the edits they agree with. A bad item counts as caught when the guard
raises any flag; a benign item is a false positive when it raises any flag. Off-image claims need the
visual check (``guard.visual``, one VLM pass per sentence; off by default): they are reported with it on,
the other rows with the shipped default (visual off). Writes ``benchmarks/results/guards_<set>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fakes import FakeVLM  # noqa: E402
from reasonedit_plugin.config import ReasonEditConfig  # noqa: E402
from reasonedit_plugin.editor import ReasonEditor  # noqa: E402
from reasonedit_plugin.guards import RationaleGuard  # noqa: E402
from reasonedit_plugin.records import load_image, make_record  # noqa: E402
from reasonedit_plugin.text_encoder import shared_text_encoder  # noqa: E402

DATA = Path(__file__).parent / "data"
COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "brown": (140, 80, 30)}


def noisy(colour: str, seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(COLOURS[colour])[None, None] + rng.integers(-6, 7, (size, size, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


KINDS = ("injection", "contradiction", "offimage", "benign")
FIELDS = ("kind", "colour", "prompt", "target", "text")


def load_file(path: Path) -> list[dict]:
    """Rows of a guard set (JSONL, format above), each checked; a bad row is a one-line error naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"bench_guards: cannot read {path}: {exc}. Pass a UTF-8 JSONL file.") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"bench_guards: {path}:{n} is not JSON ({exc.msg}). One object per line.") from None
        missing = [f for f in FIELDS if not isinstance(row.get(f) if isinstance(row, dict) else None, str)]
        if missing:
            raise SystemExit(f"bench_guards: {path}:{n} lacks string field(s) {', '.join(missing)}.")
        if row["kind"] not in KINDS or row["colour"] not in COLOURS:
            raise SystemExit(f"bench_guards: {path}:{n}: kind {row['kind']!r} / colour {row['colour']!r}; "
                             f"kinds are {', '.join(KINDS)}, colours {', '.join(COLOURS)}.")
        seed = row.get("seed")
        if seed is not None and (not isinstance(seed, dict) or seed.get("colour") not in COLOURS or any(
                not isinstance(seed.get(f), str) for f in ("prompt", "target", "text"))):
            raise SystemExit(f"bench_guards: {path}:{n}: seed must be an object with colour, prompt, target, text.")
        rows.append(row)
    return rows


def load_set(name: str) -> list[dict]:
    if name in ("test", "fresh"):
        return load_file(DATA / f"guard_{name}.jsonl")
    rows = load_file(DATA / "guard_dev.jsonl") + load_file(DATA / "guard_dev2.jsonl")
    for i, old in enumerate(json.loads(line) for line in (DATA / "guard_rationales.jsonl").read_text().splitlines()
                            if line.strip()):
        rows.append({"kind": "injection" if old["set"] == "injection" else "benign", "style": "older crafted set",
                     "colour": ("red", "green", "blue")[i % 3], "prompt": "What does the picture show?",
                     "target": "something", "text": old["text"]})
    return rows


def editor(visual: bool, text_encoder) -> ReasonEditor:
    cfg = ReasonEditConfig(guard={"policy": "off", "visual": visual}, augment={"enabled": False},
                           only_edit_errors=False)
    return ReasonEditor(FakeVLM(), cfg, text_encoder=text_encoder)


def check_items(rows: list[dict]) -> dict:
    text_encoder = shared_text_encoder()
    outcomes = []
    times = []
    for i, row in enumerate(rows):
        visual = row["kind"] == "offimage"
        ed = editor(visual, text_encoder)
        guard = RationaleGuard(ed.config.guard, ed)
        if "seed" in row:
            s = row["seed"]
            ed.edit([make_record({"id": f"seed{i}", "image": noisy(s["colour"], 1000 + i), "prompt": s["prompt"],
                                  "target": s["target"], "rationale": s["text"]})])
        image = noisy(row["colour"], 1000 + i if "seed" in row and row["seed"]["colour"] == row["colour"] else 5000 + i)
        record = make_record({"id": f"item{i}", "image": image, "prompt": row["prompt"], "target": row["target"],
                              "rationale": row["text"]})
        start = time.perf_counter()
        flags = guard.check(record, load_image(record.image))
        times.append(time.perf_counter() - start)
        outcomes.append({"kind": row["kind"], "style": row.get("style", ""), "text": row["text"],
                         "flagged": bool(flags), "flags": [str(f) for f in flags]})
    return {"outcomes": outcomes, "median_ms": 1000 * float(np.median(times)) if times else None}


def check_shaperules() -> dict:
    from reasonedit_plugin.data.split_files import load_split

    text_encoder = shared_text_encoder()
    ed = editor(False, text_encoder)
    guard = RationaleGuard(ed.config.guard, ed)
    outcomes = []
    for row in load_split("small"):
        record = make_record(row)
        flags = guard.check(record, load_image(record.image))
        outcomes.append({"kind": "benign", "style": "ShapeRules small", "text": " ".join(record.rationale),
                         "flagged": bool(flags), "flags": [str(f) for f in flags]})
        ed.edit([record])
    return {"outcomes": outcomes, "median_ms": None}


def summarise(outcomes: list[dict]) -> dict:
    by_kind: dict[str, Counter] = defaultdict(Counter)
    by_style: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        by_kind[o["kind"]]["n"] += 1
        by_kind[o["kind"]]["flagged"] += o["flagged"]
        by_style[f"{o['kind']} / {o['style']}"]["n"] += 1
        by_style[f"{o['kind']} / {o['style']}"]["flagged"] += o["flagged"]
    bad = [o for o in outcomes if o["kind"] in ("injection", "contradiction")]
    return {"kinds": {k: dict(v) for k, v in by_kind.items()}, "styles": {k: dict(v) for k, v in by_style.items()},
            "injections_and_contradictions": {"n": len(bad), "flagged": sum(o["flagged"] for o in bad)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("dev", "test", "fresh", "shaperules"), default="dev")
    ap.add_argument("--file", type=Path, help="run this JSONL set instead of --set (results: guards_<stem>.json)")
    ap.add_argument("--show", type=int, default=40, help="misses / false positives to print")
    args = ap.parse_args()
    if args.file is not None:
        name, result = args.file.stem, check_items(load_file(args.file))
    else:
        name = args.set
        result = check_shaperules() if args.set == "shaperules" else check_items(load_set(args.set))
    summary = summarise(result["outcomes"])
    print(f"\nRationale guard on the {name} set (FakeVLM, MiniLM-L6; shipped guard settings, visual check only "
          "for off-image claims)\n")
    print("| kind | n | flagged | rate |\n|---|---:|---:|---:|")
    for kind, c in summary["kinds"].items():
        print(f"| {kind} ({'false positives' if kind == 'benign' else 'caught'}) | {c['n']} | {c['flagged']} | "
              f"{100 * c['flagged'] / c['n']:.1f} % |")
    ic = summary["injections_and_contradictions"]
    if ic["n"]:
        print(f"| injections + contradictions (caught) | {ic['n']} | {ic['flagged']} | "
              f"{100 * ic['flagged'] / ic['n']:.1f} % |")
    if result["median_ms"] is not None:
        print(f"\nmedian check time {result['median_ms']:.1f} ms")
    shown = 0
    for o in result["outcomes"]:
        wrong = o["flagged"] if o["kind"] == "benign" else not o["flagged"]
        if wrong and shown < args.show:
            label = "FALSE POSITIVE" if o["kind"] == "benign" else "MISSED"
            print(f"  {label} [{o['kind']} / {o['style']}] {o['text'][:110]!r}" + (
                f" -> {o['flags'][0][:140]}" if o["flags"] else ""))
            shown += 1
    out = ROOT / "benchmarks" / "results" / f"guards_{name}.json"
    out.parent.mkdir(exist_ok=True)
    source = str(args.file) if args.file is not None else args.set
    out.write_text(json.dumps({"set": name, "source": source, "summary": summary, **result}, indent=1,
                              ensure_ascii=False))


if __name__ == "__main__":
    main()
