"""Original NQ format -> Kaggle's simplified format.

Produces the same words as Google's ``simplify_nq_example``: ``document_text`` is every document
token (HTML tags included) joined by single spaces, and all offsets become token offsets, so a
simplified file scores identically with token-offset predictions.
"""
from __future__ import annotations

from typing import Any


def _token_span(span: dict[str, Any]) -> dict[str, int]:
    return {"start_token": span["start_token"], "end_token": span["end_token"]}


def simplify_nq_example(example: dict[str, Any]) -> dict[str, Any]:
    """Return the simplified-format dict of one original-format NQ example dict."""
    annotations = []
    for ann in example.get("annotations", []):
        long_answer = dict(_token_span(ann["long_answer"]))
        long_answer["candidate_index"] = ann["long_answer"]["candidate_index"]
        annotations.append(
            {
                "annotation_id": ann.get("annotation_id"),
                "long_answer": long_answer,
                "short_answers": [_token_span(s) for s in ann.get("short_answers", [])],
                "yes_no_answer": ann.get("yes_no_answer", "NONE"),
            }
        )
    return {
        "example_id": example["example_id"],
        "question_text": example["question_text"],
        "document_url": example.get("document_url", ""),
        "document_text": " ".join(t["token"] for t in example["document_tokens"]),
        "long_answer_candidates": [
            {**_token_span(c), "top_level": c["top_level"]} for c in example["long_answer_candidates"]
        ],
        "annotations": annotations,
    }
