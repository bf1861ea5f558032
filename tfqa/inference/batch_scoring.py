"""Score every candidate of a feature cache: 5 class probabilities and word-level start/end
probabilities per candidate (or, for mining, the class probabilities alone).

Rows are visited in length order and padded only to the longest row of their batch, so a batch
of 20-word candidates costs 20 words, not ``max_seq_len``. Start/end logits are read at each
kept word's first subword and normalised over the candidate's words: the result is indexed by
document word, which is what lets models with different tokenizers be averaged.

Outside the model the work is per batch, not per row: a batch's padded inputs and its word
positions are built with numpy (in ``DataLoader`` workers with pinned memory on CUDA, so the GPU
does not wait for them), the start/end logits at the word positions are picked with one gather on
the device and normalised there, and results stay on the device until ``sync_every`` batches are
done: one copy to the host for many batches instead of a synchronising copy per batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tfqa.core import distributed
from tfqa.data.records import AnswerClass
from tfqa.features.dataset import FeatureStore, InMemoryFeatures
from tfqa.inference.decode import OUTPUT_COLUMNS  # noqa: F401  (the layout this module writes)

CLASS_COLUMNS = ("example_id", "candidate_index", "word_offset", "class_probs")
"""What ``score_candidates(class_only=True)`` writes: all mining reads."""


@dataclass(frozen=True)
class InferenceConfig:
    batch_tokens: int = 16384
    """Token budget per batch (rows x padded length): long rows get small batches."""
    max_batch_size: int = 256
    sort_by_length: bool = True
    """False pads every batch to ``max_seq_len`` in file order: the baseline the benchmark uses."""
    precision: str = "auto"
    """``auto``: bf16 autocast on GPUs with bf16 tensor cores (compute capability 8+), fp32
    elsewhere (V100/T4 emulate bf16: ``fp16`` is the fast choice there)."""
    loader_workers: int = -1
    """Processes building batches ahead of the model (``DataLoader`` workers); -1: 2 on CUDA, none
    on the CPU (where they would only take cores from the model)."""
    sync_every: int = 64
    """Batches whose results stay on the device before one copy to the host."""
    round_width_to: int = 0
    """Pad each batch's width up to a multiple of this (0: 8 on CUDA, where tensor cores want it;
    1 elsewhere)."""


def _autocast(device: torch.device, precision: str):
    if (precision == "auto" and distributed.bf16_native(device)) or (device.type == "cuda" and precision == "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision == "fp16":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def plan_batches(lengths: np.ndarray, cfg: InferenceConfig, pad_to: int | None = None) -> list[np.ndarray]:
    """Row index batches under the token budget (length-sorted unless configured otherwise)."""
    order = np.argsort(lengths, kind="stable") if cfg.sort_by_length else np.arange(len(lengths))
    batches, current, longest = [], [], 0
    for i in order:
        width = pad_to or max(longest, int(lengths[i]))
        if current and (width * (len(current) + 1) > cfg.batch_tokens or len(current) >= cfg.max_batch_size):
            batches.append(np.array(current))
            current, width = [], pad_to or int(lengths[i])
        current.append(int(i))
        longest = width
    if current:
        batches.append(np.array(current))
    return batches


class BatchInputs(torch.utils.data.Dataset):
    """Batch ``b`` of a plan as int64 tensors: ``input_ids``, ``attention_mask``, ``token_type_ids``
    padded to the batch's width, and (unless ``with_positions`` is off) each row's word positions
    padded to the batch's most words, with their mask. Rows are copied with one slice each; masks
    and token types come from broadcast comparisons."""

    def __init__(
        self,
        store: FeatureStore | InMemoryFeatures,
        rows: np.ndarray,
        batches: list[np.ndarray],
        *,
        pad_id: int,
        pad_to: int | None,
        multiple_of: int,
        with_positions: bool,
    ):
        self.store, self.rows, self.batches = store, rows, batches
        self.pad_id, self.pad_to, self.multiple_of, self.with_positions = pad_id, pad_to, multiple_of, with_positions
        self.q_len = store.meta["question_len"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> dict[str, torch.Tensor]:
        rows = self.rows[self.batches[b]]
        ids, positions = self.store.ragged_rows(rows)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        width = max(int(lengths.max()), self.pad_to or 0)
        width = -(-width // self.multiple_of) * self.multiple_of
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for j, x in enumerate(ids):
            input_ids[j, : len(x)] = x
        col = np.arange(width)
        mask = col < lengths[:, None]
        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            # 0 on [CLS] question [SEP], 1 on the candidate's subwords, 0 on padding
            "token_type_ids": torch.from_numpy(((col >= self.q_len[rows][:, None] + 2) & mask).astype(np.int64)),
        }
        if self.with_positions:
            counts = np.fromiter((len(x) for x in positions), dtype=np.int64, count=len(positions))
            pos = np.zeros((len(rows), max(int(counts.max()), 1)), dtype=np.int64)
            for j, x in enumerate(positions):
                pos[j, : len(x)] = x
            out["positions"] = torch.from_numpy(pos)
            out["position_mask"] = torch.from_numpy(np.arange(pos.shape[1]) < counts[:, None])
        return out


def _word_probs(logits: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's words of the logits at their first subwords; 0 past a row's words."""
    picked = logits.float().gather(1, positions).masked_fill(~mask, float("-inf"))
    return torch.softmax(picked, -1).masked_fill(~mask, 0.0)  # a row without words: all 0, not NaN


@torch.no_grad()
def score_candidates(
    model: torch.nn.Module,
    store: FeatureStore | InMemoryFeatures,
    rows: np.ndarray | None = None,
    cfg: InferenceConfig = InferenceConfig(),
    *,
    pad_id: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    top_level_only: bool = False,
    class_only: bool = False,
) -> pd.DataFrame:
    """Per-candidate outputs (``OUTPUT_COLUMNS``) for ``rows`` of ``store`` (default: all).

    ``top_level_only`` is for a model trained on top-level candidates only: it never saw a nested
    candidate, and left to rank them it prefers the child holding the answer over the annotated
    top-level parent. Its nested rows are not run; they get the no-answer outputs (NOT_ANSWER with
    probability 1, span probabilities 0), so in an ensemble it votes against them.

    ``class_only`` returns ``CLASS_COLUMNS`` only: no word positions are read, moved or normalised
    (mining reads nothing else).
    """
    from tfqa.core.progress import track

    # Default: this rank's own device (cuda:LOCAL_RANK under torchrun), never the bare "cuda",
    # which is whatever GPU is current: GPU 0 for every rank that did not set one.
    device = torch.device(device) if device is not None else distributed.local_device()
    cuda = device.type == "cuda"
    model = model.to(device).eval()
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    meta = store.meta.iloc[rows].reset_index(drop=True)
    run = np.flatnonzero(meta["top_level"].to_numpy(bool)) if top_level_only else np.arange(len(rows))
    pad_to = None if cfg.sort_by_length else int(store.manifest["features"]["max_seq_len"])
    batches = plan_batches(store.lengths[rows[run]], cfg, pad_to)
    inputs = BatchInputs(
        store,
        rows[run],
        batches,
        pad_id=pad_id,
        pad_to=pad_to,
        multiple_of=cfg.round_width_to or (8 if cuda else 1),
        with_positions=not class_only,
    )
    workers = cfg.loader_workers if cfg.loader_workers >= 0 else (2 if cuda else 0)
    loader = torch.utils.data.DataLoader(
        inputs,
        batch_size=None,
        num_workers=workers,
        pin_memory=cuda,
        prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    n = len(rows)
    class_probs = np.zeros((n, 5), dtype=np.float32)
    class_probs[:, AnswerClass.NOT_ANSWER] = 1.0
    start_probs: list[np.ndarray | None] = [None] * n
    end_probs: list[np.ndarray | None] = [None] * n
    pending: list[tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]] = []

    def flush() -> None:
        """Copy the pending batches' results to the host at once and file them by row."""
        if not pending:
            return
        cls = torch.cat([p[1] for p in pending]).cpu().numpy()
        batch_rows = run[np.concatenate([batches[p[0]] for p in pending])]
        class_probs[batch_rows] = cls
        if not class_only:
            flat = [torch.cat([p[k].flatten() for p in pending]).cpu().numpy() for k in (2, 3)]
            masks = [p[4].cpu().numpy() for p in pending]  # already on the host side (pinned or CPU)
            start, end = flat
            at, r = 0, 0
            for mask in masks:
                counts = mask.sum(1)
                size = mask.size
                s_rows = np.split(start[at : at + size][mask.ravel()], np.cumsum(counts)[:-1])
                e_rows = np.split(end[at : at + size][mask.ravel()], np.cumsum(counts)[:-1])
                for j in range(len(counts)):
                    start_probs[batch_rows[r + j]] = s_rows[j]
                    end_probs[batch_rows[r + j]] = e_rows[j]
                at, r = at + size, r + len(counts)
        pending.clear()

    for b, batch in enumerate(track(loader, desc="inference", unit="batch", disable=not progress)):
        with _autocast(device, cfg.precision):
            cls_logits, start_logits, end_logits = model(
                batch["input_ids"].to(device, non_blocking=True),
                batch["attention_mask"].to(device, non_blocking=True),
                batch["token_type_ids"].to(device, non_blocking=True),
            )
        cls = torch.softmax(cls_logits.float(), -1)
        if class_only:
            pending.append((b, cls, None, None, None))
        else:
            positions = batch["positions"].to(device, non_blocking=True)
            mask = batch["position_mask"]
            on_device = mask.to(device, non_blocking=True)
            start, end = (_word_probs(x, positions, on_device) for x in (start_logits, end_logits))
            pending.append((b, cls, start, end, mask))
        if len(pending) >= cfg.sync_every:
            flush()
    flush()
    columns = {
        "example_id": meta["example_id"].astype(str),
        "candidate_index": meta["candidate_index"].astype(np.int32),
        "word_offset": meta["word_offset"].astype(np.int32),
        "class_probs": list(class_probs),
    }
    if class_only:
        return pd.DataFrame(columns)
    skipped = np.setdiff1d(np.arange(n), run, assume_unique=True)
    if len(skipped):  # rows not run: no answer, over the same words
        _, positions = store.ragged_rows(rows[skipped])
        for i, p in zip(skipped.tolist(), positions):
            start_probs[i] = np.zeros(len(p), dtype=np.float32)
            end_probs[i] = start_probs[i].copy()
    return pd.DataFrame({**columns, "start_probs": start_probs, "end_probs": end_probs})
