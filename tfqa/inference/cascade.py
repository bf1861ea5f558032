"""The candidate-pruning cascade as a procedure: each stage's model scores the candidates still
alive and keeps each example's best few; only the last survivors reach the ensemble.

This is what made albert-xxlarge affordable in the original: variant 1 (bert-base) scores every
candidate, variant 4 (bert-large) the top 10 of each example above 0.2, the four big models only
the top 4 above 0.35. How a stage's outputs are obtained is the caller's (``score``): ``predict``
runs the model on the survivors alone, ``validate`` takes them from outputs on every candidate,
which it needs anyway for the figures without the cascade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfqa.inference.decode import CandidateOutputs, OutputsLike, as_outputs
from tfqa.inference.ensemble import prune, rows_of_keys

# (model name, candidates to score or None for all) -> (its outputs on them, inference seconds)
Scorer = Callable[[str, "pd.DataFrame | None"], "tuple[OutputsLike, float]"]


@dataclass(frozen=True)
class StageReport:
    model: str
    scored: int
    """Candidates the stage's model scored."""
    kept: int
    seconds: float


@dataclass(frozen=True)
class CascadeResult:
    keys: pd.DataFrame | None
    """(example_id, candidate_index) of the candidates that reach the ensemble; None: all."""
    stages: tuple[StageReport, ...] = ()


def keys_of(outputs: CandidateOutputs, rows: np.ndarray | None = None) -> pd.DataFrame:
    rows = np.arange(len(outputs)) if rows is None else rows
    return pd.DataFrame(
        {
            "example_id": pd.Series(outputs.example_id[rows], dtype=object).astype(str),
            "candidate_index": outputs.candidate_index[rows].astype(np.int32),
        }
    )


def restrict(outputs: OutputsLike, keys: pd.DataFrame | None, name: str = "model") -> CandidateOutputs:
    """``outputs`` on ``keys`` alone, in the keys' order (all of them when ``keys`` is None)."""
    out = as_outputs(outputs)
    return out if keys is None else out.take(rows_of_keys(out, keys, name))


def run_cascade(stages: Sequence, score: Scorer) -> CascadeResult:
    """Run ``stages`` (``tfqa.inference.manifest.CascadeStage``) in order; no stages: everything passes."""
    keys: pd.DataFrame | None = None
    reports = []
    for stage in stages:
        outputs, seconds = score(stage.model, keys)
        out = restrict(outputs, keys, stage.model)
        rows = prune(out, stage.prune_stage())
        reports.append(StageReport(stage.model, len(out), len(rows), float(seconds)))
        keys = keys_of(out, rows)
    return CascadeResult(keys, tuple(reports))
