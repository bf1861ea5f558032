"""From per-candidate outputs to official NQ metrics: decode, convert, score.

The decoder's answers (``tfqa.inference.decode.DecodedAnswer``) become the official prediction records
(``tfqa.evaluation.nq_predictions.NQPrediction``) through the same JSON the official scorer reads, so what is
scored here is exactly what ``predictions.json`` holds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfqa.core.distributed import Distributed
from tfqa.data.readers import read_examples
from tfqa.data.records import Example
from tfqa.evaluation.error_analysis import Thresholds, accuracy_by_type, example_right
from tfqa.evaluation.nq_metric import GoldTable, ScoredAnswers, build_gold, score_answers
from tfqa.evaluation.nq_predictions import NQPrediction, predictions_from_json
from tfqa.inference import decode as dec

HEADLINE = ("long-best-threshold-f1", "short-best-threshold-f1", "long-best-threshold", "short-best-threshold")


@dataclass
class DevSet:
    """Dev examples with what scoring needs: gold table, candidate spans and byte offsets."""

    examples: list[Example]
    gold: GoldTable = field(init=False)
    spans: dict[str, np.ndarray] = field(init=False)
    offsets: dict | None = field(init=False)

    def __post_init__(self) -> None:
        self.gold = build_gold(self.examples)
        self.spans = dec.candidate_spans(self.examples)
        has_bytes = all(ex.word_start_bytes is not None for ex in self.examples)
        self.offsets = dec.byte_offsets(self.examples) if has_bytes else None

    @classmethod
    def read(cls, path: str | Path, limit: int = 0) -> DevSet:
        examples = []
        for ex in read_examples(path):
            if limit and len(examples) >= limit:
                break
            examples.append(ex)
        return cls(examples)

    def subset(self, example_ids) -> DevSet:
        keep = set(map(str, example_ids))
        return DevSet([ex for ex in self.examples if ex.example_id in keep])


def official_predictions(decoded: list[dec.DecodedAnswer], offsets: dict | None = None) -> list[NQPrediction]:
    return predictions_from_json(dec.nq_predictions_json(decoded, offsets))


def score_outputs(
    outputs, dev: DevSet, cfg: dec.DecodeConfig = dec.DecodeConfig()
) -> tuple[ScoredAnswers, list[dec.DecodedAnswer]]:
    """Decode per-candidate outputs and score them against ``dev``'s gold."""
    decoded = dec.decode(outputs, dev.spans, cfg, example_ids=[ex.example_id for ex in dev.examples])
    return score_answers(dev.gold, official_predictions(decoded, dev.offsets)), decoded


def mlflow_metric_name(official_key: str) -> str:
    """MLflow metric names allow letters, digits and ``_-. /`` only: the official
    ``long-recall-at-precision>=0.75`` is logged as ``long-recall-at-precision-ge-0.75``."""
    return official_key.replace(">=", "-ge-")


def headline(scored: ScoredAnswers, prefix: str) -> dict[str, float]:
    """The metrics a run page shows: best-threshold F1s, thresholds and the Kaggle micro-F1."""
    official = scored.official_metrics()
    out = {f"{prefix}{k}": float(official[k]) for k in HEADLINE}
    kaggle = scored.best_kaggle_micro_f1()
    out[f"{prefix}kaggle-micro-f1"] = float(kaggle.f1)
    return out


def dev_metrics(scored: ScoredAnswers, gold: GoldTable, prefix: str = "dev/") -> dict[str, float]:
    """What a training run reports on its dev subset: the official best-threshold long/short F1
    and their thresholds, Kaggle's micro-F1, and per gold answer type (``null``, ``long_only``,
    ``short_span``, ``yes``, ``no``) the examples of that type (``n_<type>``) and the fraction the
    model gets right at those thresholds (``acc_<type>``; ``acc_all`` over every example).
    "Right" and the types are defined in ``tfqa.evaluation.error_analysis``; a type without examples gets no
    ``acc_`` metric."""
    official = scored.official_metrics()
    t = Thresholds(float(official["long-best-threshold"]), float(official["short-best-threshold"]))
    out = {
        f"{prefix}long_f1": float(official["long-best-threshold-f1"]),
        f"{prefix}short_f1": float(official["short-best-threshold-f1"]),
        f"{prefix}long_threshold": t.long,
        f"{prefix}short_threshold": t.short,
        f"{prefix}kaggle_micro_f1": float(scored.best_kaggle_micro_f1().f1),
        f"{prefix}acc_all": float(example_right(scored, t).mean()),
    }
    for name, (n, acc) in accuracy_by_type(gold, scored, t).items():
        out[f"{prefix}n_{name}"] = float(n)
        if n:
            out[f"{prefix}acc_{name}"] = acc
    return out


class DevEvaluator:
    """A training run's dev evaluation (``dev_metrics`` on a dev subset): the loop's periodic one
    and the final one. ``last_step`` is the step it last evaluated, so the final evaluation is not
    repeated when the loop's last periodic one was at the last step."""

    def __init__(
        self,
        dev: DevSet,
        store,
        pad_id: int,
        top_level_only: bool = False,
        decode: dec.DecodeConfig = dec.DecodeConfig(),
        job: Distributed = Distributed(),
    ):
        self.dev, self.store, self.pad_id, self.top_level_only, self.decode = dev, store, pad_id, top_level_only, decode
        self.job = job
        self.last_step: int | None = None

    @classmethod
    def from_file(
        cls,
        path: str,
        tokenizer_dir: str,
        cache_root: Path,
        *,
        limit: int,
        features,
        top_level_only: bool = False,
        decode: dec.DecodeConfig = dec.DecodeConfig(),
        job: Distributed = Distributed(),
    ) -> DevEvaluator:
        from tfqa.features.cache import BuildConfig, build_features
        from tfqa.features.dataset import FeatureStore
        from tfqa.features.tokenization import load_tokenizer, pad_id_of

        dev = DevSet.read(path, limit)
        subset = write_subset(path, cache_root, limit)
        info = build_features(subset, tokenizer_dir, cache_root, BuildConfig(features=features), progress=False)
        return cls(dev, FeatureStore(info.path), pad_id_of(load_tokenizer(tokenizer_dir)), top_level_only, decode, job)

    def __call__(self, model, step: int) -> dict[str, float]:
        """Every rank of the job calls it: each scores a contiguous share of the dev examples,
        rank 0 decodes and scores them all, and every rank returns rank 0's metrics."""
        import time

        import pandas as pd

        from tfqa.inference.batch_scoring import score_candidates
        from tfqa.inference.sharding import shard_rows

        t0 = time.perf_counter()
        was_training = model.training
        share = shard_rows(self.store.meta["example_id"], np.arange(len(self.store)), self.job.world_size)[self.job.rank]
        outputs = score_candidates(model, self.store, share, pad_id=self.pad_id, top_level_only=self.top_level_only)
        model.train(was_training)
        parts = self.job.gather(outputs)
        metrics = {}
        if self.job.is_main:
            scored, _ = score_outputs(pd.concat(parts, ignore_index=True), self.dev, self.decode)
            metrics = {**dev_metrics(scored, self.dev.gold), "dev/eval_seconds": time.perf_counter() - t0}
        self.last_step = step
        return self.job.broadcast(metrics)


def subset_path(src: str | os.PathLike, folder: str | os.PathLike, limit: int) -> Path:
    """Where ``write_subset`` keeps the first ``limit`` lines of ``src``: named by the source file
    (its real path, size and mtime) as well as by ``limit``, so another dev file, or this one
    rewritten, never reuses a subset of the old one."""
    st = os.stat(src)
    source = f"{os.path.realpath(src)}\0{st.st_size}\0{st.st_mtime_ns}"
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    return Path(folder) / f"dev-subset-{Path(src).name}-{limit}-{key}.jsonl"


def write_subset(src: str, folder: str | os.PathLike, limit: int) -> Path:
    """The first ``limit`` lines of ``src`` as plain jsonl (all of them when limit is 0), written
    once into ``folder`` (see ``subset_path``); returns the file."""
    from tfqa.core.destinations import written_whole
    from tfqa.data.readers import iter_lines

    dst = subset_path(src, folder, limit)
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(dst) as tmp, open(tmp, "wb") as out:
        for n, (_, raw) in enumerate(iter_lines(src)):
            if limit and n >= limit:
                break
            out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    return dst
