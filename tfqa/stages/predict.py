"""The ``predict`` stage: a test jsonl + a finished ``validate`` run -> Kaggle ``submission.csv``.

The same model versions, weights and thresholds the validation chose; rows
``<id>_long`` / ``<id>_short`` with ``start:end`` token spans, ``YES``, ``NO`` or blank.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tfqa import decode as dec
from tfqa.ensemble import ensemble
from tfqa.readers import read_examples
from tfqa.stages.validate import ENSEMBLE_ARTIFACT, THRESHOLDS_ARTIFACT, ValidateConfig, model_outputs
from tfqa.upstream import download_run_artifact


@dataclass(frozen=True)
class PredictConfig:
    validate_run: str
    test_data: str
    output_dir: str = "outputs"
    thresholds: str = "kaggle"
    """``kaggle`` (the pair that maximised Kaggle's micro-F1) or ``official`` (best-F1 per type)."""


def submission_rows(decoded: list[dec.Prediction]) -> pd.DataFrame:
    rows = []
    for p in decoded:
        long = f"{p.long_start_token}:{p.long_end_token}" if p.has_long else ""
        if p.yes_no != "NONE":
            short = p.yes_no
        elif p.has_short:
            short = f"{p.short_start_token}:{p.short_end_token}"
        else:
            short = ""
        rows += [(f"{p.example_id}_long", long), (f"{p.example_id}_short", short)]
    return pd.DataFrame(rows, columns=["example_id", "PredictionString"])


def voting_models(report: dict) -> list[tuple[str, str, float]]:
    """(name, version, weight) of the models a validation's ensemble report gives a vote. One with
    weight 0 (the original's pruning model) changes no average, so it is not run at all."""
    return [(n, str(report["versions"][n]), float(w)) for n, w in zip(report["names"], report["weights"]) if w > 0]


def run_predict(cfg: PredictConfig, run) -> Path:
    from mlflow.tracking import MlflowClient

    vrun = MlflowClient().get_run(cfg.validate_run)
    if vrun.info.status != "FINISHED":
        raise ValueError(f"validate run {cfg.validate_run} is {vrun.info.status}, not FINISHED")
    thresholds = json.loads(download_run_artifact(cfg.validate_run, THRESHOLDS_ARTIFACT).read_text())
    report = json.loads(download_run_artifact(cfg.validate_run, ENSEMBLE_ARTIFACT).read_text())
    t_long, t_short = ((thresholds["kaggle_long"], thresholds["kaggle_short"]) if cfg.thresholds == "kaggle"
                       else (thresholds["long"], thresholds["short"]))
    run.log_params({"predict": asdict(cfg), "threshold": {"long": t_long, "short": t_short}})
    run.set_tags({"tfqa.stage": "predict", "tfqa.upstream.validate": cfg.validate_run})

    examples = list(read_examples(cfg.test_data))
    vcfg = ValidateConfig(manifest="", dev_data=cfg.test_data, output_dir=cfg.output_dir)
    voters = voting_models(report)
    outputs = []
    for name, version, _ in voters:
        out, _ = model_outputs(f"models:/{name}/{version}", f"{name}-v{version}", Path(cfg.test_data), vcfg, run, name)
        outputs.append(out)
    ens = ensemble(outputs, [w for _, _, w in voters], names=[n for n, _, _ in voters])
    decoded = dec.decode(ens, dec.candidate_spans(examples), example_ids=[ex.example_id for ex in examples])
    decoded = dec.apply_thresholds(decoded, t_long, t_short)
    out_dir = Path(cfg.output_dir) / "runs" / run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "submission.csv"
    sub = submission_rows(decoded)
    sub.to_csv(path, index=False)
    run.log_metrics({"predict/examples": len(examples), "predict/long_answers": int((sub.PredictionString != "")[::2].sum()),
                     "predict/short_answers": int((sub.PredictionString != "")[1::2].sum())}, step=0)
    run.log_artifact(str(path), "submission")
    return path
