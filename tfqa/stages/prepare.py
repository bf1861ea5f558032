"""The ``prepare`` stage: build (or reuse) a feature cache and record it in the MLflow run."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tfqa.features.cache import BuildConfig, CacheInfo, build_features
from tfqa.features.selection import SelectionConfig
from tfqa.tracking.datasets import TRAINING, features_input, log_data_inputs
from tfqa.tracking.names import DATA_FINGERPRINT_TAG, FEATURES_MANIFEST_ARTIFACT, FEATURES_PATH_TAG


@dataclass(frozen=True)
class PrepareConfig:
    input: str
    """NQ file (simplified jsonl or original jsonl[.gz], plain or gzip; default: settings data.train)."""
    tokenizer: str
    """Local directory holding the backbone's tokenizer (default: settings backbones.<train_bert_base's
    backbone name>)."""
    cache_dir: str = "features"
    """Where the feature caches are kept, one folder per fingerprint."""
    build: BuildConfig = field(default_factory=lambda: BuildConfig(selection=SelectionConfig("random")))
    """What to build; by default the features ``train_bert_base`` trains on (random negatives)."""

    def __post_init__(self) -> None:
        from tfqa.data.readers import require_file

        require_file(self.input)


def run_prepare(cfg: PrepareConfig, run=None, progress: bool = True) -> CacheInfo:
    """Build the features of ``cfg.input``; log settings, counts and the manifest to ``run``."""
    t0 = time.perf_counter()
    info = build_features(cfg.input, cfg.tokenizer, cfg.cache_dir, cfg.build, progress=progress)
    seconds = time.perf_counter() - t0
    if run is not None:
        run.log_params({"input": cfg.input, "tokenizer": cfg.tokenizer, "cache_dir": cfg.cache_dir, **asdict(cfg.build)})
        run.set_tags({DATA_FINGERPRINT_TAG: info.fingerprint, FEATURES_PATH_TAG: str(info.path.resolve())})
        m = info.manifest
        metrics = {f"prepare/{k}": v for k, v in m["counts"].items()}
        metrics.update(
            {
                "prepare/lines": m["lines"],
                "prepare/skipped_lines": m["skipped_lines"],
                "prepare/rows": m["rows"],
                "prepare/cache_reused": int(info.reused),
                "prepare/seconds": seconds,
            }
        )
        if not info.reused and m["build_seconds"] > 0:
            metrics["prepare/examples_per_s"] = m["counts"]["examples"] / m["build_seconds"]
            metrics["prepare/candidates_per_s"] = m["counts"]["candidates"] / m["build_seconds"]
        run.log_metrics(metrics, step=0)
        run.log_dict(m, FEATURES_MANIFEST_ARTIFACT)
        log_data_inputs(run, [features_input(m, TRAINING)])
    return info


def skipped_errors(cfg: PrepareConfig, info: CacheInfo) -> list:
    """The lines the build skipped (``--max-bad-lines``), as the errors they were."""
    from tfqa.data.readers import BadInputError

    return [BadInputError(cfg.input, s["line"], s["field"], s["reason"]) for s in info.manifest.get("skipped", [])]
