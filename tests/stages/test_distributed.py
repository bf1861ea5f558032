"""Several ranks give what one process gives: real ``torchrun`` jobs (gloo on CPU) on the real
entry points, against a real MLflow server.

- training: 1 process, 2 ranks (``mlflow run ... -P nproc_per_node=2``) and ``grad_accum_steps=2``
  at the same global batch, with short-span rows in it, end within 1e-3 of the largest weight
  update of each other; the 2-rank job is one FINISHED run with ``world_size`` 2 among its params,
  and its dev evaluation (shared over the ranks) ran;
- a stop signal sent to the job's process group (as a scheduler sends it) stops both ranks after
  the same step, one checkpoint, the run KILLED; resuming it in the same run ends bit-identical
  to the uninterrupted 2-rank job;
- mining: 2 ranks write the same scores, row for row, as 1;
- a rank that fails makes the job's one run FAILED, with that rank's error;
- resume across world sizes (2 ranks -> 1 process and back) and node-local output folders (rank
  0's checkpoint is the one every rank loads), through ``tests/tiny_training.py`` under torchrun.

The backbones have dropout 0: ranks draw from different RNG streams, so with dropout the runs
would differ by design, not by a defect.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import stage_env, tiny_nq_files
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "tests" / "tiny_training.py"
RUN_ID_IN_OUTPUT = re.compile(r"run with ID '([0-9a-f]{32})'")
STEPS, CHECKPOINT_EVERY, COMPARE_STEP = 24, 4, 4
TOL = 1e-3
"""Runs agree within this fraction of the largest weight update (float summation order differs)."""


# The span head's bias moves every position's start (end) logit alike, and a softmax over positions
# ignores that: its true gradient is exactly 0, so all it gets is float rounding, which Adam scales
# up to a step of its own. It is left out of the comparison (it cannot change a prediction).
SHIFT_INVARIANT = {"qa_outputs.bias"}


def _largest_update_ratio(a: dict, b: dict, start: dict) -> float:
    """max |a - b| / max |a - start| over the tensors ``start`` has (same name, same shape)."""
    diff = max(float((a[k] - b[k]).abs().max()) for k in a if k not in SHIFT_INVARIANT)
    update = max(float((a[k] - start[k]).abs().max()) for k in start if k in a and a[k].shape == start[k].shape)
    assert update > 0, "training did not move the weights"
    return diff / update


@pytest.fixture(scope="module")
def job(mlflow_server, tmp_path_factory):
    if not mlflow_server.running:
        mlflow_server.start()
    root = tmp_path_factory.mktemp("dist")
    experiment = f"dist-{uuid.uuid4().hex[:12]}"
    env = stage_env(mlflow_server.uri, experiment)
    from mlflow.tracking import MlflowClient

    from tfqa.pipeline.demo import tiny_backbone

    train_file, dev_file = tiny_nq_files(root)
    backbone = Path(tiny_backbone(root, dropout=0.0))
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    client.create_experiment(experiment)
    return {
        "root": root,
        "env": env,
        "client": client,
        "experiment": experiment,
        "train": train_file,
        "dev": dev_file,
        "backbone": backbone,
        "runs": {},
    }


def _mlflow_run(job, name: str, entry_point: str, *, extra_env=None, **params) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    done = subprocess.run(cmd, cwd=REPO, env={**job["env"], **(extra_env or {})}, capture_output=True, text=True, timeout=900)
    (job["root"] / f"{name}.log").write_text(done.stdout + done.stderr)
    return done


def _train_params(job, out: str, **more) -> dict:
    params = dict(
        backbone=job["backbone"],
        train_data=job["train"],
        max_steps=STEPS,
        batch_size=8,
        lr=3e-3,
        checkpoint_every=CHECKPOINT_EVERY,
        keep_checkpoints=0,
        keep_best_models=1,
        log_every=1,
        dev_data=job["dev"],
        dev_examples=10,
        eval_every=12,
        output_dir=job["root"] / out,
        backbone_name="tiny",
    )
    return {**params, **more}


def _trained(job, name: str, **params) -> str:
    """Run (once per module) the training job ``name``; its run id."""
    if name not in job["runs"]:
        done = _mlflow_run(job, name, "train_bert_base", **_train_params(job, f"out-{name}", **params))
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        job["runs"][name] = RUN_ID_IN_OUTPUT.search(done.stdout + done.stderr).group(1)
    return job["runs"][name]


def _checkpoint_weights(job, out: str, step: int) -> dict:
    """The weights of the step-``step`` checkpoint the job with output folder ``out`` kept on disk."""
    (path,) = (job["root"] / out / "runs").glob(f"*/checkpoints/step-{step:06d}/model.safetensors")
    return load_file(str(path))


def _backbone_weights(job) -> dict:
    return {f"encoder.{k}": v for k, v in load_file(str(job["backbone"] / "model.safetensors")).items()}


def test_two_ranks_and_grad_accumulation_train_as_one_process(job):
    one = _trained(job, "one", nproc_per_node=1)
    two = _trained(job, "two", nproc_per_node=2)
    accum = _trained(job, "accum", nproc_per_node=1, grad_accum_steps=2)
    start = _backbone_weights(job)
    w_one, w_two, w_accum = (_checkpoint_weights(job, f"out-{n}", COMPARE_STEP) for n in ("one", "two", "accum"))
    assert _largest_update_ratio(w_one, w_two, start) < TOL
    assert _largest_update_ratio(w_one, w_accum, start) < TOL

    client = job["client"]
    # Span rows were in the batches being compared (the loss this is about).
    spans = [m.value for m in client.get_metric_history(two, "train/span_rows") if m.step <= COMPARE_STEP]
    assert len(spans) == COMPARE_STEP and sum(spans) > 0
    # One run per job, FINISHED, saying how it trained; the dev evaluation shared over 2 ranks ran.
    runs = client.search_runs([client.get_experiment_by_name(job["experiment"]).experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    assert {one, two, accum} <= set(by_id) and len([r for r in runs if r.data.tags.get("tfqa.stage")]) == 3
    run = by_id[two]
    assert run.info.status == "FINISHED"
    assert run.data.params["hardware.world_size"] == "2" and run.data.params["hardware.batch_per_device"] == "4"
    assert run.data.params["hardware.precision"] == "fp32" and run.data.params["hardware.device_type"] == "cpu"
    assert by_id[one].data.params["hardware.world_size"] == "1"
    # (Points linked to a checkpoint model repeat the run's own, as MLflow's log_model(step=) does.)
    dev = client.get_metric_history(two, "dev/long_f1")
    assert sorted({m.step for m in dev}) == [12, 24]

    # The store: of 6 saves' resumable checkpoints none is left once the run FINISHED (the stopped
    # run below holds its one), and of the two evaluated checkpoints the better one stays as a
    # LoggedModel (keep_best_models=1), beside the final model.
    assert client.list_artifacts(two, "checkpoints") == []
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{two}'")
    names = sorted(m.name for m in models)
    assert names == ["checkpoint", "model"], names
    (kept,) = [m for m in models if m.name == "checkpoint"]
    f1 = {m.step: m.value for m in dev}
    best_step = max(f1, key=lambda s: (f1[s], s))
    assert kept.tags["tfqa.checkpoint_step"] == str(best_step)
    assert {m.key: m.value for m in kept.metrics}["dev/long_f1"] == f1[best_step]


def test_a_stop_signal_ends_both_ranks_after_the_same_step_and_the_run_resumes_bit_identically(job):
    _trained(job, "two", nproc_per_node=2)  # the uninterrupted reference
    out = job["root"] / "out-stopped"
    params = _train_params(job, "out-stopped", nproc_per_node=2)
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "train_bert_base", "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    log_path = job["root"] / "stopped.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=job["env"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 600
        while not re.search(r"train step ([6-9]|1\d)/", log_path.read_text(errors="replace")):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-4000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler does: every process of the job
        proc.wait(120)
    run_id = RUN_ID_IN_OUTPUT.search(log_path.read_text()).group(1)
    client = job["client"]
    deadline = time.monotonic() + 120
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)  # the ranks finish their step and checkpoint after the CLI itself is gone
    run = client.get_run(run_id)
    text = log_path.read_text(errors="replace")
    stops = re.findall(r"stopped by SIGTERM after step (\d+)", text)
    assert run.info.status == "KILLED", text[-4000:]
    assert len(stops) == 2 and stops[0] == stops[1], text[-4000:]  # one line per rank, the same step
    step = int(stops[0])
    assert step < STEPS and "stopped by SIGTERM" in run.data.tags["tfqa.stopped"]
    ckpts = sorted((next((out / "runs").iterdir()) / "checkpoints").glob("step-*"))
    assert ckpts[-1].name == f"step-{step:06d}" and not [p for p in ckpts if p.suffix]
    # The store holds one resumable checkpoint after the run's saves: the one the stop made.
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/latest"]
    import mlflow

    state = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="checkpoints/latest/trainer_state.json", tracking_uri=job["env"]["MLFLOW_TRACKING_URI"]
    )
    assert json.loads(Path(state).read_text())["step"] == step

    # The same run, resumed from the tracking store alone (this machine's folder is gone), ends as
    # the job never stopped.
    shutil.rmtree(out)
    resume = [sys.executable, "entrypoints/train.py", "--entry-point", "train_bert_base", "--resume", "auto"]
    for key, value in params.items():
        resume += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(
        resume, cwd=REPO, env={**job["env"], "MLFLOW_RUN_ID": run_id}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert "resuming from the run's checkpoint in the tracking store" in done.stdout
    got = _checkpoint_weights(job, "out-stopped", STEPS)
    want = _checkpoint_weights(job, "out-two", STEPS)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_two_mining_ranks_write_the_scores_one_process_writes(job):
    import pandas as pd

    model = _trained(job, "one", nproc_per_node=1)
    scores = {}
    for n in (1, 2):
        done = _mlflow_run(
            job,
            f"mine{n}",
            "mine_hard_negatives",
            model=model,
            train_data=job["train"],
            output_dir=job["root"] / f"out-mine{n}",
            n_shards=4,
            nproc_per_node=n,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        run_id = RUN_ID_IN_OUTPUT.search(done.stdout + done.stderr).group(1)
        run = job["client"].get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["hardware.world_size"] == str(n)
        (result,) = (job["root"] / f"out-mine{n}" / "mining").glob("*/result/scores.parquet")
        scores[n] = pd.read_parquet(result)
    assert len(scores[1]) > 0
    pd.testing.assert_frame_equal(scores[1], scores[2], check_exact=True)


def test_a_failing_rank_fails_the_jobs_one_run(job, tmp_path):
    # Rank 1 (only) breaks in its third step; a sitecustomize module does it, the code is untouched.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import importlib.abc, importlib.util, os, sys

            class _Break(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path, target=None):
                    if name != "tfqa.training.loop":
                        return None
                    sys.meta_path.remove(self)
                    spec = importlib.util.find_spec(name)
                    run_module = spec.loader.exec_module

                    def exec_module(module):
                        run_module(module)
                        real = module.lr_at

                        def lr_at(step, **kw):
                            if step == 2:
                                raise RuntimeError("injected failure")
                            return real(step, **kw)

                        module.lr_at = lr_at

                    spec.loader.exec_module = exec_module
                    return spec

            if os.environ.get("RANK") == "1":
                sys.meta_path.insert(0, _Break())
            """
        )
    )
    before = {
        r.info.run_id for r in job["client"].search_runs([job["client"].get_experiment_by_name(job["experiment"]).experiment_id])
    }
    done = _mlflow_run(
        job,
        "failing",
        "train_bert_base",
        extra_env={"PYTHONPATH": f"{inject}{os.pathsep}{REPO}"},
        **_train_params(job, "out-failing", nproc_per_node=2),
    )
    assert done.returncode != 0
    exp = job["client"].get_experiment_by_name(job["experiment"]).experiment_id
    new = [r for r in job["client"].search_runs([exp]) if r.info.run_id not in before]
    assert len(new) == 1, [r.info.run_name for r in new]
    assert new[0].info.status == "FAILED"
    assert new[0].data.tags["tfqa.error"].startswith("rank 1: RuntimeError: injected failure")


# ------------------------------------------------------------------------------------ resume
def _tiny(tmp_path: Path, out: str, steps: int, *, nproc: int = 1, report: str | None = None, resume: str = "auto"):
    from tiny_training import tiny_config

    backbone = tmp_path / "backbone"
    if not backbone.exists():
        from transformers import AutoModel

        torch.manual_seed(0)
        AutoModel.from_config(tiny_config("bert", dropout=0.0)).save_pretrained(str(backbone))
    args = [str(HELPER), "--backbone", str(backbone), "--out", out, "--steps", str(steps), "--checkpoint-every", "4"]
    args += ["--batch-size", "8", "--grad-accum", "1", "--rows", "64", "--resume", resume]
    args += ["--report", report or str(tmp_path / f"report-{uuid.uuid4().hex[:6]}")]
    launcher = (
        [sys.executable]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([*launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return Path(args[args.index("--report") + 1])


def _rank_report(report: Path, rank: int = 0) -> tuple[dict, dict]:
    return json.loads((report / f"rank{rank}.json").read_text()), load_file(str(report / f"rank{rank}.safetensors"))


def test_resume_across_world_sizes_and_from_rank_zeros_folder(tmp_path):
    ref_report = _tiny(tmp_path, str(tmp_path / "ref"), 8)
    _, want = _rank_report(ref_report)
    start = {k: v for k, v in load_file(str(tmp_path / "backbone" / "model.safetensors")).items()}
    start = {f"encoder.{k}": v for k, v in start.items()}

    # 2 ranks to step 4, then one process on to 8 (and the other way round). The 2-rank job runs
    # to 8 (the learning rate follows the planned length) and its last checkpoint is dropped.
    _tiny(tmp_path, str(tmp_path / "a"), 8, nproc=2)
    shutil.rmtree(tmp_path / "a" / "step-000008")
    info, got = _rank_report(_tiny(tmp_path, str(tmp_path / "a"), 8))
    assert info["resumed_from"].endswith("step-000004")
    assert _largest_update_ratio(want, got, start) < TOL
    shutil.copytree(tmp_path / "ref" / "step-000004", tmp_path / "b" / "step-000004")
    report = _tiny(tmp_path, str(tmp_path / "b"), 8, nproc=2)
    assert _largest_update_ratio(want, _rank_report(report)[1], start) < TOL

    # Node-local folders: rank 0's holds step 4; rank 1's an unrelated, older checkpoint.
    _tiny(tmp_path, str(tmp_path / "decoy"), 2)
    shutil.copytree(tmp_path / "ref" / "step-000004", tmp_path / "c" / "rank0" / "step-000004")
    shutil.copytree(tmp_path / "decoy" / "step-000002", tmp_path / "c" / "rank1" / "step-000002")
    report = _tiny(tmp_path, str(tmp_path / "c" / "rank{rank}"), 8, nproc=2)
    (info0, w0), (info1, w1) = _rank_report(report, 0), _rank_report(report, 1)
    assert info0["resumed_from"] == info1["resumed_from"] == str(tmp_path / "c" / "rank0" / "step-000004")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert _largest_update_ratio(want, w0, start) < TOL


# ------------------------------------------------------------------------------------ launch
def test_two_machines_make_one_run(job):
    """Two launchers on this machine stand for two nodes of one rank each (gloo, static
    rendezvous on 127.0.0.1): node 0 through `mlflow run`, node 1 through the entry point script
    with the launch options only. The job is one FINISHED run with world_size 2 over 2 nodes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = job["client"]
    exp = client.get_experiment_by_name(job["experiment"]).experiment_id
    before = {r.info.run_id for r in client.search_runs([exp])}
    launch = dict(nnodes=2, master_addr="127.0.0.1", master_port=port, nproc_per_node=1)
    params = {**_train_params(job, "out-nodes", max_steps=4, eval_every=0), **launch, "node_rank": 0}
    node0_cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "train_bert_base", "--env-manager", "local"]
    for key, value in params.items():
        node0_cmd += ["-P", f"{key}={value}"]
    node1_cmd = [sys.executable, "entrypoints/train.py", "--entry-point", "train_bert_base", "--node-rank", "1"]
    for key, value in launch.items():
        node1_cmd += [f"--{key.replace('_', '-')}", str(value)]
    logs = [open(job["root"] / f"node{k}.log", "wb") for k in (0, 1)]
    nodes = [
        subprocess.Popen(cmd, cwd=REPO, env=job["env"], stdout=log, stderr=subprocess.STDOUT)
        for cmd, log in zip((node0_cmd, node1_cmd), logs)
    ]
    rcs = [p.wait(900) for p in nodes]
    for log in logs:
        log.close()
    text = "".join((job["root"] / f"node{k}.log").read_text(errors="replace")[-3000:] for k in (0, 1))
    assert rcs == [0, 0], text
    new = [r for r in client.search_runs([exp]) if r.info.run_id not in before]
    assert len(new) == 1, [r.info.run_name for r in new]
    run = new[0]
    assert run.info.status == "FINISHED"
    assert (run.data.params["hardware.world_size"], run.data.params["hardware.nodes"]) == ("2", "2")


def test_a_batch_that_does_not_split_is_one_line_on_every_rank(job):
    done = _mlflow_run(job, "badbatch", "train_bert_base", **_train_params(job, "out-badbatch", batch_size=7, nproc_per_node=2))
    assert done.returncode != 0
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("tfqa: batch_size 7")]
    assert lines == ["tfqa: batch_size 7 does not split into 2 process(es) x grad_accum_steps 1: it must be a multiple of 2"] * 2
    assert not (job["root"] / "out-badbatch" / "features").exists()  # refused before any data was built


EVAL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    import tfqa.inference.batch_scoring as bs
    from tfqa.core import distributed
    from tfqa.evaluation.dev import DevEvaluator
    from tfqa.features.featurize import FeatureConfig
    from tfqa.features.tokenization import load_tokenizer
    from tfqa.modeling.model import CandidateQAModel

    dev, backbone, out = sys.argv[1:4]
    job = distributed.init()
    scored = []
    real = bs.score_candidates

    def counting(model, store, rows=None, *a, **k):
        scored.append(len(store) if rows is None else len(rows))
        return real(model, store, rows, *a, **k)

    bs.score_candidates = counting
    evaluator = DevEvaluator.from_file(
        dev, backbone, Path(out) / "cache", limit=10, features=FeatureConfig(), job=job  # one cache: built once
    )
    torch.manual_seed(0)
    model = CandidateQAModel.from_backbone(backbone)
    model.resize_token_embeddings(len(load_tokenizer(backbone)))
    metrics = evaluator(model, 1)
    Path(out, f"eval-{job.world_size}-{job.rank}.json").write_text(json.dumps({"metrics": metrics, "rows": scored}))
    distributed.shutdown(job)
    """
)


def test_the_dev_evaluation_shared_over_ranks_equals_one_process(job, tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(EVAL_SCRIPT)
    env = {**job["env"], "PYTHONPATH": str(REPO)}
    args = [str(script), str(job["dev"]), str(job["backbone"]), str(tmp_path)]
    for launcher in ([sys.executable], [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]):
        done = subprocess.run([*launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    one = json.loads((tmp_path / "eval-1-0.json").read_text())
    ranks = [json.loads((tmp_path / f"eval-2-{r}.json").read_text()) for r in (0, 1)]
    # Every rank returns rank 0's metrics, and they are one process's.
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    assert ranks[0]["metrics"].keys() == one["metrics"].keys()
    for key, value in one["metrics"].items():
        if key != "dev/eval_seconds":
            assert ranks[0]["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # No rank idles: each scored a share, and the shares add up to what one process scored.
    shares = [r["rows"][0] for r in ranks]
    assert min(shares) > 0 and sum(shares) == one["rows"][0]
