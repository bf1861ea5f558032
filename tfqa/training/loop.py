"""The training loop: ``_train``, whose step loop reads top to bottom; what it calls out to (resume,
checkpoints, the metrics window, evaluation) stands just above it, one piece each.

    setup (devices, DDP, optimizer, AMP) -> resume (rank 0 decides, every rank loads) -> for each step:
        its grad_accum_steps micro-batches; their rows and span rows counted over all ranks,
            with the stop flag (one all-reduce): a stop saves a checkpoint and ends here
        lr from a plain function of the step
        each micro-batch: forward under autocast, loss sums / the step's counts, backward
            (DDP skips the all-reduce on all but the last micro-batch)
        unscale, clip, step, zero grads
        log every log_every_steps, evaluate every eval_every_steps (sharded over the ranks),
        checkpoint every checkpoint_every_steps, at every epoch end and at the end

Run it plainly (one process, CPU or one GPU) or under ``torchrun --nproc-per-node N``: with
``WORLD_SIZE > 1`` in the environment the process group is set up by ``tfqa.core.distributed``
(nccl on CUDA, gloo on CPU, each rank on ``cuda:LOCAL_RANK``), the model is wrapped in DDP and the
data is sharded by ``LengthGroupedSampler``. Only rank 0 logs and writes checkpoints.

The same global batch gives the same step on 1 GPU, on 8, and with gradient accumulation: the
loss is normalised by the rows (and short-span rows) of the whole step, not of each micro-batch
on each rank, so a rank that happens to hold no span row does not dilute the span loss.

Exact resume: a run killed at any point and resumed from its last checkpoint ends with the same
weights, bit for bit on CPU, as a run never interrupted. What makes it so:
- the data order is a pure function of (seed, epoch) and the checkpoint stores (epoch, batch in
  epoch); the sampler restarts there without reading the skipped rows;
- the learning rate is a pure function of the step;
- model, optimizer and grad-scaler states are saved exactly; the RNG states of every rank
  (python, numpy, torch, cuda) are saved with them, so dropout continues with the same masks;
- nothing else draws from the global RNG between steps: the DataLoader gets its own generator,
  and the evaluation runs with the RNG state saved and put back around it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from tfqa.core import distributed
from tfqa.core.distributed import Distributed, check_batch_split
from tfqa.core.stopping import StopFlag, StopRequested, graceful_stop
from tfqa.features.batching import LengthGroupedSampler, collate
from tfqa.modeling.model import SHORT
from tfqa.training.checkpoint import (
    RESUMABLE_ARTIFACT,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    read_rng_states,
    read_trainer_state,
    remove_leftovers,
    restore_rng_state,
    save_checkpoint,
    snapshot,
    verify_checkpoint,
)

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "apex_fused_adam")


@dataclass
class TrainConfig:
    lr: float = 3e-5
    """Peak learning rate, reached at the end of warm-up."""
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay; 1-D parameters (biases, LayerNorm) get none."""
    warmup_fraction: float = 0.1
    """Warm-up length as a fraction of the total steps (ignored when ``warmup_steps`` is set)."""
    warmup_steps: int | None = None
    """Warm-up length in optimizer steps."""
    epochs: float = 1.0
    """Passes over the data; fractions allowed (1.5 stops half-way through the second epoch)."""
    max_steps: int | None = None
    """Optimizer steps to train; overrides ``epochs`` when set."""
    batch_size: int = 32
    """Rows per optimizer step, over all processes and micro-steps: the recipe's batch size, the
    same whatever the hardware. Each process runs ``batch_size / (grad_accum_steps * world_size)``
    rows per forward pass; that must divide evenly."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (per process)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this; ``None`` or 0: no clipping (the norm is still logged)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    seed: int = 0
    """Seeds the data order and the RNGs (dropout). Rank ``r`` draws from ``seed + r``."""
    precision: str = "auto"
    """``auto``: bf16 autocast on GPUs with bf16 tensor cores (compute capability 8+: A100, H100,
    L4...), fp16 autocast + GradScaler on older CUDA GPUs (V100, T4: bf16 there is emulated), fp32
    on CPU (bf16 is emulated on CPUs without AMX and ~100x slower). ``fp32``/``bf16``/``fp16``
    force a mode; fp16 needs CUDA."""
    optimizer: str = "adamw"
    """``adamw``: ``torch.optim.AdamW``, fused when the device supports it. ``apex_fused_adam``:
    NVIDIA apex's FusedAdam (AdamW mode); apex is built from source on GPU machines, never the PyPI
    package of that name, and is only used when asked for."""
    checkpoint_every_steps: int = 500
    """Save every N optimizer steps (0: only at epoch ends and at the end)."""
    checkpoint_every_minutes: float = 0.0
    """Also save when this many minutes passed since the last save (0: off): a bound on the work a
    crash can lose, whatever a step costs."""
    keep_checkpoints: int | None = 3
    """Keep the newest K checkpoints (``None`` or 0: all)."""
    checkpoint_metrics_wait_s: float = 10.0
    """How long a checkpoint waits for the tracking server to take the metrics logged so far;
    what it has not taken by then is stored in the checkpoint and sent again on resume."""
    log_every_steps: int = 10
    progress: bool = True
    """Print a line to stderr every ``log_every_steps`` (rank 0): step, loss, rate and time left."""
    eval_every_steps: int = 0
    """Call ``eval_fn`` every N steps (0: never)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    mega_batch_steps: int = 50
    """Steps per length-sorted mega-batch: larger pads less, smaller keeps the order more random."""
    pad_to_multiple_of: int | None = None
    """Round each batch's width up to a multiple of this; ``None``: 8 on CUDA (tensor cores), 1 on CPU."""
    device: str = "auto"
    """``auto`` (``cuda:LOCAL_RANK`` when CUDA is there, else cpu), or a device string."""
    gradient_checkpointing: bool = False
    """Recompute the encoder's activations in backward instead of keeping them: about a third more
    compute for a fraction of the activation memory (bigger per-GPU batches for bert-large and
    albert-xxlarge). Same results up to float summation order."""
    compile: bool = False
    """``torch.compile`` the model for training (the first steps compile; widths rounded to
    ``pad_to_multiple_of`` keep the number of shapes small). The saved weights are the same module's."""
    deterministic: bool | None = None
    """``torch.use_deterministic_algorithms`` during training; ``None``: on for CPU, off on CUDA
    (where it costs speed and needs ``CUBLAS_WORKSPACE_CONFIG``)."""

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.warmup_steps is None or self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.max_steps is None or self.max_steps > 0, f"max_steps must be > 0 or None, got {self.max_steps}"),
            (self.batch_size >= 1 and self.grad_accum_steps >= 1, "batch_size and grad_accum_steps must be >= 1"),
            (
                self.batch_size % self.grad_accum_steps == 0,
                f"batch_size {self.batch_size} is not a multiple of grad_accum_steps {self.grad_accum_steps}",
            ),
            (self.max_grad_norm is None or self.max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {self.max_grad_norm}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (
                self.checkpoint_every_steps >= 0 and self.log_every_steps >= 1 and self.eval_every_steps >= 0,
                "checkpoint_every_steps and eval_every_steps must be >= 0, log_every_steps >= 1",
            ),
            (self.keep_checkpoints is None or self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0 or None"),
            (self.num_workers >= 0 and self.mega_batch_steps >= 1, "num_workers must be >= 0, mega_batch_steps >= 1"),
            (self.pad_to_multiple_of is None or self.pad_to_multiple_of >= 1, "pad_to_multiple_of must be >= 1 or None"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")


@dataclass
class TrainResult:
    step: int
    """Optimizer steps done (in total, over all runs of a resumed training)."""
    total_steps: int
    epoch: int
    batch_in_epoch: int
    metrics: dict[str, float] = field(default_factory=dict)
    """The last logged training metrics and the last evaluation's."""
    checkpoint: Path | None = None
    """The newest checkpoint written (rank 0; None elsewhere)."""
    resumed_from: Path | None = None
    train_seconds: float = 0.0


class MetricsLogger(Protocol):
    """What the loop calls on its logger (``tfqa.tracking.RunLogger``; ``NullRunLogger`` off rank 0)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> Any: ...

    def flush_metrics(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s until every metric point has reached the server."""
        ...

    def unsent_metrics(self) -> list[dict[str, Any]]:
        """The points not delivered yet (a checkpoint keeps them, a resume sends them again)."""
        ...

    def log_metric_points(self, points: Iterable[Mapping[str, Any]]) -> None: ...

    def log_artifacts(
        self, local_dir: str | os.PathLike, artifact_path: str | None = None, *, slot: str | None = None, snapshot: bool = False
    ) -> None: ...


# ------------------------------------------------------------------------------------ schedule
def lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then linear decay towards 0 at
    ``total_steps``. Step 0 already trains (lr ``peak / warmup_steps``), and so does the last."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


# ------------------------------------------------------------------------------------ setup helpers
def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete mode: ``fp32``, ``bf16`` or ``fp16``."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if distributed.bf16_native(device) else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 (with a GradScaler) needs CUDA; use fp32 on CPU")
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 on CPU: autocast runs, but CPUs without AMX emulate bf16 (~100x slower than fp32)")
    return precision


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with no weight decay on 1-D parameters (biases, LayerNorm weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "apex_fused_adam":
        try:
            from apex.optimizers import FusedAdam  # NVIDIA apex, built from source; not PyPI's "apex"
        except ImportError as err:
            raise RuntimeError(
                "optimizer=apex_fused_adam needs NVIDIA apex (github.com/NVIDIA/apex, built from source with its "
                "CUDA extensions). `apex.optimizers` does not import here; the PyPI package named 'apex' is an "
                "unrelated project. Use optimizer=adamw (fused AdamW) instead."
            ) from err
        if device.type != "cuda":
            raise RuntimeError("optimizer=apex_fused_adam runs on CUDA only")
        return FusedAdam(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, adam_w_mode=True)
    kwargs = dict(lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)
    try:
        # One kernel for all parameters instead of a handful per tensor; CPU and CUDA both have it.
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError) as err:
        log.info("fused AdamW unavailable on %s (%s); using the foreach implementation", device, err)
        return torch.optim.AdamW(groups, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_worker(worker_id: int) -> None:
    from tfqa.core.stopping import default_stop_signals

    default_stop_signals()  # the parent's stop flag means nothing in a worker; its parent ends it
    # DataLoader seeds torch in each worker (from its own generator); give numpy and random the same.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _resolve_resume(resume: str | os.PathLike | None, out_dir: Path) -> Path | None:
    if resume is None or str(resume).lower() in ("", "none"):
        return None
    if str(resume) == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"resume={resume}: not a complete checkpoint folder")
    return path


def progress_line(step: int, total_steps: int, metrics: dict[str, float], seconds: float, steps_done: int) -> str:
    """``step 50/250 (20%) loss 1.234 lr 3.0e-04 24.1 seq/s, 3m10s left``: the time left from this
    process's own pace (steps before a resume are not counted in it)."""
    left = (total_steps - step) * seconds / max(steps_done, 1)
    return (
        f"train step {step}/{total_steps} ({100 * step / total_steps:.0f}%) loss {metrics['train/loss']:.4f} "
        f"lr {metrics['train/lr']:.2e} {metrics['train/seqs_per_s']:.1f} seq/s, {int(left // 60)}m{int(left % 60):02d}s left"
    )


# ------------------------------------------------------------------------------------ the loop
def train(
    model: torch.nn.Module,
    train_ds,
    cfg: TrainConfig,
    *,
    out_dir: str | os.PathLike,
    logger: MetricsLogger | None = None,
    eval_fn: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
    resume: str | os.PathLike | None = "auto",
    pad_id: int | None = None,
    stop: StopFlag | None = None,
) -> TrainResult:
    """Train ``model`` (a ``CandidateQAModel``) on ``train_ds`` and write checkpoints under
    ``out_dir``; ``resume="auto"`` continues from the newest one there, a path from that one,
    ``None`` starts afresh. ``pad_id`` defaults to the encoder config's ``pad_token_id`` (its value
    never changes a result: padded positions are masked out of attention and of the logits).

    ``eval_fn(model, step)`` is called on every rank (a sharded one, like ``DevEvaluator``, shares
    the work; rank 0's metrics are logged). ``stop``: the caller's stop flag (default: SIGTERM,
    SIGINT and SIGHUP are caught for the duration); when it rises, every rank finishes the same
    step, rank 0 saves a checkpoint, and :class:`StopRequested` is raised."""
    out_dir = Path(out_dir)
    job = distributed.init(cfg.device)
    device = job.device
    deterministic = device.type == "cpu" if cfg.deterministic is None else cfg.deterministic
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    # cuBLAS reads this when deterministic kernels are asked for on CUDA; like the flag, it is the
    # caller's again after training (set only where the caller had not set it).
    set_cublas = deterministic and device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_cublas:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        with contextlib.nullcontext(stop) if stop is not None else graceful_stop() as flag:
            return _train(model, train_ds, cfg, out_dir, logger, eval_fn, resume, pad_id, job, flag)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if set_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        distributed.shutdown(job)


@dataclass(frozen=True)
class _Resume:
    """Rank 0's answer to "where do we start", sent to every rank."""

    path: str
    state: dict


def _resume_decision(resume, out_dir: Path, data_facts: dict) -> _Resume | None:
    """Rank 0 picks the checkpoint (its own output folder's, with node-local folders the only one
    that holds any) and checks that it fits this data."""
    left = remove_leftovers(out_dir)
    if left:
        log.info("%s: removed what killed saves left: %s", out_dir, ", ".join(left))
    ckpt = _resolve_resume(resume, out_dir)
    if ckpt is None:
        return None
    if str(resume) != "auto":  # latest_checkpoint checked the one it picked
        verify_checkpoint(ckpt)
    state = read_trainer_state(ckpt)
    changed = {k: (state.get(k), v) for k, v in data_facts.items() if state.get(k) != v}
    if changed:
        raise ValueError(f"cannot resume from {ckpt}: the data or batch layout changed (saved, now): {changed}")
    return _Resume(str(ckpt), state)


def _start_position(
    resume, out_dir: Path, cfg: TrainConfig, job: Distributed, state_of: dict, data_facts: dict, logger
) -> tuple[int, int, int, Path | None]:
    """(step, epoch, batch in epoch, checkpoint) to start from. Rank 0 decides and reads the
    checkpoint; the other ranks get its model, optimizer and scaler states and their own RNG
    streams from rank 0 over the process group, so every rank resumes from the same checkpoint
    even where only rank 0's disk holds it. Without one: zeros, every RNG seeded afresh."""
    decision = job.decide(lambda: _resume_decision(resume, out_dir, data_facts))
    if decision is None:
        seed_everything(cfg.seed + job.rank)
        return 0, 0, 0, None
    ckpt, state = Path(decision.path), decision.state
    model, optimizer, scaler = state_of["model"], state_of["optimizer"], state_of["scaler"]
    rng_states = None
    if job.is_main:
        load_checkpoint(ckpt, **state_of, restore_rng=False, map_location=job.device, verify=False)
        rng_states = read_rng_states(ckpt)
    if job.enabled:
        weights = job.broadcast_state(model.state_dict() if job.is_main else None)
        opt_state = job.broadcast_state(optimizer.state_dict() if job.is_main else None)
        scaler_state = job.broadcast(scaler.state_dict() if job.is_main else None)
        rng_states = job.broadcast(rng_states)
        if not job.is_main:
            model.load_state_dict(weights)
            optimizer.load_state_dict(opt_state)
            if scaler_state:
                scaler.load_state_dict(scaler_state)
    step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    if rng_states is not None and state.get("world_size") == job.world_size and job.rank < len(rng_states):
        restore_rng_state(rng_states[job.rank])
    else:
        # Another number of processes: same data order (the plan depends on step_rows only),
        # but the saved per-rank RNG streams do not map onto the new ranks.
        log.warning(
            "resuming %s with %d processes (saved with %s): RNG streams re-seeded, not continued",
            ckpt,
            job.world_size,
            state.get("world_size"),
        )
        seed_everything(_derived_seed(cfg.seed, job.rank, step))
    if job.is_main:
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, batch_in_epoch)
        if state.get("unsent_metrics") and logger is not None:
            logger.log_metric_points(state["unsent_metrics"])
    return step, epoch, batch_in_epoch, ckpt


@dataclass
class _Checkpointer:
    """Writes the run's checkpoints: every rank hands its RNG state to rank 0, which alone writes."""

    out_dir: Path
    cfg: TrainConfig
    job: Distributed
    logger: MetricsLogger | None
    state_of: dict
    """model, optimizer and scaler, as ``save_checkpoint`` takes them."""
    data_facts: dict
    config: dict
    last_step: int | None = None
    last_time: float = field(default_factory=time.monotonic)

    def due_by_time(self) -> bool:
        """Rank 0's clock says a timed checkpoint is due (the loop sends its answer to every rank)."""
        minutes = self.cfg.checkpoint_every_minutes
        return bool(minutes) and self.job.is_main and time.monotonic() - self.last_time >= 60 * minutes

    def save(self, step: int, position: dict[str, int], metrics: dict) -> Path | None:
        rng_states = self.job.gather(capture_rng_state())
        path = None
        if self.job.is_main:
            # Steps up to this checkpoint are never trained again after a crash, so their metric
            # points must outlive this process: wait briefly for the server, keep the rest inside.
            unsent = []
            if self.logger is not None:
                if not self.logger.flush_metrics(timeout=self.cfg.checkpoint_metrics_wait_s):
                    unsent = self.logger.unsent_metrics()
            path = save_checkpoint(
                self.out_dir,
                step,
                **self.state_of,
                rng_states=rng_states,
                data_position={**position, "world_size": self.job.world_size, **self.data_facts},
                config=self.config,
                metrics=metrics,
                keep_last=self.cfg.keep_checkpoints,
                unsent_metrics=unsent,
            )
            if self.logger is not None:
                # The store keeps one resumable checkpoint per run, replaced as training goes; it is
                # uploaded from hard links, so pruning the local folder cannot pull it from under
                # the upload, and a newer checkpoint replaces one still waiting to go.
                snap = snapshot(path, self.out_dir / ".upload" / path.name)
                self.logger.log_artifacts(str(snap), RESUMABLE_ARTIFACT, slot=RESUMABLE_ARTIFACT, snapshot=True)
        self.last_step = step
        self.last_time = time.monotonic()
        self.job.barrier()
        return path


class _MetricsWindow:
    """Loss sums and row counts since the last log, and the training time they took: evaluation
    and checkpoints run inside ``paused()`` and are left out of the throughput."""

    # class loss sum, span loss sum, rows, span rows, sequences, tokens, padded positions
    _FIELDS = 7

    def __init__(self, device: torch.device):
        self.device = device
        self.sums = torch.zeros(self._FIELDS, dtype=torch.float64, device=device)
        self.train_seconds = 0.0
        self.t0 = time.perf_counter()

    def add(self, sums: dict, batch: dict) -> None:
        mask = batch["attention_mask"]
        self.sums += torch.stack(
            [
                sums["class_sum"].detach().double(),
                sums["span_sum"].detach().double(),
                sums["rows"].double(),
                sums["span_rows"].double(),
                torch.tensor(float(len(batch["label"])), dtype=torch.float64, device=self.device),
                mask.sum().double(),
                torch.tensor(float(mask.numel()), dtype=torch.float64, device=self.device),
            ]
        )

    def metrics(self, job: Distributed, *, lr: float, grad_norm, epoch: float) -> dict[str, float]:
        """The window's training metrics over all ranks (every rank joins the all-reduce): each
        loss is its mean over the rows it covers, as the step's loss is."""
        class_sum, span_sum, rows, span_rows, seqs, tokens, padded = job.all_reduce_sum(self.sums.clone()).tolist()
        elapsed = time.perf_counter() - self.t0
        self.train_seconds += elapsed
        class_loss, span_loss = class_sum / max(rows, 1.0), span_sum / max(span_rows, 1.0)
        return {
            "train/loss": class_loss + span_loss,
            "train/class_loss": class_loss,
            "train/span_loss": span_loss,
            "train/span_rows": span_rows,
            "train/lr": lr,
            "train/grad_norm": float(grad_norm),
            "train/epoch": epoch,
            "train/seqs_per_s": seqs / elapsed,
            "train/tokens_per_s": tokens / elapsed,
            "train/padding_fraction": 1.0 - tokens / max(padded, 1.0),
        }

    def restart(self) -> None:
        self.sums.zero_()
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        pause_t0 = time.perf_counter()
        yield
        self.t0 += time.perf_counter() - pause_t0


def _evaluate(eval_fn, raw_model, step: int, job: Distributed, logger) -> dict[str, float]:
    """Every rank evaluates (a sharded ``eval_fn`` shares the work, so no rank idles in a barrier
    while another scores the dev set); rank 0's ``eval/``-prefixed metrics are logged. The RNG
    streams are left as the training had them so the evaluation cannot shift them."""
    rng = capture_rng_state()
    raw_model.eval()
    metrics = {(k if "/" in k else f"eval/{k}"): float(v) for k, v in (eval_fn(raw_model, step) or {}).items()}
    restore_rng_state(rng)
    metrics = job.broadcast(metrics)
    if job.is_main and logger is not None:
        logger.log_metrics(metrics, step)
    return metrics


def _step_counts(
    micro_batches: list[dict], stop: StopFlag, timed_checkpoint: bool, job: Distributed
) -> tuple[float, float, bool, bool]:
    """Rows and short-span rows of this optimizer step over every micro-batch of every rank,
    whether any rank was asked to stop, and whether rank 0's clock wants a checkpoint: one
    all-reduce of four numbers per step."""
    labels = [b["label"] for b in micro_batches]
    local = torch.tensor(
        [
            float(sum(len(x) for x in labels)),
            float(sum(int((x == SHORT).sum()) for x in labels)),
            float(stop.requested),
            float(timed_checkpoint),
        ],
        dtype=torch.float64,
        device=job.device,
    )
    rows, span_rows, stops, timed = job.all_reduce_sum(local).tolist()
    return rows, span_rows, stops > 0, timed > 0


def _train(model, train_ds, cfg, out_dir, logger, eval_fn, resume, pad_id, job: Distributed, stop: StopFlag) -> TrainResult:
    device = job.device
    # ---- model, optimizer, precision
    raw_model = model.to(device)
    if cfg.gradient_checkpointing:
        log.info("gradient checkpointing: %s", raw_model.enable_gradient_checkpointing())
    precision = resolve_precision(cfg.precision, device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    optimizer = build_optimizer(raw_model, cfg, device)
    max_norm = cfg.max_grad_norm or float("inf")  # inf: clip_grad_norm_ only measures
    state_of = {"model": raw_model, "optimizer": optimizer, "scaler": scaler}

    # ---- data: each process runs micro_batch rows per forward
    micro_batch = check_batch_split(cfg.batch_size, cfg.grad_accum_steps, job.world_size)
    if len(train_ds) == 0:
        raise ValueError("train: the training set is empty")
    sampler = LengthGroupedSampler(
        train_ds.lengths,
        micro_batch,
        seed=cfg.seed,
        mega_batch_steps=cfg.mega_batch_steps,
        rank=job.rank,
        world_size=job.world_size,
        accum_steps=cfg.grad_accum_steps,
    )
    batches_per_epoch = sampler.num_batches
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_fraction * total_steps)
    if pad_id is None:
        encoder_config = getattr(getattr(raw_model, "encoder", None), "config", None)
        pad_id = int(getattr(encoder_config, "pad_token_id", None) or 0)
    pad_multiple = cfg.pad_to_multiple_of or (8 if device.type == "cuda" else None)
    collate_fn = partial(collate, pad_id=pad_id, pad_to_multiple_of=pad_multiple)
    data_facts = {"num_rows": len(train_ds), "step_rows": sampler.step_rows, "batches_per_epoch": batches_per_epoch}

    # ---- resume or start afresh
    step, epoch, batch_in_epoch, ckpt = _start_position(resume, out_dir, cfg, job, state_of, data_facts, logger)
    model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None) if job.enabled else raw_model
    # dynamic: length-grouped batches change width every step; static shapes would recompile each time.
    forward = torch.compile(model, dynamic=True) if cfg.compile else model
    run_config = {
        **asdict(cfg),
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
        "precision_used": precision,
        "world_size": job.world_size,
        "micro_batch": micro_batch,
    }
    checkpointer = _Checkpointer(out_dir, cfg, job, logger, state_of, data_facts, run_config)

    # ---- the loop
    start_step = step
    metrics: dict[str, float] = {}
    last_ckpt: Path | None = None
    window = _MetricsWindow(device)
    while step < total_steps:
        sampler.set_epoch(epoch, start_batch=batch_in_epoch)
        loader = DataLoader(
            train_ds,
            batch_sampler=sampler,
            collate_fn=collate_fn,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=_seed_worker,
            # Its own generator: creating a loader must not draw from the global RNG (exact resume).
            generator=torch.Generator().manual_seed(_derived_seed(cfg.seed, epoch, job.rank)),
        )
        loader_batches = iter(loader)
        step_sizes = sampler.micro_batches_per_step(epoch)  # the short step has fewer micro-batches
        epoch_end = False
        while not epoch_end and step < total_steps:
            n_micro = step_sizes[batch_in_epoch]
            micro_batches = [next(loader_batches) for _ in range(n_micro)]
            rows, span_rows, stopping, timed_checkpoint = _step_counts(micro_batches, stop, checkpointer.due_by_time(), job)
            if stopping:  # every rank sees the same answer here, so every rank stops after the same step
                position = {"epoch": epoch, "batch_in_epoch": batch_in_epoch}
                with window.paused():
                    if checkpointer.last_step != step:
                        last_ckpt = checkpointer.save(step, position, metrics) or last_ckpt
                raise StopRequested(stop.signum or signal.SIGTERM, f"after step {step}; checkpoint {last_ckpt or 'on rank 0'}")

            lr = lr_at(step, peak=cfg.lr, warmup_steps=warmup_steps, total_steps=total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            for micro, batch in enumerate(micro_batches):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                last_micro = micro == n_micro - 1
                # DDP all-reduces gradients in backward; only the last micro-batch needs it.
                sync = contextlib.nullcontext() if last_micro or not job.enabled else model.no_sync()
                with sync:
                    with autocast():
                        outputs = forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                        sums = raw_model.loss_sums(outputs, batch)
                    # The step's loss is the mean over all its rows (class) and all its span rows
                    # (span), whichever rank and micro-batch holds them; DDP averages the ranks'
                    # gradients, so each rank's share is scaled by the world size.
                    loss = (sums["class_sum"] / rows + sums["span_sum"] / max(span_rows, 1.0)) * job.world_size
                    scaler.scale(loss).backward()
                window.add(sums, batch)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_in_epoch += n_micro
            epoch_end = batch_in_epoch == batches_per_epoch
            if epoch_end:
                epoch, batch_in_epoch = epoch + 1, 0
            done = step == total_steps

            if step % cfg.log_every_steps == 0 or done:
                metrics = window.metrics(job, lr=lr, grad_norm=grad_norm, epoch=step / steps_per_epoch)
                if job.is_main and logger is not None:
                    logger.log_metrics(metrics, step)
                if job.is_main and cfg.progress:
                    line = progress_line(step, total_steps, metrics, window.train_seconds, step - start_step)
                    print(line, file=sys.stderr, flush=True)
                window.restart()

            with window.paused():
                if eval_fn is not None and cfg.eval_every_steps and (step % cfg.eval_every_steps == 0 or done):
                    metrics.update(_evaluate(eval_fn, raw_model, step, job, logger))
                every = cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
                if every or timed_checkpoint or epoch_end or done:
                    position = {"epoch": epoch, "batch_in_epoch": batch_in_epoch}
                    last_ckpt = checkpointer.save(step, position, metrics) or last_ckpt

    return TrainResult(
        step=step,
        total_steps=total_steps,
        epoch=epoch,
        batch_in_epoch=batch_in_epoch,
        metrics=metrics,
        checkpoint=last_ckpt if job.is_main else None,
        resumed_from=ckpt,
        train_seconds=window.train_seconds,
    )
