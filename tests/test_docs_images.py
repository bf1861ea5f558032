"""scripts/docs_images.py finds the store as `mlflow ui` does and refuses, in one line naming what to
run first, when there is nothing to picture. (Its pictures themselves are checked by the slow UI
test, tests/pipeline/test_pipeline_e2e.py, which renders them from the CI pipeline's runs.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tfqa.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "docs_images.py"


def docs_images():
    spec = importlib.util.spec_from_file_location("docs_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_the_store_is_the_one_mlflow_ui_opens_from_the_clone(tmp_path, monkeypatch):
    di = docs_images()
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert di.resolve_store({}, root=tmp_path) == (f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    assert di.resolve_store({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000/"}, root=tmp_path)[0] == "http://127.0.0.1:5000"
    # A relative sqlite path is relative to where the command runs, as for `mlflow ui`.
    monkeypatch.chdir(tmp_path)
    assert di.resolve_store({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, root=REPO) == ("sqlite:///mlflow.db", tmp_path)
    with pytest.raises(UserError, match=r"no MLflow store at .*elsewhere\.db: run `bash scripts/demo\.sh` first"):
        di.resolve_store({"MLFLOW_TRACKING_URI": "sqlite:///elsewhere.db"}, root=REPO)


def test_without_a_demo_store_it_refuses_in_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "img")], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and r.stdout == ""
    first = "run `bash scripts/demo.sh` first, or set MLFLOW_TRACKING_URI to the demo's store"
    assert r.stderr == f"tfqa: no MLflow store at {tmp_path / 'mlflow.db'}: {first}\n"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "img").exists()


def test_a_store_without_the_pipeline_is_refused_naming_the_demo(tmp_path):
    di = docs_images()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid = client.create_experiment("tfqa-docs-images")
    with pytest.raises(UserError, match=r"no MLflow experiment 'Demo' .*run `bash scripts/demo\.sh` first"):
        di.find_pipeline(client, "Demo")
    # A training run outside a pipeline run is no pipeline.
    client.set_terminated(client.create_run(eid, tags={"tfqa.stage": "train_bert"}).info.run_id)
    with pytest.raises(UserError, match=r"holds no pipeline run with training stages: run `bash scripts/demo\.sh` first"):
        di.find_pipeline(client, "tfqa-docs-images")
    with pytest.raises(UserError, match=r"holds no finished validate run: run `bash scripts/demo\.sh` first"):
        di.copy_validate_plots(client, eid, tmp_path)
