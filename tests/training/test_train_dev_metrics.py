"""Every training run given a dev file ends with the dev evaluation: the train stage run in-process
on a tiny BERT against a real tracking server, its logged ``dev/*`` metrics checked against the
final model's dev outputs scored here, with the per-type accuracies recomputed from the decoded
answers and the raw annotations by a plain loop (not by ``tfqa.evaluation.error_analysis``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ANSWER_TYPES = ("null", "long_only", "short_span", "yes", "no")
DEV_EXAMPLES = 8
STEPS = 150


def reference_type_and_right(ex, p, t_long: float, t_short: float) -> tuple[str, bool]:
    """The gold answer type of ``ex`` and whether the decoded answer ``p`` is right at the
    thresholds, straight from the annotations with the official 2-of-5 vote."""
    anns = ex.annotations
    need = min(2, len(anns))
    has_long = sum(a.long_answer is not None for a in anns) >= need
    has_short = sum(a.has_short for a in anns) >= need
    votes = [sum(bool(a.short_answers) for a in anns), sum(a.yes_no == "YES" for a in anns), sum(a.yes_no == "NO" for a in anns)]
    kind = ("short_span", "yes", "no")[votes.index(max(votes))]
    gold_type = kind if has_short else "long_only" if has_long else "null"

    long_kept = p.has_long and p.long_score >= t_long
    gold_longs = {(a.long_answer.start_token, a.long_answer.end_token) for a in anns if a.long_answer is not None}
    long_right = (long_kept and (p.long_start_token, p.long_end_token) in gold_longs) if has_long else not long_kept
    short_kept = p.has_short and p.short_score >= t_short
    if p.yes_no != "NONE":
        short_hit = any(a.yes_no == p.yes_no for a in anns)
    else:
        span = {(p.short_start_token, p.short_end_token)}
        short_hit = any(a.short_answers and {(s.start_token, s.end_token) for s in a.short_answers} == span for a in anns)
    short_right = (short_kept and short_hit) if has_short else not short_kept
    return gold_type, long_right and short_right


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory, one_torch_thread):
    """Two runs of bert_base on the same data: the final evaluation only, and a curve. They train
    on the dev examples themselves: what is tested is what gets logged, and a tiny model that has
    seen its dev examples gets some of each kind right and some wrong (after 150 steps: long F1
    0.6, accuracy 1 on null, 1/2 on long-only and short-span, 0 on NO), where one that learnt
    nothing gets everything wrong and would let a wrong accuracy pass."""
    from tfqa import tracking
    from tfqa.data.synth import SynthConfig, write_original
    from tfqa.pipeline.demo import tiny_backbone
    from tfqa.stages.train import TrainStageConfig, run_train
    from tfqa.training.variants import VARIANTS, with_overrides

    if not mlflow_server.running:
        mlflow_server.start()
    root = tmp_path_factory.mktemp("train_dev")
    pages = dict(min_candidates=8, max_candidates=12, min_tokens=200, max_tokens=400)
    dev_file = root / "dev.jsonl.gz"
    write_original(dev_file, SynthConfig(n_examples=12, seed=8, n_annotations=5, **pages))
    variant = with_overrides(
        VARIANTS["bert_base"],
        {"backbone_name": "tiny", "max_seq_len": "96", "batch_size": "8", "lr": "1e-3", "negatives_per_example": "4"},
    )
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            mp.delenv(k, raising=False)
        for name, eval_every in (("final_only", 0), ("curve", STEPS // 2)):
            cfg = TrainStageConfig(
                variant=variant,
                backbone=tiny_backbone(root),
                train_data=str(dev_file),
                dev_data=str(dev_file),
                dev_examples=DEV_EXAMPLES,
                eval_every=eval_every,
                # Only the run's curve here: a kept checkpoint model would repeat its step's points
                # (linked to the model, as MLflow's log_model(step=) does; see test_distributed).
                keep_best_models=0,
                output_dir=str(root / "outputs"),
                max_steps=STEPS,
                checkpoint_every=0,
                log_every=10,
            )
            with tracking.start_run(experiment=f"train-dev-{root.name}", run_name=name, log_system_metrics=False) as run:
                returned = run_train(cfg, run)
            runs[name] = (run.run_id, returned)
        yield root, dev_file, variant, runs


def history(run_id: str, key: str) -> list:
    from mlflow.tracking import MlflowClient

    return sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)


def test_final_dev_metrics_match_the_final_model_scored_here(trained):
    from mlflow.tracking import MlflowClient

    from tfqa.evaluation.dev import DevSet, score_outputs
    from tfqa.features.cache import BuildConfig, build_features
    from tfqa.features.dataset import FeatureStore
    from tfqa.features.featurize import FeatureConfig
    from tfqa.inference.batch_scoring import score_candidates
    from tfqa.inference.decode import DecodeConfig
    from tfqa.modeling.model import CandidateQAModel

    root, dev_file, variant, runs = trained
    run_id, returned = runs["final_only"]
    logged = MlflowClient().get_run(run_id).data.metrics
    keys = ["dev/long_f1", "dev/short_f1", "dev/long_threshold", "dev/short_threshold", "dev/kaggle_micro_f1", "dev/acc_all"]
    for key in keys + [f"dev/n_{t}" for t in ANSWER_TYPES]:
        points = history(run_id, key)
        assert [m.step for m in points] == [STEPS], (key, points)  # once, at the last step
        assert returned[key] == pytest.approx(points[0].value, abs=1e-12), key
    assert "dev/eval_seconds" in logged and logged["dev/eval_seconds"] > 0

    # The final model on the first DEV_EXAMPLES dev examples, inputs built as it was trained.
    final = Path(root / "outputs" / "runs" / run_id / "final")
    model = CandidateQAModel.from_pretrained(final)
    features = build_features(
        dev_file,
        final,
        root / "check-features",
        BuildConfig(
            features=FeatureConfig(variant.max_seq_len, variant.max_question_len, variant.html_tokens), max_lines=DEV_EXAMPLES
        ),
        progress=False,
    )
    outputs = score_candidates(model, FeatureStore(features.path))
    dev = DevSet.read(dev_file, DEV_EXAMPLES)
    scored, decoded = score_outputs(outputs, dev, DecodeConfig())
    official = scored.official_metrics()
    assert logged["dev/long_f1"] == pytest.approx(official["long-best-threshold-f1"], abs=1e-9)
    assert logged["dev/short_f1"] == pytest.approx(official["short-best-threshold-f1"], abs=1e-9)
    assert logged["dev/long_threshold"] == pytest.approx(official["long-best-threshold"], abs=1e-6)
    assert logged["dev/short_threshold"] == pytest.approx(official["short-best-threshold"], abs=1e-6)
    assert logged["dev/kaggle_micro_f1"] == pytest.approx(scored.best_kaggle_micro_f1().f1, abs=1e-9)

    outcome = [
        reference_type_and_right(ex, p, logged["dev/long_threshold"], logged["dev/short_threshold"])
        for ex, p in zip(dev.examples, decoded)
    ]
    assert sum(logged[f"dev/n_{t}"] for t in ANSWER_TYPES) == DEV_EXAMPLES
    assert logged["dev/acc_all"] == pytest.approx(sum(r for _, r in outcome) / DEV_EXAMPLES)
    # The check below must be able to fail: several types, right and wrong answers among them.
    assert len({t for t, _ in outcome}) >= 3 and 0 < sum(r for _, r in outcome) < DEV_EXAMPLES, outcome
    assert logged["dev/long_f1"] > 0 and logged["dev/long_threshold"] > 0
    for t in ANSWER_TYPES:
        rights = [r for ty, r in outcome if ty == t]
        assert logged[f"dev/n_{t}"] == len(rights), t
        if rights:
            assert logged[f"dev/acc_{t}"] == pytest.approx(sum(rights) / len(rights)), t
        else:
            assert f"dev/acc_{t}" not in logged, t


def test_eval_every_logs_the_same_metrics_as_a_curve_without_repeating_the_last(trained):
    from mlflow.tracking import MlflowClient

    *_, runs = trained
    run_id, _ = runs["curve"]
    final_only = MlflowClient().get_run(runs["final_only"][0]).data.metrics
    for key in ("dev/long_f1", "dev/short_f1", "dev/long_threshold", "dev/acc_all", "dev/n_null"):
        assert [m.step for m in history(run_id, key)] == [STEPS // 2, STEPS], key
    # Same data, seed and steps: the curve's last point is the final-only run's evaluation.
    curve_last = {k: history(run_id, k)[-1].value for k in ("dev/long_f1", "dev/short_f1", "dev/acc_all")}
    assert curve_last == pytest.approx({k: final_only[k] for k in curve_last})
    assert MlflowClient().get_run(run_id).data.params["stage.eval_every"] == str(STEPS // 2)
