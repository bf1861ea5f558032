"""SentencePiece end to end: a tiny ALBERT on a real SentencePiece model beside a tiny BERT on the
real bert-base-uncased WordPiece vocabulary, through word maps, prepare, train, scoring, the
word-level ensemble, decoding and the official NQ metric.

The ALBERT variants and the BERT + ALBERT ensemble rest on one contract: every kept document word
is read at its first subword (under SentencePiece the piece carrying ``▁``), so outputs are indexed
by document word whatever the tokenizer. The word maps are checked against tokenising each word on
its own, on every candidate of the real Kaggle lines; the trained models' outputs are then lined
up, averaged and decoded back to document words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import small_page_nq_files

from tfqa.data.readers import read_examples
from tfqa.data.records import AnswerClass, Example
from tfqa.evaluation.dev import DevSet, score_outputs
from tfqa.features.cache import BuildConfig, build_features
from tfqa.features.dataset import CandidateDataset, FeatureStore
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.features.tokenization import load_tokenizer, tokenizer_fingerprint
from tfqa.inference import decode as dec
from tfqa.inference.batch_scoring import score_candidates
from tfqa.inference.ensemble import align, ensemble
from tfqa.modeling.model import CandidateQAModel
from tfqa.stages.prepare import PrepareConfig, run_prepare
from tfqa.training.loop import train

import nq_builders as nb
import spm_assets as sa
from tiny_training import RecordingLogger, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REAL_CANDIDATES = 1361  # every long-answer candidate of the 10 Kaggle lines and the FARM line
BACKBONES = ("bert", "albert")


# ------------------------------------------------------------------------------------ fixtures
@dataclass
class Backbones:
    dirs: dict[str, Path]
    spm_dir: Path
    examples: list[Example]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> Backbones:
    tmp = tmp_path_factory.mktemp("backbones")
    examples = list(read_examples(nb.HEAD10)) + list(read_examples(nb.FARM))
    albert, spm_dir = sa.write_albert_backbone(tmp / "albert", examples)
    return Backbones({"bert": sa.write_bert_backbone(tmp / "bert"), "albert": albert}, spm_dir, examples)


# ------------------------------------------------------------------------------------ word references


class WordReference:
    """Expected ids of a document word: its tag token, or the word tokenised alone."""

    def __init__(self, tok, mode: str):
        self.tok, self.mode = tok, mode
        self.wordpiece = type(tok.backend_tokenizer.model).__name__ == "WordPiece"
        self._text: dict[str, tuple[list[int], str]] = {}

    def ids(self, ex: Example, i: int) -> tuple[list[int], str]:
        """(ids, kind): kind is the tag token, ``text``, or ``empty`` for a word the tokenizer
        drops entirely (a BOM in the real data), which the featurizer documents as one <unk>."""
        word = ex.words[i]
        tag = nb.tag_token(word, ex.is_html[i], self.mode, self.wordpiece)
        if tag is not None:
            tag_id = self.tok.convert_tokens_to_ids(tag)
            assert tag_id != self.tok.unk_token_id, f"{tag} is not in the vocabulary"
            return [tag_id], tag
        if word not in self._text:
            ids = self.tok(word, add_special_tokens=False)["input_ids"]
            self._text[word] = (list(ids), "text") if ids else ([self.tok.unk_token_id], "empty")
        return self._text[word]


@dataclass
class Row:
    example_id: str
    candidate_index: int
    word_offset: int
    n_words: int
    n_kept: int
    input_ids: list[int]
    positions: list[int]


def rows_of_columns(cols: dict[str, list]) -> Iterator[Row]:
    for r in range(len(cols["candidate_index"])):
        yield Row(
            cols["example_id"][r],
            cols["candidate_index"][r],
            cols["word_offset"][r],
            cols["n_words"][r],
            cols["n_kept"][r],
            cols["input_ids"][r].tolist(),
            cols["word_positions"][r].tolist(),
        )


def rows_of_store(store: FeatureStore) -> Iterator[Row]:
    meta = store.meta
    for r in range(len(store)):
        m = meta.iloc[r]
        yield Row(
            str(m["example_id"]),
            int(m["candidate_index"]),
            int(m["word_offset"]),
            int(m["n_words"]),
            int(m["n_kept"]),
            store.input_ids(r).tolist(),
            store.word_positions(r).tolist(),
        )


def check_row(ref: WordReference, ex: Example, row: Row, cfg: FeatureConfig, counts: Counter) -> None:
    """Every kept word's position is its first subword; the kept words' pieces fill the input."""
    tok = ref.tok
    where = (ex.example_id, row.candidate_index)
    cand = ex.candidates[row.candidate_index]
    assert (row.word_offset, row.n_words) == (cand.start_token, cand.end_token - cand.start_token), where
    question = tok(ex.question, add_special_tokens=False)["input_ids"]
    counts["question_cut"] += len(question) > cfg.max_question_len
    question = question[: cfg.max_question_len]
    prefix = [tok.cls_token_id, *question, tok.sep_token_id]
    ids, pos = row.input_ids, row.positions
    assert ids[: len(prefix)] == prefix and ids[-1] == tok.sep_token_id and len(ids) <= cfg.max_seq_len, where
    assert len(pos) == row.n_kept, where
    want = [ref.ids(ex, cand.start_token + k) for k in range(row.n_kept)]
    lengths = [len(w) for w, _ in want]
    # The first word starts right after [SEP]; consecutive first subwords lie exactly one word's
    # pieces apart.
    assert pos[:1] == [len(prefix)][: row.n_kept] and np.diff(pos).tolist() == lengths[:-1], where
    for k, (p, (w, _)) in enumerate(zip(pos, want)):
        assert ids[p : p + len(w)] == w, (*where, k, ex.words[cand.start_token + k])
    assert len(prefix) + sum(lengths) == len(ids) - 1, where  # nothing but the kept words' pieces
    if row.n_kept < row.n_words:  # truncated: the next word's pieces would not have fitted
        nxt, _ = ref.ids(ex, cand.start_token + row.n_kept)
        assert len(ids) + len(nxt) > cfg.max_seq_len, where
        counts["truncated"] += 1
    if not ref.wordpiece:
        # SentencePiece marks word starts itself: the "▁" pieces are exactly the text words' first
        # pieces (tag tokens and a dropped word's <unk> carry none), so the map agrees with it.
        pieces = tok.convert_ids_to_tokens(ids)
        marked = [p for p in range(len(prefix), len(ids) - 1) if pieces[p].startswith("▁")]
        assert marked == [p for p, (_, kind) in zip(pos, want) if kind == "text"], where
    counts["rows"] += 1
    counts["words"] += row.n_kept
    counts["multi_piece"] += sum(n > 1 for n in lengths)
    counts.update(kind for _, kind in want)


# ------------------------------------------------------------------------------------ 1. the tokenizer
def test_albert_tokenizer_is_the_trained_sentencepiece_model(backbones):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(backbones.spm_dir / "spiece.model"))
    assert sp.get_piece_size() == sa.SPM_VOCAB_SIZE
    assert {p: sp.piece_to_id(p) for p in sa.ALBERT_SPECIAL_IDS} == sa.ALBERT_SPECIAL_IDS
    albert_dir = backbones.dirs["albert"]
    assert not (albert_dir / "spiece.model").exists()  # the backbone's tokenizer is its tokenizer.json alone
    tok = AutoTokenizer.from_pretrained(str(albert_dir))
    converted = AutoTokenizer.from_pretrained(str(backbones.spm_dir))
    assert type(tok).__name__ == "AlbertTokenizer" and tok.is_fast
    assert type(tok.backend_tokenizer.model).__name__ == "Unigram"
    assert len(tok) == sa.SPM_VOCAB_SIZE and tok.get_vocab() == converted.get_vocab()
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(converted)
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 1, 2, 3, 4)
    assert tok("who sang", "the song")["input_ids"][0] == 2 and tok("who sang", "the song")["input_ids"].count(3) == 2

    words = sorted({w for ex in backbones.examples for w, h in zip(ex.words, ex.is_html) if not h})
    encoded = tok(words, add_special_tokens=False)["input_ids"]
    assert encoded == converted(words, add_special_tokens=False)["input_ids"]  # save_pretrained round trip
    norm = sa.albert_prenormalizer()
    same_as_spm = unk = 0
    for word, ids in zip(words, encoded):
        pieces = tok.convert_ids_to_tokens(ids)
        if not pieces:  # a BOM: the normaliser leaves nothing
            continue
        assert pieces[0].startswith("▁") and not any(p.startswith("▁") for p in pieces[1:]), (word, pieces)
        same_as_spm += pieces == sp.encode(norm.normalize_str(word), out_type=str)
        unk += tok.unk_token_id in ids
    # The transformers tokenizer is the sentencepiece model: same pieces on (nearly) every word;
    # the few differences are tied segmentations and Hangul, which transformers' NFKD splits into
    # jamo the piece set never saw.
    assert same_as_spm >= 0.999 * len(words) and unk <= 0.001 * len(words)
    assert np.mean([len(ids) > 1 for ids in encoded]) > 0.5  # real subword segmentation, not whole words
    # ALBERT has no single-piece "<", hence the tenth added token of the original vocabulary.
    albert_original = load_tokenizer(albert_dir, "original")
    assert albert_original.tokenize("<") == ["▁", "<"] and albert_original.convert_tokens_to_ids("qw99") == sa.SPM_VOCAB_SIZE + 9


def test_both_backbone_folders_load_as_tfqa_models(backbones):
    for kind, mode, n_added in (("albert", "original", 10), ("albert", "tfqa", 10), ("bert", "original", 9)):
        t = load_tokenizer(backbones.dirs[kind], mode)
        model = CandidateQAModel.from_backbone(backbones.dirs[kind], vocab_size=len(t))
        base = sa.SPM_VOCAB_SIZE if kind == "albert" else sa.BERT_VOCAB_SIZE
        assert model.encoder.config.model_type == kind and len(t) == model.vocab_size == base + n_added
        ids = torch.tensor([t("who sang", "the song")["input_ids"]])
        cls, start, end = model(ids)
        assert cls.shape == (1, 5) and start.shape == end.shape == ids.shape


# ------------------------------------------------------------------------------------ 2. word maps
@pytest.mark.parametrize("mode", ["tfqa", "original"])
@pytest.mark.parametrize("kind", BACKBONES)
def test_word_positions_are_each_words_first_subword_on_real_lines(backbones, kind, mode):
    tok = load_tokenizer(backbones.dirs[kind], mode)
    cfg = FeatureConfig(html_tokens=mode)
    featurizer = CandidateFeaturizer(tok, cfg)
    ref = WordReference(tok, mode)
    counts: Counter = Counter()
    for ex in backbones.examples:
        cols, _ = featurizer.featurize(ex, list(range(len(ex.candidates))))
        for row in rows_of_columns(cols):
            check_row(ref, ex, row, cfg, counts)
    assert counts["rows"] == REAL_CANDIDATES
    # Long real candidates get cut, and many words span several pieces (a fifth under SentencePiece).
    assert counts["truncated"] > 10 and counts["multi_piece"] > 2000
    other = "<Tag>" if mode == "tfqa" else ("<" if kind == "bert" else "qw99")
    # Closing tags and non-structural tags are the commonest tag words; the structural ones appear too.
    assert counts[other] > 1000 and counts["<P>" if mode == "tfqa" else "qw1"] > 100
    if mode == "original":
        assert not any(k.startswith("<") and k != "<" for k in counts)  # no tfqa tokens leak in
        assert (kind == "albert") == ("qw99" in tok.get_vocab())


# ------------------------------------------------------------------------------------ 3. prepare -> train -> validate
@dataclass
class Trained:
    dev: DevSet
    stores: dict[str, FeatureStore]
    tokenizers: dict
    models: dict[str, CandidateQAModel]
    outputs: dict[str, pd.DataFrame]
    losses: dict[str, list[float]]
    train_steps: dict[str, int]
    fingerprints: dict[str, tuple[str, str]]
    """(train features' tokenizer, dev features' tokenizer) per backbone."""
    feature_cfg: dict[str, FeatureConfig]


# BERT reads tags with the tfqa tokens, ALBERT with the original's (qw99 included): the models
# still meet at the word level.
HTML_MODE = {"bert": "tfqa", "albert": "original"}
# Short inputs, so many candidates are cut, and cut at different words by the two tokenizers;
# questions (made-up names: many pieces) are cut at 10.
E2E_SEQ_LEN = 64


@pytest.fixture(scope="module")
def trained(backbones, tmp_path_factory) -> Trained:
    tmp = tmp_path_factory.mktemp("spm_e2e")
    train_src, dev_src = small_page_nq_files(tmp, 32, 12)
    dev = DevSet.read(dev_src)
    out = Trained(dev, {}, {}, {}, {}, {}, {}, {}, {})
    for kind in BACKBONES:
        fcfg = FeatureConfig(max_seq_len=E2E_SEQ_LEN, max_question_len=10, html_tokens=HTML_MODE[kind])
        build = BuildConfig(features=fcfg, selection=SelectionConfig("random", negatives=3, seed=0), workers=1)
        info = run_prepare(PrepareConfig(str(train_src), str(backbones.dirs[kind]), str(tmp / "features"), build), progress=False)
        store = FeatureStore(info.path)
        tok = load_tokenizer(store.tokenizer_dir)
        torch.manual_seed(0)
        model = CandidateQAModel.from_backbone(backbones.dirs[kind], vocab_size=len(tok))
        logger = RecordingLogger()
        cfg = tiny_train_config(warmup_steps=3, batch_size=8, mega_batch_steps=2, progress=False, device="cpu")
        result = train(
            model, CandidateDataset(store), cfg, out_dir=tmp / kind, logger=logger, resume=None, pad_id=tok.pad_token_id
        )
        # Dev inputs from the tokenizer saved with the training features, as validate builds them
        # from the model folder.
        dev_info = build_features(
            dev_src, store.tokenizer_dir, tmp / "features", BuildConfig(features=fcfg, workers=1), progress=False
        )
        dev_store = FeatureStore(dev_info.path)
        out.stores[kind], out.tokenizers[kind], out.models[kind] = dev_store, tok, model.eval()
        out.outputs[kind] = score_candidates(model, dev_store, device="cpu", pad_id=tok.pad_token_id)
        out.losses[kind] = [m["train/loss"] for _, m in logger.metrics if "train/loss" in m]
        out.train_steps[kind] = result.step
        out.fingerprints[kind] = (info.manifest["tokenizer"]["fingerprint"], dev_info.manifest["tokenizer"]["fingerprint"])
        out.feature_cfg[kind] = fcfg
    return out


def _dev_keys(dev: DevSet) -> list[tuple[str, int, int]]:
    return [(ex.example_id, ci, c.start_token) for ex in dev.examples for ci, c in enumerate(ex.candidates)]


def _keys(out) -> list[tuple[str, int, int]]:
    return list(zip(map(str, out.example_id), map(int, out.candidate_index), map(int, out.word_offset)))


def _lengths(frame: pd.DataFrame) -> np.ndarray:
    return np.array([len(x) for x in frame["start_probs"]])


def _frame(like: pd.DataFrame, class_probs, start, end) -> pd.DataFrame:
    """Outputs in the inference contract with ``like``'s rows and the given probabilities."""
    out = like[["example_id", "candidate_index", "word_offset"]].copy()
    out["class_probs"] = [np.asarray(c, dtype=np.float32) for c in class_probs]
    out["start_probs"] = [np.asarray(s, dtype=np.float32) for s in start]
    out["end_probs"] = [np.asarray(e, dtype=np.float32) for e in end]
    return out


def _brute_best_span(start: np.ndarray, end: np.ndarray, max_words: int) -> tuple[int, int]:
    best, arg = -1.0, (-1, -1)
    for i in range(len(start)):
        for j in range(i, min(len(start), i + max_words)):
            if float(start[i]) * float(end[j]) > best:
                best, arg = float(start[i]) * float(end[j]), (i, j)
    return arg


def _answer(p: dec.DecodedAnswer) -> tuple:
    return (
        p.example_id,
        p.long_candidate_index,
        p.long_start_token,
        p.long_end_token,
        p.short_start_token,
        p.short_end_token,
        p.yes_no,
    )


def test_prepare_train_and_score_both_backbones(trained):
    dev = trained.dev
    assert len(_dev_keys(dev)) <= 200
    for kind in BACKBONES:
        losses = trained.losses[kind]
        assert trained.train_steps[kind] == 40 and len(losses) == 40 and np.all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), (kind, losses)  # it learnt something
        # The SentencePiece tokenizer, saved with its added tag tokens and reloaded, builds the dev
        # inputs exactly as it built the training inputs.
        assert trained.fingerprints[kind][0] == trained.fingerprints[kind][1]
        out, store = trained.outputs[kind], trained.stores[kind]
        assert _keys(dec.as_outputs(out)) == _dev_keys(dev)
        # One start/end probability per kept document word (not per subword), normalised per row.
        n_kept = store.meta["n_kept"].to_numpy()
        assert _lengths(out).tolist() == [len(e) for e in out["end_probs"]] == n_kept.tolist()
        assert (n_kept <= store.meta["n_words"].to_numpy()).all()
        assert np.allclose([s.sum() for s in out["start_probs"]], 1, atol=1e-5)
        assert np.allclose(np.stack(out["class_probs"]).sum(1), 1, atol=1e-5)
    # The dev inputs are word maps like any other: check them, then read the model at them.
    for kind in BACKBONES:
        ref = WordReference(trained.tokenizers[kind], HTML_MODE[kind])
        examples = {ex.example_id: ex for ex in dev.examples}
        counts: Counter = Counter()
        for r, row in enumerate(rows_of_store(trained.stores[kind])):
            check_row(ref, examples[row.example_id], row, trained.feature_cfg[kind], counts)
            if r % 25 == 0:  # the model's start logits at each word's first subword are its word probs
                ids = torch.tensor([row.input_ids])
                types = torch.zeros_like(ids)
                types[0, row.positions[0] if row.positions else len(row.input_ids) - 1 :] = 1
                with torch.no_grad():
                    _, start, _ = trained.models[kind](ids, torch.ones_like(ids), types)
                want = torch.softmax(start[0, row.positions], -1).numpy()
                np.testing.assert_allclose(trained.outputs[kind]["start_probs"][r], want, rtol=1e-4, atol=1e-6)
        assert counts["rows"] == len(_dev_keys(dev)) and counts["truncated"] > 0 and counts["question_cut"] > 0
    # The two tokenizers split words differently, so they keep different numbers of words of the
    # same long candidates: the rows the ensemble has to pad.
    assert (_lengths(trained.outputs["albert"]) != _lengths(trained.outputs["bert"])).sum() >= 10


def test_outputs_align_row_for_row_and_average_per_word(trained):
    bert, albert = trained.outputs["bert"], trained.outputs["albert"]
    aligned = align([bert, albert], names=list(BACKBONES))
    assert len(aligned) == len(bert) == len(albert)
    assert _keys(aligned) == _keys(dec.as_outputs(bert)) == _keys(dec.as_outputs(albert))
    lb, la = _lengths(bert), _lengths(albert)
    assert np.diff(aligned.offsets).tolist() == np.maximum(lb, la).tolist()
    ens = dec.as_outputs(ensemble([bert, albert], [0.5, 0.5], names=list(BACKBONES)))
    assert _keys(ens) == _keys(aligned)
    np.testing.assert_allclose(
        ens.class_probs, 0.5 * np.stack(bert["class_probs"]) + 0.5 * np.stack(albert["class_probs"]), atol=1e-6
    )
    for r in range(len(bert)):
        # A word only one model kept counts as probability 0 for the other.
        n = max(lb[r], la[r])
        want = 0.5 * np.pad(bert["start_probs"][r], (0, n - lb[r])) + 0.5 * np.pad(albert["start_probs"][r], (0, n - la[r]))
        np.testing.assert_allclose(
            ens.start_probs.values[ens.start_probs.offsets[r] : ens.start_probs.offsets[r + 1]], want, atol=1e-6
        )


def test_decoded_spans_are_document_words_for_each_model_and_the_ensemble(trained):
    dev = trained.dev
    ids = [ex.example_id for ex in dev.examples]
    examples = dict(zip(ids, dev.examples))
    outputs = {**trained.outputs, "ensemble": ensemble([trained.outputs[k] for k in BACKBONES], [0.5, 0.5])}
    cfg = dec.DecodeConfig(decode="joint")  # the brute-force reference is the joint span search
    spans_checked = 0
    for name, out in outputs.items():
        out = dec.as_outputs(out)
        row_of = {(str(e), int(c)): r for r, (e, c) in enumerate(zip(out.example_id, out.candidate_index))}
        preds = dec.decode(out, dev.spans, cfg, example_ids=ids)
        assert [p.example_id for p in preds] == ids
        for p in preds:
            ex = examples[p.example_id]
            cand = ex.candidates[p.long_candidate_index]
            assert (p.long_start_token, p.long_end_token) == (cand.start_token, cand.end_token)
            if p.yes_no != "NONE":
                continue
            # The span is the row's best word pair, shifted by the candidate's first document word.
            r = row_of[(p.example_id, p.long_candidate_index)]
            s, e = out.start_probs.offsets[r], out.start_probs.offsets[r + 1]
            i, j = _brute_best_span(out.start_probs.values[s:e], out.end_probs.values[s:e], cfg.max_answer_words)
            assert (p.short_start_token, p.short_end_token) == (cand.start_token + i, cand.start_token + j + 1), name
            assert cand.start_token <= p.short_start_token < p.short_end_token <= cand.start_token + (e - s), name
            assert ex.words[p.short_start_token : p.short_end_token]
            spans_checked += 1
    assert spans_checked >= 6


@pytest.mark.parametrize("decode", dec.DECODE_MODES)
def test_albert_peaking_on_berts_words_decodes_to_the_same_document_words(trained, decode):
    """Put all ALBERT start/end mass on the words BERT's answer starts and ends at (and BERT's
    class probabilities on both): BERT, ALBERT and their ensemble must answer with the same words,
    though the two rows differ in length and were read at different subwords."""
    dev = trained.dev
    ids = [ex.example_id for ex in dev.examples]
    cfg = dec.DecodeConfig(decode=decode)
    bert, albert = trained.outputs["bert"], trained.outputs["albert"]
    assert _keys(dec.as_outputs(bert)) == _keys(dec.as_outputs(albert))  # row r is the same candidate in both
    lb, la = _lengths(bert), _lengths(albert)
    cls = np.stack(bert["class_probs"]).copy()
    # Every example answers with a span: YES/NO mass moves to SHORT.
    cls[:, AnswerClass.SHORT] += cls[:, AnswerClass.YES] + cls[:, AnswerClass.NO]
    cls[:, [AnswerClass.YES, AnswerClass.NO]] = 0
    # BERT may only peak on words ALBERT kept as well.
    common = np.minimum(lb, la)
    bert_start = [np.where(np.arange(n) < c, s, 0) for s, n, c in zip(bert["start_probs"], lb, common)]
    bert_end = [np.where(np.arange(n) < c, s, 0) for s, n, c in zip(bert["end_probs"], lb, common)]
    bert_ctrl = _frame(bert, cls, bert_start, bert_end)
    bert_preds = dec.decode(bert_ctrl, dev.spans, cfg, example_ids=ids)

    row_of = {(e, int(c)): r for r, (e, c) in enumerate(zip(albert["example_id"], albert["candidate_index"]))}
    albert_start, albert_end = list(albert["start_probs"]), list(albert["end_probs"])
    for p in bert_preds:
        r = row_of[(p.example_id, p.long_candidate_index)]
        offset = int(albert["word_offset"][r])
        if p.short_start_token >= 0:
            i, j = p.short_start_token - offset, p.short_end_token - 1 - offset
        else:  # ``original``'s reversed span: ALBERT gets BERT's two peaks, and must drop it too
            i, j = int(np.argmax(bert_start[r])), int(np.argmax(bert_end[r]))
        albert_start[r], albert_end[r] = np.zeros(la[r]), np.zeros(la[r])
        albert_start[r][i] = albert_end[r][j] = 1.0
    albert_ctrl = _frame(albert, cls, albert_start, albert_end)

    answers = {
        "bert": bert_preds,
        "albert": dec.decode(albert_ctrl, dev.spans, cfg, example_ids=ids),
        "ensemble": dec.decode(ensemble([bert_ctrl, albert_ctrl], [0.5, 0.5]), dev.spans, cfg, example_ids=ids),
    }
    with_span = [p.short_start_token >= 0 for p in bert_preds]
    assert all(p.yes_no == "NONE" for p in bert_preds) and sum(with_span) >= len(ids) // 2
    if decode == "joint":  # the joint search never reverses a span
        assert all(with_span)
    assert [_answer(p) for p in answers["albert"]] == [_answer(p) for p in bert_preds]
    assert [_answer(p) for p in answers["ensemble"]] == [_answer(p) for p in bert_preds]
    words = {
        k: [ex.words[p.short_start_token : p.short_end_token] for ex, p in zip(dev.examples, preds) if p.short_start_token >= 0]
        for k, preds in answers.items()
    }
    assert words["bert"] == words["albert"] == words["ensemble"] and all(words["bert"])
    # The one-hot rows really decide: without them ALBERT answers elsewhere on some example.
    plain = dec.decode(_frame(albert, cls, albert["start_probs"], albert["end_probs"]), dev.spans, cfg, example_ids=ids)
    assert [_answer(p) for p in plain] != [_answer(p) for p in bert_preds]


def _oracle(dev: DevSet, like: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Outputs on ``like``'s rows (and word layout) that put each example's mass on its first
    non-null gold long answer, and on its gold short answer (one span the row kept, or yes/no)
    where the gold vote says there is one; also which examples got a short answer."""
    lengths = _lengths(like)
    row_of = {(e, int(c)): r for r, (e, c) in enumerate(zip(like["example_id"], like["candidate_index"]))}
    cls = np.tile(np.eye(5, dtype=np.float32)[AnswerClass.NOT_ANSWER], (len(like), 1))
    start = [np.full(n, 1.0 / n) for n in lengths]
    end = [s.copy() for s in start]
    short = np.zeros(len(dev.examples), dtype=bool)
    for k, ex in enumerate(dev.examples):
        ann = next((a for a in ex.annotations if a.candidate_index >= 0), None)
        if ann is None or not dev.gold.has_long[k]:  # an answer the vote rejects would count wrong
            continue
        r = row_of[(ex.example_id, ann.candidate_index)]
        offset = int(like["word_offset"][r])
        has_short = bool(dev.gold.has_short[k])
        if has_short and ann.yes_no in ("YES", "NO"):
            cls[r] = np.eye(5)[AnswerClass.YES if ann.yes_no == "YES" else AnswerClass.NO]
            short[k] = True
        elif has_short and len(ann.short_answers) == 1 and ann.short_answers[0].end_token - offset <= lengths[r]:
            sp = ann.short_answers[0]
            cls[r] = np.eye(5)[AnswerClass.SHORT]
            start[r], end[r] = np.zeros(lengths[r]), np.zeros(lengths[r])
            start[r][sp.start_token - offset] = 1.0
            end[r][sp.end_token - 1 - offset] = 1.0
            short[k] = True
        else:
            cls[r] = np.eye(5)[AnswerClass.LONG]
    return _frame(like, cls, start, end), short


def test_official_metric_scores_both_models_and_the_ensemble(trained):
    dev = trained.dev
    assert dev.offsets is not None  # original-format dev: answers are scored in bytes too
    bert, albert = trained.outputs["bert"], trained.outputs["albert"]
    for out in (bert, albert, ensemble([bert, albert], [0.5, 0.5])):
        scored, decoded = score_outputs(out, dev)
        metrics = scored.official_metrics()
        assert len(decoded) == len(dev.examples) == len(scored.long)
        for key in ("long-best-threshold-f1", "short-best-threshold-f1", "long-answer-f1", "short-answer-f1"):
            assert 0.0 <= metrics[key] <= 1.0, key
    # Gold answers written into each model's own word layout come out of decoding as the gold
    # document tokens (and bytes): the official scorer counts every one of them correct.
    bert_oracle, bert_short = _oracle(dev, bert)
    albert_oracle, albert_short = _oracle(dev, albert)
    both_short = bert_short & albert_short
    assert dev.gold.has_long.sum() >= 6 and both_short.sum() >= 3
    for name, out, short in (
        ("bert", bert_oracle, bert_short),
        ("albert", albert_oracle, albert_short),
        ("ensemble", ensemble([bert_oracle, albert_oracle], [0.5, 0.5]), both_short),
    ):
        scored, _ = score_outputs(out, dev)
        assert (scored.long.correct == dev.gold.has_long).all(), name
        assert scored.official_metrics()["long-best-threshold-f1"] == 1.0, name
        if name != "ensemble":
            assert (scored.short.correct == short).all(), name
        else:  # where only one model saw the gold span, the average may still land on it
            assert scored.short.correct[both_short].all(), name
        assert scored.official_metrics()["short-best-threshold-precision"] == 1.0, name
