"""bf16 training throughput and MFU of the original's backbone shapes at 360 subwords.

Models are tfqa's candidate reader (``CandidateQAModel``: encoder + answer-type and span heads)
on bert-base, bert-large and albert-xxlarge(-v2) encoders built from configs with random weights
(nothing is downloaded). One step is what training does per optimizer step: copy the collated
batch to the device, forward under bf16 autocast (fp32 master weights), tfqa's loss, backward,
clip the gradient norm, fused AdamW step (``tfqa.training.loop.build_optimizer``), zero the grads.

Rows: NQ-shaped candidate lengths, a shifted log-normal matched to the real Kaggle head-10
candidates' 10th/50th/90th percentiles (20 / 36 / 139 subwords, ``benchmarks/train_step.py``
measures them), clipped to 360; random token ids and labels (a fifth are short-span rows).
Each configuration runs the same rows twice: ``padded`` (every batch padded to 360, the
original's way) and ``grouped`` (``LengthGroupedSampler``'s plan, each batch padded to its
longest row rounded up to 8, as ``train`` does on CUDA); the timed batches are a width-stratified
sample of that plan (``train_step.select_batches``).

Configurations (``ofat``, the default: one factor at a time against the SDPA baseline, what fits
the check's minutes; ``full``: all 8 combinations): attention ``sdpa`` or ``eager``
(``attn_implementation``), ``torch.compile`` of the model (once, ``dynamic=True``), gradient checkpointing
(``gradient_checkpointing_enable`` where the encoder supports it; ALBERT does not in
transformers 5, so each of its layer-group applications is wrapped in
``torch.utils.checkpoint`` here).

Reported per row: sequences/s and real tokens/s over the timed steps (synchronised at both ends),
MFU (useful FLOPs, ``benchmarks/flops.py``, over the peak), ``mfu_computed`` (padding included)
and the peak memory allocated (weights, AdamW state and activations).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from flops import FlopCounter

MAX_SEQ_LEN = 360
# (model type, config fields): the public configs of bert-base-uncased, bert-large-uncased and
# albert-xxlarge-v2, less what changes no FLOP (initialiser ranges and the like).
SHAPES = {
    "bert-base": (
        "bert",
        dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "bert-large": (
        "bert",
        dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "albert-xxlarge": (
        "albert",
        dict(
            vocab_size=30000,
            embedding_size=128,
            hidden_size=4096,
            num_hidden_layers=12,
            num_attention_heads=64,
            intermediate_size=16384,
            hidden_act="gelu_new",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
    ),
}
SMOKE_SHAPES = {
    "bert-base": (
        "bert",
        dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    ),
    "bert-large": (
        "bert",
        dict(vocab_size=1000, hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96),
    ),
    "albert-xxlarge": (
        "albert",
        dict(
            vocab_size=1000, embedding_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        ),
    ),
}
# Rows per step: albert-xxlarge costs 7.7x bert-large's FLOPs per token (benchmarks/flops.py).
BATCH_SIZES = {"bert-base": 32, "bert-large": 16, "albert-xxlarge": 8}
SMOKE_MAX_SEQ_LEN = 48


@dataclass(frozen=True)
class Cell:
    model: str
    attention: str
    """``sdpa`` or ``eager``."""
    compile: bool
    checkpointing: bool


def cells(models: list[str], grid: str) -> list[Cell]:
    """Every model's configurations, the compiled ones last (they cost the most time to set up,
    and a check short of time should lose those first)."""
    if grid == "full":
        combos = [(a, c, g) for c in (False, True) for a in ("sdpa", "eager") for g in (False, True)]
    else:
        combos = [("sdpa", False, False), ("eager", False, False), ("sdpa", False, True), ("sdpa", True, False)]
    out = [Cell(m, a, c, g) for c_first in (False, True) for m in models for a, c, g in combos if c == c_first]
    return out


@dataclass
class Row:
    model: str
    batching: str
    attention: str
    compile: bool
    checkpointing: bool
    batch_size: int
    status: str = "skipped"
    seqs_per_s: float | None = None
    tokens_per_s: float | None = None
    computed_tokens_per_s: float | None = None
    mfu: float | None = None
    mfu_computed: float | None = None
    peak_mem_gib: float | None = None
    mean_width: float | None = None
    timed_steps: int = 0
    step_ms: float | None = None
    seconds: float = 0.0
    """Wall time of the row, warm-up (and compilation) included."""
    note: str = ""


def nq_like_lengths(n: int, max_len: int, seed: int = 0) -> np.ndarray:
    """Row lengths: 16 + a log-normal with median 20 and 90th percentile 123, clipped to ``max_len``
    (so p10 / p50 / p90 = 21 / 36 / 139 before clipping, as the real candidates' 20 / 36 / 139)."""
    rng = np.random.default_rng(seed)
    sigma = math.log(123 / 20) / 1.2816
    lengths = 16 + rng.lognormal(math.log(20), sigma, size=n)
    scale = max_len / MAX_SEQ_LEN  # the smoke test's short rows keep the same shape
    return np.clip(np.round(lengths * scale), 4, max_len).astype(np.int64)


def make_rows(lengths: np.ndarray, vocab_size: int, seed: int = 0) -> list[dict]:
    """Candidate rows of the training contract: [CLS] question [SEP] candidate [SEP], random ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        n = int(n)
        ids = rng.integers(5, vocab_size, size=n).astype(np.int32)
        ids[0], ids[-1] = 1, 2
        types = np.zeros(n, dtype=np.int32)
        types[min(n - 1, 1 + n // 4) :] = 1
        label = int(rng.integers(0, 5))
        start = end = -1
        if label == 2:
            start = int(rng.integers(1, n))
            end = int(rng.integers(start, n))
        rows.append({"input_ids": ids, "token_type_ids": types, "label": label, "start_position": start, "end_position": end})
    return rows


def build_model(kind: str, fields: dict, attention: str, device):
    """tfqa's candidate reader on a random-initialised encoder of this shape, built on ``device``."""
    import torch
    from transformers import AlbertConfig, AutoModel, BertConfig

    from tfqa.modeling.model import CandidateQAModel

    config = (AlbertConfig if kind == "albert" else BertConfig)(**fields)
    torch.manual_seed(0)
    with torch.device(device):
        return CandidateQAModel(AutoModel.from_config(config, attn_implementation=attention))


def enable_checkpointing(model) -> str:
    """Recompute each layer's activations in the backward pass; returns how (the library's way)."""
    return model.enable_gradient_checkpointing()


def batches_for(rows: list[dict], batch_size: int, warmup: int, steps: int, seed: int = 0) -> list[np.ndarray]:
    """The warm-up and timed batches (row indices) of one epoch's length-grouped plan."""
    from train_step import select_batches

    from tfqa.features.batching import LengthGroupedSampler

    lengths = np.array([len(r["input_ids"]) for r in rows])
    plan = LengthGroupedSampler(lengths, batch_size, seed=seed, mega_batch_steps=50, drop_last=True).batches(0)
    return select_batches(plan, lengths, warmup, steps, "stratified")


def run_cell(
    cell: Cell,
    *,
    shapes: dict,
    batch_size: int,
    max_seq_len: int,
    warmup: int,
    steps: int,
    device,
    peak_flops: float | None,
    compile_backend: str,
    log: Callable[[str], None],
) -> list[Row]:
    """The padded and the grouped row of one configuration, on one model and optimizer."""
    import torch

    from tfqa.features.batching import collate
    from tfqa.modeling.model import CandidateQAModel
    from tfqa.training.loop import TrainConfig, build_optimizer

    kind, fields = shapes[cell.model]
    cuda = device.type == "cuda"
    rows_out = [Row(cell.model, b, cell.attention, cell.compile, cell.checkpointing, batch_size) for b in ("padded", "grouped")]
    rows = make_rows(nq_like_lengths(batch_size * 100, max_seq_len), fields["vocab_size"])
    chosen = batches_for(rows, batch_size, warmup, steps)
    model = optimizer = forward = None
    try:
        model = build_model(kind, fields, cell.attention, device)
        model.train()
        counter = FlopCounter.of(model)
        how = enable_checkpointing(model) if cell.checkpointing else ""
        optimizer = build_optimizer(model, TrainConfig(lr=1e-5), device)
        # Compiled once with symbolic shapes, for the padded and the grouped rows alike: grouped
        # widths vary from step to step, and a static graph per width would recompile each time.
        forward = torch.compile(model, backend=compile_backend, dynamic=True) if cell.compile else model
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

        def step(batch: dict) -> torch.Tensor:
            """One optimizer step as training takes it; the loss, left on the device."""
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                outputs = forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                losses = CandidateQAModel.loss(outputs, batch)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return losses["total"].detach()

        for row in rows_out:
            t_row = time.perf_counter()
            try:
                pad_to = max_seq_len if row.batching == "padded" else None
                multiple = 8 if cuda else None
                batches = [
                    collate([rows[int(k)] for k in b], pad_id=0, pad_to=pad_to, pad_to_multiple_of=multiple) for b in chosen
                ]
                if cuda:
                    batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
                recompiled = _time_steps(row, step, batches, warmup, cell.compile, counter, device, peak_flops)
                row.status = "ok"
                notes = [f"checkpointing: {how}" if how else "", f"recompiled {recompiled}x while timed" if recompiled else ""]
                row.note = "; ".join(n for n in notes if n)
            except Exception as exc:  # noqa: BLE001 - one failed configuration must not end the table
                row.status, row.note = "failed", _describe(exc)
            finally:
                row.seconds = round(time.perf_counter() - t_row, 1)
            log(_row_line(row))
    except Exception as exc:  # noqa: BLE001 - the model or optimizer could not be built
        for row in rows_out:
            if row.status == "skipped":
                row.status, row.note = "failed", _describe(exc)
                log(_row_line(row))
    finally:
        model = optimizer = forward = None  # the step closure holds them too: release them before the next cell
        gc.collect()
        if cell.compile:
            torch._dynamo.reset()
        if cuda:
            torch.cuda.empty_cache()
    return rows_out


def _time_steps(row: Row, step, batches, warmup: int, compiled: bool, counter, device, peak_flops) -> int:
    """Warm up, then time the rest of ``batches``; fills ``row`` and returns how many graphs
    torch.compile added during the timed steps (0 unless a width it had not met slipped through)."""
    import torch
    from torch._dynamo.utils import counters

    cuda = device.type == "cuda"
    timed = batches[warmup:]
    # A compiled model also meets every timed batch once before the clock starts: a shape it had
    # not seen (a new width can still add a graph under dynamic shapes) would time a compilation.
    for batch in batches[:warmup] + (timed if compiled else []):
        step(batch)
    graphs_before = counters["stats"]["unique_graphs"]
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    losses = [step(b) for b in timed]
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if not all(torch.isfinite(x).item() for x in losses):
        raise FloatingPointError("a loss was not finite")
    lengths = [b["attention_mask"].sum(dim=1).numpy() for b in timed]
    widths = [b["attention_mask"].shape[1] for b in timed]
    real = sum(int(n.sum()) for n in lengths)
    computed = sum(b["attention_mask"].numel() for b in timed)
    row.timed_steps = len(timed)
    row.step_ms = round(1000 * seconds / len(timed), 2)
    row.seqs_per_s = round(sum(len(n) for n in lengths) / seconds, 2)
    row.tokens_per_s = round(real / seconds, 1)
    row.computed_tokens_per_s = round(computed / seconds, 1)
    row.mean_width = round(float(np.mean(widths)), 1)
    if peak_flops:
        row.mfu = round(sum(counter.useful(n) for n in lengths) / seconds / peak_flops, 4)
        row.mfu_computed = round(sum(counter.computed(len(n), w) for n, w in zip(lengths, widths)) / seconds / peak_flops, 4)
    if cuda:
        row.peak_mem_gib = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return counters["stats"]["unique_graphs"] - graphs_before


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _row_line(r: Row) -> str:
    what = f"{r.model} {r.batching} {r.attention}{' compile' if r.compile else ''}{' ckpt' if r.checkpointing else ''}"
    if r.status != "ok":
        return f"  {what}: {r.status} ({r.note}) after {r.seconds}s"
    mfu = f", MFU {100 * r.mfu:.1f}%" if r.mfu is not None else ""
    mem = f", {r.peak_mem_gib} GiB" if r.peak_mem_gib is not None else ""
    return f"  {what}: {r.seqs_per_s} seqs/s, {r.tokens_per_s:.0f} tokens/s{mfu}{mem} ({r.seconds}s)"


def estimate_s(cell: Cell, known_step_s: dict[str, float], warmup: int, steps: int) -> float:
    """A cautious guess of a cell's wall time from the model's measured baseline step, for the budget."""
    base = known_step_s.get(cell.model, 2.0)
    factor = 1.0 + 0.8 * (cell.attention == "eager") + 0.6 * cell.checkpointing
    return 10.0 + 2 * (warmup + steps) * base * factor + (120.0 if cell.compile else 0.0)


def run_table(
    models: list[str],
    *,
    grid: str,
    smoke: bool,
    warmup: int,
    steps: int,
    device,
    peak_flops: float | None,
    compile_backend: str,
    deadline: float | None,
    log: Callable[[str], None],
    on_rows: Callable[[list[Row]], None] = lambda rows: None,
) -> list[Row]:
    """Every cell's two rows; a cell whose estimate does not fit before ``deadline`` is skipped."""
    shapes = SMOKE_SHAPES if smoke else SHAPES
    max_seq_len = SMOKE_MAX_SEQ_LEN if smoke else MAX_SEQ_LEN
    out: list[Row] = []
    known_step_s: dict[str, float] = {}
    for cell in cells(models, grid):
        batch = 4 if smoke else BATCH_SIZES[cell.model]
        need = estimate_s(cell, known_step_s, warmup, steps)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and need > left:
            for b in ("padded", "grouped"):
                row = Row(cell.model, b, cell.attention, cell.compile, cell.checkpointing, batch)
                row.note = f"time budget: {left:.0f}s left, needs ~{need:.0f}s"
                out.append(row)
                log(_row_line(row))
        else:
            rows = run_cell(
                cell,
                shapes=shapes,
                batch_size=batch,
                max_seq_len=max_seq_len,
                warmup=warmup,
                steps=steps,
                device=device,
                peak_flops=peak_flops,
                compile_backend=compile_backend,
                log=log,
            )
            padded = rows[0]
            if cell == Cell(cell.model, "sdpa", False, False) and padded.step_ms:
                known_step_s[cell.model] = padded.step_ms / 1000
            out.extend(rows)
        on_rows(out)
    return out


def as_rows(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
