"""``score_candidates`` as it was before issue 20 (a row at a time: dataset rows, ``collate``, numpy
softmaxes per row, a device copy per batch): the reference the batched path must reproduce."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tfqa.data.records import AnswerClass
from tfqa.features.batching import collate
from tfqa.features.dataset import CandidateDataset
from tfqa.inference.batch_scoring import InferenceConfig, plan_batches


@torch.no_grad()
def reference_score_candidates(
    model: torch.nn.Module,
    store,
    rows: np.ndarray | None = None,
    cfg: InferenceConfig = InferenceConfig(),
    *,
    pad_id: int = 0,
    device: torch.device | str | None = None,
    top_level_only: bool = False,
) -> pd.DataFrame:
    """Per-candidate outputs (``OUTPUT_COLUMNS``) for ``rows`` of ``store`` (default: all).

    ``top_level_only`` is for a model trained on top-level candidates only: it never saw a nested
    candidate, and left to rank them it prefers the child holding the answer over the annotated
    top-level parent. Its nested rows are not run; they get the no-answer outputs (NOT_ANSWER with
    probability 1, span probabilities 0), so in an ensemble it votes against them.
    """
    device = torch.device(device or "cpu")
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
    for batch_idx in batches:
        items = [ds[int(k)] for k in batch_idx]
        batch = collate(items, pad_id=pad_id, pad_to=pad_to)
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
