"""Decoding JSON input text the same way everywhere: a UTF-8 byte-order mark accepted, bytes that
are not UTF-8 and nesting deeper than any real file refused with a reason the caller puts beside
its file (and line) name.

Python's ``json`` recurses once per bracket: about a thousand of them end in ``RecursionError``,
which is no ``ValueError`` and would leave a traceback. The deepest real input is a SQuAD file
(``{data: [{paragraphs: [{qas: [{answers: [{...}]}]}]}]}``: 9 levels); NQ lines and prediction
files have 5.
``MAX_JSON_DEPTH`` is far above all of them and far below where Python's parser breaks.
"""

from __future__ import annotations

import json
import os
from typing import Any

BOM = b"\xef\xbb\xbf"
"""What Windows editors put before UTF-8 text; it means nothing but "this is UTF-8"."""

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays/objects accepted in any JSON input."""

MAX_LINE_BYTES = 128 << 20
"""Longest JSONL line read (128 MiB): the longest line of ``../shared/data`` is 107 kB, a Kaggle
line is tens of kB, an original-format NQ line (a whole page's tokens with byte offsets) a few MB.
A longer line is refused before it is held in memory; raise it with ``TFQA_MAX_LINE_BYTES``."""

MAX_LINE_BYTES_ENV = "TFQA_MAX_LINE_BYTES"


class JsonTextError(ValueError):
    """Why some text is not acceptable JSON input. ``field`` is ``<line>`` for bytes that are not
    text, ``<json>`` for everything else; ``line`` (1-based) when the text knows it."""

    def __init__(self, field: str, reason: str, line: int | None = None):
        self.field, self.reason, self.line = field, reason, line
        super().__init__(reason)


def max_line_bytes() -> int:
    """``TFQA_MAX_LINE_BYTES`` when set (a positive whole number of bytes), else ``MAX_LINE_BYTES``."""
    from tfqa.core.errors import UserError

    raw = os.environ.get(MAX_LINE_BYTES_ENV, "").strip()
    if not raw:
        return MAX_LINE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"environment variable {MAX_LINE_BYTES_ENV}={raw!r}: expected a positive number of bytes")
    return value


def strip_bom(data: bytes) -> bytes:
    return data[len(BOM) :] if data.startswith(BOM) else data


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8 (a leading byte-order mark dropped); ``JsonTextError`` names the byte and line."""
    data = strip_bom(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JsonTextError("<line>", f"not valid UTF-8 at byte {exc.start} (0x{data[exc.start]:02x})", line) from None


def loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, one_line: bool = False) -> Any:
    """``json.loads`` of ``text`` (bytes: decoded as by ``decode_utf8``) that refuses nesting deeper
    than ``max_depth`` and gives every problem as a ``JsonTextError``. ``one_line``: the text is
    one JSONL line, so a syntax error's position is given as its column only."""
    if isinstance(text, bytes):
        text = decode_utf8(text)
    elif text.startswith("\ufeff"):
        text = text[1:]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in " at", ready for a position to follow.
        where = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        raise JsonTextError("<json>", f"invalid JSON: {exc.msg.removesuffix(' at')} at {where}", exc.lineno) from None
    except RecursionError:
        raise JsonTextError("<json>", too_deep(max_depth)) from None
    # Fewer opening brackets than the limit cannot nest past it: most small files need no walk.
    if text.count("[") + text.count("{") > max_depth and json_depth(obj, max_depth) > max_depth:
        raise JsonTextError("<json>", too_deep(max_depth))
    return obj


def too_deep(max_depth: int) -> str:
    return f"JSON nested deeper than {max_depth} levels (no real input comes near; the file is damaged or hostile)"


def json_depth(obj: Any, limit: int) -> int:
    """How deeply ``obj``'s lists and dicts nest (a scalar: 0), counted up to ``limit + 1``:
    without recursion, and stopping as soon as the limit is passed."""
    if not isinstance(obj, (list, dict)):
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (list, dict)):
                if depth + 1 > limit:
                    return depth + 1
                deepest = max(deepest, depth + 1)
                stack.append((child, depth + 1))
    return deepest
