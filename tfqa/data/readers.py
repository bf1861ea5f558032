"""Streaming readers for Natural Questions: Kaggle's simplified jsonl and the original jsonl(.gz).

Both formats yield the same ``Example`` record. Files are read line by line (plain or gzip, told
apart by their magic bytes, not their name) so a 17 GB training file never sits in memory, and
no line longer than ``tfqa.core.jsontext.max_line_bytes()`` is ever held whole (it is refused, or
skipped under ``--max-bad-lines``, after reading at most that many bytes of it). A UTF-8 byte-order
mark is accepted; JSON nested deeper than ``MAX_JSON_DEPTH`` is refused.
Every problem is reported as ``BadInputError`` naming the file, the 1-based line and the field.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tfqa.core import jsontext
from tfqa.core.errors import UserError
from tfqa.data.convert import clean_token
from tfqa.data.records import Annotation, Candidate, Example, Span

_GZIP_MAGIC = b"\x1f\x8b"
# NQ html tokens look like "<P>", "</Td>", "<Th_colspan=2>"; text tokens never start with "<"
# and end with ">" unless they are a tag (a lone "<" or ">" is text).
_HTML_RE = re.compile(r"^</?[A-Za-z!][^<>\s]*>$")


class BadInputError(UserError, ValueError):
    """A malformed input line; ``str()`` names the file, the line number and the field (None
    when the problem is not one field's, e.g. a gzip stream that breaks off)."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, reason: str):
        super().__init__(reason, path=path, line=line, field=field)


@dataclass
class ReadReport:
    """What a read saw: filled while iterating, complete once the iterator is exhausted."""

    lines: int = 0
    examples: int = 0
    skipped: list[BadInputError] = field(default_factory=list)


def is_html_word(word: str) -> bool:
    return bool(_HTML_RE.match(word))


def _open_input(path: str | os.PathLike) -> io.BufferedIOBase:
    """``open(path, "rb")`` whose failures say what is wrong with the path, as a ``UserError``."""
    try:
        return open(path, "rb")  # type: ignore[return-value]
    except IsADirectoryError:
        raise UserError("is a directory, not a file", path) from None
    except FileNotFoundError:
        raise UserError("no such file", path) from None
    except OSError as exc:
        raise UserError(f"cannot read it: {exc.strerror or exc}", path) from None


def require_file(path: str | os.PathLike) -> None:
    """Refuse, naming the path, unless it is a file this process can read."""
    _open_input(path).close()


def open_binary(path: str | os.PathLike) -> io.BufferedIOBase:
    """Open a file for binary reading, transparently un-gzipping it."""
    with _open_input(path) as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


# What reading a damaged gzip raises: EOFError when it is cut short (which click would otherwise
# take for Ctrl-D), BadGzipFile for a bad CRC or length, zlib.error for corrupt blocks.
GZIP_BREAKS = (EOFError, gzip.BadGzipFile, zlib.error)


def gzip_break_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "truncated gzip: the compressed data ends before its end-of-stream marker"
    return f"corrupt gzip data ({exc})"


_SKIP_CHUNK = 1 << 20


def _too_long(path: str | os.PathLike, lineno: int, limit: int) -> BadInputError:
    return BadInputError(
        path,
        lineno,
        "<line>",
        f"longer than {limit} bytes, the most a line may hold (no real NQ line comes near; "
        f"set {jsontext.MAX_LINE_BYTES_ENV} to raise it)",
    )


def iter_lines(
    path: str | os.PathLike,
    on_break: Callable[[BadInputError], None] | None = None,
    *,
    max_line_bytes: int | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of every non-blank line.

    A gzip stream that breaks off raises ``BadInputError`` at the line after the last one read;
    with ``on_break`` that error goes to ``on_break`` instead (a ``--max-bad-lines`` budget, which
    may raise it) and the lines before the break are all the file gives. A line longer than
    ``max_line_bytes`` (default ``jsontext.max_line_bytes()``) is refused the same way, after at
    most that many of its bytes were read; with ``on_break`` the rest of it is read past in small
    pieces and the next line follows.
    """
    limit = jsontext.max_line_bytes() if max_line_bytes is None else max_line_bytes
    lineno = 0
    with open_binary(path) as fh:
        try:
            while raw := fh.readline(limit + 1):
                lineno += 1
                if len(raw) > limit and not (raw.endswith(b"\n") and len(raw) == limit + 1):
                    err = _too_long(path, lineno, limit)
                    if on_break is None:
                        raise err
                    on_break(err)
                    while (rest := fh.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                        pass
                    continue
                if raw.strip():
                    yield lineno, raw
        except GZIP_BREAKS as exc:
            err = BadInputError(path, lineno + 1, None, f"{gzip_break_reason(exc)}; {lineno} lines were read before it")
            if on_break is None:
                raise err from None
            on_break(err)


def empty_file_error(path: str | os.PathLike) -> UserError:
    return UserError("the file is empty (no lines)", path)


def check_not_empty(path: str | os.PathLike, report: ReadReport, allow_empty: bool) -> None:
    """After a whole read: refuse a file without a single non-blank line (a broken gzip that gave
    none is reported as broken, not as empty)."""
    if not (allow_empty or report.lines or report.skipped):
        raise empty_file_error(path)


class _Fields:
    """Typed access to a JSON object that reports the dotted path of a missing or bad field."""

    def __init__(self, path: str, line: int):
        self.path, self.line = path, line

    def fail(self, name: str, reason: str) -> BadInputError:
        return BadInputError(self.path, self.line, name, reason)

    def get(self, obj: dict, key: str, prefix: str, kind: type | tuple[type, ...]) -> Any:
        name = f"{prefix}{key}"
        if not isinstance(obj, dict):
            raise self.fail(prefix.rstrip(".") or "<root>", "expected a JSON object")
        if key not in obj:
            raise self.fail(name, "missing")
        value = obj[key]
        # bool is an int in Python; offsets must be real ints.
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(name, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
        return value

    def optional_int(self, obj: dict, key: str, prefix: str, default: int = -1) -> int:
        """An offset that only the original format has (bytes): absent means ``default``."""
        if key not in obj:
            return default
        return self.get(obj, key, prefix, int)

    def span(self, obj: dict, prefix: str, n_words: int, allow_null: bool) -> Span | None:
        start = self.get(obj, "start_token", prefix, int)
        end = self.get(obj, "end_token", prefix, int)
        start_byte = self.optional_int(obj, "start_byte", prefix)
        end_byte = self.optional_int(obj, "end_byte", prefix)
        if allow_null and start == -1 and end == -1:
            return None
        if not 0 <= start < n_words:
            raise self.fail(f"{prefix}start_token", f"{start} outside the document (0..{n_words - 1})")
        if not start < end <= n_words:
            if end <= start:
                raise self.fail(f"{prefix}end_token", f"end {end} <= start {start}")
            raise self.fail(f"{prefix}end_token", f"{end} outside the document (max {n_words})")
        return Span(start, end, start_byte, end_byte)


def _parse_annotations(f: _Fields, obj: dict, n_words: int, candidates: list[Candidate]) -> list[Annotation]:
    if "annotations" not in obj:  # Kaggle test data has none
        return []
    anns = f.get(obj, "annotations", "", list)
    out = []
    for i, ann in enumerate(anns):
        prefix = f"annotations[{i}]."
        long_obj = f.get(ann, "long_answer", prefix, dict)
        long_span = f.span(long_obj, f"{prefix}long_answer.", n_words, allow_null=True)
        cand_index = f.get(long_obj, "candidate_index", f"{prefix}long_answer.", int)
        if long_span is None and cand_index != -1:
            raise f.fail(f"{prefix}long_answer.candidate_index", f"{cand_index} given for a null long answer")
        if long_span is not None and not 0 <= cand_index < len(candidates):
            raise f.fail(
                f"{prefix}long_answer.candidate_index",
                f"{cand_index} out of range (0..{len(candidates) - 1})",
            )
        shorts = tuple(
            f.span(s, f"{prefix}short_answers[{j}].", n_words, allow_null=False)  # type: ignore[misc]
            for j, s in enumerate(f.get(ann, "short_answers", prefix, list))
        )
        _check_shorts_inside(f, shorts, long_span, prefix)
        yes_no = ann.get("yes_no_answer", "NONE")
        if yes_no not in ("NONE", "YES", "NO"):
            raise f.fail(f"{prefix}yes_no_answer", f"{yes_no!r} is not NONE, YES or NO")
        out.append(Annotation(long_span, cand_index, shorts, yes_no, str(ann.get("annotation_id", ""))))
    return out


def _check_shorts_inside(f: _Fields, shorts: tuple[Span, ...], long_span: Span | None, prefix: str) -> None:
    """A short answer lies inside its own long answer: anything else is a broken annotation, not
    a truncated span (which the features would otherwise take it for)."""
    if shorts and long_span is None:
        raise f.fail(f"{prefix}short_answers", f"{len(shorts)} short answers given for a null long answer")
    for j, s in enumerate(shorts):
        assert long_span is not None
        inside = f"its long answer [{long_span.start_token}, {long_span.end_token})"
        if s.start_token < long_span.start_token:
            raise f.fail(f"{prefix}short_answers[{j}].start_token", f"{s.start_token} is before {inside}")
        if s.end_token > long_span.end_token:
            raise f.fail(f"{prefix}short_answers[{j}].end_token", f"{s.end_token} is past the end of {inside}")


def _parse_candidates(f: _Fields, obj: dict, n_words: int) -> list[Candidate]:
    out = []
    for i, c in enumerate(f.get(obj, "long_answer_candidates", "", list)):
        span = f.span(c, f"long_answer_candidates[{i}].", n_words, allow_null=False)
        assert span is not None
        top = f.get(c, "top_level", f"long_answer_candidates[{i}].", bool) if "top_level" in c else True
        out.append(Candidate(span.start_token, span.end_token, top, span.start_byte, span.end_byte))
    return out


def _parse_tokens(f: _Fields, tokens: list) -> tuple[list[str], list[bool], list[int], list[int]]:
    """Words, html flags and byte offsets of original-format tokens. A blank inside a token
    (``<Td colspan="2">``) becomes ``_`` as in the simplified format, so both formats give the
    same words and one token stays one word."""
    words: list[str] = []
    is_html: list[bool] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, t in enumerate(tokens):
        # The fast path covers well-formed tokens; anything else goes through the checked getters
        # so the error names the token and field.
        if (
            type(t) is dict
            and type(t.get("token")) is str
            and type(t.get("html_token")) is bool
            and type(t.get("start_byte", -1)) is int
            and type(t.get("end_byte", -1)) is int
        ):
            words.append(clean_token(t["token"]))
            is_html.append(t["html_token"])
            starts.append(t.get("start_byte", -1))
            ends.append(t.get("end_byte", -1))
            continue
        prefix = f"document_tokens[{i}]."
        words.append(clean_token(f.get(t, "token", prefix, str)))
        is_html.append(f.get(t, "html_token", prefix, bool))
        starts.append(f.optional_int(t, "start_byte", prefix))
        ends.append(f.optional_int(t, "end_byte", prefix))
    return words, is_html, starts, ends


def parse_example(obj: Any, path: str, line: int) -> Example:
    """Build an ``Example`` from one decoded JSON line of either format."""
    f = _Fields(path, line)
    if not isinstance(obj, dict):
        raise f.fail("<root>", "expected a JSON object")
    raw_id = obj.get("example_id")
    if raw_id is None:
        raise f.fail("example_id", "missing")
    question = f.get(obj, "question_text", "", str)
    if "document_tokens" in obj:  # original NQ format
        tokens = f.get(obj, "document_tokens", "", list)
        words, is_html, starts, ends = _parse_tokens(f, tokens)
        title = str(obj.get("document_title", ""))
    else:
        text = f.get(obj, "document_text", "", str)
        words = text.split(" ")
        is_html = [is_html_word(w) for w in words]
        starts = ends = None
        title = ""
    candidates = _parse_candidates(f, obj, len(words))
    annotations = _parse_annotations(f, obj, len(words), candidates)
    return Example(
        example_id=str(raw_id),
        question=question,
        words=words,
        is_html=is_html,
        candidates=candidates,
        annotations=annotations,
        url=str(obj.get("document_url", "")),
        title=title,
        word_start_bytes=starts,
        word_end_bytes=ends,
    )


def parse_line(raw: bytes, path: str, line: int) -> Example:
    """Decode (strict UTF-8, a byte-order mark dropped), parse JSON (nesting at most
    ``MAX_JSON_DEPTH`` deep) and build the example of one raw line."""
    return parse_example(load_line(raw, path, line), path, line)


def load_line(raw: bytes, path: str, line: int) -> Any:
    """The decoded JSON value of one raw JSONL line; every problem a ``BadInputError``."""
    try:
        return jsontext.loads(raw, one_line=True)
    except jsontext.JsonTextError as exc:
        raise BadInputError(path, line, exc.field, exc.reason) from None


class BadLineBudget:
    """Counts skipped lines against ``--max-bad-lines``; the first one over budget is raised."""

    def __init__(self, max_bad_lines: int, report: ReadReport):
        self.max_bad_lines, self.report = max_bad_lines, report

    def skip(self, err: BadInputError) -> None:
        if len(self.report.skipped) >= self.max_bad_lines:
            raise err
        self.report.skipped.append(err)


class UniqueIds:
    """The example ids of one file so far: a second line with one of them is a bad line."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}

    def check(self, example_id: str, path: str, line: int) -> None:
        if example_id in self.lines:
            raise BadInputError(path, line, "example_id", f"duplicate of line {self.lines[example_id]}")

    def add(self, example_id: str, line: int) -> None:
        self.lines[example_id] = line


def read_examples(
    path: str | os.PathLike, *, max_bad_lines: int = 0, report: ReadReport | None = None, allow_empty: bool = False
) -> Iterator[Example]:
    """Stream the examples of an NQ file of either format.

    With ``max_bad_lines`` > 0, up to that many malformed lines (including duplicate example ids,
    and a gzip stream that breaks off) are skipped and recorded in ``report.skipped``; the next
    one raises. A file without a single line raises unless ``allow_empty``.
    """
    path = str(path)
    report = report if report is not None else ReadReport()
    budget = BadLineBudget(max_bad_lines, report)
    ids = UniqueIds()
    for lineno, raw in iter_lines(path, budget.skip):
        report.lines += 1
        try:
            ex = parse_line(raw, path, lineno)
            ids.check(ex.example_id, path, lineno)
        except BadInputError as err:
            budget.skip(err)
            continue
        ids.add(ex.example_id, lineno)
        report.examples += 1
        yield ex
    check_not_empty(path, report, allow_empty)


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    max_bad_lines: int = 0,
    force: bool = False,
    allow_empty: bool = False,
) -> ReadReport:
    """Write the simplified form of an original-format file (gzip when ``dst`` ends in .gz).

    Refuses to write over ``src`` (also through a link), over an existing ``dst`` unless
    ``force``, or into a folder that does not exist; ``dst`` is only ever replaced whole.
    """
    from tfqa.core.destinations import check_destination, written_whole

    require_file(src)
    check_destination(dst, inputs=[src], force=force)
    report = ReadReport()
    budget = BadLineBudget(max_bad_lines, report)
    opener = gzip.open if str(dst).endswith(".gz") else open
    with written_whole(dst) as tmp:
        _convert_lines(src, tmp, opener, budget, report)
        check_not_empty(src, report, allow_empty)
    return report


def _convert_lines(src, tmp: str, opener, budget: BadLineBudget, report: ReadReport) -> None:
    from tfqa.data.convert import simplify_nq_example

    ids = UniqueIds()
    with opener(tmp, "wt", encoding="utf-8") as out:
        for lineno, raw in iter_lines(src, budget.skip):
            report.lines += 1
            try:
                ex = parse_line(raw, str(src), lineno)  # validates, with file/line/field errors
                ids.check(ex.example_id, str(src), lineno)
                obj = load_line(raw, str(src), lineno)
                if "document_tokens" not in obj:
                    raise BadInputError(str(src), lineno, "document_tokens", "missing: not an original-format line")
            except BadInputError as err:
                budget.skip(err)
                continue
            ids.add(ex.example_id, lineno)
            out.write(json.dumps(simplify_nq_example(obj)) + "\n")
            report.examples += 1
