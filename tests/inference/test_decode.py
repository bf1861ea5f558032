"""Decoding rules: long candidate, yes/no vs span, span limits, ties, empty examples, thresholds,
and the official prediction-JSON entries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tfqa.data.records import Candidate, Example
from tfqa.inference.decode import (
    CandidateOutputs,
    DecodeConfig,
    DecodedAnswer,
    Ragged,
    apply_thresholds,
    as_outputs,
    best_spans,
    byte_offsets,
    candidate_spans,
    decode,
    nq_predictions_json,
    to_nq_json,
)

F32 = np.float32
JOINT = DecodeConfig(decode="joint")


def row(ex: str, ci: int, off: int, cls, start, end=None) -> dict:
    return {
        "example_id": ex,
        "candidate_index": ci,
        "word_offset": off,
        "class_probs": np.asarray(cls, F32),
        "start_probs": np.asarray(start, F32),
        "end_probs": np.asarray(start if end is None else end, F32),
    }


def frame(*rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    return df.astype({"candidate_index": np.int32, "word_offset": np.int32})


def spans_of(df: pd.DataFrame, length: int = 50) -> dict[str, np.ndarray]:
    """A candidate table consistent with ``df``: candidate i starts at its word_offset."""
    out: dict[str, np.ndarray] = {}
    for ex, g in df.groupby("example_id"):
        n = int(g["candidate_index"].max()) + 1
        table = np.zeros((n, 2), dtype=np.int64)
        for ci, off in zip(g["candidate_index"], g["word_offset"]):
            table[ci] = (off, off + length)
        out[str(ex)] = table
    return out


def one_hot(n: int, k: int, hi: float = 0.9) -> np.ndarray:
    p = np.full(n, (1 - hi) / max(n - 1, 1))
    p[k] = hi
    return p


NOT_ANSWER = [0.9, 0.05, 0.05, 0.0, 0.0]
SHORT = [0.1, 0.1, 0.6, 0.1, 0.1]


def test_long_is_highest_one_minus_p0_and_short_score_is_of_that_candidate():
    df = frame(
        row("e", 0, 0, NOT_ANSWER, one_hot(4, 0)),
        row("e", 1, 10, [0.2, 0.7, 0.1, 0.0, 0.0], one_hot(4, 1)),  # long 0.8, short 0.1
        row("e", 2, 20, [0.3, 0.1, 0.6, 0.0, 0.0], one_hot(4, 2)),  # long 0.7, short 0.6
    )
    (p,) = decode(df, spans_of(df), JOINT)
    assert (p.long_candidate_index, p.long_start_token, p.long_end_token) == (1, 10, 60)
    assert p.long_score == pytest.approx(0.8)
    assert p.short_score == pytest.approx(0.1)  # of candidate 1, not the better short candidate 2
    assert (p.short_start_token, p.short_end_token) == (11, 12)  # end exclusive


@pytest.mark.parametrize(
    "cls, yes_no",
    [
        ([0.1, 0.1, 0.2, 0.2, 0.4], "YES"),
        ([0.1, 0.1, 0.2, 0.4, 0.2], "NO"),
        ([0.1, 0.1, 0.2, 0.3, 0.3], "YES"),  # a yes/no tie goes to YES
        ([0.1, 0.1, 0.4, 0.2, 0.2], "NONE"),  # span
        ([0.1, 0.1, 0.3, 0.3, 0.2], "NONE"),  # max(p3, p4) must be strictly above p2
    ],
)
def test_yes_no_versus_span(cls, yes_no):
    df = frame(row("e", 0, 5, cls, one_hot(3, 1)))
    (p,) = decode(df, spans_of(df), JOINT)
    assert p.yes_no == yes_no
    assert p.short_score == pytest.approx(1 - cls[0] - cls[1])
    if yes_no == "NONE":
        assert (p.short_start_token, p.short_end_token) == (6, 7)
    else:
        assert (p.short_start_token, p.short_end_token) == (-1, -1)
        assert p.has_short


def test_span_respects_max_answer_words():
    start = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    end = np.array([0.01, 0.01, 0.01, 0.01, 0.96])
    df = frame(row("e", 0, 100, SHORT, start, end))
    (wide,) = decode(df, spans_of(df), DecodeConfig(decode="joint", max_answer_words=5))
    assert (wide.short_start_token, wide.short_end_token) == (100, 105)  # words 0..4
    (narrow,) = decode(df, spans_of(df), DecodeConfig(decode="joint", max_answer_words=3))
    # Spans of at most 3 words: 0.6 * 0.01 (from word 0) loses to 0.1 * 0.96 (words 2..4).
    assert (narrow.short_start_token, narrow.short_end_token) == (102, 105)
    (single,) = decode(df, spans_of(df), DecodeConfig(decode="joint", max_answer_words=1))
    assert single.short_end_token - single.short_start_token == 1
    with pytest.raises(ValueError):
        DecodeConfig(max_answer_words=0)


def test_end_before_start_is_excluded():
    start = np.array([0.01, 0.01, 0.01, 0.97])  # start peaks at the last word
    end = np.array([0.94, 0.01, 0.01, 0.04])  # end peaks at the first
    df = frame(row("e", 0, 0, SHORT, start, end))
    (p,) = decode(df, spans_of(df), JOINT)
    assert p.short_start_token < p.short_end_token
    # (3, 0) would score 0.91; of the allowed spans 0.97 * 0.04 at (3, 3) is best.
    assert (p.short_start_token, p.short_end_token) == (3, 4)


def test_ties_are_deterministic_whatever_the_row_order():
    flat = np.full(4, 0.25)
    rows = [row("e", ci, 10 * ci, SHORT, flat) for ci in (3, 1, 2)]  # equal long scores everywhere
    for perm in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        df = frame(*[rows[k] for k in perm])
        (p,) = decode(df, spans_of(df), JOINT)
        # Lowest candidate index wins a long tie; the earliest start then the shortest span wins a span tie.
        assert p.long_candidate_index == 1
        assert (p.short_start_token, p.short_end_token) == (10, 11)


def test_examples_without_rows_or_words():
    df = frame(
        row("a", 0, 0, SHORT, []),  # a candidate whose words were all truncated away
        row("b", 0, 3, SHORT, one_hot(2, 0)),
    )
    preds = decode(df, spans_of(df), JOINT, example_ids=["c", "b", "a"])
    assert [p.example_id for p in preds] == ["c", "b", "a"]
    assert preds[0] == DecodedAnswer("c")
    assert not preds[0].has_long and not preds[0].has_short
    assert preds[2].has_long and not preds[2].has_short
    assert preds[1].short_start_token == 3
    with pytest.raises(ValueError, match="not in example_ids"):
        decode(df, spans_of(df), example_ids=["a"])


def test_order_of_first_appearance_and_input_forms_agree():
    rng = np.random.default_rng(0)
    rows = []
    for ex in ("z", "y", "x"):
        for ci in range(4):
            n = int(rng.integers(0, 8))
            rows.append(
                row(
                    ex,
                    ci,
                    10 * ci,
                    rng.dirichlet(np.ones(5)),
                    rng.dirichlet(np.ones(n)) if n else [],
                    rng.dirichlet(np.ones(n)) if n else [],
                )
            )
    df = frame(*rows)
    spans = spans_of(df)
    a = decode(df, spans, JOINT)
    assert [p.example_id for p in a] == ["z", "y", "x"]
    assert decode(pa.Table.from_pandas(df), spans, JOINT) == a
    assert decode(as_outputs(df), spans, JOINT) == a
    assert decode(as_outputs(df).to_frame(), spans, JOINT) == a


def test_candidate_table_must_match_the_outputs():
    df = frame(row("e", 0, 7, SHORT, one_hot(2, 0)))
    with pytest.raises(ValueError, match="start at word 7"):
        decode(df, {"e": np.array([[6, 9]])})
    with pytest.raises(KeyError):
        decode(df, {})


def test_malformed_outputs_are_rejected():
    with pytest.raises(ValueError, match="lack columns"):
        as_outputs(pd.DataFrame({"example_id": ["e"]}))
    with pytest.raises(ValueError, match="class_probs"):
        as_outputs(frame(row("e", 0, 0, [0.5, 0.5], [1.0])))
    with pytest.raises(ValueError, match="start probs"):
        as_outputs(frame(row("e", 0, 0, SHORT, [0.5, 0.5], [1.0])))


def test_best_spans_matches_brute_force():
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 12, size=40)
    start = Ragged.from_lengths(rng.random(lengths.sum()).astype(F32), lengths)
    end = Ragged.from_lengths(rng.random(lengths.sum()).astype(F32), lengths)
    i, j, score = best_spans(start, end, max_answer_words=4)
    for r in range(len(lengths)):
        s, e = start.row(r).astype(np.float64), end.row(r).astype(np.float64)
        options = [(s[a] * e[b], a, b) for a in range(len(s)) for b in range(a, min(len(s), a + 4))]
        if not options:
            assert (i[r], j[r]) == (-1, -1)
            continue
        best = max(o[0] for o in options)
        a, b = min((a, b) for sc, a, b in options if sc == best)
        assert (i[r], j[r]) == (a, b) and score[r] == pytest.approx(best)


def test_thresholds():
    base = DecodedAnswer("e", 2, 10, 40, 0.6, 12, 14, 0.5, "NONE")
    yes = DecodedAnswer("f", 0, 0, 9, 0.6, -1, -1, 0.5, "YES")
    assert apply_thresholds([base], 0.6, 0.5) == [base]  # equal to the threshold is kept
    (short_cut,) = apply_thresholds([base], 0.5, 0.51)
    assert short_cut.has_long and not short_cut.has_short
    assert short_cut.short_score == base.short_score  # scores survive blanking
    (long_cut,) = apply_thresholds([base], 0.61, 0.0)
    assert not long_cut.has_long and not long_cut.has_short  # a short answer needs a long one
    assert long_cut.long_candidate_index == -1
    (yes_cut,) = apply_thresholds([yes], 0.0, 0.9)
    assert yes_cut.yes_no == "NONE" and yes_cut.has_long


def test_nq_json_entries():
    ex = Example(
        example_id="-123",
        question="q",
        words=["<P>", "a", "b", "c", "</P>"],
        is_html=[True, False, False, False, True],
        candidates=[Candidate(0, 5, True)],
        word_start_bytes=[0, 3, 5, 7, 9],
        word_end_bytes=[3, 4, 6, 8, 13],
    )
    assert candidate_spans([ex])["-123"].tolist() == [[0, 5]]
    offsets = byte_offsets([ex])
    span = DecodedAnswer("-123", 0, 0, 5, 0.9, 1, 3, 0.7, "NONE")
    entry = to_nq_json(span, offsets["-123"])
    assert entry["example_id"] == -123  # Google's scorer keys gold by the integer id
    assert entry["long_answer"] == {"start_token": 0, "end_token": 5, "start_byte": 0, "end_byte": 13}
    assert entry["short_answers"] == [{"start_token": 1, "end_token": 3, "start_byte": 3, "end_byte": 6}]
    assert entry["long_answer_score"] == pytest.approx(0.9) and entry["short_answers_score"] == pytest.approx(0.7)
    assert entry["yes_no_answer"] == "NONE"

    no_bytes = to_nq_json(span)
    assert no_bytes["long_answer"]["start_byte"] == -1 and no_bytes["short_answers"][0]["end_byte"] == -1

    yes = to_nq_json(DecodedAnswer("abc", 0, 0, 5, 0.9, -1, -1, 0.7, "YES"))
    assert yes["example_id"] == "abc" and yes["short_answers"] == [] and yes["yes_no_answer"] == "YES"

    blank = to_nq_json(DecodedAnswer("7"))
    assert blank["long_answer"] == {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1}
    assert blank["short_answers"] == []

    doc = nq_predictions_json([span, DecodedAnswer("7")], offsets)
    assert [p["example_id"] for p in doc["predictions"]] == [-123, 7]
    assert doc["predictions"][0]["long_answer"]["end_byte"] == 13


def test_candidate_outputs_take_and_roundtrip():
    df = frame(row("a", 0, 0, SHORT, [0.5, 0.5]), row("b", 0, 0, SHORT, [1.0]), row("c", 1, 4, SHORT, [0.2, 0.3, 0.5]))
    out = as_outputs(df)
    sub = out.take(np.array([2, 0]))
    assert isinstance(sub, CandidateOutputs)
    assert sub.example_id.tolist() == ["c", "a"]
    assert sub.start_probs.row(0).tolist() == pytest.approx([0.2, 0.3, 0.5])
    back = out.to_frame()
    assert back["example_id"].tolist() == ["a", "b", "c"]
    assert back["end_probs"].iloc[2].tolist() == pytest.approx([0.2, 0.3, 0.5])


def test_parquet_roundtrip_both_backends_and_integer_ids(tmp_path):
    df = frame(row("-5", 0, 0, SHORT, [0.2, 0.8]), row("7", 1, 4, [0.1, 0.1, 0.2, 0.1, 0.5], [1.0]))
    spans = {"-5": np.array([[0, 2]]), "7": np.array([[0, 4], [4, 6]])}
    expected = decode(df, spans, JOINT)
    path = tmp_path / "outputs.parquet"
    df.to_parquet(path)
    assert decode(pd.read_parquet(path), spans, JOINT) == expected
    assert decode(pd.read_parquet(path, dtype_backend="pyarrow"), spans, JOINT) == expected
    assert decode(df.assign(example_id=[-5, 7]), spans, JOINT) == expected  # ids are matched as strings


def test_empty_outputs_and_unequal_word_lists():
    empty = frame(row("a", 0, 0, SHORT, [1.0])).iloc[:0]
    assert decode(empty, {}, example_ids=["a"]) == [DecodedAnswer("a")]
    bad = frame(row("a", 0, 0, SHORT, [0.5, 0.5], [1.0]))
    with pytest.raises(ValueError, match="2 start probs but 1 end probs"):
        decode(bad, spans_of(bad))


# -- decode=original -------------------------------------------------------------------------------
def original_kernel(df: pd.DataFrame, spans: dict[str, np.ndarray], question_words: int = 7) -> dict:
    """The 1st place's decoding loop, written from its kernel: candidates visited by increasing
    (question + candidate words), the first strictly highest 1 - p0 wins, yes/no by p3/p4 vs p2,
    start and end by independent argmax over a zero-padded word row. The end head is tfqa's (the
    last word), so the original's ``[s, e)`` kept when ``e > s`` reads ``[s, e + 1)`` when ``e >= s``."""
    width = max(len(r) for r in df["start_probs"]) + 3  # zero padding, as the original's 360 slots
    lengths = [question_words + int(spans[e][c][1] - spans[e][c][0]) for e, c in zip(df["example_id"], df["candidate_index"])]
    order = sorted(range(len(df)), key=lambda r: (lengths[r], int(df["candidate_index"].iloc[r])))
    best: dict = {}
    for r in order:
        rec = df.iloc[r]
        p = rec["class_probs"].astype(np.float64)
        ex = rec["example_id"]
        long_score = 1.0 - p[0]
        if long_score > best.get(ex, {"long": -1.0})["long"]:
            start = np.zeros(width)
            end = np.zeros(width)
            start[: len(rec["start_probs"])] = rec["start_probs"]
            end[: len(rec["end_probs"])] = rec["end_probs"]
            entry = {
                "long": long_score,
                "ci": int(rec["candidate_index"]),
                "short": 1.0 - p[0] - p[1],
                "yes_no": "NONE",
                "span": (-1, -1),
            }
            if max(p[3], p[4]) > p[2]:
                entry["yes_no"] = "NO" if p[3] > p[4] else "YES"
            else:
                s, e = int(np.argmax(start)), int(np.argmax(end))
                if e >= s:
                    off = int(rec["word_offset"])
                    entry["span"] = (off + s, off + e + 1)
            best[ex] = entry
    return best


def random_outputs(seed: int, n_examples: int = 200):
    rng = np.random.default_rng(seed)
    rows, spans = [], {}
    for k in range(n_examples):
        ex = f"ex{k}"
        n_cand = int(rng.integers(1, 8))
        table = []
        pos = 0
        for ci in range(n_cand):
            n_words = int(rng.integers(1, 40))
            table.append((pos, pos + n_words))
            kept = int(rng.integers(1, n_words + 1))
            cls = rng.dirichlet(np.ones(5))
            if rng.random() < 0.2:  # exact long-score ties between candidates of unequal length
                cls = np.array([0.25, 0.25, 0.3, 0.1, 0.1])
            rows.append(row(ex, ci, pos, cls, rng.dirichlet(np.ones(kept)), rng.dirichlet(np.ones(kept))))
            pos += n_words + int(rng.integers(0, 3))
        spans[ex] = np.array(table, dtype=np.int64)
    return frame(*rows), spans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_original_decoding_is_the_original_kernel(seed):
    df, spans = random_outputs(seed)
    want = original_kernel(df, spans)
    got = decode(df, spans, DecodeConfig(decode="original"))
    assert len(got) == len(want)
    for p in got:
        w = want[p.example_id]
        assert p.long_candidate_index == w["ci"], p.example_id
        assert (p.long_start_token, p.long_end_token) == tuple(spans[p.example_id][w["ci"]])
        assert p.long_score == pytest.approx(w["long"]) and p.short_score == pytest.approx(w["short"])
        assert p.yes_no == w["yes_no"]
        assert (p.short_start_token, p.short_end_token) == (w["span"] if w["yes_no"] == "NONE" else (-1, -1))
    joint = decode(df, spans, DecodeConfig(decode="joint"))
    differ = sum(
        (a.long_candidate_index, a.short_start_token, a.short_end_token)
        != (b.long_candidate_index, b.short_start_token, b.short_end_token)
        for a, b in zip(got, joint)
    )
    # Independent argmaxes vs the joint best span: they disagree on a good share of random outputs.
    assert differ >= len(got) // 10


def test_original_decoding_reversed_span_is_no_span_and_one_word_spans_are_kept():
    df = frame(
        row("a", 0, 10, SHORT, [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]),  # end before start: no span
        row("b", 0, 20, SHORT, [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]),  # one word: kept
    )
    a, b = decode(df, spans_of(df), DecodeConfig(decode="original"))
    assert (a.short_start_token, a.short_end_token) == (-1, -1) and a.yes_no == "NONE"
    assert (b.short_start_token, b.short_end_token) == (21, 22)
    # The joint decoding never returns a reversed span: it finds the best forward one instead.
    ja, _ = decode(df, spans_of(df), JOINT)
    assert ja.short_start_token >= 10


def test_original_decoding_prefers_the_shorter_of_equal_long_scores():
    df = frame(row("e", 0, 0, SHORT, one_hot(4, 0)), row("e", 1, 5, SHORT, one_hot(4, 1)))
    spans = {"e": np.array([[0, 40], [5, 9]], dtype=np.int64)}  # candidate 1 is nested and shorter
    (orig,) = decode(df, spans, DecodeConfig(decode="original"))
    (joint,) = decode(df, spans, JOINT)
    assert (orig.long_candidate_index, joint.long_candidate_index) == (1, 0)


def test_decode_config_checks_and_round_trips():
    with pytest.raises(ValueError, match="decode must be one of joint, original, got 'best'"):
        DecodeConfig(decode="best")
    cfg = DecodeConfig(max_answer_words=12, decode="original")
    assert DecodeConfig.from_dict(cfg.to_dict()) == cfg and DecodeConfig.from_dict(None) == DecodeConfig()
