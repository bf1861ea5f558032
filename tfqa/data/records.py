"""Typed records shared by every stage: one Natural Questions example, as read from either format.

Token offsets follow NQ: ``end_token`` is exclusive and indexes ``Example.words``. Byte offsets are
only known for the original format; the simplified format has -1 there, exactly as Google's
scorer expects when it falls back to token offsets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AnswerClass(enum.IntEnum):
    """The five answer-type classes of a (question, candidate) input, as in the 1st-place model."""

    NOT_ANSWER = 0
    LONG = 1
    SHORT = 2
    NO = 3
    YES = 4


@dataclass(frozen=True, slots=True)
class Span:
    start_token: int
    end_token: int
    start_byte: int = -1
    end_byte: int = -1


SPAN_KEYS = ("start_byte", "end_byte", "start_token", "end_token")
"""The keys of a span in the NQ JSON files, in their order there."""


class AnswerPresence:
    """``has_long`` / ``has_short`` of a record with ``long_answer``, ``short_answers`` and ``yes_no``
    (an annotation, an official prediction): a yes/no answer counts as a short answer, as in NQ."""

    __slots__ = ()  # the slotted records stay without a __dict__

    @property
    def has_long(self) -> bool:
        return self.long_answer is not None

    @property
    def has_short(self) -> bool:
        return bool(self.short_answers) or self.yes_no != "NONE"


@dataclass(frozen=True, slots=True)
class Candidate:
    start_token: int
    end_token: int
    top_level: bool
    start_byte: int = -1
    end_byte: int = -1


@dataclass(frozen=True, slots=True)
class Annotation(AnswerPresence):
    """One annotator's answer. ``long_answer`` is None and ``candidate_index`` -1 for a null answer."""

    long_answer: Span | None
    candidate_index: int
    short_answers: tuple[Span, ...] = ()
    yes_no: str = "NONE"  # "NONE", "YES" or "NO", as in the NQ files
    annotation_id: str = ""

    def answer_class(self) -> AnswerClass:
        """The class this annotation gives to its own long-answer candidate."""
        if self.yes_no == "YES":
            return AnswerClass.YES
        if self.yes_no == "NO":
            return AnswerClass.NO
        if self.short_answers:
            return AnswerClass.SHORT
        return AnswerClass.LONG


@dataclass(slots=True)
class Example:
    """A question and its Wikipedia page, with every annotation the source file holds.

    ``words`` are the NQ document tokens (HTML tags included, as in ``document_text``) and
    ``is_html`` their html flags. ``annotations`` is empty for Kaggle test data, holds one entry
    for Kaggle train and five for the original dev set.
    """

    example_id: str
    question: str
    words: list[str]
    is_html: list[bool]
    candidates: list[Candidate]
    annotations: list[Annotation] = field(default_factory=list)
    url: str = ""
    title: str = ""
    # Per-word byte offsets in the original HTML; None for the simplified format.
    word_start_bytes: list[int] | None = None
    word_end_bytes: list[int] | None = None

    def positive_annotation(self) -> Annotation | None:
        """The first annotation with a long answer, else None (training labels: ``tfqa.features.labels``)."""
        for ann in self.annotations:
            if ann.has_long:
                return ann
        return None
