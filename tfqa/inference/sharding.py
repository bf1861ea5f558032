"""Candidate scoring split into shards that ranks (or machines) share and a crash can resume.

Shard ``i`` holds a contiguous block of whole examples; rank ``r`` of ``w`` scores the shards
with ``i % w == r``. Each shard is written to a temporary name and renamed, so a shard file that
exists is complete: rerunning a killed job scores only the missing ones. Merging concatenates the
shards in index order, which makes the result independent of who scored what.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfqa.inference.batch_scoring import InferenceConfig, score_candidates


def shard_rows(example_ids: pd.Series, rows: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Split ``rows`` (in store order) into ``n_shards`` blocks without cutting an example."""
    if n_shards < 1:
        raise ValueError("n_shards must be >= 1")
    ids = example_ids.to_numpy()[rows]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
    bounds = [0]
    for k in range(1, n_shards):
        target = k * len(rows) / n_shards
        j = int(np.searchsorted(starts, target))
        bounds.append(int(starts[j]) if j < len(starts) else len(rows))
    bounds.append(len(rows))
    return [rows[bounds[k] : bounds[k + 1]] for k in range(n_shards)]


def shard_path(out_dir: Path, i: int, n: int) -> Path:
    return Path(out_dir) / f"part-{i:05d}-of-{n:05d}.parquet"


def score_shards(
    model,
    store,
    out_dir: Path,
    n_shards: int,
    *,
    rows: np.ndarray | None = None,
    rank: int = 0,
    world_size: int = 1,
    cfg: InferenceConfig = InferenceConfig(),
    pad_id: int = 0,
    device=None,
    progress: bool = False,
    on_shard=None,
    class_only: bool = False,
) -> dict[str, int]:
    """Score this rank's missing shards; returns counts of shards scored and skipped.
    ``class_only``: shards hold ``CLASS_COLUMNS`` only (``score_candidates(class_only=True)``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.arange(len(store)) if rows is None else np.asarray(rows)
    done = skipped = 0
    for i, block in enumerate(shard_rows(store.meta["example_id"], rows, n_shards)):
        if i % world_size != rank:
            continue
        final = shard_path(out_dir, i, n_shards)
        if final.exists():
            skipped += 1
            continue
        df = score_candidates(model, store, block, cfg, pad_id=pad_id, device=device, progress=progress, class_only=class_only)
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, final)
        done += 1
        if on_shard is not None:
            on_shard(i, len(block))
    return {"shards_scored": done, "shards_reused": skipped}


def missing_shards(out_dir: Path, n_shards: int) -> list[int]:
    return [i for i in range(n_shards) if not shard_path(out_dir, i, n_shards).exists()]


def shard_paths(out_dir: Path, n_shards: int) -> list[Path]:
    """Every shard's file, in index order; refused while any is missing."""
    missing = missing_shards(out_dir, n_shards)
    if missing:
        raise FileNotFoundError(f"{out_dir}: shards {missing[:10]} not scored yet ({len(missing)} missing)")
    return [shard_path(out_dir, i, n_shards) for i in range(n_shards)]


def merge_shards(out_dir: Path, n_shards: int, columns: list[str] | None = None) -> pd.DataFrame:
    """The shards concatenated in index order; ``columns`` only, when given (Parquet reads no other:
    per-word probabilities are most of a shard's bytes)."""
    parts = [pd.read_parquet(p, columns=columns) for p in shard_paths(out_dir, n_shards)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
