"""The ``mine_hard_negatives`` stage: score every negative training candidate with the
``bert_base`` model; the negatives it likes most become the next variants' training data."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfqa.core.bounds import bounded, check_bounds
from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.inference.batch_scoring import InferenceConfig
from tfqa.inference.sharding import missing_shards, score_shards, shard_paths
from tfqa.tracking.datasets import TRAINING, features_input, log_data_inputs
from tfqa.tracking.names import DATA_FINGERPRINT_TAG, MINING_DIR, MODEL_VERSION_TAG, UPSTREAM_TAG_PREFIX


@dataclass(frozen=True)
class MineConfig:
    model: str
    """The scoring model: run id, runs:/ or models:/ URI, or a local model dir (default: the latest
    FINISHED train_bert_base run)."""
    train_data: str
    """The NQ training file (default: settings data.train)."""
    output_dir: str = "outputs"
    top_level_only: bool = False
    """Score the top-level negatives only (``SelectionConfig.top_level_only``)."""
    negatives_per_example: int = bounded(2, min=1)
    """How many hard negatives per example the selection table keeps."""
    n_shards: int = bounded(0, min=0)
    """Pieces the scoring is split into, shared by the ranks and kept across a crash (0: 16, or 4 per
    rank above 4 ranks, so no GPU idles; a resumed job keeps its count only with the same value)."""
    max_seq_len: int = bounded(0, min=0)
    """0: what the scoring model was trained with (its candidates are then seen as in training)."""
    max_question_len: int = bounded(0, min=0)
    """0: what the scoring model was trained with."""
    batch_tokens: int = bounded(16384, min=1)
    workers: int = bounded(0, min=0)
    """Feature-building processes (0: one per CPU core)."""
    max_lines: int = bounded(0, min=0)
    """Mine only the first this many training examples (0: all); the hard-negative variants then
    train on the same ones (their own ``max_lines``)."""

    def __post_init__(self) -> None:
        check_bounds(self)


def long_scores(outputs: pd.DataFrame) -> np.ndarray:
    """The mining score: how strongly the model takes a candidate for an answer, 1 - p(none)."""
    return 1.0 - np.stack(outputs["class_probs"].to_numpy())[:, 0]


SCORE_SOURCE_COLUMNS = ["example_id", "candidate_index", "class_probs"]


def merge_scores(shard_dir: Path, n_shards: int) -> pd.DataFrame:
    """The scores table (example_id, candidate_index, score) of every shard, in shard order.

    Reads the three columns it needs, one shard at a time, and keeps only the score of each
    row's class probabilities: about 20 bytes a candidate instead of a whole shard's outputs
    (per-word probabilities included, ~1.7 kB a candidate)."""
    import pyarrow.parquet as pq

    parts = []
    for path in shard_paths(shard_dir, n_shards):
        table = pq.read_table(path, columns=SCORE_SOURCE_COLUMNS)
        probs = table.column("class_probs").combine_chunks()
        if len(probs) and not (np.diff(probs.offsets.to_numpy()) == 5).all():
            raise ValueError(f"{path}: class_probs rows are not 5 probabilities each")
        p_none = probs.values.to_numpy(zero_copy_only=False).reshape(-1, 5)[:, 0] if len(probs) else np.zeros(0)
        parts.append(
            pd.DataFrame(
                {
                    # deduplicated: one string object per example, not per candidate
                    "example_id": table.column("example_id").to_pandas().astype(str),
                    "candidate_index": table.column("candidate_index").to_numpy().astype(np.int32),
                    "score": (1.0 - p_none).astype(np.float32),
                }
            )
        )
    if not parts:
        return pd.DataFrame({"example_id": [], "candidate_index": np.zeros(0, np.int32), "score": np.zeros(0, np.float32)})
    return pd.concat(parts, ignore_index=True)


def select_hard(scores: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top-k scored negatives per example, examples in id order; ties go to the lower candidate
    index, then to the earlier row.

    Sorts integer codes of the ids, not the strings: at 40M rows a multi-column ``sort_values``
    over the id strings was most of the merge's memory."""
    codes, _ = pd.factorize(scores["example_id"], sort=True)  # codes in the ids' sorted order
    order = np.lexsort((scores["candidate_index"].to_numpy(), -scores["score"].to_numpy(), codes))
    grouped = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if len(order) else np.zeros(0, np.int64)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return scores.iloc[order[rank < k]].reset_index(drop=True)


def shard_count(requested: int, world_size: int) -> int:
    """``requested``, or by default 16 and at least 4 per rank (shards are whole examples of
    unequal length: several per rank even out the ranks' work)."""
    return requested or max(16, 4 * world_size)


def run_mine(cfg: MineConfig, run=None) -> dict:
    """Score the negatives (each rank its shards, on its own device) and, on rank 0, merge and
    select. Ranks other than 0 return their counts once their shards are written."""
    from tfqa.core import distributed
    from tfqa.features.dataset import FeatureStore
    from tfqa.modeling.loading import load_tfqa_model
    from tfqa.modeling.saved import read_feature_config

    job = distributed.init()
    rank, world_size = job.rank, job.world_size
    n_shards = shard_count(cfg.n_shards, world_size)
    loaded = load_tfqa_model(cfg.model)
    trained = read_feature_config(loaded.model_dir)
    build = BuildConfig(
        features=FeatureConfig(
            cfg.max_seq_len or trained.max_seq_len, cfg.max_question_len or trained.max_question_len, trained.html_tokens
        ),
        selection=SelectionConfig("all", top_level_only=cfg.top_level_only),
        workers=cfg.workers,
        max_lines=cfg.max_lines,
    )
    info = build_features(cfg.train_data, loaded.model_dir, Path(cfg.output_dir) / "features", build)
    store = FeatureStore(info.path)
    negatives = np.flatnonzero(store.meta["label"].to_numpy() == 0)
    shard_dir = Path(cfg.output_dir) / "mining" / f"{loaded.cache_key}-{info.fingerprint}-{n_shards}"
    if run is not None:
        run.log_params(
            {
                "mine": {**asdict(cfg), "n_shards": n_shards},
                "features": asdict(build.features),
                "hardware": distributed.describe(job),
            }
        )
        run.set_tags(
            {
                DATA_FINGERPRINT_TAG: info.fingerprint,
                **({f"{UPSTREAM_TAG_PREFIX}model": loaded.source.run_id} if loaded.source.run_id else {}),
                **({MODEL_VERSION_TAG: loaded.source.model_version} if loaded.source.model_version else {}),
            }
        )
        log_data_inputs(run, [features_input(info.manifest, TRAINING)], model_ids=[loaded.source.model_id])

    t0 = time.perf_counter()
    scored_rows = [0]

    from tfqa.core.stopping import graceful_stop

    def on_shard(i: int, n_rows: int) -> None:
        # A stop waits for the shard under way (each is written whole); a rerun scores the rest.
        stop.raise_if_requested(f"after mining shard {i} ({scored_rows[0] + n_rows} candidates scored on this rank)")
        scored_rows[0] += n_rows
        if run is not None:
            elapsed = time.perf_counter() - t0
            run.log_metrics({"mine/candidates_scored": scored_rows[0], "mine/candidates_per_s": scored_rows[0] / elapsed}, step=i)

    with graceful_stop() as stop:
        counts = score_shards(
            loaded.model,
            store,
            shard_dir,
            n_shards,
            rows=negatives,
            rank=rank,
            world_size=world_size,
            cfg=InferenceConfig(batch_tokens=cfg.batch_tokens),
            pad_id=_pad_id(loaded.model_dir),
            device=job.device,
            progress=True,
            on_shard=on_shard,
            class_only=True,
        )
    seconds = time.perf_counter() - t0
    if rank != 0:
        return counts
    if missing_shards(shard_dir, n_shards):
        # Other ranks are still scoring theirs; rank 0 merges once every shard is on disk.
        _wait_for_shards(shard_dir, n_shards)
    scores = merge_scores(shard_dir, n_shards)
    hard = select_hard(scores, cfg.negatives_per_example)
    out = shard_dir / "result"
    out.mkdir(exist_ok=True)
    scores.to_parquet(out / "scores.parquet", index=False)
    hard.to_parquet(out / "hard_negatives.parquet", index=False)
    summary = {
        "mine/negatives_scored": len(scores),
        "mine/examples": int(scores["example_id"].nunique()),
        "mine/hard_negatives": len(hard),
        "mine/score_mean": float(scores["score"].mean()) if len(scores) else 0.0,
        "mine/hard_score_mean": float(hard["score"].mean()) if len(hard) else 0.0,
        "mine/seconds": seconds,
        **{f"mine/{k}": v for k, v in counts.items()},
    }
    if counts["shards_scored"] and seconds > 0:
        summary["mine/candidates_per_s"] = scored_rows[0] / seconds
    if run is not None:
        run.log_metrics(summary, step=n_shards)
        run.log_artifact(str(out / "scores.parquet"), MINING_DIR)
        run.log_artifact(str(out / "hard_negatives.parquet"), MINING_DIR)
        plot = _histogram(scores["score"].to_numpy(), hard["score"].to_numpy(), out / "score_histogram.png")
        run.log_artifact(str(plot), MINING_DIR)
    return summary


def _pad_id(model_dir: Path) -> int:
    from tfqa.features.tokenization import load_tokenizer, pad_id_of

    return pad_id_of(load_tokenizer(model_dir))


def _wait_for_shards(shard_dir: Path, n: int, timeout_s: float = 24 * 3600) -> None:
    deadline = time.time() + timeout_s
    while missing_shards(shard_dir, n):
        if time.time() > deadline:
            raise TimeoutError(f"{shard_dir}: shards {missing_shards(shard_dir, n)[:10]} never appeared")
        time.sleep(5)


def _histogram(all_scores: np.ndarray, hard_scores: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(all_scores, bins=bins, alpha=0.6, label=f"all negatives ({len(all_scores)})")
    ax.hist(hard_scores, bins=bins, alpha=0.6, label=f"selected hard ({len(hard_scores)})")
    ax.set_xlabel("1 - p(not an answer)")
    ax.set_ylabel("candidates")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
