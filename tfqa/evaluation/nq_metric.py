"""The official Natural Questions metric and Kaggle's micro-F1, as array computations.

Values equal Google's ``nq_eval`` (PyPI ``natural-questions``) on every input it accepts; its rules,
kept on purpose:

- Gold: an example "has a long answer" when at least 2 of its annotations have a non-null long
  span, "has a short answer" when at least 2 have a non-null short span *or* a yes/no answer.
  Annotation-level matching then uses *any* annotation, even one that lost the vote.
- Span equality is "bytes equal (both sides have bytes) OR tokens equal (both sides have tokens)":
  a byte mismatch still falls through to the token comparison.
- A short prediction with YES/NO is correct when some annotation has the same yes/no value;
  otherwise its non-null span *set* must equal one annotation's non-null span set (each span of
  either side equal to some span of the other, with the OR-equality above, duplicates ignored).
- Correctness needs gold-has-answer and prediction-has-answer; every example keeps its score, with
  or without an answer.
- The threshold sweep visits the distinct scores in decreasing order; a threshold keeps every
  prediction with score >= it, so a run of tied scores enters all at once. The best F1 is the
  first (highest-threshold) strict maximum, 0/0/0/0.0 when F1 is never positive; recall@precision
  is the largest recall whose precision >= target, at its first (highest) threshold, 0/0 if none
  is positive. ``compute_final_f1`` ignores scores.

Generalisation to single-annotation gold (Kaggle's simplified train): with the official "2 of 5"
rule such gold never has an answer. ``GoldRule.cap_at_annotation_count`` (default on) lowers each
threshold to the example's annotation count, so one annotation decides alone, while 5-way dev gold
is scored exactly as the official scorer does. Turn it off for the literal official rule.

Inputs the official scorer crashes on or silently mishandles raise an ``NQRecordError`` instead: gold
examples without annotations (its vote returns ``[]`` and summing it fails), duplicate ids, an
empty gold set. Prediction ids must equal the gold ids as sets, as in the official scorer, but a
violation is an ``NQRecordError`` naming an offending id rather than a bare ``ValueError``.

Data flow: ``build_gold`` (Examples -> ``GoldTable``) and ``PredictionColumns.from_records`` are
the only Python loops, once per data set; ``score_answers`` aligns ids and decides correctness with
array operations, and every metric is then one sort plus cumulative sums per answer type.

Kaggle micro-F1 pools long and short answers; per example and answer type, a kept prediction
(answer present, score >= threshold) that is correct is a TP, a wrong one a FP (and also a FN when
gold has an answer, unless ``count_wrong_as_fn=False``, which is Kaggle's written definition), a
missing or dropped one where gold has an answer a FN, otherwise a TN.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tfqa.data.records import Example, Span
from tfqa.evaluation.nq_predictions import NQPrediction, NQRecordError, kept_span, read_predictions

# Span arrays are (n, 4) int64 with the columns of records.SPAN_KEYS; -1 marks an absent pair.
_NULL_SPAN = (-1, -1, -1, -1)
_YES_NO_CODE = {"NONE": 0, "YES": 1, "NO": 2}
PRECISION_TARGETS = (0.5, 0.75, 0.9)


@dataclass(frozen=True)
class GoldRule:
    """How many annotations must be non-null for the gold to "have" a long / short answer.

    Defaults are the official flags (``--long_non_null_threshold=2``, ``--short_non_null_threshold
    =2``). ``cap_at_annotation_count`` lowers each threshold to the example's annotation count.
    """

    long_non_null_threshold: int = 2
    short_non_null_threshold: int = 2
    cap_at_annotation_count: bool = True

    def __post_init__(self) -> None:
        for name in ("long_non_null_threshold", "short_non_null_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def thresholds(self, n_annotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        long = np.full(n_annotations.shape, self.long_non_null_threshold)
        short = np.full(n_annotations.shape, self.short_non_null_threshold)
        if self.cap_at_annotation_count:
            long, short = np.minimum(long, n_annotations), np.minimum(short, n_annotations)
        return long, short


def _span_row(span: Span) -> tuple[int, int, int, int]:
    return (span.start_byte, span.end_byte, span.start_token, span.end_token)


def _span_array(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _spans_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise official ``nonnull_span_equal``: bytes equal OR tokens equal, each where both exist."""
    byte = (a[:, 0] >= 0) & (b[:, 0] >= 0) & (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 1])
    token = (a[:, 2] >= 0) & (b[:, 2] >= 0) & (a[:, 2] == b[:, 2]) & (a[:, 3] == b[:, 3])
    return byte | token


def id_keys(ids: list[str]) -> np.ndarray:
    """Sortable keys of example ids: int64 when every id is a canonical integer (as NQ's are), as a
    binary search over strings is ~10x slower; else the ids as numpy strings."""
    try:
        ints = [int(i) for i in ids]
    except ValueError:
        ints = None
    if ints is not None and all(str(k) == i for k, i in zip(ints, ids)) and all(-(2**63) <= k < 2**63 for k in ints):
        return np.array(ints, dtype=np.int64)
    return np.array(ids, dtype=str)


def _any_per_group(group: np.ndarray, flags: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(group[flags], minlength=n) > 0


# -- gold --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GoldTable:
    """Gold labels as arrays. Rows are examples in input order; only non-null spans are stored."""

    example_ids: tuple[str, ...]
    has_long: np.ndarray  # (n,) bool: the vote says there is a long answer
    has_short: np.ndarray  # (n,) bool: ... a short (span or yes/no) answer
    long_example: np.ndarray  # (k,) example row of each non-null long annotation
    long_spans: np.ndarray  # (k, 4)
    ann_example: np.ndarray  # (a,) example row of every annotation
    ann_yes_no: np.ndarray  # (a,) 0 NONE, 1 YES, 2 NO
    ann_n_short: np.ndarray  # (a,) number of non-null short spans
    short_ann: np.ndarray  # (s,) annotation of each non-null short span (non-decreasing)
    short_spans: np.ndarray  # (s, 4)
    sorted_keys: np.ndarray  # ``id_keys`` of the ids, sorted, for vectorised lookups
    sorted_rows: np.ndarray  # row of each sorted key

    def __len__(self) -> int:
        return len(self.example_ids)

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Gold row of each ``id_keys`` key, -1 where the gold has no such example."""
        table, rows = self.sorted_keys, self.sorted_rows
        if (keys.dtype.kind == "i") != (table.dtype.kind == "i"):
            # One side has a non-integer id: compare as text (int64 -> str is the canonical form),
            # re-sorted, as text order is not integer order.
            keys, text = keys.astype(str), table.astype(str)
            order = np.argsort(text, kind="stable")
            table, rows = text[order], rows[order]
        if not len(keys):
            return np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[pos] == keys, rows[pos], -1)


def build_gold(examples: Iterable[Example], rule: GoldRule = GoldRule()) -> GoldTable:
    """Gold labels of annotated examples, with the official annotator vote."""
    ids: list[str] = []
    seen: set[str] = set()
    n_ann, n_long, n_short = [], [], []
    long_example, long_rows = [], []
    ann_example, ann_yes_no, ann_n_short = [], [], []
    short_ann, short_rows = [], []
    for ex in examples:
        eid = ex.example_id
        if eid in seen:
            raise NQRecordError("gold", eid, "appears more than once")
        if not ex.annotations:
            raise NQRecordError("gold", eid, "has no annotations (unlabelled data cannot be scored)")
        row = len(ids)
        seen.add(eid)
        ids.append(eid)
        voted_long = voted_short = 0
        for j, ann in enumerate(ex.annotations):
            a = len(ann_example)
            span = kept_span(ann.long_answer, "gold", eid, f"annotations[{j}].long_answer")
            if span is not None:
                long_example.append(row)
                long_rows.append(_span_row(span))
                voted_long += 1
            code = _YES_NO_CODE.get(ann.yes_no.upper())
            if code is None:
                raise NQRecordError(
                    "gold", eid, f"{ann.yes_no!r} is not YES, NO or NONE", field=f"annotations[{j}].yes_no_answer"
                )
            k = 0
            for i, short in enumerate(ann.short_answers):
                short = kept_span(short, "gold", eid, f"annotations[{j}].short_answers[{i}]")
                if short is not None:
                    short_ann.append(a)
                    short_rows.append(_span_row(short))
                    k += 1
            ann_example.append(row)
            ann_yes_no.append(code)
            ann_n_short.append(k)
            voted_short += k > 0 or code != 0
        n_ann.append(len(ex.annotations))
        n_long.append(voted_long)
        n_short.append(voted_short)
    if not ids:
        raise NQRecordError("gold", None, "no examples")
    long_thr, short_thr = rule.thresholds(np.array(n_ann, dtype=np.int64))
    keys = id_keys(ids)
    id_order = np.argsort(keys, kind="stable")
    return GoldTable(
        example_ids=tuple(ids),
        has_long=np.array(n_long) >= long_thr,
        has_short=np.array(n_short) >= short_thr,
        long_example=np.array(long_example, dtype=np.int64),
        long_spans=_span_array(long_rows),
        ann_example=np.array(ann_example, dtype=np.int64),
        ann_yes_no=np.array(ann_yes_no, dtype=np.int8),
        ann_n_short=np.array(ann_n_short, dtype=np.int64),
        short_ann=np.array(short_ann, dtype=np.int64),
        short_spans=_span_array(short_rows),
        sorted_keys=keys[id_order],
        sorted_rows=id_order,
    )


# -- predictions as columns -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PredictionColumns:
    """Predictions as arrays, one row per prediction. Converting records is a Python loop, so it
    is done once (with reading); aligning to a gold set is then pure array work."""

    example_ids: np.ndarray  # (n,) numpy str
    id_keys: np.ndarray  # (n,) ``id_keys(example_ids)``
    long_spans: np.ndarray  # (n, 4), -1 rows for no long answer
    long_score: np.ndarray  # (n,) float64
    short_score: np.ndarray  # (n,) float64
    yes_no: np.ndarray  # (n,) 0 NONE, 1 YES, 2 NO
    short_offsets: np.ndarray  # (n + 1,) row r's short spans are short_spans[off[r]:off[r+1]]
    short_spans: np.ndarray  # (m, 4)

    @classmethod
    def from_records(cls, predictions: Iterable[NQPrediction]) -> PredictionColumns:
        preds = list(predictions)
        n_short = np.fromiter((len(p.short_answers) for p in preds), np.int64, len(preds))
        offsets = np.zeros(len(preds) + 1, dtype=np.int64)
        np.cumsum(n_short, out=offsets[1:])
        ids = [p.example_id for p in preds]
        return cls(
            example_ids=np.array(ids, dtype=str),
            id_keys=id_keys(ids),
            long_spans=_span_array([_NULL_SPAN if p.long_answer is None else _span_row(p.long_answer) for p in preds]),
            long_score=np.fromiter((p.long_score for p in preds), np.float64, len(preds)),
            short_score=np.fromiter((p.short_score for p in preds), np.float64, len(preds)),
            yes_no=np.fromiter((_YES_NO_CODE[p.yes_no] for p in preds), np.int8, len(preds)),
            short_offsets=offsets,
            short_spans=_span_array([_span_row(s) for p in preds for s in p.short_answers]),
        )

    def __len__(self) -> int:
        return len(self.long_score)

    @property
    def has_long(self) -> np.ndarray:
        return (self.long_spans[:, 0] >= 0) | (self.long_spans[:, 2] >= 0)

    @property
    def n_short(self) -> np.ndarray:
        return np.diff(self.short_offsets)

    @property
    def has_short(self) -> np.ndarray:
        return (self.n_short > 0) | (self.yes_no != 0)

    def take(self, rows: np.ndarray) -> PredictionColumns:
        """The predictions ``rows`` (indices), in that order."""
        n_short = self.n_short[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(n_short, out=offsets[1:])
        span_index = np.repeat(self.short_offsets[:-1][rows] - offsets[:-1], n_short) + np.arange(offsets[-1])
        return PredictionColumns(
            example_ids=self.example_ids[rows],
            id_keys=self.id_keys[rows],
            long_spans=self.long_spans[rows],
            long_score=self.long_score[rows],
            short_score=self.short_score[rows],
            yes_no=self.yes_no[rows],
            short_offsets=offsets,
            short_spans=self.short_spans[span_index],
        )


def align_predictions(gold: GoldTable, predictions: PredictionColumns) -> PredictionColumns:
    """Predictions reordered to the gold rows. Like the official scorer, the id sets must be
    equal: an unknown, missing or repeated id is an ``NQRecordError`` naming one of them."""
    rows = gold.rows_of(predictions.id_keys)
    unknown = np.flatnonzero(rows < 0)
    if unknown.size:
        first = str(predictions.example_ids[unknown[0]])
        raise NQRecordError("prediction", first, f"is not in the gold data ({unknown.size} unknown id(s) in all)")
    counts = np.bincount(rows, minlength=len(gold))
    if (counts > 1).any():
        raise NQRecordError("prediction", gold.example_ids[int(np.argmax(counts > 1))], "predicted more than once")
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        first = gold.example_ids[missing[0]]
        raise NQRecordError("prediction", first, f"gold example has no prediction ({missing.size} missing in all)")
    order = np.empty(len(gold), dtype=np.int64)
    order[rows] = np.arange(len(rows))
    return predictions.take(order)


# -- per-example outcomes ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AnswerStats:
    """Per-example outcome for one answer type (the official ``answer_stats`` tuple, as columns)."""

    has_gold: np.ndarray  # bool
    has_pred: np.ndarray  # bool
    correct: np.ndarray  # bool
    score: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.score)


def _long_stats(gold: GoldTable, pred: PredictionColumns) -> AnswerStats:
    n = len(gold)
    has_pred = pred.has_long
    hit = _spans_equal(gold.long_spans, pred.long_spans[gold.long_example])
    correct = gold.has_long & has_pred & _any_per_group(gold.long_example, hit, n)
    return AnswerStats(gold.has_long, has_pred, correct, pred.long_score)


def _short_span_set_hits(gold: GoldTable, pred: PredictionColumns) -> np.ndarray:
    """(a,) bool: annotation a's non-null short span set equals its example's predicted set."""
    n_ann = len(gold.ann_example)
    n_pred = pred.n_short
    # Every (gold span, predicted span of the same example) pair, built without a Python loop.
    g_example = gold.ann_example[gold.short_ann]
    reps = n_pred[g_example]
    pair_g = np.repeat(np.arange(len(gold.short_ann)), reps)
    block_start = np.cumsum(reps) - reps
    within = np.arange(len(pair_g)) - block_start[pair_g]
    pair_p = pred.short_offsets[g_example][pair_g] + within
    hit = _spans_equal(gold.short_spans[pair_g], pred.short_spans[pair_p])

    gold_covered = _any_per_group(pair_g, hit, len(gold.short_ann))
    # Coverage of predicted span j for annotation a lives at slot ann_slot[a] + j.
    ann_n_pred = n_pred[gold.ann_example]
    ann_slot = np.cumsum(ann_n_pred) - ann_n_pred
    slot = ann_slot[gold.short_ann[pair_g]] + within
    pred_covered = _any_per_group(slot, hit, int(ann_n_pred.sum()))
    slot_ann = np.repeat(np.arange(n_ann), ann_n_pred)
    pred_uncovered = np.bincount(slot_ann[~pred_covered], minlength=n_ann)
    gold_uncovered = np.bincount(gold.short_ann[~gold_covered], minlength=n_ann)
    return (gold.ann_n_short > 0) & (ann_n_pred > 0) & (pred_uncovered == 0) & (gold_uncovered == 0)


def _short_stats(gold: GoldTable, pred: PredictionColumns) -> AnswerStats:
    n = len(gold)
    has_pred = pred.has_short
    pred_yes_no = pred.yes_no[gold.ann_example]
    yes_no_hit = (pred_yes_no != 0) & (gold.ann_yes_no == pred_yes_no)
    # A YES/NO prediction has no spans (validated), so the span test can only fire without one.
    ann_hit = yes_no_hit | _short_span_set_hits(gold, pred)
    correct = gold.has_short & has_pred & _any_per_group(gold.ann_example, ann_hit, n)
    return AnswerStats(gold.has_short, has_pred, correct, pred.short_score)


# -- threshold sweeps --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ThresholdCurve:
    """Counts at every distinct score, decreasing; threshold t keeps answers with score >= t."""

    thresholds: np.ndarray
    kept: np.ndarray  # answers kept
    correct: np.ndarray  # correct answers kept
    kept_with_gold: np.ndarray  # answers kept where gold has an answer
    n_gold: int


def threshold_curve(stats: AnswerStats) -> ThresholdCurve:
    """One sort and three cumulative sums; a run of tied scores enters at once, so the order
    inside a run is irrelevant and an unstable sort will do."""
    order = np.argsort(-stats.score)
    scores = stats.score[order]
    last_of_run = np.flatnonzero(np.append(scores[1:] != scores[:-1], len(scores) > 0))
    has_pred = stats.has_pred[order]
    return ThresholdCurve(
        thresholds=scores[last_of_run],
        kept=np.cumsum(has_pred)[last_of_run],
        correct=np.cumsum(stats.correct[order])[last_of_run],
        kept_with_gold=np.cumsum(has_pred & stats.has_gold[order])[last_of_run],
        n_gold=int(stats.has_gold.sum()),
    )


def _divide(num: np.ndarray, den: np.ndarray | int) -> np.ndarray:
    """Elementwise ``safe_divide``: float64 division of exact integers is what Python's int / int
    gives, so the official values are reproduced to the last bit."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    # Same operation order as the official ``2 * precision * recall / (precision + recall)``.
    return _divide(2 * precision * recall, precision + recall)


def _py_divide(x: float, y: float) -> float:
    return x / y if y else 0.0


def _curve_metrics(curve: ThresholdCurve, prefix: str) -> dict[str, float]:
    """The official ``compute_pr_curves`` keys for one answer type."""
    precision = _divide(curve.correct, curve.kept)
    recall = _divide(curve.correct, curve.n_gold)
    f1 = _f1(precision, recall)
    best = int(np.argmax(f1)) if f1.size else 0
    if f1.size and f1[best] > 0:
        out = {
            "best-threshold-f1": float(f1[best]),
            "best-threshold-precision": float(precision[best]),
            "best-threshold-recall": float(recall[best]),
            "best-threshold": float(curve.thresholds[best]),
        }
    else:
        out = {"best-threshold-f1": 0.0, "best-threshold-precision": 0.0, "best-threshold-recall": 0.0, "best-threshold": 0.0}
    for target in PRECISION_TARGETS:
        ok = precision >= target
        max_recall = recall[ok].max() if ok.any() else 0.0
        r = p = 0.0
        if max_recall > 0:
            i = int(np.argmax(ok & (recall == max_recall)))
            r, p = float(recall[i]), float(precision[i])
        # The official key spells the target with '{:.2}': 0.5, 0.75, 0.9.
        out[f"recall-at-precision>={target:.2}"] = r
        out[f"precision-at-precision>={target:.2}"] = p
    return {prefix + k: v for k, v in out.items()}


def _final_f1(stats: AnswerStats, prefix: str) -> dict[str, float | int]:
    """The official ``compute_f1``: every predicted answer counts, scores ignored."""
    correct = int(stats.correct.sum())
    precision = _py_divide(correct, int(stats.has_pred.sum()))
    recall = _py_divide(correct, int(stats.has_gold.sum()))
    return {
        prefix + "n": len(stats),
        prefix + "f1": _py_divide(2 * precision * recall, precision + recall),
        prefix + "precision": precision,
        prefix + "recall": recall,
    }


# -- Kaggle micro-F1 ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KaggleF1:
    """Micro-F1 over long and short answers pooled, at one pair of thresholds (``math.inf``: keep
    no answer of that type)."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    long_threshold: float
    short_threshold: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, long_threshold: float, short_threshold: float) -> KaggleF1:
        return cls(
            f1=_py_divide(2 * tp, 2 * tp + fp + fn),
            precision=_py_divide(tp, tp + fp),
            recall=_py_divide(tp, tp + fn),
            tp=tp,
            fp=fp,
            fn=fn,
            long_threshold=float(long_threshold),
            short_threshold=float(short_threshold),
        )

    def as_dict(self, prefix: str = "kaggle-") -> dict[str, float | int | None]:
        """JSON-safe keys: an infinite threshold (keep nothing) becomes None."""

        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            prefix + "micro-f1": self.f1,
            prefix + "micro-precision": self.precision,
            prefix + "micro-recall": self.recall,
            prefix + "tp": self.tp,
            prefix + "fp": self.fp,
            prefix + "fn": self.fn,
            prefix + "long-threshold": finite(self.long_threshold),
            prefix + "short-threshold": finite(self.short_threshold),
        }


def _kaggle_counts(stats: AnswerStats, threshold: float, count_wrong_as_fn: bool) -> tuple[int, int, int]:
    kept = stats.has_pred & (stats.score >= threshold)
    tp = int((kept & stats.correct).sum())
    wrong = kept & ~stats.correct
    fn = int((stats.has_gold & ~kept).sum())
    if count_wrong_as_fn:
        fn += int((wrong & stats.has_gold).sum())
    return tp, int(wrong.sum()), fn


@dataclass(frozen=True, eq=False)
class _KaggleCurve:
    """TP/FP/FN for "keep nothing" (index 0, threshold inf) then each distinct score, decreasing."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def of(cls, c: ThresholdCurve, count_wrong_as_fn: bool) -> _KaggleCurve:
        tp = np.concatenate([[0], c.correct]).astype(np.int64)
        kept = np.concatenate([[0], c.kept]).astype(np.int64)
        kept_with_gold = np.concatenate([[0], c.kept_with_gold]).astype(np.int64)
        # Every gold answer is found (TP) or not (FN) when a wrong answer also counts as a miss.
        fn = c.n_gold - tp if count_wrong_as_fn else c.n_gold - kept_with_gold
        return cls(np.concatenate([[math.inf], c.thresholds]), tp, kept - tp, fn)


def _best_pair(long: _KaggleCurve, short: _KaggleCurve) -> tuple[int, int]:
    """Indices maximising 2T / (2T + FP + FN) with T, FP, FN the sums over the two curves.

    Dinkelbach's method in exact integers: at ratio p/q, the pair maximising
    q * numerator - p * denominator splits into an argmax per curve (O(n) each); it either beats
    p/q (and becomes the next ratio) or proves p/q optimal. Among optimal pairs the first argmax on
    each curve is taken, i.e. the highest thresholds.
    """
    a, b = 2 * long.tp, 2 * short.tp
    c, d = a + long.fp + long.fn, b + short.fp + short.fn
    p, q = 0, 1
    while True:
        u, v = q * a - p * c, q * b - p * d
        i, j = int(np.argmax(u)), int(np.argmax(v))
        if u[i] + v[j] <= 0:
            return i, j
        p, q = int(a[i] + b[j]), int(c[i] + d[j])


# -- the scored data set -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ScoredAnswers:
    """Per-example outcomes of one prediction set; every metric derives from these."""

    long: AnswerStats
    short: AnswerStats

    @functools.cached_property
    def long_curve(self) -> ThresholdCurve:
        return threshold_curve(self.long)

    @functools.cached_property
    def short_curve(self) -> ThresholdCurve:
        return threshold_curve(self.short)

    def official_metrics(self) -> dict[str, float | int]:
        """``get_metrics_with_answer_stats`` keys, then ``compute_final_f1`` keys."""
        out: dict[str, float | int] = {}
        out.update(_curve_metrics(self.long_curve, "long-"))
        out.update(_curve_metrics(self.short_curve, "short-"))
        out.update(_final_f1(self.long, "long-answer-"))
        out.update(_final_f1(self.short, "short-answer-"))
        return out

    def kaggle_micro_f1(self, long_threshold: float, short_threshold: float, *, count_wrong_as_fn: bool = True) -> KaggleF1:
        lt, lf, ln = _kaggle_counts(self.long, long_threshold, count_wrong_as_fn)
        st, sf, sn = _kaggle_counts(self.short, short_threshold, count_wrong_as_fn)
        return KaggleF1.from_counts(lt + st, lf + sf, ln + sn, long_threshold, short_threshold)

    def best_kaggle_micro_f1(self, *, count_wrong_as_fn: bool = True) -> KaggleF1:
        """The threshold pair with the highest micro-F1 (highest thresholds among ties)."""
        long = _KaggleCurve.of(self.long_curve, count_wrong_as_fn)
        short = _KaggleCurve.of(self.short_curve, count_wrong_as_fn)
        i, j = _best_pair(long, short)
        return KaggleF1.from_counts(
            int(long.tp[i] + short.tp[j]),
            int(long.fp[i] + short.fp[j]),
            int(long.fn[i] + short.fn[j]),
            float(long.thresholds[i]),
            float(short.thresholds[j]),
        )


GoldLike = GoldTable | Iterable[Example]
PredictionsLike = PredictionColumns | Iterable[NQPrediction]


def score_answers(gold: GoldLike, predictions: PredictionsLike, *, rule: GoldRule = GoldRule()) -> ScoredAnswers:
    """Per-example outcomes (``rule`` applies when ``gold`` is still a list of examples)."""
    table = gold if isinstance(gold, GoldTable) else build_gold(gold, rule)
    columns = predictions if isinstance(predictions, PredictionColumns) else PredictionColumns.from_records(predictions)
    pred = align_predictions(table, columns)
    return ScoredAnswers(_long_stats(table, pred), _short_stats(table, pred))


def score(gold: GoldLike, predictions: PredictionsLike, *, rule: GoldRule = GoldRule()) -> dict[str, float | int]:
    """Every key of the official ``get_metrics_with_answer_stats`` and ``compute_final_f1``."""
    return score_answers(gold, predictions, rule=rule).official_metrics()


def score_files(gold_path: str | os.PathLike, predictions_path: str | os.PathLike, *, rule: GoldRule = GoldRule()) -> dict:
    """What ``tfqa score`` prints: the official metrics plus the best Kaggle micro-F1 of a gold file
    and an official prediction JSON."""
    from tfqa.data.readers import read_examples  # lazily: scoring must import without the readers' deps

    gold = build_gold(read_examples(gold_path), rule)
    scored = score_answers(gold, read_predictions(predictions_path))
    metrics: dict = scored.official_metrics()
    metrics.update(scored.best_kaggle_micro_f1().as_dict())
    return metrics
