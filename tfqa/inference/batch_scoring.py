"""Score every candidate of a feature cache: 5 class probabilities and word-level start/end
probabilities per candidate.

Rows are visited in length order and padded only to the longest row of their batch, so a batch
of 20-word candidates costs 20 words, not ``max_seq_len``. Start/end logits are read at each
kept word's first subword and normalised over the candidate's words: the result is indexed by
document word, which is what lets models with different tokenizers be averaged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tfqa.core import distributed
from tfqa.data.records import AnswerClass
from tfqa.features.batching import collate
from tfqa.features.dataset import CandidateDataset, FeatureStore, InMemoryFeatures
from tfqa.inference.decode import OUTPUT_COLUMNS  # noqa: F401  (the layout this module writes)


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
) -> pd.DataFrame:
    """Per-candidate outputs (``OUTPUT_COLUMNS``) for ``rows`` of ``store`` (default: all).

    ``top_level_only`` is for a model trained on top-level candidates only: it never saw a nested
    candidate, and left to rank them it prefers the child holding the answer over the annotated
    top-level parent. Its nested rows are not run; they get the no-answer outputs (NOT_ANSWER with
    probability 1, span probabilities 0), so in an ensemble it votes against them.
    """
    from tfqa.core.progress import track

    # Default: this rank's own device (cuda:LOCAL_RANK under torchrun), never the bare "cuda",
    # which is whatever GPU is current: GPU 0 for every rank that did not set one.
    device = torch.device(device) if device is not None else distributed.local_device()
    model = model.to(device).eval()
    rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
    meta = store.meta.iloc[rows].reset_index(drop=True)
    run = np.flatnonzero(meta["top_level"].to_numpy(bool)) if top_level_only else np.arange(len(rows))
    ds = CandidateDataset(store, rows[run])
    pad_to = None if cfg.sort_by_length else int(store.manifest["features"]["max_seq_len"])
    batches = plan_batches(ds.lengths, cfg, pad_to)
    n = len(rows)
    class_probs = np.zeros((n, 5), dtype=np.float32)
    class_probs[:, AnswerClass.NOT_ANSWER] = 1.0
    start_probs: list[np.ndarray | None] = [None] * n
    end_probs: list[np.ndarray | None] = [None] * n
    for batch_idx in track(batches, desc="inference", unit="batch", disable=not progress):
        items = [ds[int(k)] for k in batch_idx]
        batch = collate(items, pad_id=pad_id, pad_to=pad_to)
        with _autocast(device, cfg.precision):
            cls_logits, start_logits, end_logits = model(
                batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["token_type_ids"].to(device)
            )
        class_probs[run[batch_idx]] = torch.softmax(cls_logits.float(), -1).cpu().numpy()
        start_logits, end_logits = start_logits.float().cpu().numpy(), end_logits.float().cpu().numpy()
        for j, k in enumerate(batch_idx):
            positions = store.word_positions(int(ds.rows[k]))
            start_probs[run[k]] = _softmax(start_logits[j, positions])
            end_probs[run[k]] = _softmax(end_logits[j, positions])
    for i in np.setdiff1d(np.arange(n), run, assume_unique=True):  # rows not run: no answer
        start_probs[i] = np.zeros(len(store.word_positions(int(rows[i]))), dtype=np.float32)
        end_probs[i] = start_probs[i].copy()
    return pd.DataFrame(
        {
            "example_id": meta["example_id"].astype(str),
            "candidate_index": meta["candidate_index"].astype(np.int32),
            "word_offset": meta["word_offset"].astype(np.int32),
            "class_probs": list(class_probs),
            "start_probs": start_probs,
            "end_probs": end_probs,
        }
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x.astype(np.float32)
    z = np.exp(x - x.max())
    return (z / z.sum()).astype(np.float32)
