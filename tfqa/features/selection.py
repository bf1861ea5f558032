"""Which candidates of an example become training inputs: every positive plus chosen negatives.

Randomness is seeded per example from (seed, example id), not from a stream, so the choice does
not depend on how the file is split across worker processes or on what was read before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
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


class PackedScores(Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """A scores table as four flat numpy arrays: the sorted example ids, where each one's rows start,
    and every row's candidate index and score.

    Built once in the parent of the feature workers, it reaches them by ``fork`` without a copy:
    a lookup reads the arrays and touches no per-example Python object, so no page of it is ever
    written and copied in a worker (a dict of 300k tuples of arrays would be: reference counts
    live in the objects). About 8 bytes a candidate plus the ids, against ~60 for such a dict."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, candidates: np.ndarray, scores: np.ndarray):
        self.ids, self.offsets, self.candidates, self.scores = ids, offsets, candidates, scores

    def __getitem__(self, example_id: str) -> tuple[np.ndarray, np.ndarray]:
        i = int(np.searchsorted(self.ids, example_id))
        if i == len(self.ids) or self.ids[i] != example_id:
            raise KeyError(example_id)
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.candidates[lo:hi].astype(np.int64), self.scores[lo:hi]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids.tolist())

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ids, self.offsets, self.candidates, self.scores))


SCORE_COLUMNS = ("example_id", "candidate_index", "score")


def load_score_table(path: str) -> PackedScores:
    """Read a mining scores table (Parquet: example_id, candidate_index, score) grouped by example,
    each example's rows in file order.

    Example ids are read dictionary-encoded (an int32 code a row, one string an example), so a
    40M-row table never becomes 40M Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    missing = set(SCORE_COLUMNS) - set(names)
    if missing:
        raise ValueError(f"{path}: scores table lacks columns {sorted(missing)}")
    schema = pq.read_schema(path)
    as_text = pa.types.is_string(schema.field("example_id").type) or pa.types.is_large_string(schema.field("example_id").type)
    table = pq.read_table(path, columns=list(SCORE_COLUMNS), read_dictionary=["example_id"] if as_text else None)
    ids = table.column("example_id")
    if not as_text:  # numeric ids (a table written by hand): as the strings examples carry
        ids = pc.dictionary_encode(pc.cast(ids, pa.string()))
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    codes = ids.indices.to_numpy(zero_copy_only=False)
    unique, code_rank = np.unique(np.asarray(ids.dictionary.to_pylist(), dtype=str), return_inverse=True)
    key = code_rank[codes] if len(codes) else np.zeros(0, np.int64)
    order = np.argsort(key, kind="stable")  # stable: an example's rows keep their file order
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    return PackedScores(
        unique[key[starts]] if len(key) else np.zeros(0, dtype=str),
        np.r_[starts, len(key)].astype(np.int64),
        table.column("candidate_index").to_numpy().astype(np.int32)[order],
        table.column("score").to_numpy().astype(np.float32)[order],
    )
