"""The NQ-like data generator: exact NQ formats, consistent offsets, answer mix, and a task that
word overlap cannot solve while the text always states the answer."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from tfqa.data.candidates import CANDIDATE_TAGS
from tfqa.data.convert import simplify_nq_example
from tfqa.data.readers import read_examples
from tfqa.data.synth import Fact, SynthConfig, generate, generate_original, write_original, write_simplified

N = 250


@pytest.fixture(scope="module")
def train() -> list[tuple[dict, Fact]]:
    return list(generate(SynthConfig(n_examples=N, seed=11)))


@pytest.fixture(scope="module")
def dev() -> list[tuple[dict, Fact]]:
    return list(generate(SynthConfig(n_examples=120, seed=12, n_annotations=5)))


def _tokens(ex: dict) -> list[str]:
    return [t["token"] for t in ex["document_tokens"]]


def _gold_index(ex: dict) -> int:
    return ex["annotations"][0]["long_answer"]["candidate_index"]


# -- config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"null_fraction": 0.5},  # sums to 1.2
        {"short_fraction": -0.1, "null_fraction": 0.5},
        {"min_candidates": 30, "max_candidates": 20},
        {"min_candidates": 3},
        {"n_annotations": 0},
        {"n_examples": -1},
        {"multi_span_fraction": 1.5},
    ],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_deterministic_for_a_seed() -> None:
    a = [json.dumps(e, sort_keys=True) for e in generate_original(SynthConfig(n_examples=15, seed=3))]
    b = [json.dumps(e, sort_keys=True) for e in generate_original(SynthConfig(n_examples=15, seed=3))]
    c = [json.dumps(e, sort_keys=True) for e in generate_original(SynthConfig(n_examples=15, seed=4))]
    assert a == b
    assert a != c


# -- original format ---------------------------------------------------------------------------------
def test_original_format_keys_and_types(train: list) -> None:
    keys = {
        "example_id",
        "question_text",
        "question_tokens",
        "document_title",
        "document_url",
        "document_html",
        "document_tokens",
        "long_answer_candidates",
        "annotations",
    }
    ids = set()
    for ex, _ in train:
        assert set(ex) == keys
        assert isinstance(ex["example_id"], int)
        ids.add(ex["example_id"])
        assert ex["question_tokens"] == ex["question_text"].split(" ")
        assert ex["question_text"] == ex["question_text"].lower()
        assert set(ex["document_tokens"][0]) == {"token", "start_byte", "end_byte", "html_token"}
        assert len(ex["annotations"]) == 1
        ann = ex["annotations"][0]
        assert set(ann) == {"annotation_id", "long_answer", "short_answers", "yes_no_answer"}
        assert ann["yes_no_answer"] in ("NONE", "YES", "NO")
    assert len(ids) == len(train)


def test_byte_offsets_slice_the_html(train: list, dev: list) -> None:
    non_ascii = False
    for ex, _ in train + dev:
        html = ex["document_html"].encode()
        toks = ex["document_tokens"]
        for t in toks:
            assert html[t["start_byte"] : t["end_byte"]].decode() == t["token"]
            assert t["html_token"] == (t["token"].startswith("<") and t["token"].endswith(">"))
        starts = [t["start_byte"] for t in toks]
        assert starts == sorted(starts)
        spans = [c for c in ex["long_answer_candidates"]]
        for ann in ex["annotations"]:
            if ann["long_answer"]["candidate_index"] >= 0:
                spans.append(ann["long_answer"])
            spans.extend(ann["short_answers"])
        for s in spans:
            assert s["start_byte"] == toks[s["start_token"]]["start_byte"]
            assert s["end_byte"] == toks[s["end_token"] - 1]["end_byte"]
        non_ascii |= len(html) != len(ex["document_html"])
    assert non_ascii, "some page should have non-ASCII names, so byte and character offsets differ"


def test_spans_inside_document_and_consistent(train: list, dev: list) -> None:
    for ex, _ in train + dev:
        n = len(ex["document_tokens"])
        cands = ex["long_answer_candidates"]
        for c in cands:
            assert 0 <= c["start_token"] < c["end_token"] <= n
        for ann in ex["annotations"]:
            la = ann["long_answer"]
            ci = la["candidate_index"]
            if ci < 0:
                assert la == {"start_byte": -1, "end_byte": -1, "start_token": -1, "end_token": -1, "candidate_index": -1}
                assert ann["short_answers"] == [] and ann["yes_no_answer"] == "NONE"
                continue
            c = cands[ci]
            assert (la["start_token"], la["end_token"], la["start_byte"], la["end_byte"]) == (
                c["start_token"],
                c["end_token"],
                c["start_byte"],
                c["end_byte"],
            )
            for s in ann["short_answers"]:
                assert la["start_token"] <= s["start_token"] < s["end_token"] <= la["end_token"]
            if ann["yes_no_answer"] != "NONE":
                assert ann["short_answers"] == []


def test_candidates_are_nq_elements(train: list) -> None:
    cfg = SynthConfig()
    n_tokens = []
    for ex, _ in train:
        toks = _tokens(ex)
        cands = ex["long_answer_candidates"]
        assert cfg.min_candidates <= len(cands) <= cfg.max_candidates
        n_tokens.append(len(toks))
        assert [c["start_token"] for c in cands] == sorted(c["start_token"] for c in cands)
        for i, c in enumerate(cands):
            tag = toks[c["start_token"]][1:-1]
            assert tag in CANDIDATE_TAGS
            assert toks[c["end_token"] - 1] == f"</{tag}>"
            inside_another = any(
                o["start_token"] <= c["start_token"] and c["end_token"] <= o["end_token"] for j, o in enumerate(cands) if j != i
            )
            assert c["top_level"] == (not inside_another)
        assert toks[:2] != ["<H1>"] and "<H1>" in toks
    assert min(n_tokens) >= 150 and max(n_tokens) <= 1700
    assert 250 <= sum(n_tokens) / len(n_tokens) <= 1000
    tags = collections.Counter(_tokens(ex)[c["start_token"]] for ex, _ in train for c in ex["long_answer_candidates"])
    assert set(tags) == {f"<{t}>" for t in CANDIDATE_TAGS}
    nested = collections.Counter(
        _tokens(ex)[c["start_token"]] for ex, _ in train for c in ex["long_answer_candidates"] if not c["top_level"]
    )
    assert set(nested) == {"<Tr>", "<Li>", "<Ul>"}  # rows, list items, lists inside navbox tables


# -- answers -----------------------------------------------------------------------------------------
def _kind(ann: dict) -> str:
    if ann["long_answer"]["candidate_index"] < 0:
        return "null"
    if ann["yes_no_answer"] != "NONE":
        return ann["yes_no_answer"].lower()
    return "short" if ann["short_answers"] else "long"


def test_answer_mix_follows_the_fractions(train: list) -> None:
    cfg = SynthConfig(n_examples=N, seed=11)
    counts = collections.Counter(_kind(ex["annotations"][0]) for ex, _ in train)
    for kind, frac in cfg.fractions().items():
        assert abs(counts[kind] - frac * N) <= 1, (kind, counts)
    assert all(_kind(ex["annotations"][0]) == fact.answer for ex, fact in train)
    n_multi = sum(len(ex["annotations"][0]["short_answers"]) == 2 for ex, _ in train)
    assert 0.03 * N <= n_multi <= 0.08 * N  # 10% of the 40% short answers
    in_rows = sum(
        _kind(ex["annotations"][0]) == "short"
        and _tokens(ex)[ex["long_answer_candidates"][_gold_index(ex)]["start_token"]] == "<Tr>"
        for ex, _ in train
    )
    assert 0.05 * N <= in_rows <= 0.2 * N


def test_other_fractions() -> None:
    cfg = SynthConfig(
        n_examples=40, seed=2, short_fraction=0.0, yes_fraction=0.5, no_fraction=0.5, long_only_fraction=0.0, null_fraction=0.0
    )
    kinds = collections.Counter(_kind(ex["annotations"][0]) for ex in generate_original(cfg))
    assert kinds == {"yes": 20, "no": 20}


def test_gold_candidate_states_the_fact(train: list, dev: list) -> None:
    for ex, fact in train + dev:
        toks = _tokens(ex)
        low = " ".join(toks).lower()
        if fact.entity_on_page:
            assert fact.entity in low, "the asked entity appears on the page, answerable or not"
        else:
            assert fact.answer == "null" and fact.entity not in low
        if fact.answer == "null":
            assert fact.evidence == ()
            continue
        # Dev annotators sometimes disagree: the gold is the most common answer there.
        votes = collections.Counter(a["long_answer"]["candidate_index"] for a in ex["annotations"])
        gold = ex["long_answer_candidates"][votes.most_common(1)[0][0]]
        ev = list(fact.evidence)
        hits = [i for i in range(len(toks) - len(ev) + 1) if toks[i : i + len(ev)] == ev]
        # Stated exactly once, inside the gold candidate.
        assert len(hits) == 1
        assert gold["start_token"] <= hits[0] and hits[0] + len(ev) <= gold["end_token"]
        ev_text = " ".join(ev)
        if toks[gold["start_token"]] == "<P>":
            assert fact.entity in ev_text.lower()  # the sentence names the asked entity
        if fact.answer == "short" and len(ex["annotations"]) == 1:
            shorts = [" ".join(toks[s["start_token"] : s["end_token"]]) for s in ex["annotations"][0]["short_answers"]]
            assert tuple(shorts) == fact.values
            assert all(v in ev_text for v in fact.values)
        if fact.answer in ("yes", "no"):
            # The question names a value; the gold states the entity's own one, equal for YES only.
            assert (fact.values[0] in ev_text) == (fact.answer == "yes")
            assert fact.values[0].lower() in ex["question_text"]


def test_word_overlap_baseline_mostly_misses(train: list) -> None:
    """Picking the candidate sharing most question words finds the gold far less often than half."""
    hits = total = 0
    for ex, _ in train:
        gi = _gold_index(ex)
        if gi < 0:
            continue
        q = set(ex["question_text"].split(" "))
        toks = ex["document_tokens"]
        scores = [
            len(q & {t["token"].lower() for t in toks[c["start_token"] : c["end_token"]] if not t["html_token"]})
            for c in ex["long_answer_candidates"]
        ]
        total += 1
        hits += scores.index(max(scores)) == gi
    assert total > 0.6 * N
    assert hits / total < 0.4, hits / total


def test_dev_has_five_mostly_agreeing_annotations(dev: list) -> None:
    disagreements = collections.Counter()
    for ex, fact in dev:
        anns = ex["annotations"]
        assert len(anns) == 5
        assert len({a["annotation_id"] for a in anns}) == 5
        kinds = [_kind(a) for a in anns]
        assert kinds.count(fact.answer) >= 2
        gold = [a for a in anns if _kind(a) == fact.answer]
        for a in anns:
            if a not in gold:
                disagreements[(fact.answer, _kind(a))] += 1
            elif (a["long_answer"], a["short_answers"]) != (gold[0]["long_answer"], gold[0]["short_answers"]):
                disagreements[(fact.answer, "other span")] += 1
    # Real dev sets disagree in every direction: some null, some long-only, some other spans.
    assert disagreements[("short", "null")] and disagreements[("short", "long")]
    assert sum(disagreements.values()) < 0.25 * 5 * len(dev)


# -- simplified format and files ---------------------------------------------------------------------
def test_simplified_words_are_the_tokens(train: list) -> None:
    for ex, _ in train[:50]:
        simple = simplify_nq_example(ex)
        assert simple["document_text"].split(" ") == _tokens(ex)
        assert len(simple["annotations"]) == 1


def test_files_round_trip_through_the_readers(tmp_path) -> None:
    cfg = SynthConfig(n_examples=12, seed=5, n_annotations=5)
    orig, simple, test = tmp_path / "dev.jsonl.gz", tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    assert write_original(orig, cfg) == 12
    assert write_simplified(simple, cfg) == 12
    assert write_simplified(test, cfg, with_annotations=False) == 12
    with gzip.open(orig, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert rows == list(generate_original(cfg))
    simple_rows = [json.loads(line) for line in simple.read_text(encoding="utf-8").splitlines()]
    assert simple_rows == [simplify_nq_example(r) for r in rows]
    test_rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
    assert all("annotations" not in r for r in test_rows)
    a, b = list(read_examples(orig)), list(read_examples(simple))
    assert [x.words for x in a] == [x.words for x in b]
    assert [len(x.annotations) for x in a] == [5] * 12
    assert [len(x.annotations) for x in read_examples(test)] == [0] * 12


def test_compress_flag_overrides_the_suffix(tmp_path) -> None:
    cfg = SynthConfig(n_examples=3, seed=1)
    part = tmp_path / "dev.jsonl.gz.part"  # a temporary name, renamed once complete
    write_original(part, cfg, compress=True)
    assert part.read_bytes()[:2] == b"\x1f\x8b"
    plain = tmp_path / "x.gz"
    write_simplified(plain, cfg, compress=False)
    assert plain.read_bytes()[:1] == b"{"
