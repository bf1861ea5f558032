"""Training labels of an example's candidates, from one annotation or several, by one rule.

The rule follows how Google's ``nq_eval`` decides gold, so the model is taught what the metric
rewards:

* An example **has a long answer** when at least ``min(2, n)`` of its ``n`` annotations give one
  (``nq_eval``: two of five; Kaggle's train data has one annotation, which then decides alone).
  Otherwise every candidate is NOT_ANSWER: a long answer there is a false positive.
* Each candidate some annotation chose is then a positive (``nq_eval`` counts a prediction right
  when it matches *any* non-null annotation).
* An example **has a short answer** when at least ``min(2, n)`` annotations give a short span or
  YES/NO. A chosen candidate is then SHORT, YES or NO by the majority of its own annotations that
  give one (ties: the kind seen first), with the spans of the first of them that is SHORT;
  otherwise (no short gold, or none of its annotations gives one) it is LONG.

A SHORT label covers its annotation's spans from the first start to the last end (multi-span
answers train on first start -> last end, as in Google's baseline).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tfqa.data.records import Annotation, AnswerClass, Example, Span


@dataclass(frozen=True, slots=True)
class CandidateLabel:
    label: AnswerClass
    spans: tuple[Span, ...] = ()
    """The SHORT annotation's spans (document tokens, end exclusive); empty otherwise."""


def _has_short(a: Annotation) -> bool:
    return bool(a.short_answers) or a.yes_no != "NONE"


def candidate_labels(ex: Example) -> dict[int, CandidateLabel]:
    """candidate index -> label for every positive candidate; absent candidates are NOT_ANSWER."""
    anns = ex.annotations
    if not anns:
        return {}
    needed = min(2, len(anns))
    if sum(a.has_long for a in anns) < needed:
        return {}
    short_gold = sum(_has_short(a) for a in anns) >= needed
    by_candidate: dict[int, list[Annotation]] = {}
    for a in anns:
        if a.has_long:
            by_candidate.setdefault(a.candidate_index, []).append(a)
    out: dict[int, CandidateLabel] = {}
    for ci, chosen in by_candidate.items():
        shorts = [a for a in chosen if _has_short(a)] if short_gold else []
        if not shorts:
            out[ci] = CandidateLabel(AnswerClass.LONG)
            continue
        # Counter keeps first-seen order, and most_common is stable on ties.
        kind = Counter(a.answer_class() for a in shorts).most_common(1)[0][0]
        if kind == AnswerClass.SHORT:
            first = next(a for a in shorts if a.answer_class() == AnswerClass.SHORT)
            out[ci] = CandidateLabel(kind, first.short_answers)
        else:
            out[ci] = CandidateLabel(kind)
    return out


def positive_indices(ex: Example) -> list[int]:
    return sorted(candidate_labels(ex))
