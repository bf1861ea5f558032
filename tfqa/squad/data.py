"""SQuAD 2.0: reading, article-level splits, windowed span features and span post-processing.

The ALBERT models of the 1st-place NQ system were first fine-tuned on SQuAD 2.0; this module turns
the official SQuAD JSON into model inputs and turns span logits back into answer strings.

Reading. The official file is one JSON document, so "streaming" here means: one ``json.load`` and
then examples are yielded one question at a time, each validated as it goes. Every problem raises
``SquadFormatError`` naming the file, the JSON path of the field (``data[3].paragraphs[0].qas[7].
answers[0].answer_start``) and, once known, the question id.

Features. One model input per (question, context window)::

    [CLS] question [SEP] context-window [SEP]

built with the fast tokenizer's own pair encoding (``return_overflowing_tokens``, ``stride``,
``return_offsets_mapping``) in batches. ``doc_stride`` follows the Hugging Face convention: it is
the number of context tokens two consecutive windows *share* (Google's ``run_squad.py`` used the
name for the step between window starts; with 384-token inputs and a short question, an overlap
of 128 is a step of 189 to about 240 tokens).

Post-processing. From per-window start/end logits, the best span per question (n-best start x end
search inside the context, ``end >= start``, at most ``max_answer_len`` tokens) and a no-answer
score difference, see ``postprocess``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tfqa.core import jsontext
from tfqa.core.errors import UserError
from tfqa.data.readers import GZIP_BREAKS, gzip_break_reason, open_binary

SQUAD_FEATURE_COLUMNS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "start_positions",
    "end_positions",
    "answerable",
    "example_index",
    "offset_mapping",
)
"""Column names of ``build_squad_features``' output, in order."""


# --------------------------------------------------------------------------------------- records
class SquadFormatError(UserError, ValueError):
    """Malformed SQuAD input; ``str()`` names the file, the JSON path (as the field) and (if
    known) the qid: ``<file>: field '<json path>': <reason> (qid <id>)``."""

    def __init__(self, path: str | os.PathLike, json_path: str | None, reason: str, qid: str | None = None):
        self.json_path, self.qid = json_path, qid
        super().__init__(reason + (f" (qid {qid})" if qid is not None else ""), path=path, field=json_path)


class SquadAnswer(NamedTuple):
    """One gold (or plausible) answer: its text and the character offset where it starts."""

    text: str
    char_start: int

    @property
    def char_end(self) -> int:
        """Exclusive end offset in the context."""
        return self.char_start + len(self.text)


@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...]
    """Gold answers; empty for an unanswerable question. The first one is the training label."""
    is_impossible: bool
    title: str = ""
    """Article title: the unit of ``split_by_article`` (questions on one article stay together)."""
    plausible_answers: tuple[SquadAnswer, ...] = ()
    """SQuAD 2.0's distractor spans for unanswerable questions; never used as labels."""


class _Checker:
    """Typed access to JSON objects that reports the dotted path of a missing or bad field."""

    def __init__(self, path: str):
        self.path = path
        self.qid: str | None = None

    def fail(self, json_path: str, reason: str) -> SquadFormatError:
        return SquadFormatError(self.path, json_path, reason, self.qid)

    def get(self, obj: Any, key: str, where: str, kind: type, default: Any = ...) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where or "<root>", f"expected a JSON object, got {type(obj).__name__}")
        name = f"{where}.{key}" if where else key
        if key not in obj:
            if default is not ...:
                return default
            raise self.fail(name, "missing")
        value = obj[key]
        # bool is an int in Python; an offset of `true` is a malformed file, not offset 1.
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.fail(name, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def answers(self, qa: dict, key: str, where: str, context: str) -> tuple[SquadAnswer, ...]:
        out = []
        for j, ans in enumerate(self.get(qa, key, where, list, default=[])):
            at = f"{where}.{key}[{j}]"
            text = self.get(ans, "text", at, str)
            start = self.get(ans, "answer_start", at, int)
            if not 0 <= start <= len(context) - len(text):
                raise self.fail(
                    f"{at}.answer_start",
                    f"{start} puts the {len(text)}-char answer outside the {len(context)}-char context",
                )
            found = context[start : start + len(text)]
            if found != text:
                raise self.fail(
                    f"{at}.answer_start",
                    f"context[{start}:{start + len(text)}] is {found!r}, not the answer text {text!r}",
                )
            out.append(SquadAnswer(text, start))
        return tuple(out)


def iter_squad(path: str | os.PathLike) -> Iterator[SquadExample]:
    """Every question of a SQuAD 1.1/2.0 JSON file (plain or gzip), in file order.

    ``is_impossible`` may be absent (SQuAD 1.1): it then means "answerable". An answerable question
    must have at least one answer and an unanswerable one none, so a label can never silently be
    read the wrong way round. Question ids must be unique within the file.
    """
    path = str(path)
    try:
        with open_binary(path) as fh:
            data = fh.read()
    except GZIP_BREAKS as exc:
        raise SquadFormatError(path, None, gzip_break_reason(exc)) from None
    try:  # a byte-order mark is accepted; nesting past MAX_JSON_DEPTH is refused
        doc = jsontext.loads(data)
    except jsontext.JsonTextError as exc:
        raise SquadFormatError(path, "<json>", exc.reason) from None
    chk = _Checker(path)
    seen: dict[str, str] = {}
    for a, article in enumerate(chk.get(doc, "data", "", list)):
        at_a = f"data[{a}]"
        title = chk.get(article, "title", at_a, str, default="")
        for p, para in enumerate(chk.get(article, "paragraphs", at_a, list)):
            at_p = f"{at_a}.paragraphs[{p}]"
            context = chk.get(para, "context", at_p, str)
            for q, qa in enumerate(chk.get(para, "qas", at_p, list)):
                at_q = f"{at_p}.qas[{q}]"
                qid = chk.get(qa, "id", at_q, str)
                chk.qid = qid
                if qid in seen:
                    raise chk.fail(f"{at_q}.id", f"duplicate of {seen[qid]}")
                seen[qid] = at_q
                question = chk.get(qa, "question", at_q, str)
                impossible = chk.get(qa, "is_impossible", at_q, bool, default=False)
                chk.get(qa, "answers", at_q, list)  # required, even when empty
                answers = chk.answers(qa, "answers", at_q, context)
                if impossible and answers:
                    raise chk.fail(f"{at_q}.answers", f"is_impossible is true but {len(answers)} answers are given")
                if not impossible and not answers:
                    raise chk.fail(f"{at_q}.answers", "empty for an answerable question (is_impossible false or absent)")
                plausible = chk.answers(qa, "plausible_answers", at_q, context)
                yield SquadExample(qid, question, context, answers, impossible, title, plausible)
                chk.qid = None  # later errors (next paragraph's context, ...) are not this question's


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
    """Every question of the file; a file without any is refused (nothing to train or score)."""
    examples = list(iter_squad(path))
    if not examples:
        raise SquadFormatError(path, "data", "holds no questions")
    return examples


def split_by_article(
    examples: Sequence[SquadExample], dev_fraction: float = 0.25, seed: int = 0
) -> tuple[list[SquadExample], list[SquadExample]]:
    """(train, dev): whole articles go to one side, so no context is seen in both.

    Titles are sorted before the seeded shuffle, so the split depends on the seed and the set of
    articles only, not on file order. ``round(n * dev_fraction)`` articles go to dev, clamped so
    both sides get at least one article when there are two or more. Example order is kept.
    Articles without a title (``title=""``) count as one article.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    titles = sorted({ex.title for ex in examples})
    random.Random(seed).shuffle(titles)
    n_dev = round(len(titles) * dev_fraction)
    if len(titles) >= 2:
        n_dev = min(max(n_dev, 1), len(titles) - 1)
    dev_titles = set(titles[:n_dev])
    train = [ex for ex in examples if ex.title not in dev_titles]
    dev = [ex for ex in examples if ex.title in dev_titles]
    return train, dev


# -------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class SquadFeatureConfig:
    max_seq_len: int = 384
    """Whole input length in tokens, special tokens included; every window is padded to it."""
    doc_stride: int = 128
    """Context tokens shared by consecutive windows of one question (Hugging Face's ``stride``)."""
    max_question_len: int = 64
    """Question length in tokens; longer questions lose their tail."""
    batch_size: int = 512
    """Questions per tokenizer call: bounds peak memory, not the result."""

    def __post_init__(self) -> None:
        # 3 = [CLS] [SEP] [SEP]; a window must advance by at least one token.
        room = self.max_seq_len - self.max_question_len - 3
        if self.max_question_len < 1 or self.doc_stride < 0 or room <= self.doc_stride:
            raise ValueError(
                f"max_seq_len ({self.max_seq_len}) must leave more than doc_stride ({self.doc_stride}) "
                f"context tokens after a {self.max_question_len}-token question and 3 special tokens"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


def truncate_questions(tokenizer, questions: Sequence[str], max_tokens: int, prefix: str = "") -> list[str]:
    """Questions cut (at a token's character end) to at most ``max_tokens`` tokens, counted as
    ``prefix + question`` encodes (see ``_build_batch``).

    The pair encoding can only truncate the context ("only_second"), so the question is capped
    beforehand, as text. Leading whitespace is dropped: it only shifts offsets and some
    tokenizers turn it into a token of its own.
    """
    out = [q.lstrip() for q in questions]
    todo = list(range(len(out)))
    while todo:  # a re-tokenised cut can differ from the prefix it came from: check again
        enc = tokenizer([prefix + out[i] for i in todo], add_special_tokens=False, return_offsets_mapping=True)
        again = []
        for i, offs in zip(todo, enc["offset_mapping"]):
            if len(offs) > max_tokens:
                cut = max(offs[max_tokens - 1][1] - len(prefix), 0)
                if cut >= len(out[i]):  # cannot shorten further by cutting: drop a character
                    cut = len(out[i]) - 1
                out[i] = out[i][:cut]
                again.append(i)
        todo = again
    return out


def build_squad_features(
    examples: Sequence[SquadExample], tokenizer, cfg: SquadFeatureConfig = SquadFeatureConfig()
) -> dict[str, np.ndarray]:
    """Windowed span features for ``examples``: the columns of ``SQUAD_FEATURE_COLUMNS``.

    Shapes (W windows, L = ``max_seq_len``): ``input_ids`` int32 (W, L); ``token_type_ids`` and
    ``attention_mask`` int8 (W, L); ``start_positions``, ``end_positions`` int32 (W,) -- the
    answer's first and last token in the window, 0/0 (the [CLS] token) when the question is
    unanswerable or its answer is not wholly inside this window; ``answerable`` int8 (W,) -- 1 iff
    the labelled span is inside the window; ``example_index`` int32 (W,) -- position of the window's
    question in ``examples``; ``offset_mapping`` int32 (W, L, 2) -- each context token's
    [start, end) character offsets in the context, -1/-1 for question, special and padding tokens.

    The label is the first gold answer (SQuAD train has exactly one). A token span covers the
    answer's characters: an answer starting or ending inside a token widens to the whole token.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"a fast tokenizer is required (offsets), got {type(tokenizer).__name__}")
    parts: list[dict[str, np.ndarray]] = []
    for lo in range(0, len(examples), cfg.batch_size):
        parts.append(_build_batch(examples[lo : lo + cfg.batch_size], lo, tokenizer, cfg))
    if not parts:
        return _empty_features(cfg.max_seq_len)
    return {k: np.concatenate([p[k] for p in parts]) for k in SQUAD_FEATURE_COLUMNS}


def _empty_features(seq_len: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.zeros((0, seq_len), np.int32),
        "token_type_ids": np.zeros((0, seq_len), np.int8),
        "attention_mask": np.zeros((0, seq_len), np.int8),
        "start_positions": np.zeros(0, np.int32),
        "end_positions": np.zeros(0, np.int32),
        "answerable": np.zeros(0, np.int8),
        "example_index": np.zeros(0, np.int32),
        "offset_mapping": np.zeros((0, seq_len, 2), np.int32),
    }


def _build_batch(batch: Sequence[SquadExample], first: int, tokenizer, cfg: SquadFeatureConfig) -> dict[str, np.ndarray]:
    from tfqa.features.tokenization import word_prefix

    # Byte-level BPE reads a word's start from the space before it: the question's and the
    # context's first words get theirs as every other word has one (tfqa.features.tokenization);
    # context offsets are then shifted back onto the context as given.
    prefix = word_prefix(tokenizer)
    questions = truncate_questions(tokenizer, [ex.question for ex in batch], cfg.max_question_len, prefix)
    enc = tokenizer(
        [prefix + q for q in questions],
        [prefix + ex.context for ex in batch],
        truncation="only_second",
        max_length=cfg.max_seq_len,
        stride=cfg.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_attention_mask=True,
        padding="max_length",
        return_tensors="np",
    )
    local = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    n_win = len(local)
    # Context tokens are those of the second sequence; sequence ids are the tokenizer's own
    # account of that (token_type_ids would be wrong for models without segment embeddings).
    in_ctx = np.array([[s == 1 for s in enc.sequence_ids(w)] for w in range(n_win)], dtype=bool)
    offsets = np.where(in_ctx[..., None], np.maximum(np.asarray(enc["offset_mapping"]) - len(prefix), 0), -1).astype(np.int32)

    # Labelled answer characters per window, -1 for unanswerable questions.
    ans_start = np.array([ex.answers[0].char_start if ex.answers else -1 for ex in batch], np.int64)[local]
    ans_end = np.array([ex.answers[0].char_end if ex.answers else -1 for ex in batch], np.int64)[local]
    tok_s, tok_e = offsets[..., 0], offsets[..., 1]
    big = np.iinfo(np.int32).max
    win_first = np.where(in_ctx, tok_s, big).min(axis=1)  # first context character of the window
    win_last = np.where(in_ctx, tok_e, -1).max(axis=1)  # end of its last context character
    inside = (ans_start >= 0) & (win_first <= ans_start) & (win_last >= ans_end)
    # First context token ending after the answer's start; last one starting before its end.
    cand_s = in_ctx & (tok_e > ans_start[:, None])
    cand_e = in_ctx & (tok_s < ans_end[:, None])
    start = cand_s.argmax(axis=1)
    end = cfg.max_seq_len - 1 - cand_e[:, ::-1].argmax(axis=1)
    inside &= cand_s.any(axis=1) & cand_e.any(axis=1) & (end >= start)

    return {
        "input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
        "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int8),
        "attention_mask": np.asarray(enc["attention_mask"], dtype=np.int8),
        "start_positions": np.where(inside, start, 0).astype(np.int32),
        "end_positions": np.where(inside, end, 0).astype(np.int32),
        "answerable": inside.astype(np.int8),
        "example_index": (local + first).astype(np.int32),
        "offset_mapping": offsets,
    }


# ------------------------------------------------------------------------------- post-processing
@dataclass(frozen=True)
class SpanCandidate:
    text: str
    char_start: int
    char_end: int
    score: float
    """start logit + end logit."""


@dataclass(frozen=True)
class SquadPrediction:
    qid: str
    text: str
    """Best non-null span; ``answer`` applies the no-answer decision."""
    null_score_diff: float
    """No-answer score minus best span score (logit units): larger means "more unanswerable"."""
    nbest: tuple[SpanCandidate, ...] = field(default=())

    @property
    def na_prob(self) -> float:
        """``sigmoid(null_score_diff)``: a monotone map to (0, 1) for the official ``na_probs``."""
        d = self.null_score_diff
        return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))

    def answer(self, null_threshold: float = 0.0) -> str:
        """The prediction to score: "" when the no-answer margin exceeds the threshold."""
        return "" if self.null_score_diff > null_threshold or not self.nbest else self.text


_POSTPROCESS_CHUNK = 2048


def _top_spans(
    offsets: np.ndarray, start: np.ndarray, end: np.ndarray, n_best: int, max_answer_len: int
) -> list[tuple[int, int, int, float]]:
    """(window, start token, end token, score) of each window's ``n_best`` best valid spans.

    Stable sorts make ties resolve to the earlier token, so results never depend on numpy's
    partition order.
    """
    in_ctx = offsets[..., 0] >= 0
    start = np.where(in_ctx, start, -np.inf)
    end = np.where(in_ctx, end, -np.inf)
    k = min(n_best, start.shape[1])
    top_s = np.argsort(-start, axis=1, kind="stable")[:, :k]
    top_e = np.argsort(-end, axis=1, kind="stable")[:, :k]
    score = np.take_along_axis(start, top_s, 1)[:, :, None] + np.take_along_axis(end, top_e, 1)[:, None, :]
    length = top_e[:, None, :] - top_s[:, :, None] + 1
    ok = (length >= 1) & (length <= max_answer_len) & np.isfinite(score)
    score = np.where(ok, score, -np.inf).reshape(len(start), k * k)
    order = np.argsort(-score, axis=1, kind="stable")[:, :n_best]
    out = []
    for w, row in enumerate(order.tolist()):
        for j in row:
            sc = float(score[w, j])
            if sc == -np.inf:
                break
            out.append((w, int(top_s[w, j // k]), int(top_e[w, j % k]), sc))
    return out


def postprocess(
    examples: Sequence[SquadExample],
    example_index: np.ndarray,
    offset_mapping: np.ndarray,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    answerable_logits: np.ndarray | None = None,
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> dict[str, SquadPrediction]:
    """Per question: the best span over all its windows and a no-answer score difference.

    Spans: in every window, the ``n_best`` highest start and end logits among context tokens
    (``offset_mapping >= 0``) are paired; a pair is kept if ``start <= end`` and it is at most
    ``max_answer_len`` tokens long; its score is ``start_logit + end_logit`` and its text the
    context between the two tokens' offsets. The question's ``nbest`` is its ``n_best`` best
    spans over all windows (equal texts from overlapping windows keep the best score).

    No-answer score, one of two documented conventions:
    - ``answerable_logits is None`` (BERT/ALBERT SQuAD 2.0 convention): a window's null score is
      ``start_logits[0] + end_logits[0]`` (the [CLS] token); the question's null score is the
      *minimum* over its windows (one window confidently holding the answer is enough), and
      ``null_score_diff = null_score - best_span_score``.
    - ``answerable_logits`` (W,) given (a separate "answer is in this window" head, logit units):
      ``null_score_diff = -max over windows of answerable_logit``, so ``na_prob`` is
      ``1 - max_w sigmoid(answerable_logit)``, i.e. the chance that no window holds the answer.
    In both, ``diff > 0`` is the natural "predict no answer" point; tune it with
    ``squad_eval.evaluate``'s ``best_f1_thresh`` on ``na_prob`` or on the diffs themselves.
    """
    example_index = np.asarray(example_index)
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    offset_mapping = np.asarray(offset_mapping)
    n_win = len(example_index)
    for name, arr in (("offset_mapping", offset_mapping), ("start_logits", start_logits), ("end_logits", end_logits)):
        if len(arr) != n_win:
            raise ValueError(f"{name} has {len(arr)} rows, example_index {n_win}")
    if answerable_logits is not None and len(answerable_logits) != n_win:
        raise ValueError(f"answerable_logits has {len(answerable_logits)} rows, example_index {n_win}")

    if answerable_logits is None:
        window_null = start_logits[:, 0] + end_logits[:, 0]
    else:
        window_null = -np.asarray(answerable_logits, dtype=np.float64)
    best: dict[int, dict[str, SpanCandidate]] = {}
    null: dict[int, float] = {}
    for ex_i, w_null in zip(example_index.tolist(), window_null.tolist()):
        null[ex_i] = min(null.get(ex_i, math.inf), w_null)
        best.setdefault(ex_i, {})
    # Windows in chunks: the (windows, k, k) score grid stays small however many there are.
    for lo in range(0, n_win, _POSTPROCESS_CHUNK):
        hi = min(lo + _POSTPROCESS_CHUNK, n_win)
        spans = _top_spans(offset_mapping[lo:hi], start_logits[lo:hi], end_logits[lo:hi], n_best, max_answer_len)
        for w, s, e, score in spans:
            ex_i = int(example_index[lo + w])
            c0, c1 = int(offset_mapping[lo + w, s, 0]), int(offset_mapping[lo + w, e, 1])
            text = examples[ex_i].context[c0:c1]
            cands = best[ex_i]
            if text not in cands or cands[text].score < score:
                cands[text] = SpanCandidate(text, c0, c1, score)

    out: dict[str, SquadPrediction] = {}
    for ex_i, cands in best.items():
        ranked = sorted(cands.values(), key=lambda c: (-c.score, c.char_start, c.char_end))[:n_best]
        qid = examples[ex_i].qid
        if answerable_logits is None:
            diff = null[ex_i] - ranked[0].score if ranked else math.inf
        else:
            diff = null[ex_i]
        out[qid] = SquadPrediction(qid, ranked[0].text if ranked else "", diff, tuple(ranked))
    return out


def predictions_for_eval(
    preds: dict[str, SquadPrediction], null_threshold: float | None = None
) -> tuple[dict[str, str], dict[str, float]]:
    """(qid -> answer text, qid -> na_prob): the two inputs of ``squad_eval.evaluate``.

    With ``null_threshold=None`` every text is the best span: the official threshold search
    (``best_exact``/``best_f1``) then makes the no-answer decision itself from ``na_prob``, which
    it can only do if the span is there to fall back on. A float applies ``answer(threshold)``.
    """
    texts = {q: p.text if null_threshold is None else p.answer(null_threshold) for q, p in preds.items()}
    return texts, {q: p.na_prob for q, p in preds.items()}
