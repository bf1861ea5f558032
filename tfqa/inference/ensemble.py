"""Weighted averaging of several models' per-candidate outputs, weight fitting, and the original's
candidate-pruning cascade.

Models meet at the word level: every model scored the same candidates (same example_id,
candidate_index and word_offset), whatever its tokenizer, so class probabilities and word-level
start/end probabilities can be averaged row by row. Where one model saw fewer words of a candidate
(different truncation) its missing words count as probability 0; rows are not renormalised,
because decoding only takes argmaxes.

Weight fitting never reports a score measured on the examples the weights were fitted to:
``cross_validated_weights`` splits the examples into two halves by a stable hash of their id,
fits on each half and scores on the other.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tfqa.inference.decode import CandidateOutputs, OutputsLike, Ragged, as_outputs, gather_index, group_starts

Objective = Callable[[CandidateOutputs], float]
"""Scores ensembled outputs (higher is better), e.g. decode + thresholds + the NQ F1. It must score
only the examples present in its argument: cross-validation hands it one half of the examples."""


# --------------------------------------------------------------------------------------------
# Weights and alignment
# --------------------------------------------------------------------------------------------


def normalise_weights(weights: Sequence[float], n_models: int) -> np.ndarray:
    """``weights`` scaled to sum 1; zero weights are allowed (the model is then skipped)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n_models:
        raise ValueError(f"{len(w)} weights for {n_models} models")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights sum to 0")
    return w / total


def _model_names(n: int, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(f"model{k}" for k in range(n))
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} models")
    return tuple(str(x) for x in names)


def _row_keys(ref_ids, ref_cands, other_ids, other_cands) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys of (example_id, candidate_index) for two tables' columns, on a shared id coding."""
    codes, _ = pd.factorize(np.concatenate([ref_ids, other_ids]), sort=False)
    scale = int(max(ref_cands.max(initial=0), other_cands.max(initial=0))) + 1
    keys = codes.astype(np.int64) * scale + np.concatenate([ref_cands, other_cands])
    return keys[: len(ref_ids)], keys[len(ref_ids) :]


def _check_unique(keys: np.ndarray, out: CandidateOutputs, name: str) -> pd.Index:
    index = pd.Index(keys)
    if not index.is_unique:
        r = int(np.flatnonzero(index.duplicated())[0])
        raise ValueError(f"model {name!r}: duplicate row ({out.example_id[r]!r}, {int(out.candidate_index[r])})")
    return index


def _match(ref: CandidateOutputs, other: CandidateOutputs, ref_name: str, name: str) -> np.ndarray:
    """Row of ``other`` for each row of ``ref``; raises naming a key when the row sets differ."""
    ref_keys, other_keys = _row_keys(ref.example_id, ref.candidate_index, other.example_id, other.candidate_index)
    _check_unique(ref_keys, ref, ref_name)
    index = _check_unique(other_keys, other, name)
    rows = index.get_indexer(ref_keys)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        r = int(missing[0])
        raise ValueError(
            f"model {name!r} lacks {len(missing)} rows that model {ref_name!r} has, "
            f"e.g. ({ref.example_id[r]!r}, {int(ref.candidate_index[r])})"
        )
    if len(other) != len(ref):
        used = np.zeros(len(other), dtype=bool)
        used[rows] = True
        r = int(np.flatnonzero(~used)[0])
        raise ValueError(
            f"model {name!r} has {len(other) - len(ref)} rows that model {ref_name!r} lacks, "
            f"e.g. ({other.example_id[r]!r}, {int(other.candidate_index[r])})"
        )
    bad = np.flatnonzero(other.word_offset[rows] != ref.word_offset)
    if len(bad):
        r = int(bad[0])
        raise ValueError(
            f"model {name!r}: ({ref.example_id[r]!r}, {int(ref.candidate_index[r])}) starts at word "
            f"{int(other.word_offset[rows[r]])}, model {ref_name!r} says {int(ref.word_offset[r])}"
        )
    return rows


@dataclass(frozen=True)
class AlignedOutputs:
    """Several models' outputs laid out on one row order (the first model's) and one word layout
    (each row as long as the longest model's), so combining them is a weighted sum of arrays.

    A model already in that layout is held by reference, not copied.
    """

    names: tuple[str, ...]
    example_id: np.ndarray
    candidate_index: np.ndarray
    word_offset: np.ndarray
    offsets: np.ndarray  # int64 (n + 1,): shared word layout
    class_probs: tuple[np.ndarray, ...]  # per model, float32 (n, 5)
    start_probs: tuple[np.ndarray, ...]  # per model, float32 (offsets[-1],)
    end_probs: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.example_id)

    @property
    def n_models(self) -> int:
        return len(self.names)

    def combine(self, weights: Sequence[float]) -> CandidateOutputs:
        """The weighted average (weights normalised to sum 1) as one model's outputs."""
        w = normalise_weights(weights, self.n_models)

        def mix(arrays: tuple[np.ndarray, ...]) -> np.ndarray:
            out = np.zeros_like(arrays[0], dtype=np.float32)
            for wk, a in zip(w, arrays):
                if wk > 0:
                    out += np.float32(wk) * a
            return out

        return CandidateOutputs(
            example_id=self.example_id,
            candidate_index=self.candidate_index,
            word_offset=self.word_offset,
            class_probs=mix(self.class_probs),
            start_probs=Ragged(mix(self.start_probs), self.offsets),
            end_probs=Ragged(mix(self.end_probs), self.offsets),
        )

    def take(self, rows: np.ndarray) -> AlignedOutputs:
        rows = np.asarray(rows, dtype=np.int64)
        index, lengths = gather_index(self.offsets, rows)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return AlignedOutputs(
            self.names,
            self.example_id[rows],
            self.candidate_index[rows],
            self.word_offset[rows],
            offsets,
            tuple(c[rows] for c in self.class_probs),
            tuple(s[index] for s in self.start_probs),
            tuple(e[index] for e in self.end_probs),
        )


def _relayout(model: CandidateOutputs, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's start/end probabilities written into the word layout ``offsets`` of the
    aligned rows (``rows[r]`` = the model's row for aligned row ``r``), zero-padded."""
    src = model.start_probs.offsets
    if np.array_equal(rows, np.arange(len(rows))) and np.array_equal(src, offsets):
        return model.start_probs.values, model.end_probs.values  # already laid out: no copy
    # Walk the model's words in its own order: each moves by (aligned row start - own row start).
    aligned_row = np.empty(len(rows), dtype=np.int64)
    aligned_row[rows] = np.arange(len(rows))
    dest = np.repeat(offsets[:-1][aligned_row] - src[:-1], np.diff(src))
    dest += np.arange(len(dest), dtype=np.int64)
    start = np.zeros(int(offsets[-1]), dtype=np.float32)
    end = np.zeros(int(offsets[-1]), dtype=np.float32)
    start[dest] = model.start_probs.values
    end[dest] = model.end_probs.values
    return start, end


def align(outputs: Sequence[OutputsLike], names: Sequence[str] | None = None) -> AlignedOutputs:
    """Line several models' outputs up on (example_id, candidate_index).

    Raises ``ValueError`` naming the model and a sample key when a model's rows differ from the
    first model's (missing, extra or duplicated rows, or a different word offset).
    """
    if not outputs:
        raise ValueError("no model outputs to ensemble")
    models = [as_outputs(o) for o in outputs]
    names = _model_names(len(models), names)
    ref = models[0]
    rows = [np.arange(len(ref))] + [_match(ref, m, names[0], name) for m, name in zip(models[1:], names[1:])]
    lengths = np.max(np.stack([m.start_probs.lengths[r] for m, r in zip(models, rows)]), axis=0)
    offsets = np.zeros(len(ref) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    words = [_relayout(m, r, offsets) for m, r in zip(models, rows)]
    return AlignedOutputs(
        names=names,
        example_id=ref.example_id,
        candidate_index=ref.candidate_index,
        word_offset=ref.word_offset,
        offsets=offsets,
        class_probs=tuple(m.class_probs[r] for m, r in zip(models, rows)),
        start_probs=tuple(w[0] for w in words),
        end_probs=tuple(w[1] for w in words),
    )


def ensemble(outputs: Sequence[OutputsLike], weights: Sequence[float], names: Sequence[str] | None = None) -> CandidateOutputs:
    """Weighted average of the models' outputs (e.g. the original's 0.3, 0.3, 0.2, 0.2)."""
    return align(outputs, names).combine(weights)


# --------------------------------------------------------------------------------------------
# Fitting weights
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSearch:
    method: str = "auto"
    """``grid``: every point of the simplex with coordinates in multiples of ``step``;
    ``coordinate``: from the initial weights, repeatedly make the best single move of up to
    ``max_move`` weight from one model to another, halving the move when none helps, down to
    ``min_move``. Starting with big moves lets it cross the flat stretches a discrete metric
    such as F1 has; it is still a local search. ``auto``: ``grid`` if it has at most
    ``max_grid_points`` points (4 models at step 0.1: 286), else ``coordinate``."""
    step: float = 0.1
    max_move: float = 0.5
    min_move: float = 0.025
    max_grid_points: int = 300
    max_evaluations: int = 1000
    """A search that would pass this many objective calls stops with an error."""

    def __post_init__(self) -> None:
        if self.method not in ("auto", "grid", "coordinate"):
            raise ValueError(f"method must be auto, grid or coordinate, got {self.method!r}")
        if not 0 < self.step <= 1 or abs(round(1 / self.step) * self.step - 1) > 1e-9:
            raise ValueError(f"grid step must divide 1, got {self.step}")
        if not 0 < self.min_move <= self.max_move <= 1:
            raise ValueError(f"need 0 < min_move <= max_move <= 1, got {self.min_move}, {self.max_move}")


@dataclass(frozen=True)
class WeightFit:
    names: tuple[str, ...]
    weights: np.ndarray
    score: float
    """The objective at ``weights`` on the data they were fitted to: optimistic, not a result."""
    history: tuple[tuple[tuple[float, ...], float], ...] = field(repr=False, default=())
    """Every (weights, score) evaluated, in order."""


def simplex_grid(n_models: int, step: float) -> np.ndarray:
    """All weight vectors with coordinates in multiples of ``step`` summing to 1."""
    k = int(round(1 / step))
    # Stars and bars: the gaps around n - 1 bars placed among k + n - 1 slots are the ways to
    # split k steps between n models.
    slots = k + n_models - 1
    points = [np.diff((-1, *bars, slots)) - 1 for bars in itertools.combinations(range(slots), n_models - 1)]
    return np.array(points, dtype=np.float64).reshape(-1, n_models) / k


class _Evaluator:
    """Objective with memory: every distinct weight vector is scored once."""

    def __init__(self, aligned: AlignedOutputs, objective: Objective, limit: int):
        self.aligned, self.objective, self.limit = aligned, objective, limit
        self.cache: dict[tuple[float, ...], float] = {}
        self.history: list[tuple[tuple[float, ...], float]] = []

    def __call__(self, w: np.ndarray) -> float:
        key = tuple(round(float(x), 9) for x in w)
        if key not in self.cache:
            if len(self.history) >= self.limit:
                raise RuntimeError(f"weight search passed max_evaluations={self.limit}")
            score = float(self.objective(self.aligned.combine(w)))
            self.cache[key] = score
            self.history.append((key, score))
        return self.cache[key]


def _grid_search(ev: _Evaluator, init: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    points = simplex_grid(len(init), step)
    # Nearest to the initial weights first, and only a strictly better score replaces the best:
    # on the plateaus a discrete F1 has, the weights stay as close to the caller's as possible.
    order = np.lexsort((*points.T[::-1], np.abs(points - init).sum(axis=1)))
    best_w, best = init, ev(init)
    for w in points[order]:
        score = ev(w)
        if score > best:
            best_w, best = w, score
    return best_w, best


def _coordinate_search(ev: _Evaluator, init: np.ndarray, step: float, min_step: float) -> tuple[np.ndarray, float]:
    w, best = init.copy(), ev(init)
    n = len(w)
    while step >= min_step - 1e-12:
        move_best, move_w = best, None
        for i, j in itertools.permutations(range(n), 2):  # move weight from j to i
            amount = min(step, w[j])
            if amount <= 0:
                continue
            cand = w.copy()
            cand[i] += amount
            cand[j] -= amount
            score = ev(cand)
            if score > move_best:  # strict: the first of equally good moves wins
                move_best, move_w = score, cand
        if move_w is None:
            step /= 2
        else:
            w, best = move_w, move_best
    return w, best


def fit_weights(
    outputs: Sequence[OutputsLike] | AlignedOutputs,
    objective: Objective,
    *,
    names: Sequence[str] | None = None,
    init: Sequence[float] | None = None,
    search: WeightSearch = WeightSearch(),
) -> WeightFit:
    """Weights maximising ``objective(ensembled outputs)``; starts from (and on ties keeps close
    to) ``init``, uniform by default. The returned score is in-sample: see
    ``cross_validated_weights`` for one that is not."""
    aligned = outputs if isinstance(outputs, AlignedOutputs) else align(outputs, names)
    n = aligned.n_models
    start = normalise_weights(np.ones(n) if init is None else init, n)
    ev = _Evaluator(aligned, objective, search.max_evaluations)
    method = search.method
    if method == "auto":
        k = int(round(1 / search.step))
        method = "grid" if _n_grid_points(n, k) <= search.max_grid_points else "coordinate"
    if method == "grid":
        w, score = _grid_search(ev, start, search.step)
    else:
        w, score = _coordinate_search(ev, start, search.max_move, search.min_move)
    return WeightFit(aligned.names, normalise_weights(w, n), score, tuple(ev.history))


def _n_grid_points(n_models: int, k: int) -> int:
    from math import comb

    return comb(k + n_models - 1, n_models - 1)


# --------------------------------------------------------------------------------------------
# Cross-validated weights
# --------------------------------------------------------------------------------------------


def example_folds(example_ids: Sequence[str] | np.ndarray, salt: str = "") -> np.ndarray:
    """Fold 0 or 1 per id, from a hash of (salt, id): the same id lands in the same half whatever
    the row order, the file split or the other examples present."""
    codes, uniques = pd.factorize(np.asarray(example_ids, dtype=object), sort=False)
    folds = np.fromiter(
        (hashlib.blake2b(f"{salt}\0{u}".encode(), digest_size=8).digest()[0] & 1 for u in uniques),
        dtype=np.int8,
        count=len(uniques),
    )
    return folds[codes]


@dataclass(frozen=True)
class CrossValidatedWeights:
    """Two-fold cross-validated weight fit.

    ``heldout_scores[k]`` is the objective on half ``1 - k`` with the weights fitted on half ``k``
    (``fold_weights[k]``): never scored on the examples it was fitted to. ``heldout_score`` is
    their mean, the figure to report. ``heldout_init_scores[k]`` is the initial weights on the
    same half, the baseline the fit must beat. ``weights`` are fitted on all examples (what to
    deploy); ``fit_score`` is their in-sample score, optimistic and not to be reported as a result.
    """

    names: tuple[str, ...]
    fold_weights: tuple[np.ndarray, np.ndarray]
    fold_fit_scores: tuple[float, float]
    heldout_scores: tuple[float, float]
    heldout_init_scores: tuple[float, float]
    fold_examples: tuple[int, int]
    weights: np.ndarray
    fit_score: float

    @property
    def heldout_score(self) -> float:
        return float(np.mean(self.heldout_scores))

    @property
    def heldout_init_score(self) -> float:
        return float(np.mean(self.heldout_init_scores))


def cross_validated_weights(
    outputs: Sequence[OutputsLike] | AlignedOutputs,
    objective: Objective,
    *,
    names: Sequence[str] | None = None,
    init: Sequence[float] | None = None,
    search: WeightSearch = WeightSearch(),
    salt: str = "",
) -> CrossValidatedWeights:
    """Fit on each half of the examples, score on the other, then fit on all (see the class)."""
    aligned = outputs if isinstance(outputs, AlignedOutputs) else align(outputs, names)
    start = normalise_weights(np.ones(aligned.n_models) if init is None else init, aligned.n_models)
    folds = example_folds(aligned.example_id, salt)
    halves = [aligned.take(np.flatnonzero(folds == k)) for k in (0, 1)]
    n_examples = tuple(int(pd.unique(h.example_id).size) for h in halves)
    if min(n_examples) == 0:
        raise ValueError(f"a cross-validation half is empty ({n_examples[0]} / {n_examples[1]} examples)")
    fits = [fit_weights(h, objective, init=start, search=search) for h in halves]
    heldout = tuple(float(objective(halves[1 - k].combine(fits[k].weights))) for k in (0, 1))
    heldout_init = tuple(float(objective(halves[1 - k].combine(start))) for k in (0, 1))
    full = fit_weights(aligned, objective, init=start, search=search)
    return CrossValidatedWeights(
        names=aligned.names,
        fold_weights=(fits[0].weights, fits[1].weights),
        fold_fit_scores=(fits[0].score, fits[1].score),
        heldout_scores=heldout,
        heldout_init_scores=heldout_init,
        fold_examples=n_examples,
        weights=full.weights,
        fit_score=full.score,
    )


# --------------------------------------------------------------------------------------------
# Candidate-pruning cascade
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneStage:
    """Keep, per example, at most ``top_k`` candidates whose long score exceeds ``min_score``."""

    top_k: int
    min_score: float

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


# The original test kernel: a fast model keeps 10 candidates above 0.2, a second one 4 above 0.35.
DEFAULT_CASCADE = (PruneStage(top_k=10, min_score=0.2), PruneStage(top_k=4, min_score=0.35))


def prune(outputs: OutputsLike, stage: PruneStage) -> np.ndarray:
    """Rows of ``outputs`` that survive ``stage`` (ascending). Ties in long score keep the lower
    candidate index; a score equal to ``min_score`` does not pass ("above")."""
    out = as_outputs(outputs)
    codes, _ = pd.factorize(out.example_id, sort=False)
    long = out.long_scores()
    order = np.lexsort((out.candidate_index, -long, codes))
    starts = group_starts(codes[order])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)  # 0 = the example's best candidate
    keep = order[(rank < stage.top_k) & (long[order] > stage.min_score)]
    return np.sort(keep)


def cascade(
    outputs: Sequence[OutputsLike],
    stages: Sequence[PruneStage] = DEFAULT_CASCADE,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Surviving (example_id, candidate_index) keys after each model prunes the previous survivors.

    ``outputs[s]`` are stage ``s``'s model outputs; they may cover more rows than the survivors
    of stage ``s - 1`` (those are ignored) but must cover all of them. The keys come in the first
    model's row order: only these rows need scoring by the big models.
    """
    if len(outputs) != len(stages):
        raise ValueError(f"{len(outputs)} model outputs for {len(stages)} stages")
    names = _model_names(len(outputs), names)
    survivors: pd.DataFrame | None = None
    for out, stage, name in zip(outputs, stages, names):
        out = as_outputs(out)
        if survivors is not None:
            out = out.take(rows_of_keys(out, survivors, name))
        rows = prune(out, stage)
        survivors = pd.DataFrame(
            {
                "example_id": pd.Series(out.example_id[rows], dtype=object).astype(str),
                "candidate_index": out.candidate_index[rows].astype(np.int32),
            }
        )
    assert survivors is not None
    return survivors


def rows_of_keys(out: CandidateOutputs, keys: pd.DataFrame, name: str) -> np.ndarray:
    """Rows of ``out`` holding ``keys``, in the keys' order; raises when one is missing."""
    wanted_keys, out_keys = _row_keys(
        keys["example_id"].to_numpy(object), keys["candidate_index"].to_numpy(np.int64), out.example_id, out.candidate_index
    )
    rows = _check_unique(out_keys, out, name).get_indexer(wanted_keys)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        k = int(missing[0])
        raise ValueError(
            f"model {name!r} did not score {len(missing)} surviving candidates, "
            f"e.g. ({keys['example_id'].iloc[k]!r}, {int(keys['candidate_index'].iloc[k])})"
        )
    return rows
