"""The ``validate`` stage: the registered models, pulled by alias, ensembled on the dev set.

For each model: dev features built as it was trained, per-candidate outputs on every candidate
(cached per model version and data fingerprint, with the seconds they took), official NQ metrics
alone. Then the manifest's procedure: its pruning cascade (each stage keeps the best few
candidates per example), the weighted word-level ensemble of the survivors (weights from the
manifest, or fitted cross-validated over halves of the dev set), decoded as the manifest says;
its metrics and best long/short thresholds, the same ensemble without the cascade, the
candidates and inference seconds of each stage, and two model-free baselines. Last, the error
analysis (``tfqa.evaluation.error_analysis``) of the models and the ensemble, under ``validation/error_analysis``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tfqa.core.bounds import bounded, check_bounds
from tfqa.core.destinations import folder_written_whole, write_text_whole
from tfqa.core.errors import UserError
from tfqa.evaluation import error_analysis
from tfqa.evaluation.dev import DevSet, headline, mlflow_metric_name, official_predictions, score_outputs
from tfqa.evaluation.nq_metric import ScoredAnswers, score_answers
from tfqa.inference import decode as dec
from tfqa.inference.ensemble import cross_validated_weights, ensemble, normalise_weights
from tfqa.inference.manifest import EnsembleManifest
from tfqa.tracking.datasets import EVALUATION, log_data_inputs, nq_input
from tfqa.tracking.names import (
    DATA_FINGERPRINT_TAG,
    HTML_TOKENS_TAG_PREFIX,
    OUTPUTS_TAG_PREFIX,
    SCORES_TABLES_DIR,
    UPSTREAM_TAG_PREFIX,
    VALIDATION_DIR,
)
from tfqa.tracking.registry import record_models_used, resolve_aliases


@dataclass(frozen=True)
class ValidateConfig:
    manifest: str = "registry/ensemble.yaml"
    """The ensemble manifest (default: settings parameters.validate.manifest, else this)."""
    dev_data: str = ""
    """NQ dev file, original jsonl.gz or simplified (default: settings data.dev)."""
    alias: str = ""
    """Alias to pull (default: the manifest's)."""
    output_dir: str = "outputs"
    fit_weights: bool = False
    """Fit the ensemble weights on the dev set, cross-validated over its two halves."""
    dev_examples: int = bounded(0, min=0)
    """Only the first this many dev examples (0: all)."""
    decode: Literal["", "joint", "original"] = ""
    """``joint`` or ``original`` (empty: the manifest's)."""
    max_answer_words: int = bounded(0, min=0)
    """Longest short answer of the joint decoding (0: the manifest's)."""
    cascade: Literal["", "none"] = ""
    """``none``: skip the manifest's pruning cascade (empty: run it)."""
    batch_tokens: int = bounded(16384, min=1)
    """Most tokens in one inference batch."""
    promotions: str = ""
    """Run ids of the promotions this validation follows (recorded so reuse sees new versions)."""
    manifest_digest: str = ""
    """The digest of the manifest's content (``manifest_digest()``) when the pipeline read it: a
    changed manifest then changes the step's reuse key, as its path alone would not. A manifest
    whose content no longer has this digest is refused (empty: not checked)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.cascade not in ("", "none"):
            raise ValueError(f"cascade must be empty (the manifest's) or 'none', got {self.cascade!r}")

    def decode_config(self, manifest: EnsembleManifest) -> dec.DecodeConfig:
        return dec.DecodeConfig(self.max_answer_words or manifest.decode.max_answer_words, self.decode or manifest.decode.decode)


def manifest_digest(path: str | Path) -> str:
    """A short hash of a manifest file's bytes: the pipeline's reuse key for its content."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def check_manifest_digest(cfg: ValidateConfig) -> None:
    """Refuse a manifest whose content is not the one ``cfg.manifest_digest`` was taken of."""
    if cfg.manifest_digest and manifest_digest(cfg.manifest) != cfg.manifest_digest:
        raise UserError(
            f"its content (digest {manifest_digest(cfg.manifest)}) is not the one given as manifest_digest "
            f"{cfg.manifest_digest}: it changed after the pipeline read it",
            cfg.manifest,
        )


def overlap_baseline(dev: DevSet) -> list[dec.DecodedAnswer]:
    """Pick the candidate sharing the most question words (no model): a floor for the models."""
    out = []
    for ex in dev.examples:
        q = {w.lower() for w in re.findall(r"\w+", ex.question)}
        best, best_score = -1, 0.0
        for i, c in enumerate(ex.candidates):
            words = {
                w.lower() for w, h in zip(ex.words[c.start_token : c.end_token], ex.is_html[c.start_token : c.end_token]) if not h
            }
            score = len(q & words) / (1 + len(q))
            if score > best_score:
                best, best_score = i, score
        if best >= 0:
            c = ex.candidates[best]
            out.append(dec.DecodedAnswer(ex.example_id, best, c.start_token, c.end_token, best_score))
        else:
            out.append(dec.DecodedAnswer(ex.example_id))
    return out


def null_baseline(dev: DevSet) -> list[dec.DecodedAnswer]:
    return [dec.DecodedAnswer(ex.example_id) for ex in dev.examples]


def run_validate(cfg: ValidateConfig, run) -> dict:
    from tfqa.evaluation.dev import write_subset
    from tfqa.inference.cascade import restrict, run_cascade
    from tfqa.inference.model_scores import score_model

    manifest = EnsembleManifest.load(cfg.manifest)  # every manifest error before any model loads
    check_manifest_digest(cfg)
    if cfg.cascade == "none":
        manifest = replace(manifest, cascade=())
    dcfg = cfg.decode_config(manifest)
    alias = cfg.alias or manifest.alias
    versions = resolve_aliases(manifest, alias)
    dev = DevSet.read(cfg.dev_data, cfg.dev_examples)
    dev_path = Path(cfg.dev_data)
    if cfg.dev_examples:
        dev_path = write_subset(cfg.dev_data, Path(cfg.output_dir) / "features", cfg.dev_examples)
    run.log_params(
        {
            "validate": asdict(cfg),
            "alias": alias,
            "decode": dcfg.to_dict(),
            "cascade": [asdict(st) for st in manifest.cascade] or "none",
            **{f"weight.{m.name}": m.weight for m in manifest.models},
        }
    )
    run.set_tags({f"{UPSTREAM_TAG_PREFIX}{n}": mv.run_id for n, mv in versions.items()})
    record_models_used(run, versions)
    log_data_inputs(run, [nq_input(cfg.dev_data, dev.examples, EVALUATION, cfg.dev_examples)])
    metrics: dict[str, float] = {}
    scores = {}
    answers = []  # each model's dev answers, for the error analysis
    for m in manifest.models:
        mv = versions[m.name]
        sc = score_model(
            f"models:/{m.name}/{mv.version}", f"{m.name}-v{mv.version}", dev_path, cfg.output_dir, batch_tokens=cfg.batch_tokens
        )
        run.log_artifact(str(sc.cache_path), SCORES_TABLES_DIR)
        run.set_tags(
            {
                f"{OUTPUTS_TAG_PREFIX}{m.name}": sc.cache_path.name,
                f"{DATA_FINGERPRINT_TAG}.{m.name}": sc.fingerprint,
                f"{HTML_TOKENS_TAG_PREFIX}{m.name}": sc.settings["html_tokens"],
            }
        )
        scored, decoded = score_outputs(sc.outputs, dev, dcfg)
        answers.append(error_analysis.ModelAnswers(m.name, scored, decoded))
        metrics.update(headline(scored, f"model/{m.name}/"))
        metrics.update({f"model/{m.name}/outputs_reused": float(sc.reused), f"model/{m.name}/inference_seconds": sc.seconds})
        scores[m.name] = sc
    names = [m.name for m in manifest.models]
    weights = normalise_weights([m.weight for m in manifest.models], len(names))

    # The cascade from the outputs on every candidate (needed anyway for the figures without
    # it): each stage's seconds are its model's measured rate here times the candidates it scores.
    def from_every_candidate(name: str, keys):
        sc = scores[name]
        out = restrict(sc.outputs, keys, name)
        return out, sc.seconds * len(out) / max(sc.rows, 1)

    casc = run_cascade(manifest.cascade, from_every_candidate)
    outputs = [restrict(scores[n].outputs, casc.keys, n) for n in names]
    report: dict = {
        "names": names,
        "versions": {n: versions[n].version for n in names},
        "manifest_weights": weights.tolist(),
        "decode": dcfg.to_dict(),
        "cascade": [{**asdict(st), "version": versions[st.model].version} for st in manifest.cascade],
        "model_settings": {n: scores[n].settings for n in names},
    }
    if cfg.fit_weights:

        def objective(ens) -> float:
            part = dev.subset(pd.unique(ens.example_id))
            o = score_outputs(ens, part, dcfg)[0].official_metrics()
            return float(o["long-best-threshold-f1"]) + float(o["short-best-threshold-f1"])

        cv = cross_validated_weights(outputs, objective, names=names, init=weights)
        weights = cv.weights
        metrics.update(
            {"ensemble/cv-heldout-objective": cv.heldout_score, "ensemble/cv-heldout-manifest-objective": cv.heldout_init_score}
        )
        report["fitted"] = {
            "weights": cv.weights.tolist(),
            "fold_weights": [w.tolist() for w in cv.fold_weights],
            "heldout_scores": list(cv.heldout_scores),
            "heldout_manifest_scores": list(cv.heldout_init_scores),
        }
    report["weights"] = [float(w) for w in weights]
    ens = ensemble(outputs, weights, names=names)
    scored, decoded = score_outputs(ens, dev, dcfg)
    metrics.update(headline(scored, "ensemble/"))
    official = scored.official_metrics()
    metrics.update({f"ensemble/{mlflow_metric_name(k)}": float(v) for k, v in official.items() if isinstance(v, (int, float))})
    metrics.update(cascade_metrics(casc, scores, names, weights))
    if manifest.cascade:
        every = ensemble([scores[n].outputs for n in names], weights, names=names)
        metrics.update(headline(score_outputs(every, dev, dcfg)[0], "ensemble_no_cascade/"))
        report["cascade_counts"] = [asdict(st) for st in casc.stages]
    kaggle = scored.best_kaggle_micro_f1()
    thresholds = {
        "long": float(official["long-best-threshold"]),
        "short": float(official["short-best-threshold"]),
        "kaggle_long": float(kaggle.long_threshold),
        "kaggle_short": float(kaggle.short_threshold),
        "kaggle_micro_f1": float(kaggle.f1),
    }
    metrics.update({f"threshold/{k}": v for k, v in thresholds.items() if np.isfinite(v)})
    for name, preds in (("null", null_baseline(dev)), ("question_overlap", overlap_baseline(dev))):
        metrics.update(headline(score_answers(dev.gold, official_predictions(preds, dev.offsets)), f"baseline/{name}/"))

    analysis = error_analysis.analyse(dev.examples, dev.gold, answers, error_analysis.ModelAnswers("ensemble", scored, decoded))
    out_dir = Path(cfg.output_dir) / "runs" / run.run_id / VALIDATION_DIR
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # The folder appears whole or not at all (a full disk leaves nothing a later step would take
    # for a result), and each file in it too.
    with folder_written_whole(out_dir) as tmp_dir:
        write_validation(
            Path(tmp_dir),
            thresholds={**thresholds, "decode": dcfg.to_dict()},  # predict decodes with exactly these settings
            report=report,
            predictions=dec.nq_predictions_json(decoded, dev.offsets),
            summary=predictions_report(metrics, official, thresholds, report),
            scored=scored,
            analysis=analysis,
        )
    run.set_tags(error_analysis.table_tags(f"{VALIDATION_DIR}/error_analysis"))
    run.log_metrics(metrics, step=0)
    run.log_artifacts(str(out_dir), VALIDATION_DIR)
    return {**metrics, **{f"thresholds.{k}": v for k, v in thresholds.items()}}


def write_validation(
    out_dir: Path, *, thresholds: dict, report: dict, predictions: dict, summary: str, scored: ScoredAnswers, analysis
) -> None:
    """The files of a validation (what ``predict`` and a reader take from it), each written whole."""
    write_text_whole(out_dir / "thresholds.json", json.dumps(thresholds, indent=1))
    write_text_whole(out_dir / "ensemble.json", json.dumps(report, indent=1))
    write_text_whole(out_dir / "predictions.json", json.dumps(predictions))
    write_text_whole(out_dir / "predictions.txt", summary)
    pr_plot(scored, out_dir / "precision_recall.png")
    error_analysis.write(analysis, out_dir / "error_analysis")


def cascade_metrics(casc, scores: dict, names: list[str], weights) -> dict[str, float]:
    """Candidates reaching each stage and the inference seconds each took, beside the seconds
    without the cascade (then only the voting models run, on every candidate)."""
    voters = [n for n, w in zip(names, weights) if w > 0]
    n_all = max(sc.rows for sc in scores.values())
    n_ens = n_all if casc.keys is None else len(casc.keys)
    out: dict[str, float] = {"cascade/candidates_all": n_all, "cascade/candidates_ensemble": n_ens}
    for k, st in enumerate(casc.stages, 1):
        out.update(
            {f"cascade/stage{k}_scored": st.scored, f"cascade/stage{k}_kept": st.kept, f"cascade/stage{k}_seconds": st.seconds}
        )
    voting = sum(scores[n].seconds * n_ens / max(scores[n].rows, 1) for n in voters)
    out["cascade/ensemble_seconds"] = voting
    out["cascade/inference_seconds"] = voting + sum(st.seconds for st in casc.stages)
    out["cascade/inference_seconds_without"] = sum(scores[n].seconds for n in voters)
    return out


def predictions_report(metrics: dict, official: dict, thresholds: dict, report: dict) -> str:
    """The original's ``predictions.txt``: per model and ensemble F1, then the thresholds."""
    lines = ["model                              long-F1  short-F1  kaggle-F1"]
    rows = sorted({k.rsplit("/", 1)[0] for k in metrics if k.endswith("long-best-threshold-f1")})
    for r in rows:
        lines.append(
            f"{r:<34} {metrics[r + '/long-best-threshold-f1']:.4f}   {metrics[r + '/short-best-threshold-f1']:.4f}    "
            f"{metrics.get(r + '/kaggle-micro-f1', float('nan')):.4f}"
        )
    d = report.get("decode", {})
    lines += [
        "",
        f"decode: {d.get('decode', 'joint')} (max_answer_words {d.get('max_answer_words', 30)})",
        "html_tokens: " + ", ".join(f"{n}={s.get('html_tokens', 'tfqa')}" for n, s in report.get("model_settings", {}).items()),
    ]
    counts = report.get("cascade_counts", [])
    stages = [
        f"{st['model']} top {st['top_k']} > {st['threshold']}"
        + (f" ({counts[k]['scored']} -> {counts[k]['kept']} candidates)" if k < len(counts) else "")
        for k, st in enumerate(report.get("cascade", []))
    ]
    lines.append("cascade: " + (" -> ".join(stages) if stages else "none"))
    lines += [
        "ensemble weights: " + ", ".join(f"{n}={w:.3f}" for n, w in zip(report["names"], report["weights"])),
        f"long threshold  {thresholds['long']:.4f}   short threshold  {thresholds['short']:.4f}",
        f"kaggle thresholds: long {thresholds['kaggle_long']:.4f}  short {thresholds['kaggle_short']:.4f}  "
        f"micro-F1 {thresholds['kaggle_micro_f1']:.4f}",
        "",
        json.dumps(official, indent=1),
    ]
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
    error_analysis.save_png(fig, path, dpi=100)
    return path
