"""Turn per-candidate model outputs into one NQ prediction per example.

Two decodings (``DecodeConfig.decode``); both read the end head as the span's **last** word
(inclusive), which is how the training labels are written (``tfqa.features.featurize``: ``end_word`` = last
word of the span).

``original``, the 1st-place solution's validation/test kernel, step for step:

* candidates are visited in increasing length (question words + candidate words; the question is
  the same for all, so candidate words; equal lengths in candidate order, where the original's
  unstable ``argsort`` left it open) and the first with the strictly highest long score
  ``1 - p0`` wins;
* its short score is ``1 - p0 - p1``; YES/NO when ``max(p3, p4) > p2`` (NO if ``p3 > p4``);
* otherwise ``start = argmax`` of the word-level start probabilities and ``end = argmax`` of the
  end probabilities, **independently**; the span is kept only when it is not reversed. The
  original's code wrote it ``[start, end)`` kept when ``end > start``, reading its end head as
  the exclusive end word; tfqa's end head marks the last word, so the same rule reads
  ``[start, end + 1)`` kept when ``end >= start``: reading tfqa's head the original's way would
  drop every one-word answer and cut every other span by a word.

``joint`` (tfqa's other way; ``original`` is the default, as it measured at least as well):

* **long answer**: the candidate with the highest long score ``1 - p(NOT_ANSWER)``; ties go to
  the lowest candidate index (in NQ the enclosing candidate comes first, so the outer one wins).
* **short score**: ``1 - p0 - p1`` of *that* candidate, i.e. the mass of SHORT, NO and YES.
* **short answer**: YES or NO when ``max(p_no, p_yes) > p_short`` (YES on a yes/no tie: it is the
  more frequent of the two in NQ); otherwise the best word span of that candidate, maximising
  ``start_prob[i] * end_prob[j]`` over ``i <= j < i + max_answer_words``. The product is taken in
  float64: its argmax is the argmax of ``log start + log end`` without log(0) for padded words,
  and float32 probabilities cannot underflow there. Span ties go to the earliest start, then the
  shortest span.

``max_answer_words`` defaults to 30 document words: Google's BERT baseline capped answers at 30
wordpieces, and a word is at least one wordpiece, so 30 words never cuts what that cap allowed
while still keeping implausibly long spans (which the NQ scorer marks wrong anyway) out.

Word indices are document words (``word_offset + i``); NQ's ``end_token`` is exclusive, so a
span of words ``i..j`` becomes ``[word_offset + i, word_offset + j + 1)``.

Decoding is vectorised over all examples: one lexsort picks every example's best candidate and
the span search runs over the chosen candidates' words concatenated, one pass per span length.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tfqa.data.records import AnswerClass, Example

OUTPUT_COLUMNS = ("example_id", "candidate_index", "word_offset", "class_probs", "start_probs", "end_probs")
N_CLASSES = len(AnswerClass)


# --------------------------------------------------------------------------------------------
# Columnar form of the per-candidate outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ragged:
    """Variable-length float rows stored flat: row ``r`` is ``values[offsets[r]:offsets[r + 1]]``."""

    values: np.ndarray  # float32 (total,)
    offsets: np.ndarray  # int64 (n + 1,), offsets[0] == 0

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, r: int) -> np.ndarray:
        return self.values[self.offsets[r] : self.offsets[r + 1]]

    @staticmethod
    def from_lengths(values: np.ndarray, lengths: np.ndarray) -> Ragged:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return Ragged(np.ascontiguousarray(values, dtype=np.float32), offsets)

    def take(self, rows: np.ndarray) -> Ragged:
        index, lengths = gather_index(self.offsets, np.asarray(rows, dtype=np.int64))
        return Ragged.from_lengths(self.values[index], lengths)

    def to_list(self) -> list[np.ndarray]:
        return np.split(self.values, self.offsets[1:-1]) if len(self) else []


def gather_index(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of ``rows``' values (rows in the given order) and those rows' lengths."""
    lengths = offsets[1:][rows] - offsets[:-1][rows]
    new_starts = np.cumsum(lengths) - lengths
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(new_starts, lengths)
    return np.repeat(offsets[:-1][rows], lengths) + within, lengths


def ragged_column(column) -> Ragged:
    """A list column (pandas object/Arrow-backed Series, or a pyarrow (chunked) list array)."""
    if isinstance(column, pd.Series) and isinstance(column.dtype, pd.ArrowDtype):
        column = pa.chunked_array(pa.array(column))
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        values = column.flatten().to_numpy(zero_copy_only=False)
        return Ragged.from_lengths(values.astype(np.float32, copy=False), lengths.astype(np.int64))
    items = column.to_numpy() if isinstance(column, pd.Series) else list(column)
    try:
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    except TypeError:  # a missing (None) row: the slow path, treating it as empty
        items = [() if v is None else v for v in items]
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    values = np.concatenate(items) if len(items) and lengths.sum() else np.zeros(0, dtype=np.float32)
    return Ragged.from_lengths(values.astype(np.float32, copy=False), lengths)


@dataclass(frozen=True)
class CandidateOutputs:
    """One model's (or an ensemble's) outputs, one row per (example, candidate), as numpy arrays.

    ``start_probs`` and ``end_probs`` share their row layout: value ``i`` of row ``r`` belongs to
    document word ``word_offset[r] + i``.
    """

    example_id: np.ndarray  # object (n,) of str
    candidate_index: np.ndarray  # int32 (n,)
    word_offset: np.ndarray  # int32 (n,)
    class_probs: np.ndarray  # float32 (n, 5)
    start_probs: Ragged
    end_probs: Ragged

    def __post_init__(self) -> None:
        n = len(self.example_id)
        if not (len(self.candidate_index) == len(self.word_offset) == len(self.class_probs) == n):
            raise ValueError("CandidateOutputs: columns differ in length")
        if self.class_probs.ndim != 2 or self.class_probs.shape[1] != N_CLASSES:
            raise ValueError(f"class_probs must be (n, {N_CLASSES}), got {self.class_probs.shape}")
        if len(self.start_probs) != n or len(self.end_probs) != n:
            raise ValueError("CandidateOutputs: start/end rows differ from the number of candidates")
        bad = np.flatnonzero(self.start_probs.lengths != self.end_probs.lengths)
        if len(bad):
            r = int(bad[0])
            raise ValueError(
                f"example {self.example_id[r]!r} candidate {int(self.candidate_index[r])}: "
                f"{self.start_probs.lengths[r]} start probs but {self.end_probs.lengths[r]} end probs"
            )

    def __len__(self) -> int:
        return len(self.example_id)

    @staticmethod
    def from_frame(data: pd.DataFrame | pa.Table) -> CandidateOutputs:
        """From the inference contract (``OUTPUT_COLUMNS``), as a DataFrame or an Arrow table."""
        example_id, candidate_index, word_offset, class_probs = _frame_meta(data)
        return CandidateOutputs(
            example_id,
            candidate_index,
            word_offset,
            class_probs,
            start_probs=ragged_column(_column(data, "start_probs")),
            end_probs=ragged_column(_column(data, "end_probs")),
        )

    def to_frame(self) -> pd.DataFrame:
        """Back to the inference contract (list columns hold float32 arrays, views of ours)."""
        return pd.DataFrame(
            {
                "example_id": pd.Series(self.example_id, dtype=object).astype(str),
                "candidate_index": self.candidate_index.astype(np.int32),
                "word_offset": self.word_offset.astype(np.int32),
                "class_probs": list(self.class_probs),
                "start_probs": self.start_probs.to_list(),
                "end_probs": self.end_probs.to_list(),
            }
        )

    def take(self, rows: np.ndarray) -> CandidateOutputs:
        rows = np.asarray(rows, dtype=np.int64)
        return CandidateOutputs(
            self.example_id[rows],
            self.candidate_index[rows],
            self.word_offset[rows],
            self.class_probs[rows],
            self.start_probs.take(rows),
            self.end_probs.take(rows),
        )

    def long_scores(self) -> np.ndarray:
        return 1.0 - self.class_probs[:, AnswerClass.NOT_ANSWER].astype(np.float64)


OutputsLike = CandidateOutputs | pd.DataFrame | pa.Table


def _column(data: pd.DataFrame | pa.Table, name: str):
    return data.column(name) if isinstance(data, pa.Table) else data[name]


def _frame_meta(data: pd.DataFrame | pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(example_id, candidate_index, word_offset, class_probs) of a contract table, validated."""
    names = data.column_names if isinstance(data, pa.Table) else list(data.columns)
    missing = [c for c in OUTPUT_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"per-candidate outputs lack columns {missing}")
    example_id = np.asarray(_column(data, "example_id").to_numpy())
    if example_id.dtype != object:  # integer ids, or numpy strings: the candidate table keys are str
        example_id = example_id.astype(str).astype(object)
    class_probs = ragged_column(_column(data, "class_probs"))
    bad = np.flatnonzero(class_probs.lengths != N_CLASSES)
    if len(bad):
        r = int(bad[0])
        raise ValueError(f"example {example_id[r]!r}: class_probs has {class_probs.lengths[r]} values, not {N_CLASSES}")
    return (
        example_id,
        np.asarray(_column(data, "candidate_index").to_numpy(), dtype=np.int32),
        np.asarray(_column(data, "word_offset").to_numpy(), dtype=np.int32),
        class_probs.values.reshape(-1, N_CLASSES),
    )


def _take_rows(column, rows: np.ndarray) -> Ragged:
    """Rows of a list column (or a ``Ragged``) without converting the rest."""
    if isinstance(column, Ragged):
        return column.take(rows)
    if isinstance(column, pd.Series):
        return ragged_column(column.iloc[rows])
    return ragged_column(column.take(pa.array(rows)))


@dataclass(frozen=True)
class _DecodeInput:
    """What decoding reads: every row's class probabilities, but start/end only on demand, so a
    table's word columns are converted for the chosen candidates alone."""

    example_id: np.ndarray
    candidate_index: np.ndarray
    word_offset: np.ndarray
    class_probs: np.ndarray
    start_column: object
    end_column: object

    @staticmethod
    def of(data: OutputsLike) -> _DecodeInput:
        if isinstance(data, CandidateOutputs):
            return _DecodeInput(
                data.example_id, data.candidate_index, data.word_offset, data.class_probs, data.start_probs, data.end_probs
            )
        return _DecodeInput(*_frame_meta(data), _column(data, "start_probs"), _column(data, "end_probs"))

    def words(self, rows: np.ndarray) -> tuple[Ragged, Ragged]:
        start, end = _take_rows(self.start_column, rows), _take_rows(self.end_column, rows)
        bad = np.flatnonzero(start.lengths != end.lengths)
        if len(bad):
            r = int(rows[bad[0]])
            raise ValueError(
                f"example {self.example_id[r]!r} candidate {int(self.candidate_index[r])}: "
                f"{start.lengths[bad[0]]} start probs but {end.lengths[bad[0]]} end probs"
            )
        return start, end


def as_outputs(data: OutputsLike) -> CandidateOutputs:
    return data if isinstance(data, CandidateOutputs) else CandidateOutputs.from_frame(data)


# --------------------------------------------------------------------------------------------
# Candidate spans and byte offsets (document side)
# --------------------------------------------------------------------------------------------

# example_id -> int array (n_candidates, 2) of (start_token, end_token), end exclusive.
CandidateSpans = Mapping[str, np.ndarray]
# example_id -> (word start bytes, word end bytes), end exclusive, as in the original NQ format.
ByteOffsets = Mapping[str, tuple[np.ndarray, np.ndarray]]


def candidate_spans(examples: Iterable[Example]) -> dict[str, np.ndarray]:
    return {
        ex.example_id: np.array([(c.start_token, c.end_token) for c in ex.candidates], dtype=np.int64).reshape(-1, 2)
        for ex in examples
    }


def byte_offsets(examples: Iterable[Example]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-word byte offsets of the examples that have them (original format only)."""
    return {
        ex.example_id: (np.asarray(ex.word_start_bytes, dtype=np.int64), np.asarray(ex.word_end_bytes, dtype=np.int64))
        for ex in examples
        if ex.word_start_bytes is not None and ex.word_end_bytes is not None
    }


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

YES_NO_VALUES = ("NONE", "YES", "NO")


DECODE_MODES = ("joint", "original")


@dataclass(frozen=True)
class DecodeConfig:
    max_answer_words: int = 30
    """Longest short-answer span in document words (``j - i < max_answer_words``); ``joint`` only
    (the original capped nothing)."""
    decode: str = "original"
    """``original`` (the 1st place's: see the module docstring; the default, as it measured at
    least as well as ``joint`` on the demo, within noise: docs/faithful.md) or ``joint`` (best start x end span
    within ``max_answer_words``, highest long score with the lowest candidate index)."""

    def __post_init__(self) -> None:
        if self.max_answer_words < 1:
            raise ValueError(f"max_answer_words must be >= 1, got {self.max_answer_words}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> DecodeConfig:
        """From a recorded dict (a validate run's, a model folder's); absent keys are defaults."""
        d = d or {}
        default = cls()
        return cls(int(d.get("max_answer_words", default.max_answer_words)), str(d.get("decode", default.decode)))


@dataclass(frozen=True, slots=True)
class DecodedAnswer:
    """One example's answer. Token spans are NQ document tokens, end exclusive; -1 where absent.

    Scores are kept when an answer is blanked by thresholds, so the NQ scorer can still rank.
    """

    example_id: str
    long_candidate_index: int = -1
    long_start_token: int = -1
    long_end_token: int = -1
    long_score: float = 0.0
    short_start_token: int = -1
    short_end_token: int = -1
    short_score: float = 0.0
    yes_no: str = "NONE"
    span_score: float = 0.0
    """start_prob * end_prob of the chosen span (0 for yes/no or no span): a diagnostic."""

    @property
    def has_long(self) -> bool:
        return self.long_start_token >= 0

    @property
    def has_short(self) -> bool:
        return self.yes_no != "NONE" or self.short_start_token >= 0


def group_starts(codes_sorted: np.ndarray) -> np.ndarray:
    """Positions where a new group starts in a sorted code array."""
    if len(codes_sorted) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, codes_sorted[1:] != codes_sorted[:-1]])


def best_spans(start: Ragged, end: Ragged, max_answer_words: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (i, j) per row maximising ``start[i] * end[j]``, ``i <= j < i + max_answer_words``.

    Returns (i, j, score); rows without words get i = j = -1 and score 0. Ties: earliest i, then
    smallest j. The search is one vectorised pass per span length over all rows' words at once.
    """
    n_rows = len(start)
    lengths = start.lengths
    s = start.values.astype(np.float64)
    e = end.values.astype(np.float64)
    total = len(s)
    out_i = np.full(n_rows, -1, dtype=np.int64)
    out_j = np.full(n_rows, -1, dtype=np.int64)
    out_score = np.zeros(n_rows, dtype=np.float64)
    if total == 0:
        return out_i, out_j, out_score
    row_of = np.repeat(np.arange(n_rows), lengths)
    # Words left in the row from each position on (itself included): bounds the span length.
    remaining = np.repeat(start.offsets[1:], lengths) - np.arange(total)
    best = s * e
    best_len = np.zeros(total, dtype=np.int64)  # j - i of the best span starting at each word
    for d in range(1, min(max_answer_words, int(lengths.max()))):
        prod = s[: total - d] * e[d:]
        # Strictly greater keeps the shorter span on ties.
        better = (remaining[: total - d] > d) & (prod > best[: total - d])
        best[: total - d][better] = prod[better]
        best_len[: total - d][better] = d
    nonempty = np.flatnonzero(lengths > 0)
    row_max = np.maximum.reduceat(best, start.offsets[nonempty])
    full_max = np.zeros(n_rows)
    full_max[nonempty] = row_max
    hits = np.flatnonzero(best == full_max[row_of])
    rows_hit, first = np.unique(row_of[hits], return_index=True)  # first hit = earliest start
    pos = hits[first]
    out_i[rows_hit] = pos - start.offsets[rows_hit]
    out_j[rows_hit] = out_i[rows_hit] + best_len[pos]
    out_score[rows_hit] = best[pos]
    return out_i, out_j, out_score


def independent_spans(start: Ragged, end: Ragged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The original's span per row: ``i = argmax start``, ``j = argmax end`` (first on ties),
    kept when ``j >= i``. Returns (i, j, start[i] * end[j]); -1, -1, 0 where none."""
    n_rows = len(start)
    out_i = np.full(n_rows, -1, dtype=np.int64)
    out_j = np.full(n_rows, -1, dtype=np.int64)
    out_score = np.zeros(n_rows, dtype=np.float64)
    nonempty = np.flatnonzero(start.lengths > 0)
    if len(nonempty) == 0:
        return out_i, out_j, out_score
    row_of = np.repeat(np.arange(n_rows), start.lengths)

    def first_argmax(values: np.ndarray) -> np.ndarray:
        row_max = np.zeros(n_rows, dtype=values.dtype)
        row_max[nonempty] = np.maximum.reduceat(values, start.offsets[nonempty])
        hits = np.flatnonzero(values == row_max[row_of])
        rows_hit, first = np.unique(row_of[hits], return_index=True)
        pos = np.full(n_rows, -1, dtype=np.int64)
        pos[rows_hit] = hits[first] - start.offsets[rows_hit]
        return pos

    i, j = first_argmax(start.values), first_argmax(end.values)
    keep = (i >= 0) & (j >= i)
    out_i[keep], out_j[keep] = i[keep], j[keep]
    rows = np.flatnonzero(keep)
    out_score[rows] = start.values[start.offsets[rows] + i[rows]].astype(np.float64) * end.values[end.offsets[rows] + j[rows]]
    return out_i, out_j, out_score


def _candidate_lengths(ids: list[str], codes: np.ndarray, cand_index: np.ndarray, candidates: CandidateSpans) -> np.ndarray:
    """Each row's candidate length in document words (end_token - start_token)."""
    lengths = np.zeros(len(codes), dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(ids) + 1))
    for k, ex_id in enumerate(ids):
        rows = order[bounds[k] : bounds[k + 1]]
        spans = candidates.get(ex_id)
        ci = cand_index[rows]
        if spans is None or (len(ci) and (ci.min() < 0 or ci.max() >= len(spans))):
            raise KeyError(f"example {ex_id!r}: a candidate index outside the candidate table")
        lengths[rows] = spans[ci, 1] - spans[ci, 0]
    return lengths


def decode(
    outputs: OutputsLike,
    candidates: CandidateSpans,
    config: DecodeConfig = DecodeConfig(),
    *,
    example_ids: Sequence[str] | None = None,
) -> list[DecodedAnswer]:
    """One ``DecodedAnswer`` per example, before thresholds.

    ``candidates`` gives each example's candidate (start_token, end_token) rows, indexed by
    ``candidate_index`` (see ``candidate_spans``). Predictions come in order of first appearance
    in ``outputs``, or in the order of ``example_ids`` when given; examples listed there without
    any output row (every candidate pruned) get an empty prediction.
    """
    out = _DecodeInput.of(outputs)
    codes, uniques = pd.factorize(out.example_id, sort=False)
    n_ex = len(uniques)
    ids = [str(u) for u in uniques]
    long = 1.0 - out.class_probs[:, AnswerClass.NOT_ANSWER].astype(np.float64)
    if config.decode == "original":
        # Highest long score first; among equal ones the first visited: shortest, then lowest index.
        lengths = _candidate_lengths(ids, codes, out.candidate_index.astype(np.int64), candidates)
        order = np.lexsort((out.candidate_index, lengths, -long, codes))
    else:
        # Highest long score first, then lowest candidate index: ties resolve the same way every run.
        order = np.lexsort((out.candidate_index, -long, codes))
    best_rows = order[group_starts(codes[order])]  # one per code, codes ascending

    p = out.class_probs[best_rows].astype(np.float64)
    short_score = 1.0 - p[:, AnswerClass.NOT_ANSWER] - p[:, AnswerClass.LONG]
    p_yes, p_no, p_short = p[:, AnswerClass.YES], p[:, AnswerClass.NO], p[:, AnswerClass.SHORT]
    is_yes_no = np.maximum(p_yes, p_no) > p_short
    yes_no = np.where(is_yes_no, np.where(p_yes >= p_no, 1, 2), 0)

    span_rows = best_rows[~is_yes_no]
    words = out.words(span_rows)
    if config.decode == "original":
        i, j, span_score = independent_spans(*words)
    else:
        i, j, span_score = best_spans(*words, config.max_answer_words)
    short_start = np.full(n_ex, -1, dtype=np.int64)
    short_end = np.full(n_ex, -1, dtype=np.int64)
    span_scores = np.zeros(n_ex)
    where = np.flatnonzero(~is_yes_no)
    found = i >= 0
    offsets = out.word_offset[span_rows].astype(np.int64)
    short_start[where[found]] = offsets[found] + i[found]
    short_end[where[found]] = offsets[found] + j[found] + 1
    span_scores[where[found]] = span_score[found]

    cand_index = out.candidate_index[best_rows].astype(np.int64)
    word_offset = out.word_offset[best_rows].astype(np.int64)
    long_end = np.empty(n_ex, dtype=np.int64)
    for k, ex_id in enumerate(ids):
        spans = candidates.get(ex_id)
        ci = int(cand_index[k])
        if spans is None or not 0 <= ci < len(spans):
            raise KeyError(f"example {ex_id!r}: no span for candidate {ci} in the candidate table")
        if int(spans[ci][0]) != int(word_offset[k]):
            raise ValueError(
                f"example {ex_id!r} candidate {ci}: outputs start at word {int(word_offset[k])} "
                f"but the candidate table says {int(spans[ci][0])} (wrong table?)"
            )
        long_end[k] = int(spans[ci][1])

    preds = {
        ids[k]: DecodedAnswer(
            example_id=ids[k],
            long_candidate_index=int(cand_index[k]),
            long_start_token=int(word_offset[k]),
            long_end_token=int(long_end[k]),
            long_score=float(long[best_rows[k]]),
            short_start_token=int(short_start[k]),
            short_end_token=int(short_end[k]),
            short_score=float(short_score[k]),
            yes_no=YES_NO_VALUES[int(yes_no[k])],
            span_score=float(span_scores[k]),
        )
        for k in range(n_ex)
    }
    if example_ids is None:
        return list(preds.values())
    wanted = [str(e) for e in example_ids]
    extra = set(preds) - set(wanted)
    if extra:
        raise ValueError(f"outputs hold {len(extra)} examples not in example_ids, e.g. {sorted(extra)[0]!r}")
    return [preds.get(e) or DecodedAnswer(e) for e in wanted]


def apply_thresholds(predictions: Iterable[DecodedAnswer], t_long: float, t_short: float) -> list[DecodedAnswer]:
    """Blank long answers scoring below ``t_long`` and short ones below ``t_short``.

    As on Kaggle, a short answer needs a long answer: blanking the long one blanks the short one.
    Scores are kept (the scorer ranks by them).
    """
    out = []
    for p in predictions:
        keep_long = p.has_long and p.long_score >= t_long
        keep_short = keep_long and p.has_short and p.short_score >= t_short
        if not keep_long:
            p = dataclasses.replace(p, long_candidate_index=-1, long_start_token=-1, long_end_token=-1)
        if not keep_short:
            p = dataclasses.replace(p, short_start_token=-1, short_end_token=-1, yes_no="NONE")
        out.append(p)
    return out


# --------------------------------------------------------------------------------------------
# Official NQ prediction JSON
# --------------------------------------------------------------------------------------------

_INT_ID = re.compile(r"-?\d+")


def _json_example_id(example_id: str) -> int | str:
    # Google's scorer keys gold by the integer example_id of the jsonl; a string would never match.
    return int(example_id) if _INT_ID.fullmatch(example_id) else example_id


def _span_json(start: int, end: int, offsets: tuple[np.ndarray, np.ndarray] | None) -> dict[str, int]:
    start_byte = end_byte = -1
    if start >= 0 and offsets is not None:
        starts, ends = offsets
        if end - 1 < len(ends):
            start_byte, end_byte = int(starts[start]), int(ends[end - 1])
        # The scorer rejects half-null byte spans; fall back to tokens rather than emit one.
        if start_byte < 0 or end_byte < 0:
            start_byte = end_byte = -1
    return {"start_token": int(start), "end_token": int(end), "start_byte": start_byte, "end_byte": end_byte}


def to_nq_json(pred: DecodedAnswer, offsets: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """One entry of the official prediction file (``{"predictions": [...]}``)."""
    short = []
    if pred.yes_no == "NONE" and pred.short_start_token >= 0:
        short.append(_span_json(pred.short_start_token, pred.short_end_token, offsets))
    return {
        "example_id": _json_example_id(pred.example_id),
        "long_answer": _span_json(pred.long_start_token, pred.long_end_token, offsets),
        "long_answer_score": float(pred.long_score),
        "short_answers": short,
        "short_answers_score": float(pred.short_score),
        "yes_no_answer": pred.yes_no,
    }


def nq_predictions_json(predictions: Iterable[DecodedAnswer], offsets: ByteOffsets | None = None) -> dict:
    """The whole prediction file; byte offsets filled for examples in ``offsets``, else -1."""
    offsets = offsets or {}
    return {"predictions": [to_nq_json(p, offsets.get(p.example_id)) for p in predictions]}
