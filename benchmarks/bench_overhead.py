"""Retrieval overhead on the embedded default model: how much slower is an answer through ReasonEdit
(key = vision features + MiniLM question embedding, codebook search, gate, fusion) than the unedited
answer of the same model?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_overhead.py --out benchmarks/results/overhead.json

The codebook holds the ShapeRules ``small`` edits. Queries are easy-vqa *test* images with ShapeRules
questions (a few templates, so question texts repeat as they do in VQA traffic). Reported: p50 of the
unedited answer (``vlm.generate``), of ``editor.answer`` and of ``editor.retrieve`` alone, with the
question-embedding cache cold (every text new) and warm (question texts seen before); images are always
new (the vision-feature cache and the evidence test's remembered answers are cleared; each edit's evidence is read
once before timing, as in an editor in service). Timed query by query (the unedited answer before and after
the edited calls on the same query, ``--repeat`` rounds, each timing the median of its rounds), so the
machine's drifting load falls on both; ``answer_overhead_paired_p50`` is the median over queries of answer /
unedited - 1. The retrieval overhead is ``retrieve`` / unedited answer; an
accepted retrieval also lengthens the prompt (the fused facts), which ``answer`` includes.

``--image-prescreen`` turns on ``retrieval.nullset.image_prescreen`` (the serving setting): a query whose image
no edit's image test can reach is rejected before its question is embedded, and ``answer`` reads the key's
image part from the unedited answer's own vision pass. The answers are the same either way (tested); the
JSON then also gives the medians of the queries so rejected and of the rest. ``--text-bf16`` runs the question's
sentence encoder in bfloat16 (``embedding.text_dtype``).

Each query's outcome (rejected by its image, by the gate's key tests, by the evidence check, or accepted) gives
the mean overhead per outcome. ``components_p50_ms`` times alone, per query, the model work its outcome needs
beyond the unedited answer: the question's sentence embedding, the evidence pass, the answer with the facts
fused in; ``mean_overhead_floor`` is the mean overhead if a query cost only its unedited answer plus that work
(the fused answer in place of the unedited one): what no change to the plumbing can go below with these models
(with ``--image-prescreen``; without it the key's own vision pass is work too, not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DEFAULT_HPARAMS = HERE.parent / "hparams" / "ReasonEdit" / "tiny-qwen2-vl-shapes.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "overhead.json"))
    ap.add_argument("--hparams", default=str(DEFAULT_HPARAMS),
                    help="ReasonEdit hparams YAML of the embedded model (default: the shipped one)")
    ap.add_argument("--no-evidence", action="store_true", help="the null-set gate without its evidence test")
    ap.add_argument("--image-prescreen", action="store_true", help="retrieval.nullset.image_prescreen on")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per query (its median is kept)")
    ap.add_argument("--text-bf16", action="store_true", help="embedding.text_dtype bfloat16 (the serving setting "
                    "on a CPU with native bfloat16)")
    args = ap.parse_args()
    import torch

    from reasonedit_plugin.cli_inputs import load_edit_records
    from reasonedit_plugin.data import shaperules as sr
    from reasonedit_plugin.editor import ReasonEditor
    from reasonedit_plugin.hparams import ReasonEditHyperParams
    from reasonedit_plugin.records import load_image

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    hp = ReasonEditHyperParams.from_hparams(args.hparams)
    cfg = hp.to_config()
    if args.no_evidence:
        cfg = cfg.replace(retrieval={"nullset": {"evidence_check": False}})
    if args.image_prescreen:
        cfg = cfg.replace(retrieval={"nullset": {"image_prescreen": True}})
    if args.text_bf16:
        cfg = cfg.replace(embedding={"text_dtype": "bfloat16"})
    editor = ReasonEditor.from_pretrained(hp.model_name, cfg.replace(guard={"policy": "off"}), device="cpu")
    editor.edit(load_edit_records(None, "small", None, None))
    rng = random.Random(args.seed)
    images = list(sr.image_catalogue("test"))
    rng.shuffle(images)
    root = sr.easy_vqa_root()
    items = []
    for info in images[: args.queries]:
        p = rng.choice(sr.PROPERTIES)
        items.append((load_image(root / info.path), sr.format_question(rng.choice(p.questions), info)))
    n_tokens = cfg.max_new_tokens

    def clock(fn, *args) -> float:
        t = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t) * 1e3

    for image, question in items:  # warm-up
        editor.vlm.generate(image, question, n_tokens)
    if editor.evidence is not None:  # an editor in service: each edit's evidence read once (lazily, in use)
        for edit_id in editor.edit_ids():
            editor.evidence.evidence(edit_id)

    def fresh(text_cache: bool) -> None:
        """Forget the images (every query is a new image, also to the gate's evidence test); keep seen
        question texts if ``text_cache``."""
        editor.keys._cache.clear()
        if editor.evidence is not None:
            editor.evidence.forget_answers()
        if not text_cache:
            editor.keys._text_cache.clear()

    # Paired, query by query (the machine's load drifts): the unedited answer before and after, then
    # retrieve and answer with the question new (cold) and seen (warm); the image is new to each.
    unedited, retrieve_cold, retrieve_warm, answer_cold, answer_warm = [], [], [], [], []
    for image, question in items:
        rounds = []
        for _ in range(args.repeat):
            before = clock(editor.vlm.generate, image, question, n_tokens)
            row = []
            for fn, warm in ((editor.retrieve, False), (editor.retrieve, True), (editor.answer, False),
                             (editor.answer, True)):
                fresh(warm)
                row.append(clock(fn, image, question))
            rounds.append([(before + clock(editor.vlm.generate, image, question, n_tokens)) / 2, *row])
        for out, times in zip((unedited, retrieve_cold, retrieve_warm, answer_cold, answer_warm), zip(*rounds)):
            out.append(statistics.median(times))  # per query, the median of its rounds
    med = statistics.median
    decisions = [editor.retrieve(im, q) for im, q in items]
    accepted = sum(r.accepted for r in decisions)
    early = [editor.retriever.out_of_reach(editor.keys.vision([im])[0]) is not None for im, _ in items]
    outcome = ["image_rejected" if e else "accepted" if r.accepted else
               "evidence_rejected" if r.verdict is not None and r.verdict.evidence else "gate_rejected"
               for r, e in zip(decisions, early)]

    parts = component_times(editor, items, decisions, outcome, args.repeat, clock, args.image_prescreen)

    def mean_overhead(times: list[float], keep: Callable[[str], bool]) -> float | None:
        """sum(answer) / sum(unedited) - 1 over the queries ``keep`` picks (the mean's overhead)."""
        picked = [(t, u) for t, u, o in zip(times, unedited, outcome) if keep(o)]
        return sum(t for t, _ in picked) / sum(u for _, u in picked) - 1 if picked else None

    def split(times: list[float]) -> dict[str, float | None]:
        """Medians of the queries rejected by their image alone and of the rest."""
        parts = {"image_rejected": [t for t, e in zip(times, early) if e],
                 "searched": [t for t, e in zip(times, early) if not e]}
        return {k: (med(v) if v else None) for k, v in parts.items()}

    res = {
        "entries": len(editor.codebook), "queries": len(items), "accepted": accepted,
        "image_prescreen": args.image_prescreen, "text_dtype": cfg.embedding.text_dtype, "repeat": args.repeat,
        "text_encoder": cfg.embedding.text_encoder,
        "rejected_by_image": sum(early) if args.image_prescreen else 0,
        "evidence_check": editor.evidence is not None,
        "distinct_questions": len({q for _, q in items}),
        "unedited_answer_p50_ms": med(unedited),
        "answer_p50_ms": {"cold": med(answer_cold), "warm": med(answer_warm)},
        "retrieve_p50_ms": {"cold": med(retrieve_cold), "warm": med(retrieve_warm)},
        "overhead_vs_unedited": {"cold": med(answer_cold) / med(unedited) - 1,
                                 "warm": med(answer_warm) / med(unedited) - 1},
        "retrieve_share_of_unedited": {"cold": med(retrieve_cold) / med(unedited),
                                       "warm": med(retrieve_warm) / med(unedited)},
        "retrieve_mean_ms": {"cold": statistics.fmean(retrieve_cold), "warm": statistics.fmean(retrieve_warm)},
        "unedited_answer_mean_ms": statistics.fmean(unedited),
        "answer_mean_ms": {"cold": statistics.fmean(answer_cold), "warm": statistics.fmean(answer_warm)},
        "answer_overhead_paired_p50": {
            "cold": med([a / u - 1 for a, u in zip(answer_cold, unedited)]),
            "warm": med([a / u - 1 for a, u in zip(answer_warm, unedited)])},
        "mean_overhead_by_outcome": {
            o: {"queries": outcome.count(o), "cold": mean_overhead(answer_cold, o.__eq__),
                "warm": mean_overhead(answer_warm, o.__eq__)}
            for o in ("image_rejected", "gate_rejected", "evidence_rejected", "accepted")},
        "components_p50_ms": {k: med(t) if (t := [x for x in v if x is not None]) else None for k, v in parts.items()},
        "mean_overhead_floor": overhead_floor(parts, outcome, unedited),
        "mean_overhead_left_unedited": {  # the queries the codebook does not change: retrieval's cost alone
            "cold": mean_overhead(answer_cold, lambda o: o != "accepted"),
            "warm": mean_overhead(answer_warm, lambda o: o != "accepted")},
        "by_group_p50_ms": {"unedited": split(unedited), "answer_cold": split(answer_cold),
                            "answer_warm": split(answer_warm), "retrieve_cold": split(retrieve_cold)},
        "retrieve_p95_ms": {"cold": float(statistics.quantiles(retrieve_cold, n=20)[-1]),
                            "warm": float(statistics.quantiles(retrieve_warm, n=20)[-1])},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": "benchmarks/bench_overhead.py" + (" --no-evidence" if args.no_evidence else "")
                   + (" --image-prescreen" if args.image_prescreen else "")
                   + (" --text-bf16" if args.text_bf16 else "")
                   + (f" --hparams {args.hparams}" if Path(args.hparams).resolve() != DEFAULT_HPARAMS else ""),
    }
    print(json.dumps(res, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


def component_times(editor: Any, items: list[tuple[Any, str]], decisions: list[Any], outcome: list[str], repeat: int,
                    clock: Callable[..., float], prescreen: bool) -> dict[str, list[float | None]]:
    """Per query, the model work its outcome needs beyond the unedited answer, each timed alone (median of
    ``repeat``): the question's sentence embedding (every query that reaches the search, every query without
    ``prescreen``), the evidence pass
    over the matched edits' claims (every query whose decision read it) and the answer with the facts fused in
    (accepted queries). ``None`` where a query's outcome does not need the part."""
    from reasonedit_plugin.evidence import claim_question

    template = editor.config.patches.question_template
    out: dict[str, list[float | None]] = {"question_embedding": [], "evidence_pass": [], "fused_answer": []}
    for (image, question), r, o in zip(items, decisions, outcome):
        times: dict[str, Callable[[], Any]] = {}
        if o != "image_rejected" or not prescreen:
            times["question_embedding"] = lambda: editor.keys.text_encoder.encode([question])
        if r.verdict is not None and r.verdict.evidence:
            claims = list(dict.fromkeys(claim_question(t.sentence, template) for t in r.verdict.evidence))
            times["evidence_pass"] = lambda: editor.vlm.yes_probabilities(image, claims)
        if r.accepted:
            fused = editor.fused_question(question, r)
            times["fused_answer"] = lambda: editor.vlm.generate(image, fused, editor.config.max_new_tokens)
        for name in out:
            out[name].append(statistics.median(clock(times[name]) for _ in range(repeat)) if name in times else None)
    return out


def overhead_floor(parts: dict[str, list[float | None]], outcome: list[str], unedited: list[float]) -> float:
    """The mean overhead if a query cost its unedited answer plus only the model work its outcome needs (the
    components timed alone: an accepted query's fused answer replaces its unedited one) and nothing else: what
    no plumbing can go below with these models on this machine."""
    extra = 0.0
    for i, o in enumerate(outcome):
        extra += sum(t for t in (parts["question_embedding"][i], parts["evidence_pass"][i]) if t is not None)
        if o == "accepted":
            extra += parts["fused_answer"][i] - unedited[i]
    return extra / sum(unedited)


if __name__ == "__main__":
    main()
