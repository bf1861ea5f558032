"""End to end through `mlflow run`: promote -> validate -> predict against a real tracking server.

Five tiny models (2-layer random BERT on the MiniLM vocabulary, 3 optimizer steps each) are trained
in-process - the training entry points have their own tests - and registered under a test
manifest; the registry entry points then run as MLflow projects, as an operator would run them.
Each `mlflow run` costs ~30 s here, so there are five of them: promote, validate twice, a validate
that must fail, predict.

The tests are independent of their order (`-k` any one of them gives the same result): each
validate writes its outputs cache into a folder of its own (a test that checks reuse depends on
the validate whose cache it reuses, as a fixture), and a test that moves an alias moves it back.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UID = uuid.uuid4().hex[:8]
NAMES = {k: f"tfqa-e2e-{UID}-v{k}" for k in "12345"}
ALIAS = "champion"
BACKBONE = "tiny"
# Cheap settings for every variant. Variants 1, 2 and 4 sample hard negatives and 2, 3 start from
# the SQuAD model in the real recipe; here all use random negatives and the backbone.
OVERRIDES = {"backbone_name": BACKBONE, "max_seq_len": "96", "batch_size": "8", "negatives": "random", "init": "backbone"}
SMALL_PAGES = dict(min_candidates=8, max_candidates=16, min_tokens=200, max_tokens=500)
RUN_ID = re.compile(r"Run \(ID '([0-9a-f]{32})'\)")


@dataclass
class E2E:
    root: Path
    uri: str
    experiment: str
    backbone: str
    train: Path
    dev: Path
    test: Path
    manifest: Path
    runs: dict[str, str] = field(default_factory=dict)
    """variant -> training run id (all promoted to ALIAS in the fixture)."""
    extra_run: str = ""
    """A second training run of variant 3 (another seed): the next version of NAMES['3']."""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(
            MLFLOW_TRACKING_URI=self.uri,
            MLFLOW_EXPERIMENT_NAME=self.experiment,
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env


def _train(e: E2E, variant: str, run_name: str, **extra: str) -> str:
    from tfqa import tracking
    from tfqa.stages.train import TrainStageConfig, run_train
    from tfqa.training.variants import VARIANTS, with_overrides

    v = with_overrides(VARIANTS[variant], {**OVERRIDES, **extra})
    cfg = TrainStageConfig(
        variant=v,
        backbone=e.backbone,
        train_data=str(e.train),
        output_dir=str(e.root / "train-outputs"),
        max_steps=3,
        checkpoint_every=3,
        log_every=1,
    )
    # Opened as the entry point opens it: the stage tags are set by whoever starts the run.
    tags = {"tfqa.stage": v.entry_point, "tfqa.variant": v.key}
    with tracking.start_run(experiment=e.experiment, run_name=run_name, tags=tags, log_system_metrics=False) as run:
        run_train(cfg, run)
    return run.run_id


@pytest.fixture(scope="module")
def e2e(mlflow_server, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from tfqa.data.synth import SynthConfig, write_original, write_simplified
    from tfqa.inference.manifest import EnsembleManifest
    from tfqa.pipeline.demo import tiny_backbone
    from tfqa.tracking.registry import promote

    if not mlflow_server.running:
        mlflow_server.start()
    root = tmp_path_factory.mktemp("e2e_registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", f"e2e-registry-{UID}")
        for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            mp.delenv(k, raising=False)
        e = E2E(
            root=root,
            uri=mlflow_server.uri,
            experiment=f"e2e-registry-{UID}",
            backbone=tiny_backbone(root),
            train=root / "train.jsonl",
            dev=root / "dev.jsonl.gz",
            test=root / "test.jsonl",
            manifest=root / "ensemble.yaml",
        )
        write_simplified(e.train, SynthConfig(n_examples=24, seed=1, **SMALL_PAGES))
        write_original(e.dev, SynthConfig(n_examples=10, seed=2, n_annotations=5, **SMALL_PAGES))
        write_simplified(e.test, SynthConfig(n_examples=6, seed=3, **SMALL_PAGES), with_annotations=False)
        e.manifest.write_text(
            f"alias: {ALIAS}\nmodels:\n"
            + "".join(f'  - {{name: {NAMES[k]}, variant: "{k}", backbone: {BACKBONE}, weight: 0.2}}\n' for k in "12345")
        )

        for k in "12345":
            e.runs[k] = _train(e, k, f"train-v{k}")
        e.extra_run = _train(e, "3", "train-v3-seed33", seed="33")
        client = MlflowClient()
        for k, run_id in e.runs.items():
            assert client.get_run(run_id).info.status == "FINISHED"
        manifest = EnsembleManifest.load(e.manifest)
        for k in "12345":
            p = promote(e.runs[k], manifest)
            assert (p.name, p.version, p.alias) == (NAMES[k], "1", ALIAS)
        yield e


def mlflow_run(
    e: E2E, entry_point: str, params: dict[str, str], *, expect_ok: bool = True, timeout: float = 600
) -> tuple[str | None, str]:
    """`mlflow run . -e <entry_point> --env-manager local -P ...`; (run id, combined output)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        ".",
        "-e",
        entry_point,
        "--env-manager",
        "local",
        "--experiment-name",
        e.experiment,
    ]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    proc = subprocess.run(cmd, cwd=REPO, env=e.env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    found = RUN_ID.search(out)
    if expect_ok:
        assert proc.returncode == 0, f"mlflow run -e {entry_point} failed ({proc.returncode}):\n{out[-6000:]}"
        assert found, out[-3000:]
    else:
        assert proc.returncode != 0, f"mlflow run -e {entry_point} should have failed:\n{out[-3000:]}"
    return (found.group(1) if found else None), out


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def _download(run_id: str, path: str, dst: Path) -> Path:
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))


def _validate(e: E2E, outputs: Path, *, expect_ok: bool = True, **extra: str) -> tuple[str | None, str]:
    return mlflow_run(
        e,
        "validate",
        {"manifest": str(e.manifest), "dev_data": str(e.dev), "output_dir": str(outputs), **extra},
        expect_ok=expect_ok,
    )


def first_outputs(e: E2E) -> Path:
    """The outputs cache of ``first_validate``: what a test of reuse reuses."""
    return e.root / "outputs-first"


@pytest.fixture(scope="module")
def first_validate(e2e):
    """The ensemble at ALIAS as the fixture promoted it (version 1 of every name), into an outputs
    cache of its own."""
    from mlflow.tracking import MlflowClient

    run_id, out = _validate(e2e, first_outputs(e2e))
    return MlflowClient().get_run(run_id), out


# ------------------------------------------------------------------------------------------ tests
def test_promote_entry_point_registers_and_sets_alias(e2e):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    solo = f"tfqa-e2e-{UID}-solo"
    manifest = e2e.root / "solo.yaml"  # its own model name: the ensemble's aliases stay as they are
    manifest.write_text(f"alias: {ALIAS}\nmodels:\n  - {{name: {solo}, variant: '2', backbone: {BACKBONE}}}\n")
    run_id, out = mlflow_run(e2e, "promote", {"run_id": e2e.runs["2"], "manifest": str(manifest)})
    assert f"{solo} version 1 is now @{ALIAS} (run {e2e.runs['2']})" in out

    mv = client.get_model_version_by_alias(solo, ALIAS)
    assert mv.version == "1" and mv.run_id == e2e.runs["2"]
    # MLflow 3: the version is made from the training run's LoggedModel (models:/<model_id>).
    (lm,) = client.search_logged_models([client.get_run(e2e.runs["2"]).info.experiment_id], f"source_run_id = '{e2e.runs['2']}'")
    assert mv.source == f"models:/{lm.model_id}" and str(lm.status) == "READY"
    assert mv.tags == {"tfqa.backbone": BACKBONE, "tfqa.variant": "2"}
    assert client.get_registered_model(solo).tags == {"tfqa.backbone": BACKBONE, "tfqa.variant": "2"}

    promote_run = client.get_run(run_id)
    assert promote_run.info.status == "FINISHED"
    tags = promote_run.data.tags
    assert tags["mlflow.project.entryPoint"] == "promote" and tags["tfqa.stage"] == "promote"
    assert tags["tfqa.upstream.train"] == e2e.runs["2"]
    assert tags["tfqa.registered_model"] == solo and tags["tfqa.model_version"] == "1"
    assert tags[f"tfqa.model_id.{solo}"] == lm.model_id
    assert [m.model_id for m in promote_run.inputs.model_inputs] == [lm.model_id]
    assert promote_run.data.params["name"] == solo and promote_run.data.params["alias"] == ALIAS


def test_validate_entry_point_metrics_tags_artifacts(e2e, first_validate, tmp_path):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tfqa.data.readers import read_examples
    from tfqa.evaluation.dev import DevSet
    from tfqa.evaluation.nq_metric import score
    from tfqa.evaluation.nq_predictions import read_predictions
    from tfqa.inference import decode as dec

    client = MlflowClient()
    run, _ = first_validate
    assert run.info.status == "FINISHED" and "tfqa.error" not in run.data.tags
    m, tags = run.data.metrics, run.data.tags

    # Each model's logged F1s are its logged outputs, decoded as validate decodes and scored by the
    # official scorer from a prediction file: exactly, not a range.
    dev = DevSet.read(e2e.dev)
    decode_cfg = dec.DecodeConfig.from_dict(
        json.loads(_download(run.info.run_id, "validation/thresholds.json", tmp_path).read_text())["decode"]
    )
    for k, name in NAMES.items():
        assert tags[f"tfqa.model_version.{name}"] == client.get_model_version_by_alias(name, ALIAS).version == "1"
        assert tags[f"tfqa.upstream.{name}"] == e2e.runs[k]
        outputs = pd.read_parquet(_download(run.info.run_id, f"outputs/{tags[f'tfqa.outputs.{name}']}", tmp_path / name))
        decoded = dec.decode(outputs, dev.spans, decode_cfg, example_ids=[ex.example_id for ex in dev.examples])
        pred_file = tmp_path / name / "predictions.json"
        pred_file.write_text(json.dumps(dec.nq_predictions_json(decoded, dev.offsets)))
        official = score(list(read_examples(e2e.dev)), read_predictions(pred_file))
        for key in ("long-best-threshold-f1", "short-best-threshold-f1"):
            assert m[f"model/{name}/{key}"] == pytest.approx(float(official[key]), abs=1e-12), (name, key)
        assert m[f"model/{name}/outputs_reused"] == 0.0  # its own output dir: everything computed
    for key in (
        "ensemble/long-best-threshold-f1",
        "ensemble/short-best-threshold-f1",
        "ensemble/kaggle-micro-f1",
        "threshold/long",
        "threshold/short",
        "baseline/null/long-best-threshold-f1",
        "baseline/null/short-best-threshold-f1",
        "baseline/question_overlap/long-best-threshold-f1",
        "baseline/question_overlap/short-best-threshold-f1",
        # official keys (compute_f1 and the PR-curve ones that are valid MLflow names)
        "ensemble/long-answer-f1",
        "ensemble/long-answer-precision",
        "ensemble/long-answer-recall",
        "ensemble/long-answer-n",
        "ensemble/short-answer-f1",
        "ensemble/short-answer-n",
        "ensemble/long-best-threshold-precision",
        "ensemble/long-best-threshold-recall",
        "ensemble/short-best-threshold",
    ):
        assert key in m, f"metric {key} missing; logged: {sorted(m)}"
    assert m["baseline/null/long-best-threshold-f1"] == 0.0 and m["baseline/null/short-best-threshold-f1"] == 0.0
    assert m["ensemble/long-answer-n"] == m["ensemble/short-answer-n"] == 10

    arts = _artifacts(client, run.info.run_id)
    for path in (
        "validation/predictions.json",
        "validation/predictions.txt",
        "validation/precision_recall.png",
        "validation/thresholds.json",
        "validation/ensemble.json",
    ):
        assert path in arts, f"{path} not logged; artifacts: {sorted(arts)}"
    parquets = sorted(a for a in arts if a.startswith("outputs/") and a.endswith(".parquet"))
    assert len(parquets) == 5
    for name in NAMES.values():
        assert any(p.startswith(f"outputs/{name}-v1-") for p in parquets), (name, parquets)
        assert tags[f"tfqa.outputs.{name}"] in {p.split("/", 1)[1] for p in parquets}

    # predictions.json is what was scored: the official scorer gives the logged F1s back
    preds = read_predictions(_download(run.info.run_id, "validation/predictions.json", tmp_path))
    official = score(list(read_examples(e2e.dev)), preds)
    assert official["long-best-threshold-f1"] == pytest.approx(m["ensemble/long-best-threshold-f1"], abs=1e-9)
    assert official["short-best-threshold-f1"] == pytest.approx(m["ensemble/short-best-threshold-f1"], abs=1e-9)
    assert official["long-answer-f1"] == pytest.approx(m["ensemble/long-answer-f1"], abs=1e-9)
    assert official["short-answer-f1"] == pytest.approx(m["ensemble/short-answer-f1"], abs=1e-9)

    thresholds = json.loads(_download(run.info.run_id, "validation/thresholds.json", tmp_path).read_text())
    assert thresholds["long"] == pytest.approx(m["threshold/long"]) and thresholds["short"] == pytest.approx(m["threshold/short"])
    report = json.loads(_download(run.info.run_id, "validation/ensemble.json", tmp_path).read_text())
    assert report["names"] == list(NAMES.values())
    assert report["versions"] == {n: "1" for n in NAMES.values()}
    assert report["weights"] == pytest.approx([0.2] * 5)
    text = _download(run.info.run_id, "validation/predictions.txt", tmp_path).read_text()
    assert "ensemble" in text and all(f"model/{n}" in text for n in NAMES.values())
    png = _download(run.info.run_id, "validation/precision_recall.png", tmp_path).read_bytes()
    assert png.startswith(b"\x89PNG")


def test_validate_logs_the_error_analysis(e2e, first_validate, tmp_path):
    """The tables (CSV and MLflow tables), the plots, and figures that agree with the run's metrics."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    run, _ = first_validate
    run_id, m = run.info.run_id, run.data.metrics
    arts = _artifacts(MlflowClient(), run_id)
    base = "validation/error_analysis"
    for name in ("slices", "agreement", "ensemble_changes"):
        assert {f"{base}/{name}.csv", f"{base}/{name}.json"} <= arts, sorted(arts)
    for png in ("slices.png", "agreement.png"):
        assert _download(run_id, f"{base}/{png}", tmp_path).read_bytes().startswith(b"\x89PNG")
    logged_tables = {t["path"] for t in json.loads(run.data.tags["mlflow.loggedArtifacts"]) if t["type"] == "table"}
    assert logged_tables == {f"{base}/{n}.json" for n in ("slices", "agreement", "ensemble_changes")}

    slices = mlflow.load_table(f"{base}/slices.json", run_ids=[run_id])
    names = [*NAMES.values(), "ensemble"]
    assert list(dict.fromkeys(slices.model)) == names
    whole = slices[slices.by == "all"].set_index("model")
    for name in names:  # over every example, at each model's thresholds: its logged best-threshold F1
        prefix = "ensemble/" if name == "ensemble" else f"model/{name}/"
        assert whole.loc[name, "long_f1"] == pytest.approx(m[prefix + "long-best-threshold-f1"], abs=1e-12)
        assert whole.loc[name, "short_f1"] == pytest.approx(m[prefix + "short-best-threshold-f1"], abs=1e-12)
        for by in ("answer_type", "doc_length"):
            assert slices[(slices.model == name) & (slices.by == by)].n.sum() == 10, (name, by)

    agreement = pd.read_csv(_download(run_id, f"{base}/agreement.csv", tmp_path), index_col="model")
    assert list(agreement.index) == list(agreement.columns) == names
    assert (agreement.to_numpy().diagonal() == 1).all() and (agreement.to_numpy() == agreement.to_numpy().T).all()

    summary = json.loads(_download(run_id, f"{base}/summary.json", tmp_path).read_text())
    objective = {n: m[f"model/{n}/long-best-threshold-f1"] + m[f"model/{n}/short-best-threshold-f1"] for n in NAMES.values()}
    assert summary["best_member"] == max(objective, key=objective.get)
    changes = mlflow.load_table(f"{base}/ensemble_changes.json", run_ids=[run_id])
    assert (changes.change == "fixed").sum() == summary["fixed"] and (changes.change == "broken").sum() == summary["broken"]
    # The ensemble's accuracy minus its best member's is what it fixed minus what it broke.
    accuracy = whole["accuracy"]
    assert accuracy["ensemble"] - accuracy[summary["best_member"]] == pytest.approx((summary["fixed"] - summary["broken"]) / 10)


def test_validate_logs_official_recall_at_precision_keys(first_validate):
    """The official PR-curve keys are spelled 'long-recall-at-precision>=0.75'; MLflow metric names
    may not hold '>' or '=', so they are logged as '...-ge-0.75' (MLflow would drop them otherwise)."""
    run, _ = first_validate
    for part in ("long", "short"):
        for target in ("0.5", "0.75", "0.9"):
            for what in ("recall", "precision"):
                key = f"ensemble/{part}-{what}-at-precision-ge-{target}"
                assert key in run.data.metrics, (key, sorted(k for k in run.data.metrics if k.startswith("ensemble/")))
                assert 0.0 <= run.data.metrics[key] <= 1.0


def test_moving_an_alias_changes_what_validate_uses(e2e, first_validate):
    from mlflow.tracking import MlflowClient

    from tfqa.inference.manifest import EnsembleManifest
    from tfqa.tracking.registry import promote

    client = MlflowClient()
    before, _ = first_validate
    moved = NAMES["3"]
    was = client.get_model_version_by_alias(moved, ALIAS).version
    p = promote(e2e.extra_run, EnsembleManifest.load(e2e.manifest))  # variant 3 -> NAMES["3"]
    try:
        assert p.name == moved and p.version != before.data.tags[f"tfqa.model_version.{moved}"]
        assert client.get_model_version_by_alias(moved, ALIAS).run_id == e2e.extra_run
        # Into first_validate's outputs cache: what it computed is what this validate may reuse.
        run_id, _ = _validate(e2e, first_outputs(e2e))
    finally:  # the alias back where the fixture put it, for whatever test runs next
        client.set_registered_model_alias(moved, ALIAS, was)
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED"
    tags, m = after.data.tags, after.data.metrics
    assert tags[f"tfqa.model_version.{moved}"] == p.version
    assert tags[f"tfqa.upstream.{moved}"] == e2e.extra_run
    assert m[f"model/{moved}/outputs_reused"] == 0.0, "the new version's outputs must be computed afresh"
    for k, name in NAMES.items():
        if name == moved:
            continue
        assert tags[f"tfqa.model_version.{name}"] == before.data.tags[f"tfqa.model_version.{name}"]
        assert m[f"model/{name}/outputs_reused"] == 1.0, f"{name} did not change: its cached outputs are reused"
        # the same outputs, the same single-model scores
        assert m[f"model/{name}/long-best-threshold-f1"] == before.data.metrics[f"model/{name}/long-best-threshold-f1"]
    assert any(a.startswith(f"outputs/{moved}-v{p.version}-") for a in _artifacts(client, run_id, "outputs"))


def test_validate_with_a_missing_alias_fails_naming_model_and_alias(e2e):
    from mlflow.tracking import MlflowClient

    run_id, out = _validate(e2e, e2e.root / "outputs-missing-alias", alias="nonexistent", expect_ok=False)
    first = NAMES["1"]  # the first manifest entry is the first one looked up
    assert f"registered model '{first}' has no version with alias 'nonexistent'" in out, out[-4000:]
    assert run_id, out[-3000:]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED"
    error = run.data.tags.get("tfqa.error", "")
    assert error.startswith("LookupError") and first in error and "'nonexistent'" in error


def _check_submission(path: Path, test_file: Path) -> tuple[int, int]:
    """The Kaggle format: header, `<id>_long` / `<id>_short` per test example in file order, long
    values a candidate span of that example, short values a span, YES, NO or blank. Returns the
    counts of non-blank long and short values."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["example_id", "PredictionString"]
    rows = rows[1:]
    examples = [json.loads(line) for line in test_file.read_text().splitlines() if line.strip()]
    assert all("annotations" not in ex for ex in examples)
    assert [r[0] for r in rows] == [f"{ex['example_id']}_{kind}" for ex in examples for kind in ("long", "short")]
    assert all(len(r) == 2 for r in rows)
    span = re.compile(r"^(\d+):(\d+)$")
    n_long = n_short = 0
    for ex, long_row, short_row in zip(examples, rows[::2], rows[1::2]):
        candidates = {(c["start_token"], c["end_token"]) for c in ex["long_answer_candidates"]}
        long, short = long_row[1], short_row[1]
        if long:
            mt = span.match(long)
            assert mt and (int(mt[1]), int(mt[2])) in candidates, (ex["example_id"], long, sorted(candidates))
            n_long += 1
        if short:
            assert long, f"{ex['example_id']}: a short answer without a long one"
            if short not in ("YES", "NO"):
                mt = span.match(short)
                lo, hi = map(int, span.match(long).groups())
                assert mt and lo <= int(mt[1]) < int(mt[2]) <= hi, (ex["example_id"], long, short)
            n_short += 1
    return n_long, n_short


def test_predict_entry_point_writes_the_submission(e2e, first_validate, tmp_path):
    import math

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tfqa import tracking
    from tfqa.stages.predict import PredictConfig, run_predict

    client = MlflowClient()
    vrun, _ = first_validate
    out_dir = e2e.root / "outputs-predict"
    run_id, _ = mlflow_run(
        e2e, "predict", {"validate_run": vrun.info.run_id, "test_data": str(e2e.test), "output_dir": str(out_dir)}
    )
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tfqa.upstream.validate"] == vrun.info.run_id
    thresholds = json.loads(_download(vrun.info.run_id, "validation/thresholds.json", tmp_path / "v").read_text())
    assert float(run.data.params["threshold.long"]) == pytest.approx(thresholds["kaggle_long"])
    assert float(run.data.params["threshold.short"]) == pytest.approx(thresholds["kaggle_short"])
    assert run.data.metrics["predict/examples"] == 6
    outputs = [a for a in _artifacts(client, run_id, "outputs") if a.endswith(".parquet")]
    assert len(outputs) == 5 and all(any(a.startswith(f"outputs/{n}-v1-") for a in outputs) for n in NAMES.values())

    n_long, n_short = _check_submission(_download(run_id, "submission/submission.csv", tmp_path / "p"), e2e.test)
    assert run.data.metrics["predict/long_answers"] == n_long
    assert run.data.metrics["predict/short_answers"] == n_short
    if math.isinf(thresholds["kaggle_long"]):  # "keep no long answer", and a short one needs a long one
        assert n_long == n_short == 0

    # The official thresholds, in-process (the test outputs are cached by now): tiny random models
    # rarely clear the Kaggle pair, so this is where the span checks see answers.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", e2e.uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", e2e.experiment)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        with tracking.start_run(run_name="predict-official", log_system_metrics=False) as logger:
            path = run_predict(PredictConfig(vrun.info.run_id, str(e2e.test), str(out_dir), "official"), logger)
    n_long, n_short = _check_submission(path, e2e.test)
    if thresholds["long"] <= 0.0:  # long scores are probabilities: every example keeps its best candidate
        assert n_long == 6
    assert n_long + n_short > 0, f"no answers even at the official thresholds {thresholds}: the span checks saw nothing"
    official_run = logger.run_id
    official_rows = pd.read_csv(path, keep_default_na=False)

    # -P long_threshold / short_threshold override validate's pair: chosen between the ensemble's own
    # scores (from the voters' logged outputs), the submission changes exactly where they cross.
    from tfqa.data.readers import read_examples
    from tfqa.inference import decode as dec
    from tfqa.inference.ensemble import ensemble

    examples = list(read_examples(e2e.test))
    voter_files = sorted(a for a in _artifacts(client, official_run, "outputs") if a.endswith(".parquet"))
    ens = ensemble([pd.read_parquet(_download(official_run, a, tmp_path / "o")) for a in voter_files], [0.2] * 5)
    decoded = dec.decode(
        ens,
        dec.candidate_spans(examples),
        dec.DecodeConfig.from_dict(thresholds["decode"]),
        example_ids=[ex.example_id for ex in examples],
    )

    def between(scores: list[float], fallback: float) -> float:
        """A threshold with about half the answers on either side (above the one answer there is)."""
        s = sorted(set(scores))
        if len(s) >= 2:
            return (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
        return s[0] + 1e-6 if s else fallback

    t_long = between([p.long_score for p in decoded if p.has_long], thresholds["long"])
    t_short = between(
        [p.short_score for p in decoded if p.has_long and p.long_score >= t_long and p.has_short], thresholds["short"]
    )
    # Through `mlflow run`, as a user gives them: -P long_threshold=... -P short_threshold=...
    given_id, _ = mlflow_run(
        e2e,
        "predict",
        {
            "validate_run": vrun.info.run_id,
            "test_data": str(e2e.test),
            "output_dir": str(out_dir),
            "thresholds": "official",
            "long_threshold": repr(t_long),
            "short_threshold": repr(t_short),
        },
    )
    given = pd.read_csv(_download(given_id, "submission/submission.csv", tmp_path / "g"), keep_default_na=False)
    p = client.get_run(given_id).data.params
    assert (float(p["threshold.long"]), float(p["threshold.short"])) == (pytest.approx(t_long), pytest.approx(t_short))
    assert float(p["validate_threshold.long"]) == pytest.approx(thresholds["long"])
    assert float(p["validate_threshold.short"]) == pytest.approx(thresholds["short"])
    keep_long = {q.example_id: q.has_long and q.long_score >= t_long for q in decoded}
    keep_short = {q.example_id: keep_long[q.example_id] and q.has_short and q.short_score >= t_short for q in decoded}
    cells = dict(zip(given.example_id, given.PredictionString))
    assert {i: cells[f"{i}_long"] != "" for i in keep_long} == keep_long
    assert {i: cells[f"{i}_short"] != "" for i in keep_short} == keep_short
    assert 0 < sum(keep_long.values()) < sum(q.has_long for q in decoded), "the long threshold crosses no score"
    # Against validate's pair: a row changed exactly where a score lies between the two thresholds.
    was = {q.example_id: q.has_long and q.long_score >= thresholds["long"] for q in decoded}
    changed = {
        r.example_id[: -len("_long")]
        for r, o in zip(given.itertuples(), official_rows.itertuples())
        if r.example_id.endswith("_long") and r.PredictionString != o.PredictionString
    }
    assert changed == {i for i in keep_long if keep_long[i] != was[i]}


def test_cascade_and_original_decoding_from_validate_to_predict(e2e, tmp_path):
    """A manifest with the original's cascade and decoding, a non-default answer cap and fitted
    weights (`-P fit_weights=true`) given to validate: validate logs what reached each stage and
    the weights it fitted, and predict decodes exactly as validate did, with those weights, its
    voters scoring exactly the survivors."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tfqa import tracking
    from tfqa.data.readers import read_examples
    from tfqa.inference import decode as dec
    from tfqa.inference.ensemble import ensemble
    from tfqa.stages.predict import PredictConfig, run_predict

    client = MlflowClient()
    manifest = e2e.root / "original.yaml"
    manifest.write_text(
        e2e.manifest.read_text()
        .replace("weight: 0.2", "weight: 0.25")
        .replace(f'variant: "1", backbone: {BACKBONE}, weight: 0.25', f'variant: "1", backbone: {BACKBONE}, weight: 0.0')
        + f"decode: original\ncascade:\n  - {{model: {NAMES['1']}, top_k: 6, threshold: 0.0}}\n"
        f"  - {{model: {NAMES['4']}, top_k: 3, threshold: 0.0}}\n"
    )
    outputs = e2e.root / "outputs-cascade"
    run_id, _ = mlflow_run(
        e2e,
        "validate",
        {
            "manifest": str(manifest),
            "dev_data": str(e2e.dev),
            "output_dir": str(outputs),
            "max_answer_words": "7",
            "fit_weights": "true",
        },
    )
    run = client.get_run(run_id)
    p, m = run.data.params, run.data.metrics
    assert (p["decode.decode"], p["decode.max_answer_words"], p["validate.fit_weights"]) == ("original", "7", "True")
    assert m["cascade/stage1_scored"] == m["cascade/candidates_all"] > m["cascade/stage1_kept"]
    assert m["cascade/stage2_scored"] == m["cascade/stage1_kept"] > m["cascade/stage2_kept"]
    assert m["cascade/candidates_ensemble"] == m["cascade/stage2_kept"] <= 3 * 10
    # The voters' inference is their measured rate times the candidates they score: the survivors'
    # share of each one's seconds on every candidate (counts, not a race between two timings).
    report = json.loads(_download(run_id, "validation/ensemble.json", tmp_path / "e").read_text())
    voting = [n for n, w in zip(report["names"], report["weights"]) if w > 0]
    share = m["cascade/candidates_ensemble"] / m["cascade/candidates_all"]
    assert m["cascade/ensemble_seconds"] == pytest.approx(sum(m[f"model/{n}/inference_seconds"] for n in voting) * share)
    assert m["cascade/inference_seconds_without"] == pytest.approx(sum(m[f"model/{n}/inference_seconds"] for n in voting))
    assert "ensemble_no_cascade/long-best-threshold-f1" in m
    # Fitted weights: what validate deploys are the weights fitted on all of dev, and what it
    # reports is the mean of the two held-out halves, beside the manifest's weights on the same halves.
    fitted = report["fitted"]
    assert report["weights"] == pytest.approx(fitted["weights"]) and sum(report["weights"]) == pytest.approx(1.0)
    assert report["manifest_weights"] == pytest.approx([0.0, 0.25, 0.25, 0.25, 0.25])
    assert len(fitted["fold_weights"]) == len(fitted["heldout_scores"]) == 2
    assert m["ensemble/cv-heldout-objective"] == pytest.approx(sum(fitted["heldout_scores"]) / 2)
    assert m["ensemble/cv-heldout-manifest-objective"] == pytest.approx(sum(fitted["heldout_manifest_scores"]) / 2)
    text = _download(run_id, "validation/predictions.txt", tmp_path / "v").read_text()
    assert "decode: original (max_answer_words 7)" in text
    assert (
        f"cascade: {NAMES['1']} top 6 > 0.0 ({int(m['cascade/stage1_scored'])} -> {int(m['cascade/stage1_kept'])} candidates)"
        in text
    )

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", e2e.uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", e2e.experiment)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        with tracking.start_run(run_name="predict-cascade", log_system_metrics=False) as logger:
            path = run_predict(PredictConfig(run_id, str(e2e.test), str(outputs), "official"), logger)
    prun = client.get_run(logger.run_id)
    pp, pm = prun.data.params, prun.data.metrics
    assert (pp["decode.decode"], pp["decode.max_answer_words"]) == ("original", "7")
    examples = list(read_examples(e2e.test))
    assert pm["predict/stage1_scored"] == sum(len(ex.candidates) for ex in examples)
    assert pm["predict/stage2_scored"] == pm["predict/stage1_kept"]
    assert pm["predict/candidates_ensemble"] == pm["predict/stage2_kept"]

    # The submission is the voters' outputs on the survivors, ensembled and decoded with exactly
    # the validation's settings and official thresholds.
    thresholds = json.loads(_download(run_id, "validation/thresholds.json", tmp_path / "t").read_text())
    assert thresholds["decode"] == {"max_answer_words": 7, "decode": "original"}
    versions = report["versions"]
    arts = sorted(a for a in _artifacts(client, prun.info.run_id, "outputs") if "-rows-" in a)
    survivors = {n: [a for a in arts if a.startswith(f"outputs/{n}-v{versions[n]}-")] for n in voting}
    outs = []
    for n in voting:
        ensemble_part = [a for a in survivors[n] if f"-rows-{int(pm['predict/candidates_ensemble'])}-" in a]
        assert len(ensemble_part) == 1, (n, survivors[n])
        outs.append(pd.read_parquet(_download(prun.info.run_id, ensemble_part[0], tmp_path / "o")))
        # the file holds the survivors, every one of them once: counted, not taken from its name
        assert len(outs[-1]) == pm["predict/candidates_ensemble"], (n, len(outs[-1]))
        assert len(outs[-1].drop_duplicates(["example_id", "candidate_index"])) == len(outs[-1])
    assert len({tuple(sorted(zip(o.example_id, o.candidate_index))) for o in outs}) == 1, "voters scored different rows"
    ens = ensemble(outs, [w for w in report["weights"] if w > 0])
    want = dec.apply_thresholds(
        dec.decode(
            ens, dec.candidate_spans(examples), dec.DecodeConfig(7, "original"), example_ids=[ex.example_id for ex in examples]
        ),
        thresholds["long"],
        thresholds["short"],
    )
    from tfqa.stages.predict import submission_rows

    got = pd.read_csv(path, keep_default_na=False)
    assert got.equals(submission_rows(want).astype(got.dtypes.to_dict()))
