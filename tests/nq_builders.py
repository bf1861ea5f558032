"""Hand-built Natural Questions data for the tests, in Google's original format.

``DocBuilder`` lays out a document token by token (HTML tags are tokens with ``html_token``
True, as in NQ), records the long-answer candidates (``<P> <Table> <Tr> <Ul> <Ol> <Dl> <Li>``
elements, nested ones not top-level) in document order, and computes every byte offset from the
UTF-8 bytes of the ``document_html`` it renders, so non-ASCII words make byte and character
offsets differ. ``Doc.example`` turns it into an original-format example dict with any number of
annotations; ``simplified_form`` writes Kaggle's simplified form of such a dict independently of
``tfqa.data.convert``. ``random_example``/``random_dataset`` generate many HTML-heavy examples of every
answer class for the cache and selection tests; ``write_jsonl``/``write_lines`` write files
(gzip when the name ends in .gz, or when asked).
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tfqa.pipeline.profiles import SHARED_DATA

HEAD10 = SHARED_DATA / "nq-simplified-train-head10.jsonl"
FARM = SHARED_DATA / "farm-nq-train-sample.jsonl"

CANDIDATE_TAGS = frozenset({"P", "Table", "Tr", "Ul", "Ol", "Dl", "Li"})
HTML_PREFIX = "<!DOCTYPE html><html><head><title>t</title></head><body>\n"
HTML_SUFFIX = "\n</body></html>"


@dataclass
class Doc:
    """A finished document: tokens, html flags, byte offsets and candidates."""

    title: str
    tokens: list[str]
    is_html: list[bool]
    candidates: list[tuple[int, int, bool]]  # start_token, end_token (exclusive), top_level
    html: str = ""
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        pos = len(HTML_PREFIX.encode())
        for tok in self.tokens:
            n = len(tok.encode())
            self.starts.append(pos)
            self.ends.append(pos + n)
            pos += n + 1  # one space between tokens
        self.html = HTML_PREFIX + " ".join(self.tokens) + HTML_SUFFIX

    # -- lookups ------------------------------------------------------------------------------------
    def find(self, phrase: str, start: int = 0) -> tuple[int, int]:
        """Token range (end exclusive) of the first occurrence of ``phrase`` at or after ``start``."""
        words = phrase.split(" ")
        for i in range(start, len(self.tokens) - len(words) + 1):
            if self.tokens[i : i + len(words)] == words:
                return i, i + len(words)
        raise KeyError(phrase)

    def candidate_of(self, start: int, end: int, top_level: bool | None = None) -> int:
        """Index of the innermost candidate holding tokens [start, end)."""
        best = None
        for i, (s, e, top) in enumerate(self.candidates):
            if s <= start and end <= e and (top_level is None or top == top_level):
                if best is None or e - s < self.candidates[best][1] - self.candidates[best][0]:
                    best = i
        if best is None:
            raise KeyError((start, end))
        return best

    # -- spans --------------------------------------------------------------------------------------
    def span(self, start: int, end: int) -> dict:
        return {
            "start_token": start,
            "end_token": end,
            "start_byte": self.starts[start],
            "end_byte": self.ends[end - 1],
        }

    def annotation(
        self,
        candidate: int | None,
        shorts: Iterable[tuple[int, int]] = (),
        yes_no: str = "NONE",
        annotation_id: int = 0,
    ) -> dict:
        """An original-format annotation: ``candidate`` None gives a null long answer."""
        if candidate is None:
            long_answer = {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1, "candidate_index": -1}
        else:
            s, e, _ = self.candidates[candidate]
            long_answer = {**self.span(s, e), "candidate_index": candidate}
        return {
            "annotation_id": annotation_id,
            "long_answer": long_answer,
            "short_answers": [self.span(s, e) for s, e in shorts],
            "yes_no_answer": yes_no,
        }

    def example(self, example_id: int, question: str, annotations: list[dict] | None = None) -> dict:
        """An original-format NQ example dict (``annotations`` None: Kaggle-test-like, no key)."""
        obj = {
            "example_id": example_id,
            "question_text": question,
            "question_tokens": question.split(" "),
            "document_title": self.title,
            "document_url": f"https://en.wikipedia.org//w/index.php?title={self.title.replace(' ', '_')}",
            "document_html": self.html,
            "document_tokens": [
                {"token": t, "start_byte": s, "end_byte": e, "html_token": h}
                for t, s, e, h in zip(self.tokens, self.starts, self.ends, self.is_html)
            ],
            "long_answer_candidates": [{**self.span(s, e), "top_level": top} for s, e, top in self.candidates],
        }
        if annotations is not None:
            obj["annotations"] = annotations
        return obj


class DocBuilder:
    """Builds a ``Doc`` token by token; candidate elements are tracked with a stack."""

    def __init__(self, title: str = "Test page"):
        self.title = title
        self.tokens: list[str] = []
        self.is_html: list[bool] = []
        self.candidates: list[list] = []
        self._stack: list[tuple[str, int | None]] = []  # (tag, candidate index or None)

    def _add(self, tok: str, html: bool) -> int:
        self.tokens.append(tok)
        self.is_html.append(html)
        return len(self.tokens) - 1

    def text(self, words: str | list[str]) -> tuple[int, int]:
        """Append text words (a string is split on single spaces); returns their token range."""
        ws = words.split(" ") if isinstance(words, str) else list(words)
        start = len(self.tokens)
        for w in ws:
            self._add(w, False)
        return start, len(self.tokens)

    def open(self, tag: str, attrs: str = "") -> int | None:
        """Open ``tag``; ``attrs`` like ``colspan="2"`` gives the real original token
        ``<Th colspan="2">``, a blank inside one token (the simplified form writes it with ``_``)."""
        name = tag + (f" {attrs}" if attrs else "")
        pos = self._add(f"<{name}>", True)
        cand = None
        if tag in CANDIDATE_TAGS:
            top = not any(c is not None for _, c in self._stack)
            cand = len(self.candidates)
            self.candidates.append([pos, None, top])
        self._stack.append((tag, cand))
        return cand

    def close(self, tag: str) -> None:
        open_tag, cand = self._stack.pop()
        assert open_tag == tag, f"closing {tag} while {open_tag} is open"
        pos = self._add(f"</{tag}>", True)
        if cand is not None:
            self.candidates[cand][1] = pos + 1

    def element(self, tag: str, words: str | list[str], attrs: str = "") -> tuple[int | None, tuple[int, int]]:
        """``<tag> words </tag>``; returns (candidate index or None, token range of the words)."""
        cand = self.open(tag, attrs)
        rng = self.text(words)
        self.close(tag)
        return cand, rng

    def build(self) -> Doc:
        assert not self._stack, f"unclosed tags {self._stack}"
        return Doc(self.title, list(self.tokens), list(self.is_html), [tuple(c) for c in self.candidates])


# -- formats -------------------------------------------------------------------------------------
def simplified_form(original: dict) -> dict:
    """Kaggle's simplified form of an original-format dict, written from the format spec."""
    out = {
        "example_id": original["example_id"],
        "question_text": original["question_text"],
        "document_url": original["document_url"],
        # The format spec: one word per token, a blank inside a token written as "_".
        "document_text": " ".join(t["token"].replace(" ", "_") for t in original["document_tokens"]),
        "long_answer_candidates": [
            {"start_token": c["start_token"], "end_token": c["end_token"], "top_level": c["top_level"]}
            for c in original["long_answer_candidates"]
        ],
    }
    if "annotations" in original:
        out["annotations"] = [
            {
                "annotation_id": a["annotation_id"],
                "long_answer": {
                    "start_token": a["long_answer"]["start_token"],
                    "end_token": a["long_answer"]["end_token"],
                    "candidate_index": a["long_answer"]["candidate_index"],
                },
                "short_answers": [{"start_token": s["start_token"], "end_token": s["end_token"]} for s in a["short_answers"]],
                "yes_no_answer": a["yes_no_answer"],
            }
            for a in original["annotations"]
        ]
    return out


def dumps(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


def write_lines(path: str | Path, lines: Iterable[bytes], gz: bool | None = None) -> Path:
    """Write raw lines (each should end in a newline); gzip when ``gz`` or the name ends in .gz."""
    path = Path(path)
    data = b"".join(lines)
    if gz if gz is not None else path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_jsonl(path: str | Path, objs: Iterable[dict], gz: bool | None = None) -> Path:
    return write_lines(path, (dumps(o) for o in objs), gz)


def head10_objs() -> list[dict]:
    return [json.loads(line) for line in HEAD10.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- a small fixed example --------------------------------------------------------------------------
def sample_doc() -> Doc:
    """A short HTML-heavy page: paragraphs, a table with colspan headers, nested lists."""
    b = DocBuilder("Zürich café")
    b.element("H1", "Zürich café")
    b.element("P", "The café in Zürich was founded in 1893 by Jean-Luc Ångström .")  # cand 0
    b.open("Table")  # cand 1
    b.open("Tr")  # cand 2
    b.element("Th", "Opening hours", attrs='colspan="2"')
    b.close("Tr")
    b.open("Tr")  # cand 3
    b.element("Td", "Monday")
    b.element("Td", "08:00 – 18:00")
    b.close("Tr")
    b.close("Table")
    b.open("Ul")  # cand 4
    b.element("Li", "espresso , 3.50 CHF")  # cand 5
    b.open("Li")  # cand 6
    b.text("pastries :")
    b.open("Ul")  # cand 7
    b.element("Li", "naïve croissants")  # cand 8
    b.close("Ul")
    b.close("Li")
    b.close("Ul")
    b.element("P", "It is not open on Sundays and it serves 東京 tea .")  # cand 9
    return b.build()


def sample_example(example_id: int = 101, five: bool = True) -> dict:
    """``sample_doc`` with five annotations (one of each kind) or one SHORT annotation."""
    d = sample_doc()
    founder = d.find("Jean-Luc Ångström")
    year = d.find("1893")
    if not five:
        return d.example(example_id, "who founded the café in zürich", [d.annotation(0, [founder], annotation_id=7)])
    anns = [
        d.annotation(None, annotation_id=1),
        d.annotation(0, [year, founder], annotation_id=2),  # SHORT with two spans
        d.annotation(3, annotation_id=3),  # LONG
        d.annotation(9, yes_no="NO", annotation_id=4),
        d.annotation(8, yes_no="YES", annotation_id=5),  # nested (not top-level) candidate
    ]
    return d.example(example_id, "when and by whom was the café in zürich founded", anns)


# -- random HTML-heavy data ------------------------------------------------------------------------
WORDS = (
    "the of and in to a was is for on as by with from at that his which an were are it be this "
    "had first also its not but after one new two have they who has been her their other all more "
    "Zürich café naïve Ångström 東京 São Paulo Kraków résumé Klementieff McConnell unbelievably "
    "state-of-the-art 1,234 1893 3.50 ( ) , . ; : 's \" — – % $ < >"
).split(" ")


def _words(rng: random.Random, lo: int, hi: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def random_doc(rng: random.Random, blocks: int = 8, long_paragraph: int = 0) -> Doc:
    b = DocBuilder(" ".join(_words(rng, 1, 3)))
    b.element("H1", _words(rng, 1, 4))
    if long_paragraph:
        b.element("P", _words(rng, long_paragraph, long_paragraph))
    for _ in range(blocks):
        kind = rng.choice(["P", "P", "Table", "Ul", "Ol", "Dl", "H2"])
        if kind in ("P", "H2"):
            b.element(kind, _words(rng, 2, 40))
        elif kind == "Table":
            b.open("Table")
            b.open("Tr")
            b.element("Th", _words(rng, 1, 3), attrs=f'colspan="{rng.randint(2, 3)}"')
            b.close("Tr")
            for _ in range(rng.randint(1, 3)):
                b.open("Tr")
                for _ in range(rng.randint(1, 3)):
                    b.element("Td", _words(rng, 1, 6))
                b.close("Tr")
            b.close("Table")
        elif kind in ("Ul", "Ol"):
            b.open(kind)
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.3:
                    b.open("Li")
                    b.text(_words(rng, 1, 4))
                    b.open("Ul")
                    b.element("Li", _words(rng, 1, 6))
                    b.close("Ul")
                    b.close("Li")
                else:
                    b.element("Li", _words(rng, 1, 12))
            b.close(kind)
        else:
            b.open("Dl")
            b.element("Dt", _words(rng, 1, 3))
            b.element("Dd", _words(rng, 1, 10))
            b.close("Dl")
    return b.build()


ANSWER_KINDS = ("null", "long", "short", "yes", "no")


def random_example(rng: random.Random, example_id: int, n_annotations: int = 1, **doc_kw) -> dict:
    """A random HTML-heavy example; each annotation's kind is drawn from ``ANSWER_KINDS``."""
    d = random_doc(rng, **doc_kw)
    anns = []
    for a in range(n_annotations):
        kind = rng.choice(ANSWER_KINDS)
        if kind == "null":
            anns.append(d.annotation(None, annotation_id=example_id * 10 + a))
            continue
        ci = rng.randrange(len(d.candidates))
        s, e, _ = d.candidates[ci]
        if kind == "short":
            text = [i for i in range(s, e) if not d.is_html[i]]
            i = rng.choice(text)
            j = i + 1
            while j < e and not d.is_html[j] and j - i < 3:
                j += 1
            anns.append(d.annotation(ci, [(i, j)], annotation_id=example_id * 10 + a))
        else:
            yn = {"yes": "YES", "no": "NO"}.get(kind, "NONE")
            anns.append(d.annotation(ci, yes_no=yn, annotation_id=example_id * 10 + a))
    question = " ".join(_words(rng, 4, 10))
    return d.example(example_id, question, anns)


def random_dataset(n: int, seed: int = 0, n_annotations: int = 1, **doc_kw) -> list[dict]:
    rng = random.Random(seed)
    return [random_example(rng, 9_000_000_000 + 17 * i, n_annotations, **doc_kw) for i in range(n)]


def mutated(obj: dict, fn) -> dict:
    """A deep copy of ``obj`` changed by ``fn`` (which mutates in place)."""
    out = copy.deepcopy(obj)
    fn(out)
    return out


# -- malformed lines ------------------------------------------------------------------------------
def setter(path: list, value):
    """A mutation for ``mutated``: set the item at ``path`` (keys / indices) to ``value``."""

    def fn(o):
        *head, last = path
        for k in head:
            o = o[k]
        o[last] = value

    return fn


MALFORMED_GOOD_IDS = (1001, 1002, 1003)


def malformed_cases() -> dict[str, tuple[bytes, str]]:
    """name -> (raw line, the field a reader must name). Meant as line 3 of ``malformed_file``."""
    base = sample_example(555)
    n = len(base["document_tokens"])
    start3 = base["long_answer_candidates"][3]["start_token"]
    return {
        "bad_json": (dumps(base)[:-40] + b"\n", "<json>"),
        "missing_field": (dumps(mutated(base, lambda o: o.pop("question_text"))), "question_text"),
        "missing_tokens_entry_field": (
            dumps(mutated(base, lambda o: o["document_tokens"][4].pop("html_token"))),
            "document_tokens[4].html_token",
        ),
        "span_outside_document": (
            dumps(mutated(base, setter(["annotations", 1, "short_answers", 0, "end_token"], n + 5))),
            "annotations[1].short_answers[0].end_token",
        ),
        "span_start_outside_document": (
            dumps(mutated(base, setter(["long_answer_candidates", 2, "start_token"], n))),
            "long_answer_candidates[2].start_token",
        ),
        "start_ge_end": (
            dumps(mutated(base, setter(["long_answer_candidates", 3, "end_token"], start3))),
            "long_answer_candidates[3].end_token",
        ),
        "candidate_index_out_of_range": (
            dumps(mutated(base, setter(["annotations", 2, "long_answer", "candidate_index"], 10))),
            "annotations[2].long_answer.candidate_index",
        ),
        "non_utf8": (dumps(base).replace("Zürich".encode(), b"Z\xfcrich", 1), "<line>"),
        "duplicate_id": (dumps(sample_example(MALFORMED_GOOD_IDS[0])), "example_id"),
    }


def malformed_file(directory: str | Path, name: str, gz: bool = False) -> tuple[Path, str]:
    """Good lines 1, 2 and 4 (ids 1001..1003) around the malformed line 3 ``name``."""
    raw, fld = malformed_cases()[name]
    good = [dumps(sample_example(i)) for i in MALFORMED_GOOD_IDS]
    path = write_lines(Path(directory) / (f"{name}.jsonl" + (".gz" if gz else "")), [good[0], good[1], raw, good[2]])
    return path, fld


# ------------------------------------------------------------------------------------ tag tokens
# The tests' own reference for which token replaces a document word, written from the
# tfqa.features.tokenization docstring, not imported: a reference must not share the code it checks.
NINE_TAGS = ("P", "Table", "Tr", "Ul", "Ol", "Fl", "Li", "Dd", "Dt")
ORIGINAL_TAG = re.compile(r"<.+>")


def tag_token(word: str, is_html: bool, mode: str, wordpiece: bool) -> str | None:
    """The token a document word is replaced by (None: a text word, tokenised as it is)."""
    if mode == "original":
        if not ORIGINAL_TAG.match(word):
            return None
        opening = {f"<{t}>": f"qw{k}" for k, t in enumerate(NINE_TAGS, 1)}
        return opening.get(word, "<" if wordpiece else "qw99")
    if not is_html:
        return None
    name = word.strip("<>/").split("_", 1)[0].lower()
    return next((f"<{t}>" for t in NINE_TAGS if t.lower() == name), "<Tag>")
