"""The ``predict`` stage: a test jsonl + a finished ``validate`` run -> Kaggle ``submission.csv``.

The same model versions, weights, cascade, decoding and thresholds the validation chose (the
cascade's models run on the survivors of the stage before only); rows
``<id>_long`` / ``<id>_short`` with ``start:end`` token spans, ``YES``, ``NO`` or blank.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from tfqa.core.destinations import written_whole
from tfqa.data.readers import read_examples
from tfqa.inference import decode as dec
from tfqa.inference.ensemble import ensemble
from tfqa.tracking.datasets import TEST, log_data_inputs, nq_input
from tfqa.tracking.names import ENSEMBLE_ARTIFACT, SCORES_TABLES_DIR, SUBMISSION_DIR, THRESHOLDS_ARTIFACT, UPSTREAM_TAG_PREFIX
from tfqa.tracking.queries import get_run
from tfqa.tracking.registry import model_versions, record_models_used
from tfqa.tracking.upstream import download_run_artifact, require_stage


@dataclass(frozen=True)
class PredictConfig:
    validate_run: str
    """A finished validate run id (default: the latest FINISHED one)."""
    test_data: str
    """Test jsonl, Kaggle's simplified format (default: settings data.test)."""
    output_dir: str = "outputs"
    thresholds: Literal["kaggle", "official"] = "kaggle"
    """``kaggle`` (the pair that maximised Kaggle's micro-F1) or ``official`` (best-F1 per type)."""
    long_threshold: float | None = None
    """Keep a long answer scoring at least this instead of validate's long threshold (the original's
    test kernel set its pair by hand)."""
    short_threshold: float | None = None
    """Keep a short answer scoring at least this instead of validate's short threshold."""

    def chosen_thresholds(self, validated: dict) -> tuple[float, float, float, float]:
        """(long, short) to apply and (long, short) the validate run chose under ``thresholds``."""
        pair = (
            (validated["kaggle_long"], validated["kaggle_short"])
            if self.thresholds == "kaggle"
            else (validated["long"], validated["short"])
        )
        long = pair[0] if self.long_threshold is None else self.long_threshold
        short = pair[1] if self.short_threshold is None else self.short_threshold
        return float(long), float(short), float(pair[0]), float(pair[1])


def submission_rows(decoded: list[dec.DecodedAnswer]) -> pd.DataFrame:
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


def cascade_of(report: dict):
    """The cascade stages a validation ran, as ``CascadeStage``s with their model versions."""
    from tfqa.inference.manifest import CascadeStage

    return [
        (CascadeStage(st["model"], int(st["top_k"]), float(st["threshold"])), str(st["version"]))
        for st in report.get("cascade", [])
    ]


def require_validate_run(run_id: str) -> None:
    """Refuse, naming what it is, a run that is not a validate run (its artifacts are not there)."""
    require_stage(get_run(run_id), {"validate"}, "validate")


def run_predict(cfg: PredictConfig, run) -> Path:
    from tfqa.inference.cascade import run_cascade
    from tfqa.inference.model_scores import score_model

    require_validate_run(cfg.validate_run)
    vrun = get_run(cfg.validate_run)
    if vrun.info.status != "FINISHED":
        raise ValueError(f"validate run {cfg.validate_run} is {vrun.info.status}, not FINISHED")
    thresholds = json.loads(download_run_artifact(cfg.validate_run, THRESHOLDS_ARTIFACT).read_text())
    report = json.loads(download_run_artifact(cfg.validate_run, ENSEMBLE_ARTIFACT).read_text())
    t_long, t_short, v_long, v_short = cfg.chosen_thresholds(thresholds)
    # The thresholds were chosen under the validation's decoding: decode exactly so.
    dcfg = dec.DecodeConfig.from_dict(thresholds.get("decode") or report.get("decode"))
    stages = cascade_of(report)
    run.log_params(
        {
            "predict": asdict(cfg),
            # What is applied, beside the pair the validate run chose (they differ where -P gave one).
            "threshold": {"long": t_long, "short": t_short},
            "validate_threshold": {"long": v_long, "short": v_short},
            "decode": dcfg.to_dict(),
            "cascade": [asdict(st) for st, _ in stages] or "none",
        }
    )
    run.set_tags({f"{UPSTREAM_TAG_PREFIX}validate": cfg.validate_run})

    examples = list(read_examples(cfg.test_data))
    versions = {n: str(v) for n, v in report["versions"].items()}
    used = {n for n, _, _ in voting_models(report)} | {st.model for st, _ in stages}
    record_models_used(run, model_versions({n: versions[n] for n in sorted(used)}))
    log_data_inputs(run, [nq_input(cfg.test_data, examples, TEST)])

    def score(name: str, keys):
        sc = score_model(
            f"models:/{name}/{versions[name]}", f"{name}-v{versions[name]}", cfg.test_data, cfg.output_dir, keys=keys
        )
        run.log_artifact(str(sc.cache_path), SCORES_TABLES_DIR)
        return sc.outputs, sc.seconds

    # Each stage's model runs on the survivors of the stage before only, as in the original.
    casc = run_cascade([st for st, _ in stages], score)
    voters = voting_models(report)
    outputs, seconds = zip(*(score(name, casc.keys) for name, _, _ in voters))
    ens = ensemble(list(outputs), [w for _, _, w in voters], names=[n for n, _, _ in voters])
    decoded = dec.decode(ens, dec.candidate_spans(examples), dcfg, example_ids=[ex.example_id for ex in examples])
    decoded = dec.apply_thresholds(decoded, t_long, t_short)
    out_dir = Path(cfg.output_dir) / "runs" / run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "submission.csv"
    sub = submission_rows(decoded)
    with written_whole(path) as tmp:  # a killed predict leaves no half-written submission
        sub.to_csv(tmp, index=False)
    metrics = {
        "predict/examples": len(examples),
        "predict/long_answers": int((sub.PredictionString != "")[::2].sum()),
        "predict/short_answers": int((sub.PredictionString != "")[1::2].sum()),
        "predict/candidates_ensemble": len(ens),
        "predict/ensemble_seconds": float(sum(seconds)),
    }
    for k, st in enumerate(casc.stages, 1):
        metrics.update(
            {f"predict/stage{k}_scored": st.scored, f"predict/stage{k}_kept": st.kept, f"predict/stage{k}_seconds": st.seconds}
        )
    run.log_metrics(metrics, step=0)
    run.log_artifact(str(path), SUBMISSION_DIR)
    return path
