"""tfqa.evaluation.nq_metric against Google's official NQ scorer (PyPI ``natural-questions``), run in-process on
the same gold .jsonl.gz and prediction JSON: randomized data sets over many seeds (ties, nulls,
byte-vs-token offsets, partial span matches, yes/no), hand-made edge cases, validation errors,
and Kaggle micro-F1 on hand-computed counts and against a brute-force threshold search."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import math
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from absl import flags as absl_flags
from click.testing import CliRunner
from natural_questions import eval_utils, nq_eval

from tfqa.cli import main as cli_main
from tfqa.data.records import Annotation, Candidate, Example, Span
from tfqa.evaluation.nq_metric import (
    GoldRule,
    KaggleF1,
    build_gold,
    score,
    score_answers,
    score_files,
)
from tfqa.evaluation.nq_predictions import (
    NQPrediction,
    NQRecordError,
    prediction_from_json,
    read_predictions,
)

NULL = {"start_byte": -1, "end_byte": -1, "start_token": -1, "end_token": -1}


@pytest.fixture(scope="module", autouse=True)
def _absl_flags():
    # The official vote reads absl flags, which refuse access until parsed.
    if not absl_flags.FLAGS.is_parsed():
        absl_flags.FLAGS.mark_as_parsed()


@contextlib.contextmanager
def official_thresholds(long: int, short: int):
    f = absl_flags.FLAGS
    old = (f.long_non_null_threshold, f.short_non_null_threshold)
    f.long_non_null_threshold, f.short_non_null_threshold = long, short
    try:
        yield
    finally:
        f.long_non_null_threshold, f.short_non_null_threshold = old


# -- original-format gold ------------------------------------------------------------------------
@dataclass
class Doc:
    starts: list[int]
    ends: list[int]
    candidates: list[tuple[int, int]]

    def span(self, s: int, e: int, with_bytes: bool = True) -> dict:
        if not with_bytes:
            return {"start_byte": -1, "end_byte": -1, "start_token": s, "end_token": e}
        return {"start_byte": self.starts[s], "end_byte": self.ends[e - 1], "start_token": s, "end_token": e}


def random_doc(rng: random.Random) -> Doc:
    n = rng.randint(12, 24)
    starts, ends, pos = [], [], rng.randint(0, 40)
    for _ in range(n):
        width = rng.randint(1, 6)
        starts.append(pos)
        ends.append(pos + width)
        pos += width + rng.randint(1, 3)
    cands = sorted({(s, rng.randint(s + 1, min(n, s + 8))) for s in (rng.randrange(n - 1) for _ in range(5))})
    return Doc(starts, ends, cands)


def gold_line(example_id, doc: Doc, annotations: list[dict]) -> dict:
    """An original NQ line with exactly the fields Google's reader and ours need."""
    return {
        "example_id": example_id,
        "question_text": "q",
        "document_tokens": [
            {"token": f"w{i}", "start_byte": s, "end_byte": e, "html_token": False}
            for i, (s, e) in enumerate(zip(doc.starts, doc.ends))
        ],
        "long_answer_candidates": [{**doc.span(s, e), "top_level": True} for s, e in doc.candidates],
        "annotations": annotations,
    }


def annotation(long: dict | None, shorts=(), yes_no="NONE", candidate_index=None) -> dict:
    if long is None:
        long_answer = {**NULL, "candidate_index": -1}
    else:
        long_answer = {**long, "candidate_index": 0 if candidate_index is None else candidate_index}
    return {"annotation_id": 0, "long_answer": long_answer, "short_answers": list(shorts), "yes_no_answer": yes_no}


def random_gold(rng: random.Random, example_id, n_annotations: int, null_rate: float = 0.3) -> tuple[dict, Doc, list[dict]]:
    doc = random_doc(rng)
    with_bytes = rng.random() > 0.2  # else like the simplified format: tokens only
    n = len(doc.starts)
    pool = []  # a few short spans per example, so that annotators often agree
    for _ in range(3):
        s = rng.randrange(n - 1)
        pool.append(doc.span(s, rng.randint(s + 1, min(n, s + 3)), with_bytes))
    longs = [doc.span(s, e, with_bytes) for s, e in doc.candidates]
    anns = []
    for _ in range(n_annotations):
        if rng.random() < null_rate:
            anns.append(annotation(None))
            continue
        r = 0.3 + 0.7 * rng.random()  # the kind of a non-null annotation
        ci = rng.randrange(len(longs))
        if r < 0.5:
            anns.append(annotation(longs[ci], candidate_index=ci))
        elif r < 0.8:
            anns.append(annotation(longs[ci], rng.sample(pool, rng.randint(1, 2)), candidate_index=ci))
        elif r < 0.9:
            anns.append(annotation(longs[ci], yes_no=rng.choice(["YES", "NO"]), candidate_index=ci))
        else:  # oddities the official code still defines: shorts without long, yes/no with spans,
            # null spans inside the list, a span whose bytes and tokens disagree
            odd = rng.randrange(4)
            if odd == 0:
                anns.append(annotation(None, [rng.choice(pool)]))
            elif odd == 1:
                anns.append(annotation(longs[ci], [rng.choice(pool)], yes_no="YES", candidate_index=ci))
            elif odd == 2:
                anns.append(annotation(longs[ci], [dict(NULL), rng.choice(pool)], candidate_index=ci))
            else:
                a, b = rng.sample(pool, 2)
                mixed = {
                    "start_byte": a["start_byte"],
                    "end_byte": a["end_byte"],
                    "start_token": b["start_token"],
                    "end_token": b["end_token"],
                }
                anns.append(annotation(longs[ci], [mixed], candidate_index=ci))
    return gold_line(example_id, doc, anns), doc, pool


def example_from_line(obj: dict) -> Example:
    """The ``Example`` our reader makes of a gold line (built directly, so these tests only
    exercise the scorer; ``test_main_*`` goes through ``tfqa.data.readers``)."""

    def span(d: dict) -> Span:
        return Span(d["start_token"], d["end_token"], d["start_byte"], d["end_byte"])

    anns = []
    for a in obj["annotations"]:
        la = a["long_answer"]
        long = None if la["start_token"] < 0 and la["start_byte"] < 0 else span(la)
        anns.append(Annotation(long, la["candidate_index"], tuple(span(s) for s in a["short_answers"]), a["yes_no_answer"]))
    toks = obj["document_tokens"]
    return Example(
        example_id=str(obj["example_id"]),
        question=obj["question_text"],
        words=[t["token"] for t in toks],
        is_html=[t["html_token"] for t in toks],
        candidates=[
            Candidate(c["start_token"], c["end_token"], True, c["start_byte"], c["end_byte"])
            for c in obj["long_answer_candidates"]
        ],
        annotations=anns,
        word_start_bytes=[t["start_byte"] for t in toks],
        word_end_bytes=[t["end_byte"] for t in toks],
    )


# -- random predictions --------------------------------------------------------------------------
def perturb(rng: random.Random, span: dict) -> dict:
    """The same span, or one that matches only by bytes / only by tokens / not at all."""
    d = dict(span)
    has_bytes, has_tokens = d["start_byte"] >= 0, d["start_token"] >= 0
    r = rng.random()
    if r < 0.4:
        pass
    elif r < 0.55 and has_tokens:
        d["start_byte"] = d["end_byte"] = -1
    elif r < 0.65 and has_bytes:
        d["start_token"] = d["end_token"] = -1
    elif r < 0.75 and has_bytes:
        d["start_byte"] += 1
        d["end_byte"] += 1
    elif r < 0.9 and has_tokens:
        d["end_token"] += 1
    elif has_tokens:
        d["end_token"] += 1
        if has_bytes:
            d["end_byte"] += 2
    return d


def random_prediction(rng: random.Random, line: dict, doc: Doc, pool: list[dict], scores) -> dict:
    anns = line["annotations"]
    pred: dict = {"example_id": line["example_id"]}
    r = rng.random()
    gold_longs = [a["long_answer"] for a in anns if a["long_answer"]["start_token"] >= 0 or a["long_answer"]["start_byte"] >= 0]
    if r < 0.1:
        pass  # no "long_answer" key: a null long answer
    elif r < 0.2:
        pred["long_answer"] = dict(NULL)
    elif r < 0.7 and gold_longs:
        g = rng.choice(gold_longs)
        pred["long_answer"] = perturb(rng, {k: g[k] for k in NULL})
    else:
        s, e = rng.choice(doc.candidates)
        pred["long_answer"] = doc.span(s, e, rng.random() < 0.7)
    r = rng.random()
    shorts: list[dict] = []
    yes_no = "NONE"
    if r < 0.2:
        shorts = rng.choice([[], [dict(NULL)]])
    elif r < 0.6:
        src = rng.choice(anns)["short_answers"] or rng.sample(pool, 1)
        shorts = [perturb(rng, s) if rng.random() < 0.3 else dict(s) for s in src]
        rng.shuffle(shorts)
        if rng.random() < 0.15:
            shorts.append(dict(rng.choice(shorts)))  # a duplicate does not change the set
        if rng.random() < 0.1:
            shorts.append(rng.choice(pool))
        if rng.random() < 0.1 and len(shorts) > 1:
            shorts.pop()
        if rng.random() < 0.1:
            shorts.append(dict(NULL))
    elif r < 0.8:
        yes_no = rng.choice(["YES", "NO", "yes", "No"])
        shorts = rng.choice([[], [dict(NULL)]])
    else:
        shorts = rng.sample(pool, rng.randint(1, 2))
    if rng.random() < 0.1 and not shorts:
        pass  # no "short_answers" key
    else:
        pred["short_answers"] = shorts
    if yes_no != "NONE" or rng.random() < 0.8:
        pred["yes_no_answer"] = yes_no if yes_no != "NONE" else rng.choice(["NONE", "none"])
    pred["long_answer_score"] = scores()
    pred["short_answers_score"] = scores()
    return pred


def score_source(rng: random.Random):
    kind = rng.randrange(4)
    if kind == 0:  # few values: many exact ties
        return lambda: rng.choice([0, 0.5, 1, 1.0, 2, -3, -0.0])
    if kind == 1:
        return lambda: rng.randint(-2, 3)
    if kind == 2:
        return lambda: rng.random()
    return lambda: rng.choice([rng.random(), 0.25, 7])


def write_files(tmp: Path, lines: list[dict], preds: list[dict], tag: str = "") -> tuple[Path, Path]:
    gold_path = tmp / f"gold{tag}.jsonl.gz"
    gold_path.write_bytes(gzip.compress("".join(json.dumps(o) + "\n" for o in lines).encode(), mtime=0))
    pred_path = tmp / f"pred{tag}.json"
    pred_path.write_text(json.dumps({"predictions": preds}))
    return gold_path, pred_path


def official_metrics(gold_path: Path, pred_path: Path) -> dict:
    # read_annotation would start a 10-process pool per call; one split is the same parser.
    gold = eval_utils.read_annotation_from_one_split(str(gold_path))
    pred = eval_utils.read_prediction_json(str(pred_path))
    long_stats, short_stats = nq_eval.score_answers(gold, pred)
    out = dict(nq_eval.get_metrics_with_answer_stats(long_stats, short_stats))
    out.update(nq_eval.compute_final_f1(long_stats, short_stats))
    return out


def assert_same(ours: dict, official: dict, context: str = "") -> None:
    assert set(ours) == set(official), context
    for key, value in official.items():
        assert ours[key] == value, f"{context} {key}: ours {ours[key]!r} official {value!r}"


def ours_from_files(gold_lines: list[dict], pred_path: Path, rule: GoldRule = GoldRule()) -> dict:
    return score([example_from_line(o) for o in gold_lines], read_predictions(pred_path), rule=rule)


def random_dataset(seed: int, n_annotations: int = 5, string_ids: bool = False):
    rng = random.Random(seed)
    scores = score_source(rng)
    null_rate = rng.choice([0.3, 0.6, 0.85])  # 5-way gold mostly has an answer at 0.3
    lines, preds = [], []
    for i in range(rng.randint(1, 30)):
        eid = f"{seed}-{i}" if string_ids else rng.randrange(-(10**18), 10**18)
        line, doc, pool = random_gold(rng, eid, n_annotations, null_rate)
        lines.append(line)
        preds.append(random_prediction(rng, line, doc, pool, scores))
    rng.shuffle(preds)
    return lines, preds


# -- against the official scorer ------------------------------------------------------------------
@pytest.mark.parametrize("block", range(8))
def test_random_five_way_gold_equals_official(tmp_path, block):
    for seed in range(block * 40, block * 40 + 40):
        lines, preds = random_dataset(seed)
        gold_path, pred_path = write_files(tmp_path, lines, preds, str(seed))
        assert_same(ours_from_files(lines, pred_path), official_metrics(gold_path, pred_path), f"seed {seed}")


def test_random_string_ids_and_odd_vote_thresholds_equal_official(tmp_path):
    for seed in range(1000, 1040):
        lines, preds = random_dataset(seed, string_ids=True)
        gold_path, pred_path = write_files(tmp_path, lines, preds, str(seed))
        for long_thr, short_thr in ((1, 1), (3, 1), (1, 4), (5, 5)):
            with official_thresholds(long_thr, short_thr):
                expected = official_metrics(gold_path, pred_path)
            ours = ours_from_files(lines, pred_path, GoldRule(long_thr, short_thr))
            assert_same(ours, expected, f"seed {seed} thresholds {long_thr},{short_thr}")


def test_single_annotation_gold_generalises_the_vote(tmp_path):
    """Capped rule == official with thresholds 1; uncapped == official as shipped (no gold at all)."""
    for seed in range(2000, 2040):
        lines, preds = random_dataset(seed, n_annotations=1)
        gold_path, pred_path = write_files(tmp_path, lines, preds, str(seed))
        with official_thresholds(1, 1):
            assert_same(ours_from_files(lines, pred_path), official_metrics(gold_path, pred_path), f"seed {seed}")
        uncapped = ours_from_files(lines, pred_path, GoldRule(cap_at_annotation_count=False))
        assert_same(uncapped, official_metrics(gold_path, pred_path), f"seed {seed} uncapped")
        assert uncapped["long-answer-recall"] == 0 and uncapped["short-answer-recall"] == 0


def test_official_multiprocess_reader_gives_the_same_gold(tmp_path):
    lines, preds = random_dataset(7)
    gold_path, pred_path = write_files(tmp_path, lines, preds)
    assert eval_utils.read_annotation(str(gold_path), n_threads=1).keys() == {o["example_id"] for o in lines}


# -- hand-made edge cases ----------------------------------------------------------------------------
def fixed_doc() -> Doc:
    starts = [10 * i for i in range(20)]
    return Doc(starts, [s + 5 for s in starts], [(0, 5), (5, 10), (10, 20)])


def pred(eid, long=None, long_score=0.0, shorts=(), short_score=0.0, yes_no="NONE") -> dict:
    return {
        "example_id": eid,
        "long_answer": long or dict(NULL),
        "long_answer_score": long_score,
        "short_answers": list(shorts),
        "short_answers_score": short_score,
        "yes_no_answer": yes_no,
    }


D = fixed_doc()
L0, L1, L2 = D.span(0, 5), D.span(5, 10), D.span(10, 20)
S1, S2, S3 = D.span(1, 2), D.span(3, 5), D.span(12, 14)


def five(*anns) -> list[dict]:
    return list(anns) + [annotation(None)] * (5 - len(anns))


EDGE_CASES = {
    "all_null_predictions": (
        [five(annotation(L0, [S1]), annotation(L0, [S1])), five()],
        [pred(1), pred(2)],
    ),
    "no_gold_answers": (
        [five(annotation(L0, [S1])), five()],
        [pred(1, L0, 1.0, [S1], 1.0), pred(2, L1, 2.0, yes_no="YES", short_score=0.5)],
    ),
    "all_scores_tied": (
        [five(annotation(L0), annotation(L0)), five(annotation(L1), annotation(L1)), five(annotation(L2), annotation(L2))],
        [pred(1, L0, 1.0), pred(2, L0, 1.0), pred(3, L2, 1)],
    ),
    "byte_mismatch_token_match": (
        [five(annotation(L0, [S1]), annotation(L0, [S1]))],
        [pred(1, {**L0, "start_byte": 1, "end_byte": 2}, 1.0, [{**S1, "end_byte": S1["end_byte"] + 1}], 1.0)],
    ),
    "token_mismatch_byte_match_and_token_only": (
        [five(annotation(L0, [S1]), annotation(L0, [S1])), five(annotation(L1), annotation(L1))],
        [
            pred(1, {**L0, "end_token": 6}, 1.0, [{**S1, "start_byte": -1, "end_byte": -1}], 2.0),
            pred(2, {**L1, "start_token": -1, "end_token": -1}, 3.0),
        ],
    ),
    "yes_no_matches_a_minority_annotation": (
        [five(annotation(L0, [S1]), annotation(L0, [S1]), annotation(L0, yes_no="NO"))],
        [pred(1, L0, 1.0, (), 1.0, "no")],
    ),
    "span_set_with_duplicates_and_order": (
        [five(annotation(L0, [S1, S2]), annotation(L0, [S2, S1])), five(annotation(L0, [S1, S2]), annotation(L0, [S1]))],
        [pred(1, L0, 1.0, [S2, S1, S2], 1.0), pred(2, L0, 1.0, [S1, S2, S3], 0.5)],
    ),
    "long_vote_of_one_is_no_gold": (
        [five(annotation(L0, [S1])), five(annotation(L0), annotation(L1))],
        [pred(1, L0, 5.0, [S1], 5.0), pred(2, L1, 4.0)],
    ),
    "precision_never_reaches_targets": (
        [five(*[annotation(L0)] * 5), five(*[annotation(L1)] * 5), five(*[annotation(L2)] * 5)],
        [pred(1, L1, 3.0), pred(2, L2, 2.0), pred(3, L2, 1.0)],
    ),
    "best_f1_inside_score_order": (
        [five(*[annotation(L0, [S1])] * 2), five(*[annotation(L1, [S2])] * 2), five(), five(*[annotation(L2)] * 3)],
        [pred(1, L0, 0.9, [S1], -1.0), pred(2, L0, 0.95, [S2], -1.0), pred(3, L1, 0.1, [S3], -2.0), pred(4, L2, -5.0)],
    ),
    "negative_zero_and_zero_tie": (
        [five(*[annotation(L0)] * 2), five(*[annotation(L1)] * 2)],
        [pred(1, L0, -0.0), pred(2, L0, 0.0)],
    ),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case_equals_official(tmp_path, name):
    ann_lists, preds = EDGE_CASES[name]
    lines = [gold_line(i + 1, D, anns) for i, anns in enumerate(ann_lists)]
    gold_path, pred_path = write_files(tmp_path, lines, preds)
    assert_same(ours_from_files(lines, pred_path), official_metrics(gold_path, pred_path), name)


def test_edge_case_values_by_hand(tmp_path):
    ann_lists, preds = EDGE_CASES["best_f1_inside_score_order"]
    lines = [gold_line(i + 1, D, anns) for i, anns in enumerate(ann_lists)]
    _, pred_path = write_files(tmp_path, lines, preds)
    m = ours_from_files(lines, pred_path)
    # long, by score: 0.95 wrong, 0.9 right, 0.1 (no gold), -5 right; 3 gold answers
    assert m["long-best-threshold"] == -5.0 and m["long-best-threshold-recall"] == 2 / 3
    assert m["long-best-threshold-precision"] == 0.5
    assert m["long-recall-at-precision>=0.5"] == 2 / 3 and m["long-precision-at-precision>=0.5"] == 0.5
    assert m["long-recall-at-precision>=0.9"] == 0 and m["long-precision-at-precision>=0.9"] == 0
    # short: the -1 tie holds the right S1 and the right S2, then S3 without gold
    assert m["short-best-threshold"] == -1.0 and m["short-best-threshold-f1"] == 1.0
    assert m["long-answer-n"] == 4 and m["short-answer-precision"] == 2 / 3


# -- validation -----------------------------------------------------------------------------------
BAD_PREDICTIONS = {
    "yes_no_with_spans": (pred(7, L0, 1.0, [S1], 1.0, "YES"), "yes_no_answer YES given together"),
    "start_ge_end_bytes": (pred(7, {**L0, "end_byte": L0["start_byte"]}, 1.0), "start"),
    "start_ge_end_tokens": (pred(7, L0, 1.0, [{**S1, "end_token": S1["start_token"]}], 1.0), "start"),
    "inconsistent_null": (pred(7, {**L0, "start_byte": -1}, 1.0), "inconsistent null byte span"),
    "bad_yes_no": (pred(7, yes_no="maybe"), "yes_no_answer"),
}


@pytest.mark.parametrize("name", sorted(BAD_PREDICTIONS))
def test_invalid_prediction_names_the_example(tmp_path, name):
    obj, words = BAD_PREDICTIONS[name]
    with pytest.raises(NQRecordError, match=words) as err:
        prediction_from_json(obj)
    assert err.value.example_id == "7" and "example 7" in str(err.value)
    _, pred_path = write_files(tmp_path, [], [obj])
    with pytest.raises(ValueError):  # the official reader rejects the same file
        eval_utils.read_prediction_json(str(pred_path))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "1.0", True])
def test_scores_must_be_finite_numbers(bad):
    with pytest.raises(NQRecordError, match="long_answer_score") as err:
        prediction_from_json(pred("x", long_score=bad))
    assert err.value.example_id == "x"


def test_missing_score_and_offsets_are_named():
    obj = pred("x")
    del obj["short_answers_score"]
    with pytest.raises(NQRecordError, match="field 'short_answers_score': prediction for example x: is missing"):
        prediction_from_json(obj)
    with pytest.raises(NQRecordError, match="field 'long_answer': prediction for example x: lacks start_byte"):
        prediction_from_json(pred("x", {"start_token": 1, "end_token": 2, "end_byte": -1}))


def test_a_bad_prediction_file_is_named_with_its_line_and_field(tmp_path):
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"predictions": [\n  {"example_id": 1,,}]}')
    with pytest.raises(NQRecordError) as err:
        read_predictions(bad_json)
    assert (err.value.path, err.value.line, err.value.example_id) == (str(bad_json), 2, None)
    assert str(err.value).startswith(f"{bad_json}:2: predictions: not valid JSON")
    _, pred_path = write_files(tmp_path, [], [pred(7, {**L0, "start_byte": -1}, 1.0)])
    with pytest.raises(NQRecordError) as err:
        read_predictions(pred_path)
    assert (err.value.path, err.value.field, err.value.example_id, err.value.kind) == (
        str(pred_path),
        "long_answer",
        "7",
        "prediction",
    )
    assert (
        str(err.value)
        == f"{pred_path}: field 'long_answer': prediction for example 7: inconsistent null byte span (-1, {L0['end_byte']})"
    )


def test_prediction_ids_must_match_gold_exactly(tmp_path):
    lines = [gold_line(1, D, five(annotation(L0))), gold_line(2, D, five())]
    gold = [example_from_line(o) for o in lines]
    ok = [prediction_from_json(pred(1)), prediction_from_json(pred(2))]
    unknown = prediction_from_json(pred(3))
    with pytest.raises(NQRecordError, match="not in the gold data") as err:
        score(gold, ok + [unknown])
    assert err.value.example_id == "3"
    with pytest.raises(NQRecordError, match="no prediction") as err:
        score(gold, ok[:1])
    assert err.value.example_id == "2"
    with pytest.raises(NQRecordError, match="more than once") as err:
        score(gold, ok + ok[1:])
    assert err.value.example_id == "2"
    _, pred_path = write_files(tmp_path, lines, [pred(1), pred(2), pred(2)])
    with pytest.raises(NQRecordError, match="more than once"):
        read_predictions(pred_path)
    # the official scorer also refuses a missing prediction
    gold_path, pred_path = write_files(tmp_path, lines, [pred(1)])
    with pytest.raises(ValueError):
        official_metrics(gold_path, pred_path)


def test_integer_and_text_ids_are_looked_up_exactly():
    def gold_of(ids):
        return [Example(i, "q", ["a", "b"], [False, False], [], [Annotation(Span(0, 1), 0)]) for i in ids]

    def preds_of(ids):
        return [NQPrediction(i, Span(0, 1), 1.0) for i in ids]

    ints = [str(i) for i in (10, 9, -3, 100, 2)]
    assert score(gold_of(ints), preds_of(ints[::-1]))["long-answer-f1"] == 1.0
    mixed = ints + ["abc", "007"]  # not canonical integers: looked up as text
    assert score(gold_of(mixed), preds_of(mixed[::-1]))["long-answer-f1"] == 1.0
    for gold_ids, pred_ids, culprit in (
        (ints, ints + ["abc"], "abc"),
        (ints, ints[:-1] + ["02"], "02"),  # 2 and "02" are different ids
        (mixed, ints, "abc"),
        (["a", "b"], ["a", "b", "1"], "1"),
    ):
        with pytest.raises(NQRecordError) as err:
            score(gold_of(gold_ids), preds_of(pred_ids))
        assert err.value.example_id == culprit


def test_gold_errors():
    with pytest.raises(NQRecordError, match="no annotations") as err:
        build_gold([Example("e1", "q", ["a"], [False], [])])
    assert err.value.example_id == "e1"
    ann = Annotation(Span(0, 1), 0)
    with pytest.raises(NQRecordError, match="more than once"):
        build_gold([Example("e1", "q", ["a"], [False], [], [ann]), Example("e1", "q", ["a"], [False], [], [ann])])
    with pytest.raises(NQRecordError, match="no examples"):
        build_gold([])
    with pytest.raises(NQRecordError, match="start 1 >= end 1") as err:
        build_gold([Example("e2", "q", ["a"], [False], [], [Annotation(Span(1, 1), 0)])])
    assert (err.value.kind, err.value.example_id, err.value.field) == ("gold", "e2", "annotations[0].long_answer")


# -- Kaggle micro-F1 ------------------------------------------------------------------------------
def kaggle_case():
    """Four single-annotation examples (the vote of one decides with the default rule)."""

    def ex(eid, long, shorts=(), yes_no="NONE"):
        return Example(eid, "q", ["w"] * 20, [False] * 20, [], [Annotation(long, 0 if long else -1, tuple(shorts), yes_no)])

    def sp(s, e):
        return Span(s, e)

    gold = [
        ex("a", sp(0, 5), [sp(1, 2)]),
        ex("b", sp(5, 10)),
        ex("c", None),
        ex("d", sp(10, 20), yes_no="YES"),
    ]
    preds = [
        NQPrediction("a", sp(0, 5), 0.9, (sp(1, 2),), 0.8),  # long TP, short TP
        NQPrediction("b", sp(0, 5), 0.7, (sp(6, 7),), 0.6),  # long wrong (FP, +FN), short FP (no gold)
        NQPrediction("c", sp(0, 5), 0.2, (), 0.95),  # long FP when kept, short blank: TN
        NQPrediction("d", None, 0.99, (), 0.3, "YES"),  # long blank: FN; short TP when kept
    ]
    return gold, preds


def test_kaggle_micro_f1_by_hand():
    gold, preds = kaggle_case()
    scored = score_answers(gold, preds)
    k = scored.kaggle_micro_f1(0.5, 0.5)
    # long: TP a, FP+FN b, TN c (0.2 dropped), FN d; short: TP a, FP b, TN c, FN d (0.3 dropped)
    assert (k.tp, k.fp, k.fn) == (2, 2, 3)
    assert k.f1 == 4 / 9 and k.precision == 0.5 and k.recall == 2 / 5
    k = scored.kaggle_micro_f1(0.5, 0.5, count_wrong_as_fn=False)
    assert (k.tp, k.fp, k.fn) == (2, 2, 2) and k.f1 == 0.5
    k = scored.kaggle_micro_f1(0.0, 0.0)  # everything kept
    # long: TP a, FP+FN b, FP c, FN d; short: TP a, FP b, TN c, TP d
    assert (k.tp, k.fp, k.fn) == (3, 3, 2)
    k = scored.kaggle_micro_f1(math.inf, math.inf)  # nothing kept
    assert (k.tp, k.fp, k.fn, k.f1, k.precision) == (0, 0, 5, 0.0, 0.0)
    best = score_answers(gold, preds).best_kaggle_micro_f1()
    # long keeps only a (0.9): TP1 FN2; short keeps a and d (>= 0.3) but b (0.6) too: TP2 FP1
    assert (best.long_threshold, best.short_threshold) == (0.9, 0.3)
    assert (best.tp, best.fp, best.fn, best.f1) == (3, 1, 2, 6 / 9)
    assert best.as_dict()["kaggle-micro-f1"] == 6 / 9


def brute_force_best(scored, count_wrong_as_fn: bool) -> tuple[Fraction, list[tuple[float, float]]]:
    def candidates(stats):
        return [math.inf] + sorted(set(stats.score.tolist()), reverse=True)

    best, pairs = Fraction(-1), []
    for lt, st in itertools.product(candidates(scored.long), candidates(scored.short)):
        k = scored.kaggle_micro_f1(lt, st, count_wrong_as_fn=count_wrong_as_fn)
        den = 2 * k.tp + k.fp + k.fn
        f = Fraction(2 * k.tp, den) if den else Fraction(0)
        if f > best:
            best, pairs = f, [(lt, st)]
        elif f == best:
            pairs.append((lt, st))
    return best, pairs


@pytest.mark.parametrize("count_wrong_as_fn", [True, False])
def test_best_kaggle_thresholds_equal_brute_force(count_wrong_as_fn):
    for seed in range(60):
        lines, raw = random_dataset(3000 + seed, n_annotations=rng_annotations(seed))
        scored = score_answers([example_from_line(o) for o in lines], [prediction_from_json(p) for p in raw])
        got = scored.best_kaggle_micro_f1(count_wrong_as_fn=count_wrong_as_fn)
        best, pairs = brute_force_best(scored, count_wrong_as_fn)
        den = 2 * got.tp + got.fp + got.fn
        assert (Fraction(2 * got.tp, den) if den else 0) == best, seed
        # the highest thresholds among the optimal pairs, and counts that the direct formula agrees with
        assert (got.long_threshold, got.short_threshold) == (max(p[0] for p in pairs), max(p[1] for p in pairs))
        again = scored.kaggle_micro_f1(got.long_threshold, got.short_threshold, count_wrong_as_fn=count_wrong_as_fn)
        assert again == got


def rng_annotations(seed: int) -> int:
    return 1 if seed % 3 == 0 else 5


def test_kaggle_as_dict_is_json_safe():
    k = KaggleF1.from_counts(0, 0, 4, math.inf, 0.5)
    d = k.as_dict()
    assert d["kaggle-long-threshold"] is None and d["kaggle-short-threshold"] == 0.5
    json.dumps(d, allow_nan=False)


# -- the CLI function ------------------------------------------------------------------------------
def _long_answer_holding_its_shorts(ann: dict, doc: Doc) -> None:
    """The reader refuses a short answer outside its long answer (no real NQ file has one):
    make the long answer the smallest candidate holding the shorts, or drop them if none does."""
    lo, hi = min(s["start_token"] for s in ann["short_answers"]), max(s["end_token"] for s in ann["short_answers"])
    holding = [(e - s, ci) for ci, (s, e) in enumerate(doc.candidates) if s <= lo and hi <= e]
    if not holding:
        ann["short_answers"] = []
        return
    ci = min(holding)[1]
    ann["long_answer"] = {**doc.span(*doc.candidates[ci], ann["long_answer"]["start_byte"] >= 0), "candidate_index": ci}


def test_tfqa_score_reads_gold_with_tfqa_readers_and_prints_json(tmp_path):
    rng = random.Random(5)
    lines, preds = [], []
    for i in range(25):
        line, doc, pool = random_gold(rng, 10**12 + i, 5)
        # keep what a real NQ file has: shorts inside a long answer, no null spans in the list
        for a in line["annotations"]:
            a["short_answers"] = [s for s in a["short_answers"] if s["start_token"] >= 0]
            if a["long_answer"]["candidate_index"] < 0:
                a["short_answers"], a["yes_no_answer"] = [], "NONE"
            elif a["short_answers"]:
                _long_answer_holding_its_shorts(a, doc)
        lines.append(line)
        preds.append(random_prediction(rng, line, doc, pool, score_source(rng)))
    gold_path, pred_path = write_files(tmp_path, lines, preds)
    metrics = score_files(gold_path, pred_path)
    result = CliRunner().invoke(cli_main, ["score", "--gold", str(gold_path), "--predictions", str(pred_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == metrics
    official = official_metrics(gold_path, pred_path)
    assert_same({k: v for k, v in metrics.items() if not k.startswith("kaggle-")}, official)
    assert metrics["kaggle-micro-f1"] >= 0 and "kaggle-long-threshold" in metrics
