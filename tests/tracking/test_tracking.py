"""tfqa.tracking against a real MLflow server: what is logged lands, run states, re-attaching,
a server that goes away mid-run, and finding a finished run to reuse."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import pytest
from mlflow.tracking import MlflowClient

from tfqa import tracking


@dataclass
class _Inner:
    lr: float = 1e-5
    layers: list = field(default_factory=lambda: [1, 2])


@dataclass
class _Outer:
    name: str = "albert"
    inner: _Inner = field(default_factory=_Inner)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_flatten_params_dotted_and_stringified():
    flat = tracking.flatten_params({"train": _Outer(), "seed": 3, "none": None, "deep": {"a": {"b": True}}})
    assert flat == {
        "train.name": "albert",
        "train.inner.lr": "1e-05",
        "train.inner.layers": "[1, 2]",
        "seed": "3",
        "none": "None",
        "deep.a.b": "True",
    }


def test_params_metrics_tags_artifacts_land(mlflow_tracking, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.bin").write_bytes(b"\0" * 1000)
    (tmp_path / "report.txt").write_text("ok")
    with tracking.start_run(run_name="landing", tags={"tfqa.stage": "prepare"}, log_system_metrics=True) as run:
        run.log_params({"cfg": _Outer(), "long": "x" * 7000})
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step)
        run.set_tags({"tfqa.variant": "2"})
        run.log_artifact(tmp_path / "report.txt", "reports")
        run.log_artifacts(tmp_path / "ckpt", "checkpoints/step-5")
        run.log_dict({"rows": 3}, "features/manifest.json")
        run.log_text("hello", "notes.txt")
        time.sleep(0.6)  # a couple of system-metric samples
        with pytest.raises(FileNotFoundError):
            run.log_artifact(tmp_path / "missing.bin")
    client = MlflowClient()
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == "landing"
    assert r.data.params["cfg.inner.lr"] == "1e-05" and r.data.params["cfg.name"] == "albert"
    assert len(r.data.params["long"]) == tracking.MAX_PARAM_VAL_LENGTH
    assert r.data.tags["tfqa.stage"] == "prepare" and r.data.tags["tfqa.variant"] == "2"
    assert "mlflow.user" in r.data.tags  # MLflow's context tags, as the fluent API would set
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == list(range(5))
    assert any(k.startswith("system/") for k in r.data.metrics)
    assert _artifacts(client, run.run_id) == {
        "reports/report.txt",
        "checkpoints/step-5/weights.bin",
        "features/manifest.json",
        "notes.txt",
    }


def test_failed_killed_and_reattach(mlflow_tracking, monkeypatch):
    client = MlflowClient()
    with pytest.raises(ValueError, match="boom"):
        with tracking.start_run(log_system_metrics=False) as run:
            run.log_params({"lr": 0.1, "epochs": 2})
            run.log_metrics({"loss": 3.0}, step=0)
            raise ValueError("boom")
    first = client.get_run(run.run_id)
    assert first.info.status == "FAILED" and first.data.tags[tracking.ERROR_TAG] == "ValueError: boom"

    # How `mlflow run` (and a restarted job) hands over the run: the same params again are fine.
    monkeypatch.setenv("MLFLOW_RUN_ID", run.run_id)
    with tracking.start_run(tags={"tfqa.attempt": "2"}, log_system_metrics=False) as again:
        assert again.run_id == run.run_id
        assert client.get_run(run.run_id).info.status == "RUNNING"
        again.log_params({"lr": 0.1, "epochs": 2})
        again.log_params({"lr": 0.2})  # a changed value is kept aside, not fatal
        again.log_metrics({"loss": 2.0}, step=1)
    monkeypatch.delenv("MLFLOW_RUN_ID")
    with pytest.raises(KeyboardInterrupt):
        with tracking.start_run(resume_run_id=run.run_id, log_system_metrics=False) as third:
            third.log_metrics({"loss": 1.0}, step=2)
            raise KeyboardInterrupt
    r = client.get_run(run.run_id)
    assert r.info.status == "KILLED"
    assert r.data.params == {"lr": "0.1", "epochs": "2"}
    assert r.data.tags[f"{tracking.PARAM_CONFLICT_TAG_PREFIX}lr"] == "0.2" and r.data.tags["tfqa.attempt"] == "2"
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == [0, 1, 2]
    assert len(client.search_runs([first.info.experiment_id])) == 1


def test_server_going_away_mid_run_loses_nothing(mlflow_tracking, mlflow_server, tmp_path):
    ckpt = tmp_path / "step-10.bin"
    ckpt.write_bytes(b"weights")
    with tracking.start_run(log_system_metrics=False) as run:
        run.log_params({"lr": 1e-3})
        run.log_metrics({"loss": 10.0}, step=0)
        assert run.flush(30)
        mlflow_server.stop()
        try:
            slowest = 0.0
            for step in range(1, 41):
                t0 = time.perf_counter()
                run.log_metrics({"loss": 10.0 - step / 10, "lr": 1e-3}, step=step)
                if step % 10 == 0:
                    run.set_tags({"tfqa.last_step": step})
                    run.log_artifact(ckpt, f"checkpoints/{step}")
                slowest = max(slowest, time.perf_counter() - t0)
            run.log_params({"late_param": "x"})
            run.log_text("written during the outage", "notes/outage.txt")
            deadline = time.monotonic() + 20
            while run.online and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not run.online
            t0 = time.perf_counter()
            assert run.flush(timeout=1.0) is False  # still down: flush gives up on time, keeps all
            assert time.perf_counter() - t0 < 3
            assert slowest < 2.0
            assert run.pending()["metrics"] + run.pending()["inflight"] > 0
        finally:
            restarted_ms = int(time.time() * 1000)
            mlflow_server.start()
        assert run.flush(60)
    client = MlflowClient()
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    history = client.get_metric_history(run.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(41))
    assert all(m.timestamp < restarted_ms for m in history)  # logged-at time, not delivered-at
    assert len(client.get_metric_history(run.run_id, "lr")) == 40
    assert r.data.params == {"lr": "0.001", "late_param": "x"} and r.data.tags["tfqa.last_step"] == "40"
    assert _artifacts(client, run.run_id) == {f"checkpoints/{s}/step-10.bin" for s in (10, 20, 30, 40)} | {"notes/outage.txt"}


class _StubClient:
    """Stands in for MlflowClient: down (503) until ``up`` is set; rejects params named "bad"."""

    def __init__(self):
        self.up = False
        self.metrics, self.params, self.tags, self.status = [], {}, {}, None

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

        if not self.up:
            raise MlflowException("server down", error_code=TEMPORARILY_UNAVAILABLE)
        if any(p.key == "bad" for p in params):
            raise MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE)
        self.metrics += list(metrics)
        self.params.update({p.key: p.value for p in params})
        self.tags.update({t.key: t.value for t in tags})

    def set_terminated(self, run_id, status=None):
        self.status = status

    def get_run(self, run_id):
        from types import SimpleNamespace

        return SimpleNamespace(info=SimpleNamespace(lifecycle_stage="active"))


def test_buffer_bound_drops_oldest_metrics_never_params():
    stub = _StubClient()
    logger = tracking.RunLogger(stub, "0" * 32, max_buffered_metrics=5, retry_initial_s=0.05, retry_max_s=0.1)
    logger.log_params({"a": 1})
    logger.set_tags({"t": "v"})
    for step in range(20):
        logger.log_metrics({"loss": step}, step=step)
    assert logger.flush(timeout=0.3) is False and not logger.online
    assert logger.pending()["metrics"] <= 5
    stub.up = True
    assert logger.close(timeout=10)
    assert logger.dropped_metrics == 15
    assert [m.step for m in stub.metrics] == list(range(15, 20))
    assert stub.params == {"a": "1"} and stub.tags == {"t": "v"} and stub.status == "FINISHED"


def test_unsent_metrics_survive_into_a_new_logger_with_their_timestamps(tmp_path):
    """What a checkpoint does: take the points the server has not confirmed; a resumed process
    queues them again, and they land as first logged (not re-stamped)."""
    stub = _StubClient()
    first = tracking.RunLogger(stub, "0" * 32, retry_initial_s=0.05, retry_max_s=0.1)
    first.log_metrics({"loss": 3.0}, step=1)
    first.log_metrics({"loss": 2.0}, step=2)
    assert first.flush_metrics(timeout=0.3) is False
    unsent = first.unsent_metrics()
    assert [(p["key"], p["value"], p["step"]) for p in unsent] == [("loss", 3.0, 1), ("loss", 2.0, 2)]
    first._delivery.abandon()  # the process is SIGKILLed: its queue is gone

    stub.up = True
    second = tracking.RunLogger(stub, "0" * 32)
    second.log_metric_points(json.loads(json.dumps(unsent)))  # through the checkpoint's JSON
    assert second.flush_metrics(timeout=10) and second.unsent_metrics() == []
    assert [(m.step, m.value, m.timestamp) for m in stub.metrics] == [(p["step"], p["value"], p["timestamp"]) for p in unsent]


def test_flush_metrics_does_not_wait_for_queued_uploads(tmp_path):
    class SlowUploads(_StubClient):
        def log_artifact(self, run_id, local_path, artifact_path=None):
            time.sleep(30)

    stub = SlowUploads()
    stub.up = True
    logger = tracking.RunLogger(stub, "0" * 32)
    logger.log_metrics({"loss": 1.0}, step=1)  # batches go before uploads
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("y")
    logger.log_artifact(tmp_path / "a")
    logger.log_artifact(tmp_path / "b")
    t0 = time.perf_counter()
    assert logger.flush_metrics(timeout=5) and [m.step for m in stub.metrics] == [1]
    assert time.perf_counter() - t0 < 5
    assert logger.flush(timeout=0.2) is False  # the uploads are still queued
    logger._delivery.abandon()


def test_a_rejected_entry_does_not_sink_its_batch():
    stub = _StubClient()
    stub.up = True
    logger = tracking.RunLogger(stub, "0" * 32)
    logger.log_params({"good": 1, "bad": 2, "also_good": 3})
    logger.log_metrics({"loss": 1.0}, step=7)
    assert logger.close(timeout=10)
    assert stub.params == {"good": "1", "also_good": "3"} and [m.step for m in stub.metrics] == [7]


def test_other_ranks_get_a_no_op_logger(mlflow_tracking, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MLFLOW_RUN_ID", "f" * 32)
    with tracking.start_run() as run:
        assert isinstance(run, tracking.NullRunLogger) and run.run_id == "f" * 32
        run.log_metrics({"loss": 1.0}, step=0)
        run.log_params({"a": 1})
    assert MlflowClient().get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"]) is None


def test_find_finished_run(mlflow_tracking, monkeypatch):
    experiment = os.environ["MLFLOW_EXPERIMENT_NAME"]
    version = "a" * 24
    tags = {"mlflow.project.entryPoint": "train_bert", tracking.CODE_VERSION_TAG: version}

    def make(params, status_exc=None, **extra_tags):
        try:
            with tracking.start_run(tags={**tags, **extra_tags}, log_system_metrics=False) as run:
                run.log_params(params)
                if status_exc:
                    raise status_exc
        except RuntimeError:
            pass
        return run.run_id

    good = make({"lr": 1e-5, "epochs": 1})
    make({"lr": 1e-5, "epochs": 1}, RuntimeError("failed runs are never reused"))
    other_code = make({"lr": 1e-5, "epochs": 1}, **{tracking.CODE_VERSION_TAG: "b" * 24})
    by_stage_tag = make({"lr": 3e-5}, **{"mlflow.project.entryPoint": "", "tfqa.stage": "train_bert"})

    find = tracking.find_finished_run
    assert find(experiment, "train_bert", {"lr": "1e-05", "epochs": 1}, version) == good
    assert find(experiment, "train_bert", {"lr": 1e-05}, version) == good  # extra run params are fine
    assert find(experiment, "train_bert", {"lr": "2e-05", "epochs": 1}, version) is None
    assert find(experiment, "train_albert", {"lr": "1e-05"}, version) is None
    assert find(experiment, "train_bert", {"lr": "1e-05", "missing": "x"}, version) is None
    assert find(experiment, "train_bert", {"lr": "1e-05"}, "b" * 24) == other_code
    assert find(experiment, "train_bert", {"lr": "1e-05"}, "c" * 24) is None
    assert find(experiment, "train_bert", {"lr": "3e-05"}, version) == by_stage_tag
    assert find("no-such-experiment-xyz", "train_bert", {}, version) is None
