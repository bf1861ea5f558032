"""Benchmarks of the evaluation path.

Scoring: tfqa.scoring vs Google's official ``nq_eval`` (PyPI ``natural-questions``) on a dev-like
gold set (7,830 examples, 5 annotations each, as NQ dev) and random predictions with partly correct
answers and tied scores. Both sides read the same gold .jsonl.gz and prediction JSON first; reading
is timed separately and is NOT part of the headline ratio, which compares scoring from parsed data:

- official: ``score_answers`` + ``get_metrics_with_answer_stats`` + ``compute_final_f1``;
- tfqa: ``score_answers`` (including matching prediction ids to gold rows, which the official
  does in ``score_answers`` too) +
  ``official_metrics`` + ``best_kaggle_micro_f1`` (a threshold search the official does not do).

The metrics of both sides are asserted equal. Best of ``--repeats`` runs each.

    python benchmarks/score.py                      # 7830 examples, tfqa.synth gold when present
    python benchmarks/score.py --gold-source quick  # a tiny built-in generator instead
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

NULL_SPAN = {"start_byte": -1, "end_byte": -1, "start_token": -1, "end_token": -1}
DEV_EXAMPLES = 7830


# -- data ------------------------------------------------------------------------------------------
def quick_gold(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """Minimal original-format examples with 5 annotations (short documents: reading is not timed)."""
    rng = random.Random(seed)
    for i in range(n):
        n_tokens = rng.randint(40, 80)
        starts, ends, pos = [], [], 0
        for _ in range(n_tokens):
            width = rng.randint(2, 9)
            starts.append(pos)
            ends.append(pos + width)
            pos += width + 1
        cands = sorted({(s, min(n_tokens, s + rng.randint(3, 15))) for s in rng.sample(range(n_tokens - 1), 8)})

        def span(s: int, e: int) -> dict[str, int]:
            return {"start_byte": starts[s], "end_byte": ends[e - 1], "start_token": s, "end_token": e}

        kind = rng.choice(["null", "null", "long", "short", "short", "yes", "no"])
        ci = rng.randrange(len(cands))
        s0, e0 = cands[ci]
        k = rng.randrange(s0, e0)
        short = span(k, min(e0, k + rng.randint(1, 3)))
        anns = []
        for a in range(5):
            agree = a < 2 or rng.random() < 0.7
            if kind == "null" or not agree:
                anns.append({"long_answer": {**NULL_SPAN, "candidate_index": -1}, "short_answers": [],
                             "yes_no_answer": "NONE", "annotation_id": a})
                continue
            anns.append({
                "long_answer": {**span(s0, e0), "candidate_index": ci},
                "short_answers": [short] if kind == "short" else [],
                "yes_no_answer": kind.upper() if kind in ("yes", "no") else "NONE",
                "annotation_id": a,
            })
        yield {
            "example_id": 10**15 + i,
            "question_text": "q",
            "document_tokens": [
                {"token": f"w{t}", "start_byte": s, "end_byte": e, "html_token": False}
                for t, (s, e) in enumerate(zip(starts, ends))
            ],
            "long_answer_candidates": [{**span(s, e), "top_level": True} for s, e in cands],
            "annotations": anns,
        }


def synth_gold(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """tfqa.synth's dev-like pages, kept short (reading is not what is measured)."""
    from tfqa.synth import SynthConfig, generate_original

    return generate_original(SynthConfig(n_examples=n, seed=seed, n_annotations=5, min_tokens=100, max_tokens=300))


def random_prediction(rng: random.Random, example: dict[str, Any]) -> dict[str, Any]:
    """A prediction that is right about half the time, with scores rounded to make ties."""
    anns = example["annotations"]
    cands = example["long_answer_candidates"]
    longs = [a["long_answer"] for a in anns if a["long_answer"]["start_token"] >= 0]
    r = rng.random()
    if r < 0.5 and longs:
        chosen = rng.choice(longs)
        long = {k: chosen[k] for k in NULL_SPAN}
    elif r < 0.8:
        chosen = rng.choice(cands)
        long = {k: chosen[k] for k in NULL_SPAN}
    else:
        long = dict(NULL_SPAN)
    r = rng.random()
    shorts, yes_no = [], "NONE"
    with_shorts = [a for a in anns if a["short_answers"]]
    if r < 0.35 and with_shorts:
        shorts = [dict(s) for s in rng.choice(with_shorts)["short_answers"]]
    elif r < 0.45:
        yes_no = rng.choice(["YES", "NO"])
    elif r < 0.65:
        c = rng.choice(cands)
        k = rng.randrange(c["start_token"], c["end_token"])
        shorts = [{"start_byte": -1, "end_byte": -1, "start_token": k, "end_token": k + 1}]
    return {
        "example_id": example["example_id"],
        "long_answer": long,
        "long_answer_score": round(rng.gauss(0, 2), 2),
        "short_answers": shorts,
        "short_answers_score": round(rng.gauss(0, 2), 2),
        "yes_no_answer": yes_no,
    }


@dataclass(frozen=True)
class ScoringFiles:
    gold: Path
    predictions: Path
    source: str


def make_scoring_files(directory: Path, n: int, seed: int, source: str) -> ScoringFiles:
    """Write a dev-like gold .jsonl.gz and a matching prediction JSON."""
    if source == "auto":
        try:
            import tfqa.synth  # noqa: F401

            source = "synth"
        except ImportError:
            source = "quick"
    examples = synth_gold(n, seed) if source == "synth" else quick_gold(n, seed)
    rng = random.Random(seed + 1)
    gold_path, pred_path = directory / "gold.jsonl.gz", directory / "predictions.json"
    preds = []
    with gzip.open(gold_path, "wt", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex) + "\n")
            preds.append(random_prediction(rng, ex))
    pred_path.write_text(json.dumps({"predictions": preds}))
    return ScoringFiles(gold_path, pred_path, source)


# -- timing ----------------------------------------------------------------------------------------
def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_official(files: ScoringFiles, repeats: int) -> dict[str, Any]:
    from absl import flags
    from natural_questions import eval_utils, nq_eval

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # the official vote reads absl flags (defaults 2 and 2)
    t0 = time.perf_counter()
    # read_annotation would fork a 10-process pool for one file; this is the same parser.
    gold = eval_utils.read_annotation_from_one_split(str(files.gold))
    preds = eval_utils.read_prediction_json(str(files.predictions))
    read_s = time.perf_counter() - t0

    def run() -> dict[str, Any]:
        long_stats, short_stats = nq_eval.score_answers(gold, preds)
        metrics = dict(nq_eval.get_metrics_with_answer_stats(long_stats, short_stats))
        metrics.update(nq_eval.compute_final_f1(long_stats, short_stats))
        return metrics

    score_s, metrics = best_time(run, repeats)
    return {"read_s": read_s, "score_s": score_s, "metrics": metrics}


def bench_tfqa(files: ScoringFiles, repeats: int) -> dict[str, Any]:
    from tfqa.predictions import read_predictions
    from tfqa.readers import read_examples
    from tfqa.scoring import PredictionColumns, build_gold, score_answers

    t0 = time.perf_counter()
    gold = build_gold(read_examples(files.gold))
    # Records -> columns is tfqa's parse step, as NQLabel building is the official one's.
    preds = PredictionColumns.from_records(read_predictions(files.predictions))
    read_s = time.perf_counter() - t0

    def run() -> tuple[dict[str, Any], Any]:
        scored = score_answers(gold, preds)
        return scored.official_metrics(), scored.best_kaggle_micro_f1()

    score_s, (metrics, kaggle) = best_time(run, repeats)
    return {"read_s": read_s, "score_s": score_s, "metrics": metrics, "kaggle": kaggle.as_dict()}


def bench_scoring(n: int = DEV_EXAMPLES, seed: int = 0, repeats: int = 10, source: str = "auto") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        files = make_scoring_files(Path(tmp), n, seed, source)
        official = bench_official(files, repeats)
        ours = bench_tfqa(files, repeats)
    mismatched = {
        k: (ours["metrics"].get(k), v) for k, v in official["metrics"].items() if ours["metrics"].get(k) != v
    }
    if mismatched or set(ours["metrics"]) != set(official["metrics"]):
        raise AssertionError(f"tfqa and the official scorer disagree: {mismatched}")
    return {
        "examples": n,
        "gold_source": files.source,
        "official_score_s": official["score_s"],
        "tfqa_score_s": ours["score_s"],
        "speedup": official["score_s"] / ours["score_s"],
        "official_read_s": official["read_s"],
        "tfqa_read_s": ours["read_s"],
        "long-best-threshold-f1": official["metrics"]["long-best-threshold-f1"],
        "short-best-threshold-f1": official["metrics"]["short-best-threshold-f1"],
        "kaggle-micro-f1": ours["kaggle"]["kaggle-micro-f1"],
    }


def print_scoring(r: dict[str, Any]) -> None:
    print(f"scoring {r['examples']} examples x 5 annotations ({r['gold_source']} gold), reading excluded:")
    print(f"  official nq_eval : {r['official_score_s'] * 1e3:9.1f} ms")
    print(f"  tfqa.scoring     : {r['tfqa_score_s'] * 1e3:9.1f} ms  (+ Kaggle threshold search)")
    print(f"  speed-up         : {r['speedup']:9.1f}x  (metrics identical)")
    print(f"  reading, for reference: official {r['official_read_s']:.2f} s, tfqa {r['tfqa_read_s']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=DEV_EXAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--gold-source", choices=["auto", "synth", "quick"], default="auto")
    args = ap.parse_args()
    results = {"scoring": bench_scoring(args.examples, args.seed, args.repeats, args.gold_source)}
    print_scoring(results["scoring"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
