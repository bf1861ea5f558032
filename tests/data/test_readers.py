"""Readers of both NQ formats, original -> simplified conversion, and malformed-line reporting."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings

import pytest

from tfqa.data.convert import simplify_nq_example
from tfqa.data.readers import BadInputError, ReadReport, convert_file, is_html_word, parse_line, read_examples
from tfqa.data.records import AnswerClass

import nq_builders as nb

HEAD10_IDS = [
    "5655493461695504401",
    "5328212470870865242",
    "4435104480114867852",
    "5289242154789678439",
    "5489863933082811018",
    "3411244446249504947",
    "-2500044561429484630",
    "5611750702541347162",
    "4958098854057393062",
    "8796576945844451825",
]
HEAD10_CANDIDATES = [63, 37, 49, 481, 97, 146, 39, 71, 82, 60]
HEAD10_WORDS = [3778, 3948, 3215, 14004, 9989, 3454, 2225, 5026, 8267, 5901]
# example id -> (candidate index, [short answer words]) of the annotated answers
HEAD10_SHORT = {
    "5655493461695504401": (54, "a newsletter sent to an advertising firm 's customers"),
    "5328212470870865242": (15, "Tracy McConnell"),
    "5289242154789678439": (59, "Tom Brady"),
    "-2500044561429484630": (7, "Pom Klementieff"),
}
HEAD10_LONG_ONLY = {"4435104480114867852": 24, "4958098854057393062": 3}


@pytest.fixture(scope="module")
def head10():
    return list(read_examples(nb.HEAD10))


# -- the real Kaggle file ----------------------------------------------------------------------------
def test_head10_counts_ids_and_candidates(head10):
    report = ReadReport()
    exs = list(read_examples(nb.HEAD10, report=report))
    assert [e.example_id for e in exs] == HEAD10_IDS
    assert [len(e.candidates) for e in exs] == HEAD10_CANDIDATES
    assert [len(e.words) for e in exs] == HEAD10_WORDS
    assert (report.lines, report.examples, report.skipped) == (10, 10, [])
    big = exs[3]
    assert len(big.candidates) == 481 and big.question == "who had the most wins in the nfl"
    raw = nb.head10_objs()
    for ex, obj in zip(exs, raw):
        assert ex.words == obj["document_text"].split(" ")
        assert ex.url == obj["document_url"]
        assert [(c.start_token, c.end_token, c.top_level) for c in ex.candidates] == [
            (c["start_token"], c["end_token"], c["top_level"]) for c in obj["long_answer_candidates"]
        ]
        # the simplified format has no byte offsets
        assert ex.word_start_bytes is None and ex.word_end_bytes is None
        assert all(c.start_byte == -1 == c.end_byte for c in ex.candidates)


def test_head10_annotation_classes(head10):
    assert all(len(e.annotations) == 1 for e in head10)
    long = [e for e in head10 if e.annotations[0].has_long]
    short = [e for e in head10 if e.annotations[0].short_answers]
    null = [e for e in head10 if e.positive_annotation() is None]
    assert (len(long), len(short), len(null)) == (6, 4, 4)
    for ex in head10:
        ann = ex.annotations[0]
        assert ann.yes_no == "NONE"
        if ex.example_id in HEAD10_SHORT:
            ci, text = HEAD10_SHORT[ex.example_id]
            assert ann.answer_class() == AnswerClass.SHORT and ann.candidate_index == ci
            (sp,) = ann.short_answers
            assert " ".join(ex.words[sp.start_token : sp.end_token]) == text
            cand = ex.candidates[ci]
            assert (ann.long_answer.start_token, ann.long_answer.end_token) == (cand.start_token, cand.end_token)
        elif ex.example_id in HEAD10_LONG_ONLY:
            assert ann.answer_class() == AnswerClass.LONG and ann.candidate_index == HEAD10_LONG_ONLY[ex.example_id]
            assert not ann.has_short
        else:
            assert ann.long_answer is None and ann.candidate_index == -1 and not ann.short_answers


def test_head10_html_flags(head10):
    seen = set()
    for ex in head10:
        assert len(ex.is_html) == len(ex.words)
        for w, h in zip(ex.words, ex.is_html):
            # in these documents every "<...>" word is a tag and no text word looks like one
            assert h == (len(w) > 2 and w[0] == "<" and w[-1] == ">"), w
            if h:
                seen.add(w)
        for c in ex.candidates:  # a candidate is one element: it opens and closes with a tag
            assert ex.is_html[c.start_token] and ex.is_html[c.end_token - 1]
            assert ex.words[c.end_token - 1].startswith("</")
    assert {"<P>", "</P>", "<Table>", "<Tr>", "<Td>", "</Td>", "<Li>", "<H1>", '<Th_colspan="2">', "<Dd>", "<Dt>"} <= seen
    for w in ["<P>", "</Td>", '<Th_colspan="12">', "<H3>", "<br/>"]:
        assert is_html_word(w), w
    for w in ["<", ">", "<=", "a<b>", "<3>", "", "P", "(hide)", "< P >"]:
        assert not is_html_word(w), w


def test_gzip_and_plain_told_apart_by_content_not_name(tmp_path, head10):
    gz_named_plain = tmp_path / "head.jsonl"
    gz_named_plain.write_bytes(gzip.compress(nb.HEAD10.read_bytes()))
    plain_named_gz = tmp_path / "head.jsonl.gz"
    shutil.copy(nb.HEAD10, plain_named_gz)
    for p in (gz_named_plain, plain_named_gz):
        exs = list(read_examples(p))
        assert [e.example_id for e in exs] == HEAD10_IDS
        assert [e.words for e in exs] == [e.words for e in head10]


def test_gzip_read_closes_its_file(tmp_path):
    p = nb.write_jsonl(tmp_path / "s.jsonl.gz", [nb.sample_example()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list(read_examples(p))) == 1
        import gc

        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, (
        "BUG tfqa/data/readers.py open_binary: gzip.GzipFile(fileobj=raw) does not close `raw` when the "
        f"GzipFile is closed, so every .gz read leaks its file handle until GC: {leaks}"
    )


def test_blank_lines_keep_line_numbers(tmp_path):
    good = nb.dumps(nb.sample_example(1))
    bad = nb.dumps(nb.mutated(nb.sample_example(2), lambda o: o.pop("question_text")))
    p = nb.write_lines(tmp_path / "b.jsonl", [good, b"\n", b"   \n", bad])
    with pytest.raises(BadInputError) as e:
        list(read_examples(p))
    assert (e.value.line, e.value.field) == (4, "question_text")


def test_kaggle_test_lines_without_annotations(tmp_path):
    obj = nb.simplified_form(nb.sample_doc().example(5, "where is the café"))
    assert "annotations" not in obj
    (ex,) = read_examples(nb.write_jsonl(tmp_path / "t.jsonl", [obj]))
    assert ex.annotations == [] and ex.positive_annotation() is None
    assert len(ex.candidates) == 10


# -- the original format --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["orig.jsonl", "orig.jsonl.gz"])
def test_original_format_bytes_and_five_annotations(tmp_path, name):
    objs = [nb.sample_example(101), *nb.random_dataset(3, seed=4, n_annotations=5)]
    p = nb.write_jsonl(tmp_path / name, objs)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    exs = list(read_examples(p))
    assert [e.example_id for e in exs] == [str(o["example_id"]) for o in objs]
    for ex, obj in zip(exs, objs):
        html = obj["document_html"].encode("utf-8")
        toks = obj["document_tokens"]
        # A blank inside a token (<Th colspan="2">) reads as "_", as in the simplified format.
        assert ex.words == [t["token"].replace(" ", "_") for t in toks]
        assert ex.is_html == [t["html_token"] for t in toks]
        assert ex.title == obj["document_title"]
        assert ex.word_start_bytes == [t["start_byte"] for t in toks]
        assert ex.word_end_bytes == [t["end_byte"] for t in toks]
        for t, s, e in zip(toks, ex.word_start_bytes, ex.word_end_bytes):
            assert html[s:e].decode("utf-8") == t["token"]
        for c, oc in zip(ex.candidates, obj["long_answer_candidates"]):
            assert (c.start_byte, c.end_byte) == (oc["start_byte"], oc["end_byte"])
            assert html[c.start_byte : c.end_byte].decode() == " ".join(t["token"] for t in toks[c.start_token : c.end_token])
        assert len(ex.annotations) == 5
        for a, oa in zip(ex.annotations, obj["annotations"]):
            assert a.annotation_id == str(oa["annotation_id"])
            for sp, osp in zip(a.short_answers, oa["short_answers"]):
                assert (sp.start_byte, sp.end_byte) == (osp["start_byte"], osp["end_byte"])
                assert html[sp.start_byte : sp.end_byte].decode().split(" ") == ex.words[sp.start_token : sp.end_token]

    # the fixed example holds one annotation of each kind
    ex = exs[0]
    classes = [a.answer_class() if a.has_long else None for a in ex.annotations]
    assert classes == [None, AnswerClass.SHORT, AnswerClass.LONG, AnswerClass.NO, AnswerClass.YES]
    assert [a.candidate_index for a in ex.annotations] == [-1, 0, 3, 9, 8]
    assert ex.positive_annotation() is ex.annotations[1]
    spans = [" ".join(ex.words[s.start_token : s.end_token]) for s in ex.annotations[1].short_answers]
    assert spans == ["1893", "Jean-Luc Ångström"]
    assert not ex.candidates[8].top_level and ex.candidates[9].top_level
    # non-ASCII words: byte offsets are not character offsets
    i = ex.words.index("Zürich", 3)
    assert ex.word_end_bytes[i] - ex.word_start_bytes[i] == len("Zürich".encode()) == len("Zürich") + 1


# -- conversion ------------------------------------------------------------------------------------
def _strip_bytes(ex):
    return (
        ex.example_id,
        ex.question,
        ex.url,
        ex.words,
        ex.is_html,
        [(c.start_token, c.end_token, c.top_level) for c in ex.candidates],
        [
            (
                a.long_answer and (a.long_answer.start_token, a.long_answer.end_token),
                a.candidate_index,
                [(s.start_token, s.end_token) for s in a.short_answers],
                a.yes_no,
                a.annotation_id,
            )
            for a in ex.annotations
        ],
    )


@pytest.mark.parametrize("dst_name", ["simple.jsonl", "simple.jsonl.gz"])
def test_convert_file_matches_original(tmp_path, dst_name):
    objs = [nb.sample_example(101), *nb.random_dataset(4, seed=5, n_annotations=5)]
    src = nb.write_jsonl(tmp_path / "orig.jsonl.gz", objs)
    dst = tmp_path / dst_name
    report = convert_file(src, dst)
    assert (report.lines, report.examples, report.skipped) == (5, 5, [])
    assert (dst.read_bytes()[:2] == b"\x1f\x8b") == dst_name.endswith(".gz")
    assert not (tmp_path / f"{dst_name}.tmp").exists()
    with (gzip.open if dst_name.endswith(".gz") else open)(dst, "rt", encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh]
    for line, obj in zip(lines, objs):
        assert line["document_text"].split(" ") == [t["token"].replace(" ", "_") for t in obj["document_tokens"]]
        assert line == nb.simplified_form(obj)
        assert "document_tokens" not in line and "document_html" not in line
    orig = list(read_examples(src))
    simple = list(read_examples(dst))
    assert [_strip_bytes(e) for e in simple] == [_strip_bytes(e) for e in orig]


def test_simplify_nq_example_keeps_html_tokens():
    obj = nb.sample_example()
    s = simplify_nq_example(obj)
    words = s["document_text"].split(" ")
    assert words[:3] == ["<H1>", "Zürich", "café"]
    assert '<Th_colspan="2">' in words and "</Li>" in words
    assert s == nb.simplified_form(obj)


def test_convert_file_bad_lines(tmp_path):
    good = [nb.dumps(o) for o in nb.random_dataset(3, seed=6)]
    simplified_line = nb.dumps(nb.simplified_form(nb.sample_example(77)))
    src = nb.write_lines(tmp_path / "o.jsonl", [good[0], b"{not json\n", good[1], simplified_line, good[2]])
    with pytest.raises(BadInputError) as e:
        convert_file(src, tmp_path / "x.jsonl")
    assert (e.value.line, e.value.field) == (2, "<json>")
    assert not (tmp_path / "x.jsonl").exists()
    report = convert_file(src, tmp_path / "y.jsonl", max_bad_lines=2)
    assert (report.lines, report.examples) == (5, 3)
    assert [(s.line, s.field) for s in report.skipped] == [(2, "<json>"), (4, "document_tokens")]
    assert len((tmp_path / "y.jsonl").read_text().splitlines()) == 3
    with pytest.raises(BadInputError) as e:
        convert_file(src, tmp_path / "z.jsonl", max_bad_lines=1)
    assert e.value.line == 4


# -- malformed lines ----------------------------------------------------------------------------
_set = nb.setter
malformed_cases = nb.malformed_cases
_malformed_file = nb.malformed_file


@pytest.mark.parametrize("name", list(malformed_cases()))
def test_malformed_line_names_file_line_field(tmp_path, name):
    path, field = _malformed_file(tmp_path, name, gz=name == "non_utf8")
    it = read_examples(path)
    assert next(it).example_id == "1001" and next(it).example_id == "1002"
    with pytest.raises(BadInputError) as e:
        next(it)
    err = e.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(err).startswith(f"{path}:3: field '{field}': ")
    if name == "duplicate_id":
        assert "line 1" in err.reason


@pytest.mark.parametrize("name", ["bad_json", "non_utf8", "duplicate_id", "span_outside_document"])
def test_max_bad_lines_skips_and_reports(tmp_path, name):
    path, field = _malformed_file(tmp_path, name)
    report = ReadReport()
    exs = list(read_examples(path, max_bad_lines=1, report=report))
    assert [e.example_id for e in exs] == ["1001", "1002", "1003"]
    assert (report.lines, report.examples) == (4, 3)
    assert [(s.path, s.line, s.field) for s in report.skipped] == [(str(path), 3, field)]


def test_max_bad_lines_raises_on_the_next_one(tmp_path):
    cases = malformed_cases()
    lines = [
        nb.dumps(nb.sample_example(1001)),
        cases["bad_json"][0],
        cases["non_utf8"][0],
        nb.dumps(nb.sample_example(1002)),
        cases["candidate_index_out_of_range"][0],
        cases["duplicate_id"][0],
    ]
    path = nb.write_lines(tmp_path / "many.jsonl", lines)
    report = ReadReport()
    with pytest.raises(BadInputError) as e:
        list(read_examples(path, max_bad_lines=3, report=report))
    assert (e.value.line, e.value.field) == (6, "example_id")
    assert [s.line for s in report.skipped] == [2, 3, 5]
    report = ReadReport()
    assert len(list(read_examples(path, max_bad_lines=4, report=report))) == 2
    assert [s.field for s in report.skipped] == ["<json>", "<line>", "annotations[2].long_answer.candidate_index", "example_id"]


@pytest.mark.parametrize(
    "desc, mutate, field",
    [
        ("document_tokens[3].start_byte is null", _set(["document_tokens", 3, "start_byte"], None), "document_tokens[3]"),
        ("document_tokens[3].end_byte is a string", _set(["document_tokens", 3, "end_byte"], "12a"), "document_tokens[3]"),
        (
            "a short answer's start_byte is null",
            _set(["annotations", 1, "short_answers", 0, "start_byte"], None),
            "annotations[1].short_answers[0].start_byte",
        ),
        (
            "a candidate's end_byte is a string",
            _set(["long_answer_candidates", 0, "end_byte"], "x"),
            "long_answer_candidates[0].end_byte",
        ),
    ],
    ids=["token-start-null", "token-end-str", "short-start-null", "candidate-end-str"],
)
def test_bad_byte_offsets_are_bad_input(tmp_path, desc, mutate, field):
    """The readers promise every problem as BadInputError naming file, line and field."""
    raw = nb.dumps(nb.mutated(nb.sample_example(1), mutate))
    path = nb.write_lines(tmp_path / "o.jsonl", [raw])
    try:
        list(read_examples(path))
    except BadInputError as err:
        assert err.line == 1 and err.field.startswith(field), (err.line, err.field)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(
            f"BUG tfqa/data/readers.py: {desc} raises {type(exc).__name__}({exc}) instead of BadInputError "
            f"(parse_example's int(t.get('start_byte')) / _Fields.span's int(start_byte) are unchecked)"
        )
    else:
        pytest.fail(f"{desc} was accepted")


def test_parse_line_root_must_be_object():
    for raw in (b"[1, 2]", b"null", b'"text"'):
        with pytest.raises(BadInputError) as e:
            parse_line(raw, "f.jsonl", 9)
        assert (e.value.line, e.value.field) == (9, "<root>")
