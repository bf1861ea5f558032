"""The 1st-place solution's collator, written from its validation kernel's code: the reference that
``html_tokens=original`` is checked against (tests/features/test_html_tokens.py) and that
benchmarks/prepare.py measures tfqa's feature builder against.

Words come from ``document_text.split()``; a word matching ``<.+>`` (re.match: anchored at the
start only) becomes ``qw1``..``qw9`` when it is one of the nine opening tags exactly and ``<``
otherwise (BERT); each word is tokenised on its own, and a candidate stops at the first word whose
pieces would overflow the budget. Kept plain on purpose: no cache, no batching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

TAG_WORD = re.compile(r"<.+>")
NEW_TOKENS = dict(
    zip(["<P>", "<Table>", "<Tr>", "<Ul>", "<Ol>", "<Fl>", "<Li>", "<Dd>", "<Dt>"], [f"qw{k}" for k in range(1, 10)])
)


def original_candidates(obj: dict, tok, max_seq_len: int = 360, max_question_len: int = 64) -> Iterator[tuple[list, list]]:
    """(input_ids, first-piece position of each word) for each long-answer candidate of a
    simplified-format line ``obj``, in candidate order."""
    question = tok.tokenize(obj["question_text"])[:max_question_len]
    doc_words = obj["document_text"].split()
    budget = max_seq_len - len(question) - 3
    for cand in obj["long_answer_candidates"]:
        words = doc_words[cand["start_token"] : cand["end_token"]]
        words = [(NEW_TOKENS.get(w, "<") if TAG_WORD.match(w) else w) for w in words]
        tokens, first = [], []
        for w in words:
            pieces = tok.tokenize(w)
            if len(tokens) + len(pieces) > budget:
                break
            first.append(len(tokens))
            tokens += pieces
        ids = tok.convert_tokens_to_ids([tok.cls_token, *question, tok.sep_token, *tokens, tok.sep_token])
        yield ids, [len(question) + 2 + k for k in first]
