"""Original NQ format -> Kaggle's simplified format, as Google's ``simplify_nq_example`` does it.

``document_text`` is every document token joined by single spaces, after each blank *inside* a
token is replaced by ``_``: real pages hold tags such as ``<Td colspan="2">``, and without the
replacement each of them would become two words and shift every later token offset. Offsets stay
token offsets (byte offsets are dropped), so a simplified file scores identically with
token-offset predictions. Keys come in the order of Kaggle's released files, so the converted
line of a Kaggle example is byte-identical to Kaggle's.
"""

from __future__ import annotations

from typing import Any


def clean_token(token: str) -> str:
    """One NQ token as one simplified-format word (Google's ``_clean_token``)."""
    return token.replace(" ", "_") if " " in token else token


def _token_span(span: dict[str, Any]) -> dict[str, int]:
    return {"start_token": span["start_token"], "end_token": span["end_token"]}


def simplify_nq_example(example: dict[str, Any]) -> dict[str, Any]:
    """Return the simplified-format dict of one original-format NQ example dict."""
    words = [clean_token(t["token"]) for t in example["document_tokens"]]
    text = " ".join(words)
    # Google's own check: the simplified text must split back into exactly the original tokens.
    if text.count(" ") + 1 != len(words) or any(w == "" for w in words):
        raise ValueError(
            f"example {example.get('example_id')}: a document token is empty, so the "
            "simplified text would not split back into the same tokens"
        )
    out: dict[str, Any] = {
        "document_text": text,
        "long_answer_candidates": [
            {"start_token": c["start_token"], "top_level": c["top_level"], "end_token": c["end_token"]}
            for c in example["long_answer_candidates"]
        ],
        "question_text": example["question_text"],
    }
    if "annotations" in example:
        out["annotations"] = [
            {
                "yes_no_answer": ann.get("yes_no_answer", "NONE"),
                "long_answer": {
                    "start_token": ann["long_answer"]["start_token"],
                    "candidate_index": ann["long_answer"]["candidate_index"],
                    "end_token": ann["long_answer"]["end_token"],
                },
                "short_answers": [_token_span(s) for s in ann.get("short_answers", [])],
                "annotation_id": ann.get("annotation_id"),
            }
            for ann in example["annotations"]
        ]
    out["document_url"] = example.get("document_url", "")
    out["example_id"] = example["example_id"]
    return out
