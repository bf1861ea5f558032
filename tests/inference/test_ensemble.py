"""Ensembling: alignment and its errors, weights, weight fitting, cross-validation halves and the
candidate-pruning cascade."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfqa.inference.decode import CandidateOutputs, as_outputs, decode
from tfqa.inference.ensemble import (
    DEFAULT_CASCADE,
    PruneStage,
    WeightSearch,
    align,
    cascade,
    cross_validated_weights,
    ensemble,
    example_folds,
    fit_weights,
    normalise_weights,
    prune,
    simplex_grid,
)

F32 = np.float32


def frame(rows: list[tuple]) -> pd.DataFrame:
    """rows: (example_id, candidate_index, word_offset, class_probs, start_probs[, end_probs])."""
    out = []
    for r in rows:
        ex, ci, off, cls, start, *end = r
        out.append(
            {
                "example_id": ex,
                "candidate_index": ci,
                "word_offset": off,
                "class_probs": np.asarray(cls, F32),
                "start_probs": np.asarray(start, F32),
                "end_probs": np.asarray(end[0] if end else start, F32),
            }
        )
    return pd.DataFrame(out).astype({"candidate_index": np.int32, "word_offset": np.int32})


A_CLS = [0.1, 0.2, 0.3, 0.2, 0.2]
B_CLS = [0.5, 0.1, 0.1, 0.1, 0.2]


def two_models():
    a = frame([("e", 0, 0, A_CLS, [0.5, 0.5]), ("e", 1, 2, A_CLS, [1.0, 0.0, 0.0]), ("f", 0, 0, A_CLS, [1.0])])
    # Same rows in another order; model b saw one more word of ("e", 0).
    b = frame([("f", 0, 0, B_CLS, [1.0]), ("e", 1, 2, B_CLS, [0.0, 0.0, 1.0]), ("e", 0, 0, B_CLS, [0.2, 0.2, 0.6])])
    return a, b


def test_weighted_average_aligned_and_zero_padded():
    a, b = two_models()
    out = ensemble([a, b], [3, 1])  # normalised to 0.75 / 0.25
    assert out.example_id.tolist() == ["e", "e", "f"]  # the first model's row order
    assert out.class_probs[0] == pytest.approx(0.75 * np.array(A_CLS) + 0.25 * np.array(B_CLS))
    assert out.start_probs.row(0) == pytest.approx([0.75 * 0.5 + 0.05, 0.75 * 0.5 + 0.05, 0.25 * 0.6])
    assert out.end_probs.row(1) == pytest.approx([0.75, 0.0, 0.25])
    assert out.start_probs.row(2) == pytest.approx([1.0])


def test_single_model_and_zero_weight_are_identity():
    a, b = two_models()
    alone = ensemble([a], [0.3])
    ref = as_outputs(a)
    assert np.array_equal(alone.class_probs, ref.class_probs)
    assert np.array_equal(alone.start_probs.values, ref.start_probs.values)
    only_b = ensemble([a, b], [0.0, 0.2])
    assert only_b.class_probs[0] == pytest.approx(B_CLS)
    assert only_b.start_probs.row(0) == pytest.approx([0.2, 0.2, 0.6])


def test_alignment_errors_name_the_model_and_a_key():
    a, b = two_models()
    with pytest.raises(ValueError, match=r"'bert' lacks 1 rows .*\('f', 0\)"):
        align([a, b[b.example_id != "f"]], names=["albert", "bert"])
    extra = pd.concat([b, frame([("g", 3, 0, B_CLS, [1.0])])], ignore_index=True)
    with pytest.raises(ValueError, match=r"'bert' has 1 rows that model 'albert' lacks, e.g. \('g', 3\)"):
        align([a, extra], names=["albert", "bert"])
    dup = pd.concat([b, b.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"'bert': duplicate row \('f', 0\)"):
        align([a, dup], names=["albert", "bert"])
    shifted = b.assign(word_offset=b.word_offset + 1)
    with pytest.raises(ValueError, match="starts at word"):
        align([a, shifted], names=["albert", "bert"])
    with pytest.raises(ValueError, match="model1"):
        align([a, b[b.example_id != "f"]])
    with pytest.raises(ValueError):
        align([])


def test_normalise_weights():
    assert normalise_weights([0.3, 0.3, 0.2, 0.2], 4) == pytest.approx([0.3, 0.3, 0.2, 0.2])
    assert normalise_weights([3, 1], 2) == pytest.approx([0.75, 0.25])
    assert normalise_weights([0, 2], 2) == pytest.approx([0, 1])
    for bad in ([1, -1], [0, 0], [np.nan, 1]):
        with pytest.raises(ValueError):
            normalise_weights(bad, 2)
    with pytest.raises(ValueError, match="3 weights for 2"):
        normalise_weights([1, 1, 1], 2)


def test_simplex_grid():
    g = simplex_grid(3, 0.25)
    assert len(g) == 15 and np.allclose(g.sum(axis=1), 1) and (g >= 0).all()
    assert len({tuple(x) for x in g}) == len(g)


# --- fitting -------------------------------------------------------------------------------


def labelled_models(n_examples: int = 24, n_cands: int = 5, seed: int = 0):
    """A good model (gold candidate scores highest) and a confidently wrong one, plus the gold."""
    rng = np.random.default_rng(seed)
    gold = {f"q{k}": int(rng.integers(n_cands)) for k in range(n_examples)}
    good, bad = [], []
    for ex, g in gold.items():
        wrong = (g + 1) % n_cands
        for ci in range(n_cands):
            good.append((ex, ci, 10 * ci, [0.4, 0.6, 0, 0, 0] if ci == g else [0.6, 0.4, 0, 0, 0], [1.0]))
            bad.append((ex, ci, 10 * ci, [0.0, 1.0, 0, 0, 0] if ci == wrong else [1.0, 0.0, 0, 0, 0], [1.0]))
    spans = {ex: np.array([(10 * ci, 10 * ci + 5) for ci in range(n_cands)]) for ex in gold}
    return frame(good), frame(bad), gold, spans


def long_accuracy(gold, spans, seen: list | None = None):
    def objective(out: CandidateOutputs) -> float:
        preds = decode(out, spans)
        if seen is not None:
            seen.append(frozenset(p.example_id for p in preds))
        return float(np.mean([p.long_candidate_index == gold[p.example_id] for p in preds]))

    return objective


@pytest.mark.parametrize("method", ["grid", "coordinate"])
def test_fit_weights_prefers_the_better_model(method):
    good, bad, gold, spans = labelled_models()
    objective = long_accuracy(gold, spans)
    assert objective(ensemble([good, bad], [0.5, 0.5])) == 0.0  # the confident wrong model dominates
    fit = fit_weights([bad, good], objective, names=["bad", "good"], search=WeightSearch(method=method, step=0.1))
    assert fit.score == 1.0
    assert fit.weights[1] > fit.weights[0] and fit.weights.sum() == pytest.approx(1)
    assert fit.names == ("bad", "good") and len(fit.history) > 1
    # Deterministic: the same search gives the same answer.
    again = fit_weights([bad, good], objective, search=WeightSearch(method=method, step=0.1))
    assert np.array_equal(again.weights, fit.weights)


def test_fit_weights_keeps_the_initial_weights_on_a_flat_objective():
    good, bad, _, _ = labelled_models(n_examples=3)
    fit = fit_weights([good, bad], lambda out: 1.0, init=[0.3, 0.7], search=WeightSearch(method="grid", step=0.5))
    assert fit.weights == pytest.approx([0.3, 0.7])


def test_example_folds_are_stable_and_balanced():
    ids = [f"ex{k}" for k in range(2000)]
    folds = example_folds(ids)
    assert set(np.unique(folds)) == {0, 1}
    assert 0.45 < folds.mean() < 0.55
    # Independent of order, repetition and the other ids present.
    assert np.array_equal(example_folds(ids[::-1])[::-1], folds)
    assert example_folds(["ex7", "ex7", "zz"]).tolist()[:2] == [folds[7]] * 2
    assert not np.array_equal(example_folds(ids, salt="other"), folds)


def test_cross_validated_weights_never_score_on_fitted_examples():
    good, bad, gold, spans = labelled_models(n_examples=40)
    seen: list[frozenset] = []
    result = cross_validated_weights(
        [bad, good], long_accuracy(gold, spans, seen), names=["bad", "good"], search=WeightSearch(method="grid", step=0.25)
    )
    folds = dict(zip(gold, example_folds(list(gold))))
    halves = [frozenset(e for e, f in folds.items() if f == k) for k in (0, 1)]
    assert halves[0] and halves[1] and not halves[0] & halves[1] and halves[0] | halves[1] == set(gold)
    # Every objective call sees exactly one half, or (the final fit) all examples.
    assert set(seen) == {halves[0], halves[1], frozenset(gold)}
    assert result.fold_examples == (len(halves[0]), len(halves[1]))
    assert result.heldout_scores == (1.0, 1.0) and result.heldout_score == 1.0
    assert result.heldout_init_scores == (0.0, 0.0)
    for w in (*result.fold_weights, result.weights):
        assert w[1] > w[0]
    # Deterministic.
    again = cross_validated_weights([bad, good], long_accuracy(gold, spans), search=WeightSearch(method="grid", step=0.25))
    assert np.array_equal(again.weights, result.weights) and again.heldout_scores == result.heldout_scores


def test_cross_validated_heldout_score_is_measured_on_the_other_half():
    # Model a says class 0, model b class 1: the ensemble's class_probs[:, 1] is b's weight.
    ids = [f"q{k}" for k in range(40)]
    a = frame([(e, 0, 0, [1, 0, 0, 0, 0], [1.0]) for e in ids])
    b = frame([(e, 0, 0, [0, 1, 0, 0, 0], [1.0]) for e in ids])
    folds = dict(zip(ids, example_folds(ids)))
    half = [frozenset(e for e in ids if folds[e] == k) for k in (0, 1)]

    def objective(out: CandidateOutputs) -> float:
        seen = frozenset(out.example_id.tolist())
        # Half 0 wants b at 0.25, half 1 at 0.75, both together at 0.5.
        target = 0.25 if seen <= half[0] else 0.75 if seen <= half[1] else 0.5
        return -((float(out.class_probs[0, 1]) - target) ** 2)

    result = cross_validated_weights([a, b], objective, search=WeightSearch(method="grid", step=0.25))
    assert result.fold_weights[0] == pytest.approx([0.75, 0.25])
    assert result.fold_weights[1] == pytest.approx([0.25, 0.75])
    assert result.fold_fit_scores == (0.0, 0.0)  # in-sample: perfect
    # Held out: fold 0's weights scored on half 1 (and vice versa) are off by 0.5.
    assert result.heldout_scores == pytest.approx((-0.25, -0.25))
    assert result.heldout_init_scores == pytest.approx((-0.0625, -0.0625))
    assert result.weights == pytest.approx([0.5, 0.5]) and result.fit_score == 0.0


# --- cascade -------------------------------------------------------------------------------


def scored(scores: dict[str, list[float]]) -> pd.DataFrame:
    """Outputs whose long score (1 - p0) per candidate is given."""
    rows = []
    for ex, s in scores.items():
        for ci, v in enumerate(s):
            rows.append((ex, ci, ci, [1 - v, v, 0, 0, 0], [1.0]))
    return frame(rows)


def test_prune_keeps_top_k_above_threshold_with_stable_ties():
    df = scored({"a": [0.9, 0.5, 0.5, 0.2, 0.3], "b": [0.1, 0.19]})
    out = as_outputs(df)
    rows = prune(df, PruneStage(top_k=2, min_score=0.2))
    assert list(zip(out.example_id[rows], out.candidate_index[rows])) == [("a", 0), ("a", 1)]  # tie: lower index
    rows = prune(df, PruneStage(top_k=10, min_score=0.2))
    assert out.candidate_index[rows].tolist() == [0, 1, 2, 4]  # 0.2 is not above 0.2; b has none
    with pytest.raises(ValueError):
        PruneStage(top_k=0, min_score=0.1)


def test_cascade_default_stages():
    rng = np.random.default_rng(3)
    fast = {f"x{k}": rng.random(30).round(3).tolist() for k in range(5)}
    fast["empty"] = [0.1, 0.05]
    second = {ex: rng.random(len(s)).round(3).tolist() for ex, s in fast.items()}
    keys = cascade([scored(fast), scored(second)], DEFAULT_CASCADE, names=["fast", "second"])
    assert list(keys.columns) == ["example_id", "candidate_index"]
    assert 0 < len(keys) <= 4 * len(fast)
    for ex in fast:
        stage1 = sorted(range(len(fast[ex])), key=lambda c: (-fast[ex][c], c))
        stage1 = [c for c in stage1 if fast[ex][c] > 0.2][:10]
        stage2 = sorted(stage1, key=lambda c: (-second[ex][c], c))
        stage2 = sorted([c for c in stage2 if second[ex][c] > 0.35][:4])
        assert sorted(keys.loc[keys.example_id == ex, "candidate_index"].tolist()) == stage2
    assert "empty" not in set(keys.example_id)


def test_cascade_second_model_must_score_every_survivor():
    fast = scored({"a": [0.9, 0.8, 0.1]})
    # The second model scored only candidate 2 and 0: candidate 1 survived stage 1 unscored.
    second = scored({"a": [0.9, 0.8, 0.1]}).iloc[[0, 2]]
    with pytest.raises(ValueError, match=r"'second' did not score 1 surviving candidates, e.g. \('a', 1\)"):
        cascade([fast, second], names=["fast", "second"])
    # Rows beyond the survivors are ignored.
    keys = cascade([fast, scored({"a": [0.9, 0.8, 0.99]})])
    assert keys.candidate_index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="stages"):
        cascade([fast])


def test_predict_runs_only_the_models_that_vote():
    from tfqa.stages.predict import voting_models

    report = {"names": ["v1", "v2", "v3"], "versions": {"v1": "4", "v2": 7, "v3": "1"}, "weights": [0.0, 0.6, 0.4]}
    assert voting_models(report) == [("v2", "7", 0.6), ("v3", "1", 0.4)]
    # Dropping the zero-weight model changes nothing in the average it would have joined.
    a, b = two_models()
    with_zero = ensemble([b, a, b], [0.0, 0.6, 0.4])
    without = ensemble([a, b], [0.6, 0.4])
    key = lambda o: np.lexsort((o.candidate_index, o.example_id))  # noqa: E731  (the ref orders differ)
    assert np.array_equal(with_zero.class_probs[key(with_zero)], without.class_probs[key(without)])
    for ragged in ("start_probs", "end_probs"):
        x, y = getattr(with_zero, ragged), getattr(without, ragged)
        for i, j in zip(key(with_zero), key(without)):
            assert np.array_equal(x.row(i), y.row(j))


def test_run_cascade_scores_each_stage_on_the_survivors_of_the_one_before():
    from tfqa.inference.cascade import run_cascade
    from tfqa.inference.manifest import CascadeStage

    rng = np.random.default_rng(3)
    fast = {f"e{e}": rng.random(12).round(3).tolist() for e in range(20)}
    second = {ex: rng.random(12).round(3).tolist() for ex in fast}
    full = {"fast": scored(fast), "second": scored(second).iloc[::-1]}
    asked = []

    def score(name, keys):
        asked.append((name, None if keys is None else len(keys)))
        return full[name], 1.5

    stages = [CascadeStage("fast", 10, 0.2), CascadeStage("second", 4, 0.35)]
    result = run_cascade(stages, score)
    first, second = result.stages
    assert asked == [("fast", None), ("second", first.kept)]
    assert first.scored == 240 and first.kept <= 200
    assert second.scored == first.kept and second.kept == len(result.keys) <= 80
    # The same survivors as the pure cascade on the same outputs.
    keys = cascade([full["fast"], full["second"]], [s.prune_stage() for s in stages])
    assert result.keys.reset_index(drop=True).equals(keys.reset_index(drop=True))
    assert run_cascade([], score).keys is None
