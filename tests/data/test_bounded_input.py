"""Hostile and odd JSON input on the real samples of ../shared/data: nesting past MAX_JSON_DEPTH
and lines past the line-length limit are one line naming file (and line), a line too long is
refused before it is held in memory, and a UTF-8 byte-order mark is accepted."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tfqa.core import jsontext
from tfqa.core.errors import UserError
from tfqa.data.readers import BadInputError, read_examples
from tfqa.evaluation.nq_predictions import NQRecordError, read_predictions
from tfqa.squad.data import SquadFormatError, read_squad

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
if not SHARED.is_dir():  # a worktree beside the main checkout
    SHARED = Path("/work/shared/data")
HEAD10 = SHARED / "nq-simplified-train-head10.jsonl"
SQUAD = SHARED / "squad2-dev-half.json"
FARM = SHARED / "farm-nq-train-sample.jsonl"


def _real_lines() -> list[bytes]:
    return HEAD10.read_bytes().splitlines(keepends=True)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def test_the_real_samples_are_well_inside_the_limits():
    for path in (HEAD10, FARM):
        lines = path.read_bytes().splitlines()
        assert max(map(len, lines)) < jsontext.MAX_LINE_BYTES // 1000
        assert max(jsontext.json_depth(json.loads(line), 1000) for line in lines) <= 5
    assert jsontext.json_depth(json.loads(SQUAD.read_bytes()), 1000) == 9 < jsontext.MAX_JSON_DEPTH


@pytest.mark.parametrize("name", ["nq.jsonl", "nq.jsonl.gz"])
@pytest.mark.parametrize("depth", [150, 100_000])  # parsed but too deep; past where json recurses out
def test_deep_nesting_in_an_nq_line_names_file_and_line(tmp_path, name, depth):
    lines = _real_lines()
    third = json.loads(lines[2])
    text = json.dumps(third)[:-1] + f', "extra": {_nested(depth)}}}\n'
    src = _write(tmp_path / name, b"".join([*lines[:2], text.encode(), *lines[3:]]))
    with pytest.raises(BadInputError) as info:
        list(read_examples(src))
    assert (info.value.path, info.value.line, info.value.field) == (str(src), 3, "<json>")
    assert "nested deeper than 100 levels" in str(info.value)
    # Under --max-bad-lines the line is skipped and the other nine real examples are read.
    assert len(list(read_examples(src, max_bad_lines=1))) == 9


def test_depth_at_the_limit_is_accepted():
    assert jsontext.loads(_nested(jsontext.MAX_JSON_DEPTH)) is not None
    with pytest.raises(jsontext.JsonTextError, match="nested deeper than 100"):
        jsontext.loads(_nested(jsontext.MAX_JSON_DEPTH + 1))
    # Brackets inside strings are text, not nesting.
    assert jsontext.loads(json.dumps({"t": _nested(5000)})) == {"t": _nested(5000)}


@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_nesting_in_squad_and_predictions_names_the_file(tmp_path, depth):
    doc = SQUAD.read_text()
    squad = tmp_path / "squad.json"
    squad.write_text(doc[:-1] + f', "extra": {_nested(depth)}}}')
    with pytest.raises(SquadFormatError, match=rf"^{squad}: field '<json>': JSON nested deeper than 100"):
        read_squad(squad)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"predictions": []})[:-1] + f', "x": {_nested(depth)}}}')
    with pytest.raises(NQRecordError, match=rf"^{preds}: predictions: JSON nested deeper than 100"):
        read_predictions(preds)


@pytest.mark.parametrize("name", ["nq.jsonl", "nq.jsonl.gz"])
def test_a_line_past_the_limit_names_file_and_line_and_can_be_skipped(tmp_path, name, monkeypatch):
    lines = _real_lines()
    longest = max(map(len, lines))  # 107 kB, with its newline
    # Every line fits but the longest (its content is longest - 1 bytes; the newline is not counted).
    monkeypatch.setenv(jsontext.MAX_LINE_BYTES_ENV, str(longest - 2))
    src = _write(tmp_path / name, b"".join(lines))
    at = 1 + max(range(len(lines)), key=lambda i: len(lines[i]))
    with pytest.raises(BadInputError) as info:
        list(read_examples(src))
    assert (info.value.line, info.value.field) == (at, "<line>")
    assert f"longer than {longest - 2} bytes" in str(info.value) and jsontext.MAX_LINE_BYTES_ENV in str(info.value)
    got = list(read_examples(src, max_bad_lines=1))
    assert len(got) == 9  # the lines after the long one are read whole
    monkeypatch.setenv(jsontext.MAX_LINE_BYTES_ENV, str(longest - 1))
    assert len(list(read_examples(src))) == 10


def test_a_bad_line_limit_setting_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv(jsontext.MAX_LINE_BYTES_ENV, "-5")
    with pytest.raises(UserError, match=r"TFQA_MAX_LINE_BYTES='-5': expected a positive number of bytes"):
        list(read_examples(HEAD10))


def _gzip_with_a_huge_line(path: Path, gigabytes: int) -> Path:
    """Two real lines, then one line of ``gigabytes`` GB, then a real line: the huge line is many
    gzip members of one compressed megabyte, so the file is small and written at once."""
    lines = _real_lines()
    megabyte = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = megabyte.compress(b"x" * (1 << 20)) + megabyte.flush()
    with open(path, "wb") as fh:
        fh.write(gzip.compress(lines[0] + lines[1] + b'{"example_id": 1, "junk": "', mtime=0))
        for _ in range(gigabytes << 10):
            fh.write(member)
        fh.write(gzip.compress(b'"}\n' + lines[2], mtime=0))
    return path


def test_a_huge_gzip_line_is_refused_before_it_is_held_in_memory(tmp_path):
    """A 2 GB line under a 1 GB address-space limit: one line naming file and line, where reading
    the line whole would end in MemoryError."""
    src = _gzip_with_a_huge_line(tmp_path / "huge.jsonl.gz", 2)
    limit = 1 << 30

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(jsontext.MAX_LINE_BYTES_ENV, None)
    preds = tmp_path / "p.json"
    preds.write_text('{"predictions": []}')
    proc = subprocess.run(
        [sys.executable, "-m", "tfqa.cli", "score", "--gold", src, "--predictions", preds],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=cap_memory,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        f"tfqa: {src}:3: field '<line>': longer than {jsontext.MAX_LINE_BYTES} bytes, the most a line may hold "
        f"(no real NQ line comes near; set {jsontext.MAX_LINE_BYTES_ENV} to raise it)"
    ]


def test_a_byte_order_mark_is_accepted_on_every_json_input(tmp_path):
    bom = jsontext.BOM
    for name in ("nq.jsonl", "nq.jsonl.gz"):
        src = _write(tmp_path / name, bom + HEAD10.read_bytes())
        assert [e.example_id for e in read_examples(src)] == [e.example_id for e in read_examples(HEAD10)]
    squad = _write(tmp_path / "squad.json", bom + SQUAD.read_bytes())
    assert len(read_squad(squad)) == len(read_squad(SQUAD)) == 6078
    preds = tmp_path / "p.json"
    first = next(read_examples(HEAD10))
    record = {
        "example_id": first.example_id,
        "long_answer": {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1},
        "long_answer_score": 1.0,
        "short_answers": [],
        "short_answers_score": 0.0,
        "yes_no_answer": "NONE",
    }
    preds.write_bytes(bom + json.dumps({"predictions": [record]}).encode())
    assert [p.example_id for p in read_predictions(preds)] == [first.example_id]


def test_a_non_utf8_predictions_file_names_file_and_line(tmp_path):
    preds = tmp_path / "p.json"
    preds.write_bytes(b'{"predictions": [\n{"example_id": "caf\xe9"}]}')
    with pytest.raises(NQRecordError) as info:
        read_predictions(preds)
    assert str(info.value) == f"{preds}:2: predictions: not valid UTF-8 at byte 37 (0xe9)"
