"""The pages' commands as a new user types them, in a fresh copy of the clone: the CI-profile demo,
then every command README.md and docs/*.md mark "after the demo" (tests/doc_commands.py), among them
`mlflow run . -e train_albert -P variant=2 --env-manager local` with nothing else, `mlflow ui` with
no flags and `mlflow models serve` of a model the demo registered; `mlflow ui` must show the demo's
and that run, the stage runs named and nested under the pipeline's parent run. A second demo reuses
every stage, visibly, under a new parent run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import doc_commands as dc
import pytest
from mlflow.tracking import MlflowClient

from tfqa.core.servers import ServerProcess, free_port
from tfqa.inference.answering import Answer
from tfqa.pipeline.profiles import REPO, SHARED_DATA

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
HEADLINE = "mlflow run . -e train_albert -P variant=2 --env-manager local"
STAGES = {
    "prepare",
    "train_bert_base",
    "mine_hard_negatives",
    "train_bert",
    "finetune_squad",
    "train_albert",
    "train_bert_large",
    "promote",
    "validate",
    "predict",
}


def _clone(dst: Path) -> Path:
    """What `git clone` of this checkout would hold (tracked and new files, nothing ignored)."""
    files = (
        subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def _env(clone: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID", "TFQA_CONFIG")
    }
    # The venv's `python` and `mlflow` first (as after `. .venv/bin/activate`), this copy's code.
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(clone),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TFQA_SQUAD_DATA": str(SHARED_DATA / "squad2-dev-half.json"),
    }


def _run(cmd: list[str], clone: Path, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    clone = _clone(tmp_path_factory.mktemp("clone"))
    # What scripts/install.sh leaves for `. .venv/bin/activate`: here, this test's venv.
    (clone / ".venv").symlink_to(Path(sys.executable).parents[1], target_is_directory=True)
    work = clone / "demo-ci"
    logs = tmp_path_factory.mktemp("logs")
    demo = _run([sys.executable, "-m", "tfqa.pipeline.demo", "--profile", "ci", "--work-dir", str(work)], clone, 2400)
    blocks = dc.plan(dc.all_blocks(clone))
    after = dc.run_blocks(blocks, clone, _env(clone), logs)
    headline = next((r.result for r in after if r.command.text == HEADLINE), None)
    assert headline is not None, f"no block marked {dc.MARKER!r} in README.md or docs/*.md shows `{HEADLINE}` any more"
    rerun = _run([sys.executable, "-m", "tfqa.pipeline.demo", "--profile", "ci", "--work-dir", str(work)], clone, 1200)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    ui = ServerProcess(["mlflow", "ui", "--port", str(port)], uri, logs / "ui.log", cwd=clone, env=_env(clone)).start()
    try:
        yield {
            "clone": clone,
            "work": work,
            "demo": demo,
            "blocks": blocks,
            "after": after,
            "headline": headline,
            "rerun": rerun,
            "uri": uri,
            "client": MlflowClient(uri),
        }
    finally:
        ui.stop()


def _runs(client: MlflowClient) -> list:
    """Every run `mlflow ui` shows in MLflow's default experiment."""
    return client.search_runs(["0"], max_results=1000)


def _children(runs: list, parent_id: str) -> list:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def test_the_demo_keeps_its_store_where_mlflow_looks_and_writes_its_settings(user):
    clone = user["clone"]
    assert (clone / "mlflow.db").is_file() and (clone / "mlruns" / "0").is_dir()
    settings = (clone / "tfqa.yaml").read_text()
    assert settings.startswith("# Written by tfqa.pipeline.demo (profile ci)")
    out = user["demo"].stdout
    assert f"settings for `mlflow run . -e <stage>`: {clone / 'tfqa.yaml'}" in out
    assert f"runs: `mlflow ui` from {clone}, then http://127.0.0.1:5000/#/experiments/0/runs" in out
    # Logs off a terminal: no redrawn tqdm bars, no MLflow download bars.
    for text in (user["demo"].stdout + user["demo"].stderr, user["headline"].stdout + user["headline"].stderr):
        assert "\r" not in text and "Downloading artifacts" not in text


def test_the_stage_runs_are_named_and_nested_under_one_parent(user):
    runs = _runs(user["client"])
    parents = sorted((r for r in runs if r.info.run_name == "pipeline-ci"), key=lambda r: r.info.start_time)
    assert len(parents) == 2, [r.info.run_name for r in runs]
    first = parents[0]
    children = _children(runs, first.info.run_id)
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(
        [
            "prepare",
            "train_bert_base",
            "mine_hard_negatives",
            "train_bert-v1",
            "finetune_squad",
            "train_albert-v2",
            "train_albert-v3",
            "train_bert_large-v4",
            "train_bert_large-v5",
            "promote-v1",
            "promote-v2",
            "promote-v3",
            "promote-v4",
            "promote-v5",
            "validate",
            "predict",
        ]
    ), names
    assert all(r.info.status == "FINISHED" and r.data.tags["tfqa.stage"] in STAGES for r in children)
    assert first.info.status == "FINISHED" and "ensemble/long-best-threshold-f1" in first.data.metrics
    steps = {k[len("tfqa.step.") :]: v for k, v in first.data.tags.items() if k.startswith("tfqa.step.")}
    assert set(steps.values()) == {r.info.run_id for r in children}


def test_a_second_pipeline_shows_each_reused_stage_under_its_own_parent(user):
    runs = _runs(user["client"])
    first, second = sorted((r for r in runs if r.info.run_name == "pipeline-ci"), key=lambda r: r.info.start_time)
    assert "(16/16 steps reused)" in user["rerun"].stdout
    originals = {r.info.run_id: r.info.run_name for r in _children(runs, first.info.run_id)}
    markers = _children(runs, second.info.run_id)
    assert len(markers) == 16
    for m in markers:
        reused = m.data.tags["tfqa.reused_run"]
        assert m.info.run_name == f"{originals[reused]} (reused)" and "tfqa.stage" not in m.data.tags


def test_the_headline_command_trains_variant_2_from_the_pipelines_runs(user):
    client, runs = user["client"], _runs(user["client"])
    first = min((r for r in runs if r.info.run_name == "pipeline-ci"), key=lambda r: r.info.start_time)
    steps = {k[len("tfqa.step.") :]: v for k, v in first.data.tags.items() if k.startswith("tfqa.step.")}
    bare = [
        r
        for r in runs
        if r.data.tags.get("mlflow.project.entryPoint") == "train_albert" and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(bare) == 1, "the bare `mlflow run` landed elsewhere"
    run = bare[0]
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == "train_albert-v2" and tags["tfqa.variant"] == "2"
    assert tags["tfqa.upstream.mine_hard_negatives"] == steps["mine_hard_negatives"]
    assert tags["tfqa.upstream.init"] == steps["finetune_squad"]
    assert tags["tfqa.resolved.mining_run"].startswith(
        f"{steps['mine_hard_negatives']} (from the latest FINISHED mine_hard_negatives run"
    )
    assert tags["tfqa.resolved.init_model"].startswith(f"{steps['finetune_squad']} (from the latest FINISHED finetune_squad run")
    settings = str(user["clone"] / "tfqa.yaml")
    tiny = str(user["work"] / "tiny-bert")
    assert tags["tfqa.resolved.backbone"] == f"{tiny} (from {settings}: backbones.all-MiniLM-L6-v2)"
    assert tags["tfqa.resolved.train_data"].endswith(f"(from {settings}: data.train)")
    assert tags["tfqa.resolved.max_steps"] == f"20 (from {settings}: parameters.train_albert.max_steps)"
    # It trained as the pipeline's variant 2 did, on the same data and backbone.
    pipeline_v2 = client.get_run(steps["train_2"]).data
    for key in ("stage.train_data", "stage.backbone", "variant.max_seq_len", "variant.lr", "stage.max_steps"):
        assert run.data.params[key] == pipeline_v2.params[key], key
    assert "train/loss" in run.data.metrics
    out = user["headline"].stdout
    assert f"resolved init_model = {steps['finetune_squad']}" in out and f"resolved backbone = {tiny}" in out
    # `mlflow ui` serves its artifacts too (the UI's own route).
    with urllib.request.urlopen(f"{user['uri']}/ajax-api/2.0/mlflow/artifacts/list?run_id={run.info.run_id}") as r:
        assert json.load(r).get("files"), "no artifacts listed for the run"


def test_every_command_the_pages_show_for_after_the_demo_ran_and_the_served_model_answered(user):
    shown = [c.text for b in dc.all_blocks(user["clone"]) for c in b.commands]
    ran = user["after"]
    assert sorted({r.command.text for r in ran}) == sorted(set(shown))
    assert len(ran) == sum(len(b.commands) for b in user["blocks"]) >= len(set(shown))
    servers = [r for r in ran if r.server]
    assert servers and all(r.result.returncode is not None for r in servers), "a server was left running"
    assert any(r.command.text.startswith("mlflow models serve -m models:/") for r in servers)
    asked = [r for r in ran if r.command.text.startswith("curl") and "/invocations" in r.shell]
    assert asked, "no marked command asks the served model"
    for r in asked:
        argv = shlex.split(r.shell)
        rows = json.loads(argv[argv.index("-d") + 1])["dataframe_records"]
        predictions = json.loads(r.result.stdout)["predictions"]
        assert len(predictions) == len(rows), predictions
        for row, got in zip(rows, predictions):
            assert list(got) == list(Answer.__dataclass_fields__), got
            words = row["document_text"].split()
            start, end = got["long_answer_start"], got["long_answer_end"]
            text = " ".join(w for w in words[start:end] if not (w.startswith("<") and w.endswith(">")))
            assert got["long_answer"] == (text if start >= 0 else ""), got
            assert 0 <= start < end <= len(words) or (start, end) == (-1, -1), got
            assert got["yes_no_answer"] in ("NONE", "YES", "NO"), got
