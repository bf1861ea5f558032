"""tfqa.evaluation.error_analysis on hand-built gold and answers where every number is worked out by hand:
gold answer types (the annotator vote, ties), per-example rightness, accuracy and F1 by answer
type and by document length, the agreement matrix, the examples the ensemble fixed and broke,
the files it writes and the tables MLflow reads back; and ``tfqa.evaluation.dev.dev_metrics``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfqa.data.records import Annotation, Candidate, Example, Span
from tfqa.evaluation import error_analysis as ea
from tfqa.evaluation.dev import dev_metrics, official_predictions
from tfqa.evaluation.nq_metric import build_gold, score_answers
from tfqa.inference import decode as dec

CANDIDATES = [Candidate(0, 5, True), Candidate(5, 10, True)]
SPAN_OF = {0: (0, 5), 1: (5, 10), -1: (-1, -1)}


def ann(long: int | None = None, short: tuple[int, int] | None = None, yes_no: str = "NONE") -> Annotation:
    """An annotation: long answer = candidate ``long`` (None: null), a short span or YES/NO."""
    if long is None:
        return Annotation(None, -1)
    return Annotation(Span(*SPAN_OF[long]), long, (Span(*short),) if short else (), yes_no)


def example(eid: str, length: int, *anns: Annotation) -> Example:
    return Example(eid, f"question {eid}?", [f"w{i}" for i in range(length)], [False] * length, CANDIDATES, list(anns))


# e1 null, e2 long only, e3 short span, e4 YES, e5 NO, e6 short span; e7 five annotators, 2 YES,
# 1 span, 2 null: YES; e8 2 spans, 2 NO, 1 null: a tie, which goes to short_span. Lengths 10..80.
EXAMPLES = [
    example("e1", 10, ann()),
    example("e2", 20, ann(0)),
    example("e3", 30, ann(0, (1, 3))),
    example("e4", 40, ann(1, yes_no="YES")),
    example("e5", 50, ann(0, yes_no="NO")),
    example("e6", 60, ann(1, (6, 7))),
    example("e7", 70, ann(0, yes_no="YES"), ann(0, yes_no="YES"), ann(0, (2, 3)), ann(), ann()),
    example("e8", 80, ann(0, (2, 4)), ann(0, (2, 4)), ann(0, yes_no="NO"), ann(0, yes_no="NO"), ann()),
]
TYPES = ["null", "long_only", "short_span", "yes", "no", "short_span", "yes", "short_span"]
AT = ea.Thresholds(0.5, 0.5)


def pred(eid: str, cand: int, long_score: float, short=None, short_score: float = 0.0) -> dec.DecodedAnswer:
    """A decoded answer: long candidate ``cand``, and a short (start, end) span or "YES"/"NO"."""
    s, e = SPAN_OF[cand]
    yes_no, (ss, se) = (short, (-1, -1)) if isinstance(short, str) else ("NONE", short or (-1, -1))
    return dec.DecodedAnswer(eid, cand, s, e, long_score, ss, se, short_score, yes_no)


def answers(name: str, preds: list[dec.DecodedAnswer], thresholds=AT) -> ea.ModelAnswers:
    gold = build_gold(EXAMPLES)
    return ea.ModelAnswers(name, score_answers(gold, official_predictions(preds)), preds, thresholds)


# Right at 0.5/0.5 (long and short each):            e1 e2 e3 e4 e5 e6 e7 e8
A = [
    pred("e1", 1, 0.3, short_score=0.1),  # T: nothing kept on a null example
    pred("e2", 0, 0.9, (1, 2), 0.2),  # T: short not kept, gold has none
    pred("e3", 0, 0.8, (1, 3), 0.7),  # T
    pred("e4", 1, 0.9, "YES", 0.6),  # T
    pred("e5", 0, 0.9, "YES", 0.6),  # F: YES for NO
    pred("e6", 0, 0.9, (1, 2), 0.8),  # F: wrong long and short
    pred("e7", 0, 0.9, "YES", 0.9),  # T
    pred("e8", 1, 0.4, "NO", 0.9),
]  # F: long not kept (short NO is right)
B = [
    pred("e1", 1, 0.7),  # F: a long kept on a null example
    pred("e2", 0, 0.9, short_score=0.1),  # T
    pred("e3", 1, 0.9, (1, 3), 0.7),  # F: wrong long
    pred("e4", 1, 0.9, "YES", 0.6),  # T
    pred("e5", 0, 0.9, "NO", 0.7),  # T
    pred("e6", 1, 0.9, (6, 7), 0.8),  # T
    pred("e7", 1, 0.6, "YES", 0.2),  # F: wrong long, short not kept
    pred("e8", 0, 0.9, (2, 4), 0.6),
]  # T
E = [
    dec.DecodedAnswer("e1"),  # T: no candidate at all (pruned)
    pred("e2", 0, 0.9, short_score=0.1),  # T
    pred("e3", 0, 0.9, (1, 3), 0.8),  # T  (fixed)
    pred("e4", 1, 0.9, "YES", 0.6),  # T
    pred("e5", 0, 0.9, "YES", 0.7),  # F  (broken)
    pred("e6", 1, 0.9, (6, 7), 0.8),  # T
    pred("e7", 0, 0.9, "YES", 0.8),  # T  (fixed)
    pred("e8", 0, 0.9, (2, 4), 0.6),
]  # T


def test_gold_answer_types_follow_the_vote_and_break_ties_towards_spans():
    types = ea.gold_answer_types(build_gold(EXAMPLES))
    assert [ea.ANSWER_TYPES[t] for t in types] == TYPES


def test_example_right_at_thresholds():
    assert ea.example_right(answers("A", A).scored, AT).tolist() == [True, True, True, True, False, False, True, False]
    assert ea.example_right(answers("B", B).scored, AT).tolist() == [False, True, False, True, True, True, False, True]
    assert ea.example_right(answers("E", E).scored, AT).tolist() == [True, True, True, True, False, True, True, True]
    # Raising the long threshold above e2's 0.9 drops a correct long answer: e2 turns wrong.
    assert not ea.example_right(answers("A", A).scored, ea.Thresholds(0.95, 0.5))[1]


def test_accuracy_by_type():
    acc = ea.accuracy_by_type(build_gold(EXAMPLES), answers("A", A).scored, AT)
    assert acc == {
        "null": (1, 1.0),
        "long_only": (1, 1.0),
        "short_span": (3, pytest.approx(1 / 3)),
        "yes": (2, 1.0),
        "no": (1, 0.0),
    }


def slice_rows(analysis: ea.ErrorAnalysis, model: str, by: str) -> pd.DataFrame:
    s = analysis.slices
    return s[(s.model == model) & (s.by == by)].set_index("slice")


def test_slices_by_answer_type_and_by_length():
    a = ea.analyse(
        EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E), length_edges=[35, 65]
    )
    everything = slice_rows(a, "A", "all").loc["all"]
    # long: 6 kept, 5 correct of 7 gold; short: 6 kept, 4 correct of 6 gold.
    assert everything.n == 8 and everything.accuracy == 5 / 8
    assert everything.long_f1 == pytest.approx(10 / 13) and everything.short_f1 == pytest.approx(2 / 3)

    by_type = slice_rows(a, "A", "answer_type")
    assert list(by_type.index) == list(ea.ANSWER_TYPES)
    assert by_type.n.tolist() == [1, 1, 3, 2, 1]
    assert by_type.accuracy.tolist() == pytest.approx([1, 1, 1 / 3, 1, 0])
    # short spans: long 2 kept, 1 correct of 3 gold -> P 1/2 R 1/3; short 3 kept, 2 correct of 3.
    expected_long = [math.nan, 1.0, 0.4, 1.0, 1.0]
    expected_short = [math.nan, math.nan, 2 / 3, 1.0, 0.0]
    np.testing.assert_allclose(by_type.long_f1, expected_long)
    np.testing.assert_allclose(by_type.short_f1, expected_short)

    by_length = slice_rows(a, "A", "doc_length")
    assert list(by_length.index) == ["[10, 35)", "[35, 65)", "[65, 81)"]
    assert by_length.n.tolist() == [3, 3, 2]
    np.testing.assert_allclose(by_length.accuracy, [1, 1 / 3, 1 / 2])
    np.testing.assert_allclose(by_length.long_f1, [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(by_length.short_f1, [1, 1 / 3, 1])
    assert set(a.slices.model) == {"A", "B", "ensemble"}


def test_whole_set_slice_at_the_best_thresholds_is_the_official_best_f1():
    for preds in (A, B, E):
        m = answers("m", preds, thresholds=None)
        a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [m], answers("ensemble", E, thresholds=None))
        official = m.scored.official_metrics()
        row = slice_rows(a, "m", "all").loc["all"]
        assert row.long_f1 == official["long-best-threshold-f1"] and row.short_f1 == official["short-best-threshold-f1"]


def test_length_buckets_default_to_quantiles():
    bucket, labels = ea.length_buckets(np.array([10, 20, 30, 40, 50, 60, 70, 80]))
    # quartiles 27.5, 45, 62.5, rounded up to whole tokens
    assert labels == ["[10, 28)", "[28, 45)", "[45, 63)", "[63, 81)"]
    assert bucket.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    bucket, labels = ea.length_buckets(np.array([5, 5, 5]))  # one length: one bucket
    assert labels == ["[5, 6)"] and bucket.tolist() == [0, 0, 0]


def test_agreement_matrix_counts_same_long_pick_before_thresholds():
    a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E))
    # picks A 1 0 0 1 0 0 0 1, B 1 0 1 1 0 1 1 0, ensemble -1 0 0 1 0 1 0 0
    expected = pd.DataFrame(
        [[1, 4 / 8, 5 / 8], [4 / 8, 1, 5 / 8], [5 / 8, 5 / 8, 1]],
        index=pd.Index(["A", "B", "ensemble"], name="model"),
        columns=["A", "B", "ensemble"],
    )
    pd.testing.assert_frame_equal(a.agreement, expected)


def test_fixed_and_broken_relative_to_the_best_member():
    a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E))
    # objectives at 0.5/0.5: A 10/13 + 2/3, B 2/3 + 10/11 -> B is the best member
    assert a.best_member == "B" and a.ensemble == "ensemble"
    c = a.ensemble_changes
    assert list(zip(c.change, c.example_id)) == [("broken", "e5"), ("fixed", "e1"), ("fixed", "e3"), ("fixed", "e7")]
    row = c.set_index("example_id").loc["e5"]
    assert row.gold_type == "no" and row.question == "question e5?" and row.best_member == "B"
    assert (row.gold_long, row.gold_short) == ("tokens 0-5", "NO")
    assert (row.best_long, row.best_short) == ("tokens 0-5 (0.900)", "NO (0.700)")
    assert (row.ensemble_long, row.ensemble_short) == ("tokens 0-5 (0.900)", "YES (0.700)")
    e7 = c.set_index("example_id").loc["e7"]
    assert e7.gold_type == "yes" and e7.gold_short == "YES | 'w2'"
    assert (e7.best_long, e7.best_short) == ("tokens 5-10 (0.600)", "none (0.200)")
    e1 = c.set_index("example_id").loc["e1"]
    assert (e1.gold_long, e1.gold_short, e1.ensemble_long) == ("none", "none", "none (0.000)")
    # With A as the only member, A is the best one: the ensemble fixed e6 and e8 and broke nothing.
    solo = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A)], answers("ensemble", E))
    assert solo.best_member == "A"
    assert list(zip(solo.ensemble_changes.change, solo.ensemble_changes.example_id)) == [("fixed", "e6"), ("fixed", "e8")]


def test_misaligned_inputs_are_refused():
    gold = build_gold(EXAMPLES)
    with pytest.raises(ValueError, match="A: decoded answers must follow the gold rows"):
        ea.analyse(EXAMPLES, gold, [ea.ModelAnswers("A", answers("A", A).scored, A[::-1])], answers("ensemble", E))
    with pytest.raises(ValueError, match="same examples in the same order"):
        ea.analyse(EXAMPLES[::-1], gold, [answers("A", A)], answers("ensemble", E))


def test_write_tables_and_plots(tmp_path):
    a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E))
    files = ea.write(a, tmp_path)
    assert {f.name for f in files} == {
        "slices.csv",
        "slices.json",
        "agreement.csv",
        "agreement.json",
        "ensemble_changes.csv",
        "ensemble_changes.json",
        "slices.png",
        "agreement.png",
        "summary.json",
    }
    for png in ("slices.png", "agreement.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / png).stat().st_size > 5000
    slices = pd.read_csv(tmp_path / "slices.csv", keep_default_na=False, na_values=[""])  # the type "null" is a name
    pd.testing.assert_frame_equal(slices, a.slices, check_dtype=False)
    changes = pd.read_json(tmp_path / "ensemble_changes.json", orient="split", dtype=False)
    assert changes.example_id.tolist() == ["e5", "e1", "e3", "e7"]
    agreement = pd.read_csv(tmp_path / "agreement.csv", index_col="model")
    np.testing.assert_allclose(agreement.to_numpy(), a.agreement.to_numpy())
    assert (tmp_path / "summary.json").read_text().count('"fixed": 3') == 1


@pytest.mark.slow  # a real tracking server: ~40 s with its start on this machine
def test_mlflow_reads_the_tables_back(tmp_path, mlflow_tracking):
    import mlflow

    a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E))
    ea.write(a, tmp_path / "error_analysis")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path / "error_analysis"), "validation/error_analysis")
        mlflow.set_tags(ea.table_tags("validation/error_analysis"))
    table = mlflow.load_table("validation/error_analysis/slices.json", run_ids=[run.info.run_id])
    assert len(table) == len(a.slices) and table.loc[0, "model"] == "A" and table.loc[0, "accuracy"] == 5 / 8
    changes = mlflow.load_table("validation/error_analysis/ensemble_changes.json", run_ids=[run.info.run_id])
    assert set(changes.change) == {"fixed", "broken"}


def test_dev_metrics_names_and_values():
    m = answers("A", A, thresholds=None)
    gold = build_gold(EXAMPLES)
    out = dev_metrics(m.scored, gold)
    official = m.scored.official_metrics()
    t = ea.Thresholds.best(m.scored)
    assert out["dev/long_f1"] == official["long-best-threshold-f1"] and out["dev/short_f1"] == official["short-best-threshold-f1"]
    assert (out["dev/long_threshold"], out["dev/short_threshold"]) == (t.long, t.short)
    assert out["dev/kaggle_micro_f1"] == m.scored.best_kaggle_micro_f1().f1
    right = ea.example_right(m.scored, t)
    assert out["dev/acc_all"] == right.mean()
    for k, name in enumerate(ea.ANSWER_TYPES):
        rows = [i for i, ty in enumerate(TYPES) if ty == name]
        assert out[f"dev/n_{name}"] == len(rows)
        assert out[f"dev/acc_{name}"] == pytest.approx(right[rows].mean())

    # A perfect model: every answer right at its best thresholds (0.9 keeps the answers, drops e1's).
    perfect = [
        pred("e1", 0, 0.1),
        pred("e2", 0, 0.9, short_score=0.1),
        pred("e3", 0, 0.9, (1, 3), 0.9),
        pred("e4", 1, 0.9, "YES", 0.9),
        pred("e5", 0, 0.9, "NO", 0.9),
        pred("e6", 1, 0.9, (6, 7), 0.9),
        pred("e7", 0, 0.9, "YES", 0.9),
        pred("e8", 0, 0.9, (2, 4), 0.9),
    ]
    out = dev_metrics(score_answers(gold, official_predictions(perfect)), gold)
    assert out["dev/long_f1"] == out["dev/short_f1"] == 1.0 and out["dev/long_threshold"] == 0.9
    assert all(out[f"dev/acc_{name}"] == 1.0 for name in ea.ANSWER_TYPES) and out["dev/acc_all"] == 1.0
    # A type without examples gets its count but no accuracy.
    only_nulls = [EXAMPLES[0]]
    out = dev_metrics(score_answers(build_gold(only_nulls), official_predictions([pred("e1", 0, 0.1)])), build_gold(only_nulls))
    assert out["dev/n_null"] == 1 and out["dev/n_yes"] == 0 and "dev/acc_yes" not in out and "dev/acc_null" in out


def _validation_files(out_dir):
    from tfqa.stages.validate import write_validation

    ensemble = answers("ensemble", E)
    analysis = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], ensemble)
    write_validation(
        out_dir,
        thresholds={"long": 0.5, "short": 0.5},
        report={"names": ["A", "B"], "weights": [0.5, 0.5]},
        predictions=dec.nq_predictions_json(E),
        summary="summary\n",
        scored=ensemble.scored,
        analysis=analysis,
    )


def test_on_a_full_device_validation_leaves_nothing_a_later_step_takes_for_whole(small_tmpfs):
    """A real tmpfs too small for the validation's files: one refusal naming the file that did not
    fit, and no folder, no file and no temporary left; on a large enough one the folder is whole."""
    from tfqa.core.destinations import folder_written_whole
    from tfqa.core.errors import UserError, refusal_message

    roomy = small_tmpfs(4096)
    with folder_written_whole(roomy / "validation") as tmp:
        _validation_files(Path(tmp))
    written = sorted(p.relative_to(roomy).as_posix() for p in roomy.rglob("*") if p.is_file())
    assert "validation/thresholds.json" in written and "validation/error_analysis/slices.png" in written
    assert all(not Path(p).name.startswith(".") for p in written)
    need = sum((roomy / p).stat().st_size for p in written)

    full = small_tmpfs(max(8, need // 1024 // 2))  # room for about half of it
    with pytest.raises(UserError) as info:
        with folder_written_whole(full / "validation") as tmp:
            _validation_files(Path(tmp))
    line = refusal_message(info.value)
    assert "\n" not in line and line.endswith(": not written: No space left on device (nothing was left in its place)")
    assert str(full / "validation") in line
    assert list(full.iterdir()) == []


def test_on_a_full_device_each_error_analysis_file_is_whole_or_absent(small_tmpfs):
    from tfqa.core.errors import UserError

    a = ea.analyse(EXAMPLES, build_gold(EXAMPLES), [answers("A", A), answers("B", B)], answers("ensemble", E))
    full = small_tmpfs(24)  # the tables fit, the slice figure does not
    with pytest.raises(UserError, match=r"slices\.png: not written: No space left on device"):
        ea.write(a, full)
    names = sorted(p.name for p in full.iterdir())
    assert names == sorted(f"{t}.{ext}" for t in ea.TABLES for ext in ("csv", "json"))
    pd.read_csv(full / "slices.csv", keep_default_na=False, na_values=[""])  # each one whole
