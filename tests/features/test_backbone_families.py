"""Every tokenizer family reads a document word as it reads it in running text.

The featurizer encodes each word on its own (so candidates are slices of one page's pieces); the
reference here encodes the whole page at once, ``". " + " ".join(words)``, and gives each word the
pieces whose character offsets fall in it (or in the space before it). On the real NQ lines, for
WordPiece, SentencePiece unigram (ALBERT and DeBERTa-v3 style) and byte-level BPE (RoBERTa and
ModernBERT style) tokenizers trained on those lines, every kept word of every candidate must be
exactly its running-text pieces, tag words their tag token, the question its running-text pieces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from bisect import bisect_right
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tfqa.core.errors import refusal_message
from tfqa.data.records import Example
from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.tokenization import load_tokenizer, tokenizer_kind, word_prefix

import backbone_assets as ba
import nq_builders as nb

REAL_CANDIDATES = 1361  # every long-answer candidate of the 10 Kaggle lines and the FARM line
KIND = {
    "bert": "wordpiece",
    "albert": "sentencepiece",
    "deberta-v3": "sentencepiece",
    "roberta": "byte-level BPE",
    "modernbert": "byte-level BPE",
}
SENTINEL = "."
"""Stands for the text before a word: in running text every word follows a space."""


def running_text_pieces(tok, words: list[str]) -> list[list[int]]:
    """Each word's ids in ``". w0 w1 ..."`` encoded in one go: a piece belongs to the word whose
    characters (or the space before them) hold its first character."""
    text = SENTINEL + "".join(" " + w for w in words)
    bounds, at = [], len(SENTINEL)
    for w in words:
        bounds.append(at)  # the space before the word
        at += 1 + len(w)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    out: list[list[int]] = [[] for _ in words]
    for piece, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]):
        k = bisect_right(bounds, start) - 1
        if k >= 0:
            out[k].append(piece)
    return out


class PageReference:
    """Expected ids of each word of one page: its tag token, else its running-text pieces (one
    ``[UNK]`` for a word the tokenizer reduces to nothing, as the featurizer documents)."""

    def __init__(self, raw_tok, tok, mode: str, ex: Example):
        wordpiece = tokenizer_kind(tok) == "wordpiece"
        self.pieces = running_text_pieces(raw_tok, ex.words)
        self.kinds = []
        for i, (word, html) in enumerate(zip(ex.words, ex.is_html)):
            tag = nb.tag_token(word, html, mode, wordpiece)
            if tag is not None:
                tag_id = tok.convert_tokens_to_ids(tag)
                # An added token, but for WordPiece's ``<``, a piece of the vocabulary.
                assert tag_id != tok.unk_token_id and (tag == "<" or tag_id >= len(raw_tok)), tag
                self.pieces[i], kind = [tag_id], tag
            elif not self.pieces[i]:
                self.pieces[i], kind = [tok.unk_token_id], "empty"
            else:
                kind = "text"
            self.kinds.append(kind)


@pytest.fixture(scope="module")
def backbones(family_backbones):
    return family_backbones


@pytest.mark.parametrize("mode", ["tfqa", "original"])
@pytest.mark.parametrize("family", ba.FAMILIES)
def test_each_words_pieces_are_its_running_text_pieces_on_real_lines(backbones, family, mode):
    raw = AutoTokenizer.from_pretrained(str(backbones.dirs[family]))
    tok = load_tokenizer(backbones.dirs[family], mode)
    assert tokenizer_kind(tok) == KIND[family]
    cfg = FeatureConfig(html_tokens=mode)
    featurizer = CandidateFeaturizer(tok, cfg)
    counts: Counter = Counter()
    for ex in backbones.examples:
        ref = PageReference(raw, tok, mode, ex)
        question = running_text_pieces(raw, ex.question.split())
        prefix = [tok.cls_token_id, *[p for w in question for p in w][: cfg.max_question_len], tok.sep_token_id]
        cols, _ = featurizer.featurize(ex, list(range(len(ex.candidates))))
        for r, ci in enumerate(cols["candidate_index"]):
            ids, pos = cols["input_ids"][r].tolist(), cols["word_positions"][r].tolist()
            first, n_kept = ex.candidates[ci].start_token, cols["n_kept"][r]
            where = (family, mode, ex.example_id, ci)
            assert ids[: len(prefix)] == prefix and ids[-1] == tok.sep_token_id, where
            want = ref.pieces[first : first + n_kept]
            assert len(pos) == n_kept and pos[:1] == [len(prefix)][:n_kept], where
            for k, p in enumerate(pos):
                assert ids[p : p + len(want[k])] == want[k], (*where, ex.words[first + k])
            assert len(prefix) + sum(map(len, want)) == len(ids) - 1, where  # nothing else in the input
            counts["rows"] += 1
            # A candidate opens with its tag: its first text word is the one after.
            counts["first_text_words"] += n_kept > 1 and ref.kinds[first + 1] == "text"
            counts.update(ref.kinds[first : first + n_kept])
    assert counts["rows"] == REAL_CANDIDATES
    assert counts["text"] > 40_000 and counts["first_text_words"] > 400
    other = "<Tag>" if mode == "tfqa" else ("<" if family == "bert" else "qw99")
    assert counts[other] > 1000 and counts["<P>" if mode == "tfqa" else "qw1"] > 100


@pytest.mark.parametrize("family", ba.FAMILIES)
def test_a_word_alone_reads_as_in_running_text_only_with_the_familys_prefix(backbones, family):
    """Why the rule exists: byte-level BPE words tokenised bare lose their word-start marker on
    most words; with the prefix (and for the other families without one) none does."""
    raw = AutoTokenizer.from_pretrained(str(backbones.dirs[family]))
    ex = backbones.examples[0]
    words = [w for w, h in zip(ex.words, ex.is_html) if not h]
    in_text = running_text_pieces(raw, words)
    bare = raw(words, add_special_tokens=False)["input_ids"]
    prefixed = raw([word_prefix(raw) + w for w in words], add_special_tokens=False)["input_ids"]
    assert word_prefix(raw) == (" " if KIND[family] == "byte-level BPE" else "")
    assert sum(a != b for a, b in zip(prefixed, in_text)) == 0
    differ = sum(a != b for a, b in zip(bare, in_text))
    if KIND[family] == "byte-level BPE":
        assert differ > 0.9 * len(words), differ
        assert raw.convert_ids_to_tokens(in_text[1])[0].startswith("Ġ")
    else:
        assert differ == 0


# ------------------------------------------------------------------------------------ refusals
def _gpt2_like(dst, src, *, with_config: bool):
    """A byte-level BPE tokenizer without [CLS]/[SEP] (GPT-2's special tokens), and optionally a
    decoder-only GPT-2 config beside it."""
    from transformers import GPT2Config

    dst.mkdir()
    shutil.copy(src / "tokenizer.json", dst / "tokenizer.json")
    names = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (dst / "tokenizer_config.json").write_text(json.dumps(names))
    if with_config:
        config = GPT2Config(vocab_size=ba.VOCAB_SIZE, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=2)
        config.save_pretrained(str(dst))
    return dst


def _python_tokenizer(dst, src):
    dst.mkdir()
    (dst / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "ByT5Tokenizer"}))  # no Rust version exists
    return dst


def _encoder_decoder(dst, src):
    from transformers import BartConfig

    shutil.copytree(src, dst)
    (dst / "model.safetensors").unlink()
    BartConfig(vocab_size=ba.VOCAB_SIZE, d_model=32, encoder_layers=1, decoder_layers=1).save_pretrained(str(dst))
    return dst


BAD_BACKBONES = {
    "decoder-only": (
        lambda d, src: _gpt2_like(d, src, with_config=True),
        "config.json: model_type 'gpt2' is not an encoder (no masked-LM model of this type in transformers, "
        "e.g. a decoder-only model); tfqa needs an encoder such as BERT, RoBERTa, DeBERTa or ModernBERT",
    ),
    "no [CLS]/[SEP]": (
        lambda d, src: _gpt2_like(d, src, with_config=False),
        "the tokenizer has no cls_token and no sep_token (tokenizer_config.json), which every tfqa input needs",
    ),
    "python tokenizer": (
        _python_tokenizer,
        "no fast tokenizer: ByT5Tokenizer is a Python tokenizer; tfqa needs one transformers loads as a fast "
        "(Rust) tokenizer, e.g. from a tokenizer.json in this folder",
    ),
    "encoder-decoder": (_encoder_decoder, "config.json: model_type 'bart' is an encoder-decoder model; tfqa needs an encoder"),
}


@pytest.mark.parametrize("case", BAD_BACKBONES)
def test_a_backbone_tfqa_cannot_read_is_one_line_naming_it_before_any_data_is_built(backbones, tmp_path, case):
    make, reason = BAD_BACKBONES[case]
    bad = make(tmp_path / "backbone", backbones.dirs["roberta"])
    with pytest.raises(ValueError) as err:
        build_features(nb.HEAD10, bad, tmp_path / "features", BuildConfig(workers=1), progress=False)
    assert refusal_message(err.value) == f"{bad}: {reason}"
    assert not (tmp_path / "features").exists()


@pytest.mark.slow  # ~30 s: a subprocess importing MLflow and transformers
def test_prepare_refuses_a_decoder_only_backbone_in_one_line(backbones, tmp_path):
    """Through the real entry point: one ``tfqa:`` line on stderr, no feature cache."""
    bad = _gpt2_like(tmp_path / "gpt2", backbones.dirs["roberta"], with_config=True)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(repo / "entrypoints" / "prepare.py"), "--input", str(nb.HEAD10), "--tokenizer", str(bad)]
        + ["--cache-dir", str(tmp_path / "features"), "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tfqa: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines == [f"tfqa: {bad}: {BAD_BACKBONES['decoder-only'][1]}"], proc.stderr[-3000:]
    assert not (tmp_path / "features").exists()


def test_the_feature_fingerprint_changes_with_the_word_rule(backbones, tmp_path):
    """Byte-level BPE caches built before words got their space must not be reused; WordPiece and
    SentencePiece caches, which the rule leaves as they were, keep their fingerprints."""
    from tfqa.features.cache import file_digest, fingerprint
    from tfqa.features.tokenization import tokenizer_fingerprint

    cfg = BuildConfig(workers=1, max_lines=1)
    for family, prefix in (("bert", ""), ("roberta", " ")):
        tok = load_tokenizer(backbones.dirs[family])
        old = fingerprint(file_digest(nb.HEAD10), tokenizer_fingerprint(tok), cfg, None)
        info = build_features(nb.HEAD10, backbones.dirs[family], tmp_path / "features", cfg, progress=False)
        assert info.manifest["tokenizer"]["word_prefix"] == prefix
        assert (info.fingerprint == old) == (prefix == ""), family


def test_a_deberta_v3_folder_with_only_spm_model_loads_as_its_checkpoint_ships(backbones, tmp_path):
    """deberta-v3-large ships ``spm.model`` and no tokenizer.json: transformers converts it to a
    fast tokenizer, whose words read as in running text with no prefix, as the trained one's."""
    import sentencepiece as spm
    from transformers import DebertaV2Config

    ex = backbones.examples[0]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(ba.text_lines(backbones.examples[:3])),
        model_prefix=str(tmp_path / "spm"),
        vocab_size=2000,
        model_type="unigram",
        **dict(pad_id=0, bos_id=1, eos_id=2, unk_id=3),  # deberta-v3's ids
        **dict(pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]"),
        user_defined_symbols=["[MASK]"],
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    (tmp_path / "spm.vocab").unlink()
    names = dict(bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]")
    tcfg = {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "mask_token": "[MASK]", **names}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tcfg))
    config = DebertaV2Config(vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, type_vocab_size=0)
    config.save_pretrained(str(tmp_path))
    tok = load_tokenizer(tmp_path)
    assert type(tok).__name__ == "DebertaV2Tokenizer" and tok.is_fast and not (tmp_path / "tokenizer.json").exists()
    assert (tokenizer_kind(tok), word_prefix(tok), tok.cls_token_id, tok.sep_token_id) == ("sentencepiece", "", 1, 2)
    words = [w for w, h in zip(ex.words, ex.is_html) if not h]
    featurizer = CandidateFeaturizer(tok, FeatureConfig())
    assert featurizer._word_ids(words) == [tuple(p) for p in running_text_pieces(tok, words)]
