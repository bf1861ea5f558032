"""The ``validate`` stage: the registered models, pulled by alias, ensembled on the dev set.

For each model: dev features with its own tokenizer, per-candidate outputs (cached per model
version and data fingerprint), official NQ metrics alone. Then the weighted word-level ensemble
(weights from the manifest, or fitted cross-validated over halves of the dev set), its metrics,
the best long/short thresholds, and two model-free baselines, all logged to the run.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tfqa import decode as dec
from tfqa.ensemble import cross_validated_weights, ensemble, normalise_weights
from tfqa.evaluation import DevSet, headline, mlflow_metric_name, official_predictions, score_outputs
from tfqa.registry import EnsembleManifest, resolve_aliases
from tfqa.scoring import ScoredAnswers, score_answers
from tfqa.stages.prepare import FINGERPRINT_TAG

THRESHOLDS_ARTIFACT = "validation/thresholds.json"
ENSEMBLE_ARTIFACT = "validation/ensemble.json"


@dataclass(frozen=True)
class ValidateConfig:
    manifest: str
    dev_data: str
    alias: str = ""
    """Alias to pull (default: the manifest's)."""
    output_dir: str = "outputs"
    fit_weights: bool = False
    """Fit the ensemble weights on the dev set, cross-validated over its two halves."""
    dev_examples: int = 0
    max_answer_words: int = 30
    batch_tokens: int = 16384
    promotions: str = ""
    """Run ids of the promotions this validation follows (recorded so reuse sees new versions)."""


def model_outputs(model_uri: str, cache_key: str, dev_path: Path, cfg: ValidateConfig, run, name: str):
    """Per-candidate dev outputs of one model version, from the cache when it has them."""
    from tfqa.dataset import FeatureStore
    from tfqa.feature_cache import BuildConfig, build_features
    from tfqa.inference import InferenceConfig, score_candidates
    from tfqa.loading import load_tfqa_model
    from tfqa.model_logging import read_feature_config, read_top_level_only
    from tfqa.tokenization import load_tokenizer

    loaded = load_tfqa_model(model_uri)
    fcfg = read_feature_config(loaded.model_dir)
    info = build_features(dev_path, loaded.model_dir, Path(cfg.output_dir) / "features", BuildConfig(features=fcfg), progress=False)
    cache = Path(cfg.output_dir) / "inference" / f"{cache_key}-{info.fingerprint}.parquet"
    if cache.exists():
        outputs = pd.read_parquet(cache)
        reused = True
    else:
        store = FeatureStore(info.path)
        outputs = score_candidates(loaded.model, store, cfg=InferenceConfig(batch_tokens=cfg.batch_tokens),
                                   pad_id=int(load_tokenizer(loaded.model_dir).pad_token_id or 0), progress=True,
                                   top_level_only=read_top_level_only(loaded.model_dir))
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".part")
        outputs.to_parquet(tmp, index=False)
        tmp.replace(cache)
        reused = False
    run.log_artifact(str(cache), "outputs")
    run.set_tags({f"tfqa.outputs.{name}": cache.name, f"{FINGERPRINT_TAG}.{name}": info.fingerprint})
    return outputs, reused


def overlap_baseline(dev: DevSet) -> list[dec.Prediction]:
    """Pick the candidate sharing the most question words (no model): a floor for the models."""
    out = []
    for ex in dev.examples:
        q = {w.lower() for w in re.findall(r"\w+", ex.question)}
        best, best_score = -1, 0.0
        for i, c in enumerate(ex.candidates):
            words = {w.lower() for w, h in zip(ex.words[c.start_token:c.end_token], ex.is_html[c.start_token:c.end_token]) if not h}
            score = len(q & words) / (1 + len(q))
            if score > best_score:
                best, best_score = i, score
        if best >= 0:
            c = ex.candidates[best]
            out.append(dec.Prediction(ex.example_id, best, c.start_token, c.end_token, best_score))
        else:
            out.append(dec.Prediction(ex.example_id))
    return out


def null_baseline(dev: DevSet) -> list[dec.Prediction]:
    return [dec.Prediction(ex.example_id) for ex in dev.examples]


def run_validate(cfg: ValidateConfig, run) -> dict:
    from tfqa.evaluation import write_subset

    manifest = EnsembleManifest.load(cfg.manifest)
    alias = cfg.alias or manifest.alias
    versions = resolve_aliases(manifest, alias)
    dev = DevSet.read(cfg.dev_data, cfg.dev_examples)
    dev_path = Path(cfg.dev_data)
    if cfg.dev_examples:
        dev_path = write_subset(cfg.dev_data, Path(cfg.output_dir) / "features" / f"dev-{cfg.dev_examples}.jsonl", cfg.dev_examples)
    run.log_params({"validate": asdict(cfg), "alias": alias,
                    **{f"weight.{m.name}": m.weight for m in manifest.models}})
    run.set_tags({"tfqa.stage": "validate",
                  **{f"tfqa.model_version.{n}": mv.version for n, mv in versions.items()},
                  **{f"tfqa.upstream.{n}": mv.run_id for n, mv in versions.items()}})
    dcfg = dec.DecodeConfig(cfg.max_answer_words)
    metrics: dict[str, float] = {}
    outputs, names = [], []
    for m in manifest.models:
        mv = versions[m.name]
        out, reused = model_outputs(f"models:/{m.name}/{mv.version}", f"{m.name}-v{mv.version}", dev_path, cfg, run, m.name)
        scored, _ = score_outputs(out, dev, dcfg)
        metrics.update(headline(scored, f"model/{m.name}/"))
        metrics[f"model/{m.name}/outputs_reused"] = float(reused)
        outputs.append(out)
        names.append(m.name)

    weights = normalise_weights([m.weight for m in manifest.models], len(names))
    report: dict = {"names": names, "versions": {n: versions[n].version for n in names}, "manifest_weights": weights.tolist()}
    if cfg.fit_weights:
        def objective(ens) -> float:
            part = dev.subset(pd.unique(ens.example_id))
            o = score_outputs(ens, part, dcfg)[0].official_metrics()
            return float(o["long-best-threshold-f1"]) + float(o["short-best-threshold-f1"])

        cv = cross_validated_weights(outputs, objective, names=names, init=weights)
        weights = cv.weights
        metrics.update({"ensemble/cv-heldout-objective": cv.heldout_score,
                        "ensemble/cv-heldout-manifest-objective": cv.heldout_init_score})
        report["fitted"] = {"weights": cv.weights.tolist(), "fold_weights": [w.tolist() for w in cv.fold_weights],
                            "heldout_scores": list(cv.heldout_scores), "heldout_manifest_scores": list(cv.heldout_init_scores)}
    report["weights"] = [float(w) for w in weights]
    ens = ensemble(outputs, weights, names=names)
    scored, decoded = score_outputs(ens, dev, dcfg)
    metrics.update(headline(scored, "ensemble/"))
    official = scored.official_metrics()
    metrics.update({f"ensemble/{mlflow_metric_name(k)}": float(v) for k, v in official.items() if isinstance(v, (int, float))})
    kaggle = scored.best_kaggle_micro_f1()
    thresholds = {
        "long": float(official["long-best-threshold"]), "short": float(official["short-best-threshold"]),
        "kaggle_long": float(kaggle.long_threshold), "kaggle_short": float(kaggle.short_threshold),
        "kaggle_micro_f1": float(kaggle.f1),
    }
    metrics.update({f"threshold/{k}": v for k, v in thresholds.items() if np.isfinite(v)})
    for name, preds in (("null", null_baseline(dev)), ("question_overlap", overlap_baseline(dev))):
        metrics.update(headline(score_answers(dev.gold, official_predictions(preds, dev.offsets)), f"baseline/{name}/"))

    out_dir = Path(cfg.output_dir) / "runs" / run.run_id / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "thresholds.json").write_text(json.dumps(thresholds, indent=1))
    (out_dir / "ensemble.json").write_text(json.dumps(report, indent=1))
    (out_dir / "predictions.json").write_text(json.dumps(dec.nq_predictions_json(decoded, dev.offsets)))
    (out_dir / "predictions.txt").write_text(predictions_report(metrics, official, thresholds, report))
    pr_plot(scored, out_dir / "precision_recall.png")
    run.log_metrics(metrics, step=0)
    run.log_artifacts(str(out_dir), "validation")
    return {**metrics, **{f"thresholds.{k}": v for k, v in thresholds.items()}}


def predictions_report(metrics: dict, official: dict, thresholds: dict, report: dict) -> str:
    """The original's ``predictions.txt``: per model and ensemble F1, then the thresholds."""
    lines = ["model                              long-F1  short-F1  kaggle-F1"]
    rows = sorted({k.rsplit("/", 1)[0] for k in metrics if k.endswith("long-best-threshold-f1")})
    for r in rows:
        lines.append(f"{r:<34} {metrics[r + '/long-best-threshold-f1']:.4f}   {metrics[r + '/short-best-threshold-f1']:.4f}    "
                     f"{metrics.get(r + '/kaggle-micro-f1', float('nan')):.4f}")
    lines += ["", "ensemble weights: " + ", ".join(f"{n}={w:.3f}" for n, w in zip(report["names"], report["weights"])),
              f"long threshold  {thresholds['long']:.4f}   short threshold  {thresholds['short']:.4f}",
              f"kaggle thresholds: long {thresholds['kaggle_long']:.4f}  short {thresholds['kaggle_short']:.4f}  "
              f"micro-F1 {thresholds['kaggle_micro_f1']:.4f}", "", json.dumps(official, indent=1)]
    return "\n".join(lines) + "\n"


def pr_plot(scored: ScoredAnswers, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, curve in (("long", scored.long_curve), ("short", scored.short_curve)):
        kept = np.maximum(curve.kept, 1)
        precision = curve.correct / kept
        recall = curve.correct / max(curve.n_gold, 1)
        ax.plot(recall, precision, label=f"{label} answer")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
