"""The official SQuAD 2.0 metric (``evaluate-v2.0.py`` semantics), as pure functions.

Scores must match the official script to the last digit, so its quirks are kept on purpose:
- gold answers whose normalised text is empty are dropped; a question left without any scores
  against ``[""]`` (the only correct answer to an unanswerable question is the empty string);
- "has an answer" means the ``answers`` list is non-empty, independent of any normalisation;
- ``na_prob > na_prob_thresh`` (strictly) turns a prediction into "no answer";
- the best-threshold search walks questions in increasing ``na_prob`` (stable order for ties,
  i.e. the ``na_probs`` dict's order) and may record a best *inside* a run of tied values;
- ``best_*`` keys only exist when ``na_probs`` is given (the official script adds them only with
  ``--na-prob-file``); ``HasAns_*``/``NoAns_*`` only when such questions exist.
The official script prints and skips a missing prediction, then crashes on it in the HasAns/NoAns
split; here a missing prediction or na_prob is an immediate ``ValueError`` naming the qids.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

from tfqa.squad.data import SquadExample

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str) -> float:
    """Bag-of-tokens F1 of the normalised strings; 1 if both are empty, 0 if only one is."""
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: SquadExample) -> list[str]:
    """The texts a prediction is scored against: non-empty after normalisation, else ``[""]``."""
    golds = [a.text for a in example.answers if normalize_answer(a.text)]
    return golds or [""]


def raw_scores(examples: Iterable[SquadExample], predictions: dict[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question EM and F1, each the max over the question's gold answers."""
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    missing = []
    for ex in examples:
        if ex.qid not in predictions:
            missing.append(ex.qid)
            continue
        pred, golds = predictions[ex.qid], gold_answers(ex)
        exact[ex.qid] = max(exact_match(g, pred) for g in golds)
        f1[ex.qid] = max(f1_score(g, pred) for g in golds)
    if missing:
        raise ValueError(f"no prediction for {len(missing)} question(s), e.g. {missing[:5]}")
    return exact, f1


def apply_no_answer_threshold(
    scores: dict[str, float], na_probs: dict[str, float], has_ans: dict[str, bool], thresh: float
) -> dict[str, float]:
    """Questions with ``na_prob > thresh`` are predicted unanswerable: 1 if they are, else 0."""
    return {q: float(not has_ans[q]) if na_probs[q] > thresh else s for q, s in scores.items()}


def _summary(exact: dict[str, float], f1: dict[str, float], qids: list[str]) -> dict[str, float]:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[q] for q in qids) / total,
        "f1": 100.0 * sum(f1[q] for q in qids) / total,
        "total": total,
    }


def find_best_thresh(
    predictions: dict[str, str],
    scores: dict[str, float],
    na_probs: dict[str, float],
    has_ans: dict[str, bool],
) -> tuple[float, float]:
    """(best score in %, its threshold), exactly as the official ``find_best_thresh``.

    Start from "every question predicted unanswerable" (score = number of unanswerable questions)
    and switch questions to their prediction in increasing ``na_prob``: an answerable one gains
    its score, an unanswerable one loses 1 if its prediction is non-empty (raw string, not
    normalised). The best running total and the ``na_prob`` at which it was reached win; only a
    strict improvement moves the threshold, which starts at 0.0.
    """
    cur = best = sum(1 for q in has_ans if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            cur += scores[qid]
        elif predictions[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def evaluate(
    dataset_examples: Iterable[SquadExample],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The official SQuAD 2.0 result dict (percentages; ``*_total`` are counts).

    Keys, in the official order: ``exact``, ``f1``, ``total``; ``HasAns_exact/f1/total`` and
    ``NoAns_exact/f1/total`` (when present); with ``na_probs``: ``best_exact``,
    ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh``. Without ``na_probs`` every question's
    na_prob is 0, so ``na_prob_thresh`` (default 1.0) never turns a prediction into "no answer".
    Predictions for qids outside ``dataset_examples`` are ignored, as the official script does.
    """
    examples = list(dataset_examples)
    if not examples:
        raise ValueError("no examples to evaluate")
    has_ans = {ex.qid: bool(ex.answers) for ex in examples}
    exact_raw, f1_raw = raw_scores(examples, predictions)
    probs = na_probs if na_probs is not None else {q: 0.0 for q in predictions}
    lacking = [q for q in has_ans if q not in probs]
    if lacking:
        raise ValueError(f"no na_prob for {len(lacking)} question(s), e.g. {lacking[:5]}")
    exact = apply_no_answer_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = apply_no_answer_threshold(f1_raw, probs, has_ans, na_prob_thresh)

    out: dict[str, float] = dict(_summary(exact, f1, list(has_ans)))
    for prefix, want in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, h in has_ans.items() if h is want]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _summary(exact, f1, qids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_thresh(predictions, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, na_probs, has_ans)
    return out
