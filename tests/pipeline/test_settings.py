"""The settings file (tfqa.pipeline.settings) and how a stage's empty parameters are resolved (tfqa.pipeline.resolve):
real YAML files, real directories, a real tracking server with hand-made runs, the real entry
point script for the one error that lists what is missing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tfqa import tracking
from tfqa.core.errors import UserError
from tfqa.core.progress import LineProgress, on_terminal
from tfqa.pipeline import resolve
from tfqa.pipeline.profiles import REPO
from tfqa.pipeline.settings import Settings, same_store
from tfqa.training.variants import VARIANTS


# ------------------------------------------------------------------------------- the settings file
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_settings_file_resolves_relative_paths_and_merges_the_training_group(tmp_path):
    (tmp_path / "models" / "albert").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    f = _write(
        tmp_path / "tfqa.yaml",
        """
tracking: {uri: sqlite:///runs/mlflow.db, experiment: tfqa}
backbones:
  albert-xxlarge-v2: models/albert
data:
  train: data/train.jsonl
parameters:
  train: {max_steps: 20, eval_every: 0, top_level_only: false}
  train_albert: {max_steps: 5, lr: 1.0e-5}
""",
    )
    s = Settings.load(f)
    assert s.path == f.resolve() and s.experiment == "tfqa"
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert s.backbones == {"albert-xxlarge-v2": str(tmp_path / "models" / "albert")}
    assert s.data == {"train": str(tmp_path / "data" / "train.jsonl")}
    albert = s.parameters_for("train_albert")
    assert albert["max_steps"] == ("5", "parameters.train_albert.max_steps")  # its own section wins
    assert albert["eval_every"] == ("0", "parameters.train.eval_every") and albert["top_level_only"][0] == "false"
    assert albert["lr"][0] == "1e-05"
    assert "max_steps" not in s.parameters_for("validate")


def test_the_file_in_force_is_tfqa_config_else_none_when_turned_off(tmp_path, monkeypatch):
    f = _write(tmp_path / "mine.yaml", "data: {}\n")
    monkeypatch.setenv("TFQA_CONFIG", str(f))
    assert Settings.load().path == f.resolve()
    monkeypatch.setenv("TFQA_CONFIG", "")
    assert Settings.load().path is None
    monkeypatch.setenv("TFQA_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(UserError) as e:
        Settings.load()
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such settings file (TFQA_CONFIG names it)"


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: [unclosed\n", "{f}:2: not valid YAML: expected ',' or ']', but got '<stream end>' (column 1)"),
        ("datas: {}\n", "{f}: field 'datas': unknown key (known: tracking, backbones, data, parameters)"),
        ("data: {trian: x}\n", "{f}: field 'data.trian': unknown key (known: train, dev, test, squad, squad_dev)"),
        ("tracking: {url: x}\n", "{f}: field 'tracking.url': unknown key (known: uri, experiment)"),
        (
            "backbones: {albert-xxlarge-v2: /no/such/albert}\n",
            "{f}: field 'backbones.albert-xxlarge-v2': no such directory: /no/such/albert",
        ),
        ("data: {dev: missing-dev.jsonl.gz}\n", "{f}: field 'data.dev': no such file or directory: {d}/missing-dev.jsonl.gz"),
        ("parameters: {train_roberta: {lr: 1}}\n", "{f}: field 'parameters.train_roberta': no such entry point in MLproject"),
        (
            "parameters: {prepare: {max_seq_len: 128}}\n",
            "{f}: field 'parameters.prepare.max_seq_len': MLproject gives max_seq_len the default 360",
        ),
        ("parameters: {train: {lr: [1, 2]}}\n", "{f}: field 'parameters.train.lr': expected a single value, not list"),
        ("- a\n- b\n", "{f}: expected a mapping"),
    ],
)
def test_a_bad_settings_file_is_one_error_naming_file_key_and_path(tmp_path, text, message):
    f = _write(tmp_path / "tfqa.yaml", text)
    with pytest.raises(UserError) as e:
        Settings.load(f)
    assert str(e.value).startswith(message.format(f=f.resolve(), d=tmp_path)), str(e.value)


def test_same_store_compares_sqlite_paths_as_real_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert same_store("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not same_store("sqlite:///mlflow.db", "http://127.0.0.1:5000")


# --------------------------------------------------------------------- resolution on a real server
class Runs:
    """Hand-made runs in the test's experiment, with the tags and params real stages record."""

    def __init__(self):
        self.client = MlflowClient()
        name = os.environ["MLFLOW_EXPERIMENT_NAME"]
        self.experiment_id = self.client.create_experiment(name)
        self.t = int(time.time() * 1000) - 100_000

    def make(
        self, stage: str, status: str = "FINISHED", params: dict | None = None, tags: dict | None = None, name: str | None = ""
    ) -> str:
        self.t += 1000  # start times a second apart: "latest" is well defined
        name = f"{stage}-{self.t}" if name == "" else name  # None: MLflow makes one up, as `mlflow run` does
        run = self.client.create_run(
            self.experiment_id,
            start_time=self.t,
            run_name=name,
            tags={"tfqa.stage": stage, "mlflow.project.entryPoint": stage, **(tags or {})},
        )
        for k, v in (params or {}).items():
            self.client.log_param(run.info.run_id, k, v)
        if status != "RUNNING":
            self.client.set_terminated(run.info.run_id, status)
        return run.info.run_id


def _settings(tmp_path: Path, backbone: Path, train: Path) -> Settings:
    return Settings.load(
        _write(
            tmp_path / "tfqa.yaml",
            f"backbones: {{all-MiniLM-L6-v2: {backbone}}}\n"
            f"data: {{train: {train}}}\n"
            "parameters: {train_albert: {backbone_name: all-MiniLM-L6-v2}}\n",
        )
    )


def _resolver(runs: Runs, settings: Settings, given: dict | None = None) -> resolve.StageResolver:
    current = runs.make("train_albert", status="RUNNING")
    return resolve.StageResolver("train_albert", given or {}, settings, experiment_id=runs.experiment_id, run_id=current)


def _variant2(r: resolve.StageResolver):
    from tfqa.training.variants import with_overrides

    r.fill_parameters({"backbone", "train_data", "mining_run", "init_model", "dev_data", "backbone_name"})
    return with_overrides(VARIANTS["2"], {k: v for k, v in r.values.items() if k == "backbone_name"})


def test_the_latest_finished_upstream_runs_that_fit_are_taken_and_recorded(mlflow_tracking, tmp_path, capsys):
    backbone, other = tmp_path / "minilm", tmp_path / "other"
    backbone.mkdir(), other.mkdir()
    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    runs = Runs()
    squad_old = runs.make("finetune_squad", params={"backbone": str(backbone)})
    mine = runs.make("mine_hard_negatives", params={"train_data": str(train)})
    runs.make("mine_hard_negatives", params={"train_data": str(tmp_path / "another-train.jsonl")})  # newer, other file
    squad_failed = runs.make("finetune_squad", status="FAILED", params={"backbone": str(backbone)})
    runs.make("finetune_squad", params={"backbone": str(other)})  # newest, other backbone
    r = _resolver(runs, _settings(tmp_path, backbone, train))
    resolve.training_inputs(r, _variant2(r))
    values = r.finish()
    assert values["init_model"] == squad_old and values["mining_run"] == mine
    assert values["backbone"] == str(backbone) and values["train_data"] == str(train)
    assert any(squad_failed in n and "FAILED" in n for n in r.notes), r.notes

    with tracking.start_run(resume_run_id=r.run_id, log_system_metrics=False) as run:
        r.record(run)
    out = capsys.readouterr().out
    assert f"resolved init_model = {squad_old}" in out and "latest FINISHED finetune_squad run" in out
    assert f"resolved backbone = {backbone}  (from {tmp_path / 'tfqa.yaml'}: backbones.all-MiniLM-L6-v2)" in out
    tags = MlflowClient().get_run(r.run_id).data.tags
    assert tags["tfqa.resolved.mining_run"].startswith(f"{mine} (from the latest FINISHED mine_hard_negatives run")
    assert tags["tfqa.resolved.train_data"] == f"{train} (from {tmp_path / 'tfqa.yaml'}: data.train)"
    assert tags["tfqa.resolved.backbone_name"].startswith("all-MiniLM-L6-v2 (from ")


def test_without_settings_the_upstream_runs_give_the_backbone_and_train_file(mlflow_tracking, tmp_path):
    runs = Runs()
    squad = runs.make("finetune_squad", params={"backbone": "/models/albert"})
    mine = runs.make("mine_hard_negatives", params={"train_data": "/data/train.jsonl"})
    r = _resolver(runs, Settings())
    resolve.training_inputs(r, VARIANTS["2"])
    values = r.finish()
    assert (values["init_model"], values["mining_run"]) == (squad, mine)
    assert values["backbone"] == "/models/albert" and values["train_data"] == "/data/train.jsonl"
    assert {x.param: x.source for x in r.resolutions}["train_data"] == f"train_data of the mine_hard_negatives run {mine}"


@pytest.mark.parametrize(
    "param, stage, status, expected",
    [
        (
            "init_model",
            "finetune_squad",
            "FAILED",
            "run {id} is FAILED, not FINISHED: refused as init_model (a finetune_squad run)",
        ),
        (
            "init_model",
            "validate",
            "FINISHED",
            "run {id} is a validate run (entry point validate), not a finetune_squad run: "
            "refused as init_model (status FINISHED)",
        ),
        (
            "mining_run",
            "train_bert",
            "FINISHED",
            "run {id} is a train_bert run (entry point train_bert), not a mine_hard_negatives run: "
            "refused as mining_run (status FINISHED)",
        ),
        ("mining_run", "mine_hard_negatives", "KILLED", "run {id} is KILLED, not FINISHED: refused as mining_run"),
    ],
)
def test_a_given_upstream_run_that_failed_or_is_of_another_stage_is_refused(
    mlflow_tracking, tmp_path, param, stage, status, expected
):
    runs = Runs()
    bad = runs.make(stage, status=status)
    r = _resolver(runs, Settings(), given={"backbone": str(tmp_path), "train_data": "/data/train.jsonl", param: bad})
    with pytest.raises(UserError) as e:
        resolve.training_inputs(r, VARIANTS["2"])
    assert str(e.value).startswith(expected.format(id=bad)), str(e.value)


def test_what_cannot_be_resolved_is_one_error_listing_each_value_and_what_gives_it(mlflow_tracking, tmp_path):
    runs = Runs()
    runs.make("finetune_squad", status="FAILED")
    r = _resolver(runs, Settings(experiment="tfqa-elsewhere", path=tmp_path / "tfqa.yaml"))
    resolve.training_inputs(r, VARIANTS["2"])
    with pytest.raises(UserError) as e:
        r.finish()
    msg = str(e.value)
    assert msg.startswith("train_albert: missing mining_run, init_model, backbone, train_data. "), msg
    assert "mining_run: give -P mining_run=<mine_hard_negatives run id>, or have a FINISHED mine_hard_negatives run" in msg
    assert "init_model: give -P init_model=<finetune_squad run id>" in msg and "is FAILED: not used" in msg
    assert (
        f"backbone: give -P backbone=<backbone dir> or settings key backbones.albert-xxlarge-v2 in {tmp_path / 'tfqa.yaml'}"
        in msg
    )
    assert "train_data: give -P train_data=<NQ train file, feature cache or prepare run id> or settings key data.train" in msg
    assert "names experiment 'tfqa-elsewhere': run with --experiment-name tfqa-elsewhere" in msg


def test_the_entry_point_refuses_in_one_line_and_fails_its_run(mlflow_tracking, tmp_path):
    """The real train script under a run `mlflow run` would have made: nothing to resolve from."""
    runs = Runs()
    run_id = runs.make("train_albert", status="RUNNING", name=None)
    env = {**os.environ, "MLFLOW_RUN_ID": run_id, "TFQA_CONFIG": ""}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "entrypoints" / "train.py"),
            "--entry-point",
            "train_albert",
            "--variant",
            "2",
            "--backbone",
            "",
            "--train-data",
            "",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tfqa: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("tfqa: train_albert: missing mining_run, init_model, backbone, train_data. "), lines[0]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["tfqa.error"].startswith("UserError: train_albert: missing")
    assert run.info.run_name == "train_albert-v2"  # MLflow's made-up name replaced


# ------------------------------------------------------------------------------------ run names
def test_run_names_say_stage_and_variant_and_replace_only_made_up_ones(mlflow_tracking):
    assert tracking.run_name("train_albert", "2") == "train_albert-v2"
    assert tracking.run_name("train_bert_base", "bert_base") == "train_bert_base"
    assert tracking.run_name("promote", "3") == "promote-v3" and tracking.run_name("validate") == "validate"
    assert tracking.is_generated_name("overjoyed-hen-33") and not tracking.is_generated_name("my-own-run")
    client = MlflowClient()
    exp = client.create_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    made_up, chosen = client.create_run(exp), client.create_run(exp, run_name="baseline-lr-sweep")
    for run in (made_up, chosen):
        with tracking.start_run(resume_run_id=run.info.run_id, run_name="validate", log_system_metrics=False):
            pass
    assert client.get_run(made_up.info.run_id).info.run_name == "validate"
    assert client.get_run(chosen.info.run_id).info.run_name == "baseline-lr-sweep"


def test_a_reused_stage_appears_under_the_new_parent_and_is_never_reused_itself(mlflow_tracking):
    runs = Runs()
    name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    reused = runs.make("validate", params={"dev_data": "/d"}, tags={"tfqa.code_version": "v1"})
    parent = runs.make("pipeline", status="RUNNING")
    marker = tracking.record_reuse(reused, parent, "validate", "validate")
    m = MlflowClient().get_run(marker)
    assert m.info.status == "FINISHED" and m.info.run_name == "validate (reused)"
    assert m.data.tags["mlflow.parentRunId"] == parent and m.data.tags["tfqa.reused_run"] == reused
    assert reused in m.data.tags["mlflow.note.content"] and "tfqa.stage" not in m.data.tags
    assert tracking.find_finished_run(name, "validate", {"dev_data": "/d"}, "v1") == reused


# ------------------------------------------------------------------------------------- progress
def test_off_a_terminal_progress_is_one_line_per_tenth():
    out = io.StringIO()
    assert not on_terminal(out)
    p = LineProgress("inference", total=37, unit="batch", stream=out)
    for _ in range(37):
        p.update()
    p.close()
    lines = out.getvalue().splitlines()
    assert (
        len(lines) == 10 and lines[0].startswith("inference:  10% (4/37 batch") and lines[-1].startswith("inference: 100% (37/37")
    )
    now = [0.0]
    out = io.StringIO()
    p = LineProgress("features", unit="ex", stream=out, every_s=30.0, clock=lambda: now[0])
    for t in (10.0, 31.0, 40.0):
        now[0] = t
        p.update(5)
    p.close()
    assert [x.split(" (")[0] for x in out.getvalue().splitlines()] == ["features: 10 ex", "features: 15 ex"]


def test_the_demos_tracking_uri_holds_for_the_demo_only(monkeypatch):
    from tfqa.core.environment import scoped_env

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///caller.db")
    with scoped_env("MLFLOW_TRACKING_URI", "sqlite:///demo.db"):
        assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///demo.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///caller.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(RuntimeError, match="stage failed"), scoped_env("MLFLOW_TRACKING_URI", "sqlite:///demo.db"):
        raise RuntimeError("stage failed")
    assert "MLFLOW_TRACKING_URI" not in os.environ
