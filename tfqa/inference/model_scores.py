"""Per-candidate outputs of one model version on one NQ file: features built as the model was
trained, inference on all rows or on a chosen set of candidates, cached with the time it took.

The cache is keyed by model version, data fingerprint and the candidate set, so re-running
``validate`` after moving one alias recomputes that model only, and a cascade stage's outputs on
the survivors of the stage before are kept apart from the same model's outputs on every row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfqa.core.destinations import written_whole


@dataclass
class ModelScores:
    outputs: pd.DataFrame
    """``tfqa.inference.decode.OUTPUT_COLUMNS`` rows, in the feature store's row order."""
    seconds: float
    """Inference seconds these outputs took (when computed, or as recorded in the cache)."""
    reused: bool
    fingerprint: str
    """The data fingerprint of the features they were computed on."""
    settings: dict
    """The model's trained feature settings (``max_seq_len``, ``html_tokens``, ``top_level_only``)."""
    cache_path: Path

    @property
    def rows(self) -> int:
        return len(self.outputs)


def keys_digest(keys: pd.DataFrame | None) -> str:
    if keys is None:
        return "all"
    h = hashlib.blake2b(digest_size=8)
    h.update("\n".join(f"{e}:{c}" for e, c in zip(keys["example_id"], keys["candidate_index"])).encode())
    return f"rows-{len(keys)}-{h.hexdigest()}"


def store_rows(store, keys: pd.DataFrame) -> np.ndarray:
    """Row indices of the feature store holding (example_id, candidate_index) ``keys``, in order."""
    meta = pd.MultiIndex.from_arrays(
        [store.meta["example_id"].astype(str).to_numpy(object), store.meta["candidate_index"].to_numpy(np.int64)]
    )
    want = pd.MultiIndex.from_arrays(
        [keys["example_id"].astype(str).to_numpy(object), keys["candidate_index"].to_numpy(np.int64)]
    )
    rows = meta.get_indexer(want)
    if (rows < 0).any():
        k = int(np.flatnonzero(rows < 0)[0])
        raise ValueError(
            f"candidate ({keys['example_id'].iloc[k]!r}, {int(keys['candidate_index'].iloc[k])}) "
            "is not in the features of this file"
        )
    return rows


def score_model(
    model_uri: str,
    cache_key: str,
    data_path: str | Path,
    output_dir: str | Path,
    *,
    keys: pd.DataFrame | None = None,
    batch_tokens: int = 16384,
    progress: bool = True,
) -> ModelScores:
    """Outputs of ``model_uri`` on every candidate of ``data_path`` (or only on ``keys``)."""
    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.tokenization import load_tokenizer, pad_id_of
    from tfqa.inference.batch_scoring import InferenceConfig, score_candidates
    from tfqa.modeling.loading import load_tfqa_model
    from tfqa.modeling.saved import read_feature_config, read_top_level_only, trained_settings

    loaded = load_tfqa_model(model_uri)
    fcfg = read_feature_config(loaded.model_dir)
    info = build_features(data_path, loaded.model_dir, Path(output_dir) / "features", BuildConfig(features=fcfg), progress=False)
    settings = {
        **fcfg.to_dict(),
        "top_level_only": read_top_level_only(loaded.model_dir),
        "decode": trained_settings(loaded.model_dir).get("decode", {}),
    }
    cache = Path(output_dir) / "inference" / f"{cache_key}-{info.fingerprint}-{keys_digest(keys)}.parquet"
    timing = cache.with_suffix(".json")
    if cache.exists() and timing.exists():
        seconds = float(json.loads(timing.read_text())["seconds"])
        return ModelScores(pd.read_parquet(cache), seconds, True, info.fingerprint, settings, cache)
    store = FeatureStore(info.path)
    rows = None if keys is None else store_rows(store, keys)
    t0 = time.perf_counter()
    outputs = score_candidates(
        loaded.model,
        store,
        rows,
        cfg=InferenceConfig(batch_tokens=batch_tokens),
        pad_id=pad_id_of(load_tokenizer(loaded.model_dir)),
        progress=progress,
        top_level_only=settings["top_level_only"],
    )
    seconds = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(cache) as tmp:
        outputs.to_parquet(tmp, index=False)
    timing.write_text(json.dumps({"seconds": seconds, "rows": len(outputs)}))
    return ModelScores(outputs, seconds, False, info.fingerprint, settings, cache)
