"""The launcher's plan (``tfqa.core.launch``): what a stage's command line asks of it, and the
one line it gives for a launch that cannot work. Runs the real entry point for what it prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tfqa.core.errors import UserError
from tfqa.core.launch import LaunchPlan, plan_launch, split_launch_options, under_launcher

REPO = Path(__file__).resolve().parents[2]


def test_launch_options_are_taken_off_the_stage_command_line():
    given, rest = split_launch_options(
        ["--backbone", "b", "--nproc_per_node", "2", "--nnodes=2", "--node-rank", "1", "--max-steps", "3", "--master-addr", "h"]
    )
    assert given == {"nproc-per-node": "2", "nnodes": "2", "node-rank": "1", "master-addr": "h"}
    assert rest == ["--backbone", "b", "--max-steps", "3"]
    # MLflow passes a parameter left empty as an empty value: nothing asked.
    assert split_launch_options(["--nproc-per-node", "", "--x", "1"]) == ({"nproc-per-node": ""}, ["--x", "1"])


def test_the_plan_from_the_command_line_and_the_settings():
    assert plan_launch({}) == LaunchPlan(1)  # auto on a machine without a GPU: one process
    assert plan_launch({}, "3").nproc_per_node == 3  # the settings file's value
    assert plan_launch({"nproc-per-node": "2"}, "3").nproc_per_node == 2  # -P wins
    two_nodes = plan_launch({"nnodes": "2", "node-rank": "1", "master-addr": "10.0.0.1", "master-port": "29600"})
    assert two_nodes.launches and two_nodes.torchrun_args() == [
        "--nnodes=2",
        "--node-rank=1",
        "--nproc-per-node=1",
        "--master-addr=10.0.0.1",
        "--master-port=29600",
    ]
    assert plan_launch({"nproc-per-node": "4"}).torchrun_args() == ["--standalone", "--nproc-per-node=4"]


@pytest.mark.parametrize(
    "given, message",
    [
        ({"nproc-per-node": "two"}, "nproc_per_node must be an integer, got 'two'"),
        ({"nproc-per-node": "0"}, "nproc_per_node must be an integer >= 1, got '0'"),
        ({"nnodes": "2", "node-rank": "2", "master-addr": "h"}, "node_rank 2 is not below nnodes 2"),
        ({"nnodes": "2"}, "nnodes 2: give master_addr"),
    ],
)
def test_a_launch_that_cannot_work_is_one_line(given, message):
    with pytest.raises(UserError, match=message):
        plan_launch(given)


def test_under_a_launcher_nothing_is_relaunched(monkeypatch):
    for k in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not under_launcher()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert under_launcher()


def test_a_node_whose_node_zero_does_not_answer_says_so_in_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MLFLOW_RUN_ID")},
        "TFQA_RENDEZVOUS_WAIT_S": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    cmd = [sys.executable, "entrypoints/train.py", "--entry-point", "train_bert_base"]
    cmd += ["--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"tfqa: node 0's rendezvous at 127.0.0.1:{port} did not answer within 1 s (TFQA_RENDEZVOUS_WAIT_S); "
        "start node 0 first and check master_addr/master_port"
    ]


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    import tfqa.core.launch as launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert plan_launch({}).nproc_per_node == 2  # auto: every visible GPU
    with pytest.raises(UserError, match=r"^nproc_per_node 4 is more than the 2 GPU\(s\) this machine shows \(CUDA_VISIBLE"):
        plan_launch({"nproc-per-node": "4"})


@pytest.mark.parametrize("visible, want", [(None, 4), ("", 0), ("1,3", 2), ("-1", 0), ("0,-1,2", 1)])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, tmp_path, visible, want):
    import tfqa.core.launch as launch

    driver = tmp_path / "gpus"
    for i in range(4):
        (driver / f"0000:0{i}:00.0").mkdir(parents=True)
    monkeypatch.setattr(launch, "Path", lambda p: driver if p == "/proc/driver/nvidia/gpus" else Path(p))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert launch.visible_gpus() == want


def test_the_settings_files_nproc_per_node_is_the_launchers_not_a_stage_parameter(tmp_path):
    settings = tmp_path / "tfqa.yaml"
    settings.write_text("parameters:\n  train: {nproc_per_node: 1}\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MLFLOW_RUN_ID")},
        "TFQA_CONFIG": str(settings),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    done = subprocess.run(
        [sys.executable, "entrypoints/train.py", "--entry-point", "train_bert_base"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # One process (no launch line), and the stage goes on to what it really misses.
    assert "starting" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("tfqa: train_bert_base: missing backbone, train_data.")
