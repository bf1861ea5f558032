"""Long-answer candidates of a raw document, for inputs that arrive without NQ's candidate list
(a served model answering a question about any page).

NQ's candidates are the ``<P>``, ``<Table>``, ``<Tr>``, ``<Ul>``, ``<Ol>``, ``<Dl>`` and ``<Li>``
elements; one nested inside another is not top-level.
"""

from __future__ import annotations

from tfqa.data.records import Candidate

CANDIDATE_TAGS = frozenset({"P", "Table", "Tr", "Ul", "Ol", "Dl", "Li"})
"""The candidate elements, spelled as NQ's html tokens spell them."""
_CANDIDATE_NAMES = frozenset(t.lower() for t in CANDIDATE_TAGS)  # pages in the wild spell tags any way


def _tag(word: str) -> tuple[str, bool] | None:
    if len(word) < 3 or word[0] != "<" or word[-1] != ">":
        return None
    closing = word[1] == "/"
    name = word[2 if closing else 1 : -1].split("_", 1)[0].lower()
    return (name, closing) if name in _CANDIDATE_NAMES else None


def find_candidates(words: list[str]) -> list[Candidate]:
    """Candidates in document order (by start), matching open and close tags with a stack."""
    stack: list[tuple[str, int]] = []
    spans: list[tuple[int, int, int]] = []  # start, end, depth
    for i, w in enumerate(words):
        tag = _tag(w)
        if tag is None:
            continue
        name, closing = tag
        if not closing:
            stack.append((name, i))
            continue
        # Unbalanced HTML: close the nearest open element of this name, dropping the ones above.
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == name:
                spans.append((stack[depth][1], i + 1, depth))
                del stack[depth:]
                break
    spans.sort()
    return [Candidate(s, e, depth == 0) for s, e, depth in spans]
