"""Which candidates of an example become training inputs: every positive plus chosen negatives.

Randomness is seeded per example from (seed, example id), not from a stream, so the choice does
not depend on how the file is split across worker processes or on what was read before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from tfqa.data.records import Example
from tfqa.features.labels import positive_indices

Strategy = Literal["all", "random", "hard"]
STRATEGIES = get_args(Strategy)


@dataclass(frozen=True)
class SelectionConfig:
    strategy: Strategy = "all"
    """``all`` (every candidate: inference, mining), ``random`` or ``hard`` negatives."""
    negatives: int = 2
    """Negatives per example for ``random`` and ``hard``."""
    top_level_only: bool = False
    """Draw negatives from top-level candidates only (positives are always kept)."""
    seed: int = 0
    random_negatives: int = 0
    """With ``hard``: this many more negatives drawn at random from the rest of the pool. The
    top-scored negatives alone can all be of one kind (on the demo's pages every mined negative
    was a paragraph, and a model trained on them alone took tables and lists for answers); a few
    random ones keep the easy kinds in view."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.negatives < 0 or self.random_negatives < 0:
            raise ValueError(f"negatives and random_negatives must be >= 0, got {self.negatives}, {self.random_negatives}")
        if self.random_negatives and self.strategy != "hard":
            raise ValueError(f"random_negatives adds to strategy 'hard', not {self.strategy!r} (raise negatives instead)")


# example_id -> (candidate indices, scores), as loaded from the mining stage's scores table.
ScoreTable = Mapping[str, tuple[np.ndarray, np.ndarray]]


def example_rng(seed: int, example_id: str) -> np.random.Generator:
    digest = hashlib.blake2b(example_id.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def select_candidates(ex: Example, cfg: SelectionConfig, scores: ScoreTable | None = None) -> list[int]:
    """Sorted candidate indices to featurise for ``ex``."""
    positives = positive_indices(ex)
    pos_set = set(positives)
    if cfg.strategy == "all":
        return [i for i, c in enumerate(ex.candidates) if c.top_level or not cfg.top_level_only or i in pos_set]
    pool = np.array(
        [i for i, c in enumerate(ex.candidates) if i not in pos_set and (c.top_level or not cfg.top_level_only)],
        dtype=np.int64,
    )
    k = min(cfg.negatives, len(pool))
    if k == 0:
        return positives
    if cfg.strategy == "random":
        chosen = example_rng(cfg.seed, ex.example_id).choice(pool, size=k, replace=False)
    else:
        if scores is None:
            raise ValueError("strategy 'hard' needs a scores table from the mining stage")
        idx, sc = scores.get(ex.example_id, (np.empty(0, np.int64), np.empty(0, np.float32)))
        lookup = dict(zip(idx.tolist(), sc.tolist()))
        # Unscored candidates rank last; ties go to the earlier candidate, so the choice is stable.
        pool_scores = np.array([lookup.get(i, -np.inf) for i in pool.tolist()])
        order = np.lexsort((pool, -pool_scores))
        chosen = pool[order[:k]]
        if cfg.random_negatives and len(pool) > k:
            rest = np.sort(pool[order[k:]])
            m = min(cfg.random_negatives, len(rest))
            chosen = np.concatenate([chosen, example_rng(cfg.seed, ex.example_id).choice(rest, size=m, replace=False)])
    return sorted(positives + chosen.tolist())


def load_score_table(path: str) -> ScoreTable:
    """Read a mining scores table (Parquet: example_id, candidate_index, score) grouped by example."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["example_id", "candidate_index", "score"])
    missing = {"example_id", "candidate_index", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: scores table lacks columns {sorted(missing)}")
    df["example_id"] = df["example_id"].astype(str)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for ex_id, group in df.groupby("example_id", sort=False):
        out[str(ex_id)] = (group["candidate_index"].to_numpy(np.int64), group["score"].to_numpy(np.float32))
    return out
