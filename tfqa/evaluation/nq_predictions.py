"""Natural Questions predictions in the official JSON format: typed records and reading them
(``tfqa.inference.decode.nq_predictions_json`` writes them).

The file is ``{"predictions": [{"example_id", "long_answer": {start_byte, end_byte, start_token,
end_token}, "long_answer_score", "short_answers": [spans], "short_answers_score",
"yes_no_answer"}]}``, exactly what Google's ``nq_eval`` reads. Validation mirrors its
``eval_utils.read_prediction_json`` and ``Span`` constructor, so a file this module accepts is a
file the official scorer accepts, but every rejection is an ``NQRecordError`` naming the example:

- a span's start and end must both be negative (absent) or both >= 0, separately for bytes and
  tokens, and a present pair must have start < end;
- ``yes_no_answer`` is YES/NO/NONE in any case, and YES/NO cannot come with a non-null short span;
- ``long_answer_score`` and ``short_answers_score`` are required (the official code indexes them
  although its docstring calls them optional). They must be finite: the official scorer sorts on
  them, and NaN breaks that sort in a way that depends on hash order, while an infinite score would
  make "keep nothing" impossible to express as a threshold;
- a repeated example id is an error (the official reader silently keeps the last one).

Null spans (all four offsets negative) are normalised away: a null long answer becomes ``None`` and
null short spans are dropped. The official scorer ignores them everywhere, so scores are unchanged.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

from tfqa.core import jsontext
from tfqa.core.errors import UserError
from tfqa.data.records import SPAN_KEYS, AnswerPresence, Span

YES_NO_VALUES = ("NONE", "YES", "NO")


class NQRecordError(UserError, ValueError):
    """A prediction or gold record the NQ metric refuses: ``kind`` says which ("prediction(s)",
    "gold"), ``example_id`` names the record (None when the whole file or set is at fault) and
    ``field`` its part at fault. The records do not know their file: whoever read it names it
    (``in_file``). ``str()``: ``[<file>[:<line>]: ][field '<x>': ]<kind> for example <id>: <reason>``."""

    def __init__(
        self,
        kind: str,
        example_id: str | None,
        reason: str,
        *,
        field: str | None = None,
        path: str | os.PathLike | None = None,
        line: int | None = None,
    ):
        self.kind, self.example_id = kind, example_id
        subject = kind if example_id is None else f"{kind} for example {example_id}"
        super().__init__(f"{subject}: {reason}", path=path, line=line, field=field)

    def in_file(self, path: str | os.PathLike) -> NQRecordError:
        """This error, naming the file its record came from."""
        self.path = str(path)
        self.args = (str(self),)
        return self


def span_is_null(span: Span) -> bool:
    return span.start_byte < 0 and span.end_byte < 0 and span.start_token < 0 and span.end_token < 0


def span_problem(span: Span) -> str | None:
    """Why the official ``Span`` constructor would reject this span, or None."""
    for kind, start, end in (
        ("byte", span.start_byte, span.end_byte),
        ("token", span.start_token, span.end_token),
    ):
        for name, value in ((f"start_{kind}", start), (f"end_{kind}", end)):
            # bool is an int subclass; a JSON true as an offset is a bug, not offset 1.
            if not isinstance(value, int) or isinstance(value, bool):
                return f"{name} must be an integer, got {value!r}"
        if (start < 0) != (end < 0):
            return f"inconsistent null {kind} span ({start}, {end})"
        if start >= 0 and start >= end:
            return f"invalid {kind} span: start {start} >= end {end}"
    return None


def kept_span(span: Span | None, source: str, example_id: str, field: str) -> Span | None:
    """``span`` as the scorer keeps it: None when missing or null; one the official ``Span``
    would reject raises, naming the record's ``source``, example and ``field``."""
    if span is None:
        return None
    problem = span_problem(span)
    if problem:
        raise NQRecordError(source, example_id, problem, field=field)
    return None if span_is_null(span) else span


def _check_score(example_id: str, name: str, value: Any) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise NQRecordError("prediction", example_id, f"must be a number, got {value!r}", field=name)
    value = float(value)
    if not math.isfinite(value):
        raise NQRecordError("prediction", example_id, f"must be finite, got {value!r}", field=name)
    return value


@dataclass(frozen=True, slots=True)
class NQPrediction(AnswerPresence):
    """One example's answer. ``long_answer`` None means no long answer; scores rank predictions.

    ``yes_no`` is "NONE", "YES" or "NO"; construction validates and normalises every field.
    """

    example_id: str
    long_answer: Span | None
    long_score: float
    short_answers: tuple[Span, ...] = ()
    short_score: float = 0.0
    yes_no: str = "NONE"

    def __post_init__(self) -> None:
        eid = self.example_id
        if not isinstance(eid, str):
            raise NQRecordError("prediction", str(eid), f"must be a str, got {type(eid).__name__}", field="example_id")
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "long_answer", kept_span(self.long_answer, "prediction", eid, "long_answer"))
        shorts = (kept_span(span, "prediction", eid, f"short_answers[{i}]") for i, span in enumerate(self.short_answers))
        set_(self, "short_answers", tuple(span for span in shorts if span is not None))
        yes_no = self.yes_no.upper() if isinstance(self.yes_no, str) else self.yes_no
        if yes_no not in YES_NO_VALUES:
            raise NQRecordError("prediction", eid, f"must be YES, NO or NONE, got {self.yes_no!r}", field="yes_no_answer")
        if yes_no != "NONE" and self.short_answers:
            raise NQRecordError("prediction", eid, f"yes_no_answer {yes_no} given together with short answer spans")
        set_(self, "yes_no", yes_no)
        set_(self, "long_score", _check_score(eid, "long_answer_score", self.long_score))
        set_(self, "short_score", _check_score(eid, "short_answers_score", self.short_score))


# -- JSON <-> records ----------------------------------------------------------------------------
def _example_id(raw: Any, position: int) -> str:
    # Original NQ ids are JSON integers, Kaggle's are strings of the same digits: compare as text.
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise NQRecordError(
            "predictions", None, f"must be an int or str, got {raw!r}", field=f"predictions[{position}].example_id"
        )
    return str(raw)


def _span_from_json(example_id: str, obj: Any, where: str) -> Span:
    if not isinstance(obj, dict):
        raise NQRecordError("prediction", example_id, f"must be an object, got {obj!r}", field=where)
    missing = [k for k in SPAN_KEYS if k not in obj]
    if missing:
        # The official reader indexes all four keys; absent offsets must be written as -1.
        raise NQRecordError("prediction", example_id, f"lacks {', '.join(missing)}", field=where)
    span = Span(
        start_token=obj["start_token"],
        end_token=obj["end_token"],
        start_byte=obj["start_byte"],
        end_byte=obj["end_byte"],
    )
    problem = span_problem(span)
    if problem:
        raise NQRecordError("prediction", example_id, problem, field=where)
    return span


def prediction_from_json(obj: Any, position: int = 0) -> NQPrediction:
    """One entry of the ``predictions`` list; ``position`` only improves the error message."""
    if not isinstance(obj, dict):
        raise NQRecordError("predictions", None, f"must be an object, got {type(obj).__name__}", field=f"predictions[{position}]")
    if "example_id" not in obj:
        raise NQRecordError("predictions", None, "has no example_id", field=f"predictions[{position}]")
    eid = _example_id(obj["example_id"], position)
    long = _span_from_json(eid, obj["long_answer"], "long_answer") if "long_answer" in obj else None
    raw_shorts = obj.get("short_answers", [])
    if not isinstance(raw_shorts, list):
        raise NQRecordError("prediction", eid, f"must be a list, got {type(raw_shorts).__name__}", field="short_answers")
    shorts = tuple(_span_from_json(eid, s, f"short_answers[{i}]") for i, s in enumerate(raw_shorts))
    for key in ("long_answer_score", "short_answers_score"):
        if key not in obj:
            raise NQRecordError("prediction", eid, "is missing", field=key)
    yes_no = obj.get("yes_no_answer", "NONE")
    if not isinstance(yes_no, str):
        raise NQRecordError("prediction", eid, f"must be a string, got {yes_no!r}", field="yes_no_answer")
    return NQPrediction(
        example_id=eid,
        long_answer=long,
        long_score=obj["long_answer_score"],
        short_answers=shorts,
        short_score=obj["short_answers_score"],
        yes_no=yes_no,
    )


def predictions_from_json(root: Any) -> list[NQPrediction]:
    """The records of a decoded prediction file; a repeated example id is an error."""
    if not isinstance(root, dict) or not isinstance(root.get("predictions"), list):
        raise NQRecordError("predictions", None, 'expected a JSON object {"predictions": [...]}')
    out = [prediction_from_json(obj, i) for i, obj in enumerate(root["predictions"])]
    seen: set[str] = set()
    for p in out:
        if p.example_id in seen:
            raise NQRecordError("prediction", p.example_id, "predicted more than once")
        seen.add(p.example_id)
    return out


def read_predictions(path: str | os.PathLike) -> list[NQPrediction]:
    """The records of a prediction file (a UTF-8 byte-order mark accepted); bytes that are not
    UTF-8, invalid JSON and nesting past ``MAX_JSON_DEPTH`` are refused naming the file and line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        root = jsontext.loads(data)
    except jsontext.JsonTextError as exc:
        reason = exc.reason.replace("invalid JSON", "not valid JSON", 1)
        raise NQRecordError("predictions", None, reason, path=path, line=exc.line) from None
    try:
        return predictions_from_json(root)
    except NQRecordError as err:
        raise err.in_file(path) from None
