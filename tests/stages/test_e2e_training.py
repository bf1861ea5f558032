"""End to end: the MLflow entry points against a real tracking server, on a tiny BERT.

Every stage runs as users run it - ``mlflow run <repo> -e <entry point> --env-manager local`` or
the entry point script itself - in a subprocess pointed at the session's real ``mlflow server``
(``conftest.mlflow_server``), in an experiment of its own. What is checked is what lands on the
server (params, tags, metric histories, artifacts, run status) and on disk.

Each subprocess costs 20-60 s of imports here, so the runs are shared: a module-scoped ``E2E``
context starts each job once (some in the background, while other tests check earlier results)
and the tests read from them. Jobs that another job depends on are started on first use.

The SIGKILL tests kill a process group this module started, right after the first checkpoint
folder (or the second mining shard) appears: both are renamed into place atomically, so what a
killed job leaves is exactly what a crash would leave.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import stage_env, tiny_nq_files

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SQUAD = REPO.parent / "shared" / "data" / "squad2-dev-half.json"
JOB_TIMEOUT_S = 900.0
RUN_ID_IN_OUTPUT = re.compile(r"run with ID '([0-9a-f]{32})'")
ANSWER_COLUMNS = [
    "long_answer",
    "long_answer_start",
    "long_answer_end",
    "long_answer_score",
    "short_answer",
    "short_answer_start",
    "short_answer_end",
    "short_answer_score",
    "yes_no_answer",
]

# The run that is SIGKILLed and resumed, and the uninterrupted reference (which also lives through
# the tracking server going away): the same training settings, output folders apart. 108 training
# rows / batch 8 = 14 steps per epoch, so the run crosses an epoch end; the first checkpoint
# (step 8) is mid-epoch.
RESUME_STEPS = 30
RESUME_CHECKPOINT_EVERY = 8


# ------------------------------------------------------------------------------------ jobs
class Job:
    """One subprocess in its own process group, output to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self._log = open(log_path, "wb")
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.rc: int | None = None
        self.seconds: float | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def _finished(self) -> None:
        self.rc = self.proc.returncode
        self.seconds = time.time() - self.started
        self._log.close()

    def wait(self, timeout: float = JOB_TIMEOUT_S) -> Job:
        if self.rc is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name}: still running after {timeout:.0f} s; killed\n{self.tail()}") from None
            self._finished()
        return self

    def ok(self) -> Job:
        self.wait()
        assert self.rc == 0, f"{self.name} exited with {self.rc}; command {' '.join(self.cmd)}\n{self.tail()}"
        return self

    def kill(self) -> None:
        """SIGKILL the job's whole process group (only processes this module started)."""
        if self.rc is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self._finished()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:]

    @property
    def run_id(self) -> str:
        """The run ``mlflow run`` created (read from its log line)."""
        m = RUN_ID_IN_OUTPUT.search(self.output)
        assert m, f"{self.name}: no run id in the output of `mlflow run`:\n{self.tail()}"
        return m.group(1)


@dataclass
class E2E:
    root: Path
    server: object  # conftest.MlflowServer
    env: dict[str, str]
    experiment: str
    train_file: Path
    dev_file: Path
    backbone: Path
    jobs: dict[str, Job] = field(default_factory=dict)
    recipes: dict[str, Callable[[], Job]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.server.uri)

    def mlflow_run(self, name: str, entry_point: str, **params) -> Job:
        cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            cmd += ["-P", f"{key}={value}"]
        return Job(name, cmd, self.env, self.root / f"{name}.log")

    def script(self, name: str, script: str, args: list[str], extra_env: dict[str, str] | None = None) -> Job:
        env = {**self.env, **(extra_env or {})}
        return Job(name, [sys.executable, f"entrypoints/{script}", *args], env, self.root / f"{name}.log")

    def start(self, *names: str) -> None:
        """Start these jobs in the background (their upstream jobs first, waited for)."""
        for name in names:
            if name not in self.jobs:
                self.jobs[name] = self.recipes[name]()

    def prefetch(self, *names: str) -> None:
        """Start these in the background if their upstream jobs succeeded; a failure shows up in
        the test that needs the job, not in the one that happened to start it."""
        for name in names:
            try:
                self.start(name)
            except AssertionError:
                pass

    def job(self, name: str) -> Job:
        """The finished, successful job ``name`` (started now if it was not)."""
        self.start(name)
        job = self.jobs[name].ok()
        self.timings[name] = round(job.seconds, 1)
        return job

    def wait_all(self) -> None:
        for name, job in list(self.jobs.items()):
            job.wait()
            self.timings.setdefault(name, round(job.seconds, 1))

    def metric_history(self, run_id: str, key: str) -> list:
        return sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))

    def artifact_paths(self, run_id: str, path: str | None = None) -> list[str]:
        return [a.path for a in self.client.list_artifacts(run_id, path)]

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        import mlflow

        dst.mkdir(parents=True, exist_ok=True)
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=self.server.uri
            )
        )


def _wait_for(what: str, cond: Callable[[], bool], job: Job, timeout: float = JOB_TIMEOUT_S, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if not job.running:
            job.wait()
            raise AssertionError(f"{job.name} ended (rc {job.rc}) before {what}:\n{job.tail()}")
        if time.monotonic() > deadline:
            job.kill()
            raise AssertionError(f"{job.name}: no {what} after {timeout:.0f} s:\n{job.tail()}")
        time.sleep(poll)


def _complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders renamed into place (``step-XXXXXX``; not ``.tmp``/``.old`` leftovers)."""
    return sorted(
        p for p in ckpt_root.glob("step-*") if re.fullmatch(r"step-\d+", p.name) and (p / "trainer_state.json").exists()
    )


def _run_dir(out: Path) -> Path:
    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder under {out / 'runs'}, found {runs}"
    return runs[0]


@pytest.fixture(scope="module")
def ctx(mlflow_server, tmp_path_factory):
    if not mlflow_server.running:  # an earlier module stopped it and failed before restarting
        mlflow_server.start()
    root = tmp_path_factory.mktemp("e2e")
    experiment = f"e2e-{uuid.uuid4().hex[:12]}"
    env = stage_env(mlflow_server.uri, experiment)

    from tfqa.pipeline.demo import tiny_backbone

    train_file, dev_file = tiny_nq_files(root)
    backbone = Path(tiny_backbone(root))

    c = E2E(root, mlflow_server, env, experiment, train_file, dev_file, backbone)
    # Created here: `mlflow run`s started together would race to create it (RESOURCE_ALREADY_EXISTS).
    c.client.create_experiment(experiment)
    c.recipes = {
        "prepare": lambda: c.mlflow_run("prepare", "prepare", input=train_file, tokenizer=backbone, cache_dir=root / "features"),
        "prepare_again": lambda: (
            c.job("prepare"),
            c.mlflow_run("prepare_again", "prepare", input=train_file, tokenizer=backbone, cache_dir=root / "features"),
        )[1],
        "wrong_variant": lambda: c.mlflow_run(
            "wrong_variant", "train_albert", variant=4, backbone=backbone, train_data=train_file, max_steps=1
        ),
        "train": lambda: c.mlflow_run(
            "train",
            "train_bert_base",
            backbone=backbone,
            train_data=c.job("prepare").run_id,
            max_steps=6,
            batch_size=8,
            checkpoint_every=3,
            log_every=1,
            dev_data=dev_file,
            eval_every=3,
            dev_examples=10,
            output_dir=root / "out-train",
            backbone_name="tiny",
        ),
        "mine": lambda: c.mlflow_run(
            "mine",
            "mine_hard_negatives",
            model=c.job("train").run_id,
            train_data=train_file,
            output_dir=root / "out-mine",
            n_shards=6,
        ),
        "squad": lambda: c.mlflow_run(
            "squad",
            "finetune_squad",
            backbone=backbone,
            squad_data=SQUAD,
            max_questions=60,
            max_dev_questions=40,
            max_steps=4,
            max_seq_len=128,
            doc_stride=32,
            batch_size=8,
            output_dir=root / "out-squad",
            backbone_name="tiny",
        ),
        "albert": lambda: c.mlflow_run(
            "albert",
            "train_albert",
            variant=2,
            backbone=backbone,
            train_data=train_file,
            init_model=c.job("squad").run_id,
            mining_run=c.job("mine").run_id,
            max_steps=2,
            batch_size=8,
            output_dir=root / "out-albert",
            backbone_name="tiny",
        ),
    }
    with pytest.MonkeyPatch.context() as mp:
        # For what this process reads back (runs:/ URIs, pyfunc loading).
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        # Independent of everything else: under way while the first tests wait for `prepare`.
        c.prefetch("prepare", "squad", "wrong_variant")
        try:
            yield c
        finally:
            for job in c.jobs.values():
                job.kill()
            if not mlflow_server.running:
                mlflow_server.start()
            (root / "timings.json").write_text(json.dumps(c.timings, indent=1))
            print(f"\ne2e job seconds: {json.dumps(c.timings)}")


def _train_args(features: str, out: Path) -> list[str]:
    return [
        "--entry-point",
        "train_bert_base",
        "--backbone",
        "BACKBONE",
        "--train-data",
        features,
        "--max-steps",
        str(RESUME_STEPS),
        "--batch-size",
        "8",
        "--checkpoint-every",
        str(RESUME_CHECKPOINT_EVERY),
        "--log-every",
        "1",
        "--output-dir",
        str(out),
        "--backbone-name",
        "tiny",
    ]


def _resume_args(ctx: E2E, out: Path) -> list[str]:
    features = ctx.client.get_run(ctx.job("prepare").run_id).data.tags["tfqa.features_path"]
    return [str(ctx.backbone) if a == "BACKBONE" else a for a in _train_args(features, out)]


# ------------------------------------------------------------------------------------ prepare
def test_prepare_logs_fingerprint_counts_manifest_and_reuses_cache(ctx):
    import mlflow

    first = ctx.job("prepare")
    ctx.prefetch("train", "prepare_again")  # the training runs while this test checks
    run = ctx.client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["tfqa.stage"] == "prepare" and tags["mlflow.project.entryPoint"] == "prepare"
    fingerprint = tags["tfqa.data_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{8,}", fingerprint), fingerprint
    features = Path(tags["tfqa.features_path"])
    assert features.name == fingerprint and (features / "manifest.json").exists()
    assert run.data.params["input"] == str(ctx.train_file) and run.data.params["selection.strategy"] == "random"

    assert metrics["prepare/examples"] == 40 and metrics["prepare/lines"] == 40
    assert metrics["prepare/skipped_lines"] == 0
    assert metrics["prepare/candidates"] > 0 and metrics["prepare/rows"] > 0
    assert "prepare/truncated_spans" in metrics
    classes = {k: v for k, v in metrics.items() if k.startswith("prepare/class_")}
    assert len(classes) == 5 and sum(classes.values()) == metrics["prepare/rows"], classes
    assert metrics["prepare/cache_reused"] == 0

    assert "features/manifest.json" in ctx.artifact_paths(first.run_id, "features")
    manifest = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/features/manifest.json")
    assert manifest["rows"] == metrics["prepare/rows"]
    assert {f"prepare/{k}": v for k, v in manifest["counts"].items()}.items() <= metrics.items()

    again = ctx.job("prepare_again")
    rerun = ctx.client.get_run(again.run_id)
    assert again.run_id != first.run_id and rerun.info.status == "FINISHED"
    assert rerun.data.metrics["prepare/cache_reused"] == 1
    assert rerun.data.tags["tfqa.data_fingerprint"] == fingerprint
    assert rerun.data.tags["tfqa.features_path"] == str(features)
    assert rerun.data.metrics["prepare/rows"] == metrics["prepare/rows"]
    assert "reused" in again.output


def test_wrong_variant_for_entry_point_fails_clearly(ctx):
    ctx.start("wrong_variant")
    job = ctx.jobs["wrong_variant"].wait()
    ctx.timings["wrong_variant"] = round(job.seconds, 1)
    assert job.rc != 0, f"train_albert accepted variant 4:\n{job.tail()}"
    assert "variant 4 is trained by train_bert_large" in job.output, job.tail()
    assert ctx.client.get_run(job.run_id).info.status == "FAILED"


# ------------------------------------------------------------------------------------ train
def test_train_bert_base_logs_params_tags_metrics_checkpoints_and_model(ctx):
    prepare_id = ctx.job("prepare").run_id
    job = ctx.job("train")
    ctx.prefetch("mine")  # scores with this model while the next tests run
    run = ctx.client.get_run(job.run_id)
    assert run.info.status == "FINISHED"
    p, t = run.data.params, run.data.tags

    assert p["variant.key"] == "bert_base" and p["variant.backbone_name"] == "tiny"
    assert p["variant.negatives"] == "random" and p["variant.batch_size"] == "8"
    assert p["train.max_steps"] == "6" and p["train.batch_size"] == "8" and p["train.lr"] == p["variant.lr"]
    assert p["train.checkpoint_every_steps"] == "3" and p["train.eval_every_steps"] == "3"

    assert t["tfqa.stage"] == "train_bert_base" and t["tfqa.variant"] == "bert_base" and t["tfqa.backbone"] == "tiny"
    assert re.fullmatch(r"[0-9a-f]{40}", t.get("mlflow.source.git.commit", "")), t.get("mlflow.source.git.commit")
    assert t["tfqa.upstream.prepare"] == prepare_id
    assert t["tfqa.data_fingerprint"] == ctx.client.get_run(prepare_id).data.tags["tfqa.data_fingerprint"]
    assert not any(k.startswith("tfqa.param_conflict.") for k in t) and "tfqa.error" not in t

    for key in ("train/loss", "train/lr", "train/grad_norm", "train/seqs_per_s", "train/tokens_per_s"):
        history = ctx.metric_history(job.run_id, key)
        assert [m.step for m in history] == [1, 2, 3, 4, 5, 6], (key, [(m.step, m.value) for m in history])
        assert all(np.isfinite(m.value) for m in history), key
    assert all(m.value > 0 for m in ctx.metric_history(job.run_id, "train/tokens_per_s"))
    # (Points linked to its evaluated checkpoint models repeat the run's own, as MLflow's
    # log_model(step=) does.)
    dev = ctx.metric_history(job.run_id, "dev/long_f1")
    assert sorted({m.step for m in dev}) == [3, 6] and all(0.0 <= m.value <= 1.0 for m in dev)
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert system, sorted(run.data.metrics)
    assert ctx.metric_history(job.run_id, system[0])

    # The store kept one resumable checkpoint while the run trained and none once it FINISHED
    # (test_distributed's stopped run shows the one it keeps).
    assert ctx.artifact_paths(job.run_id, "checkpoints") == []
    assert "model/MLmodel" in ctx.artifact_paths(job.run_id, "model")
    assert (ctx.root / "out-train" / "runs" / job.run_id / "final" / "model.safetensors").exists()


def test_logged_model_is_code_based_pyfunc_that_answers(ctx, tmp_path):
    import mlflow.pyfunc
    import yaml

    run_id = ctx.job("train").run_id
    local = ctx.download(run_id, "model", tmp_path)
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model", pyfunc
    assert str(pyfunc["model_code_path"]).endswith(".py") and (local / Path(pyfunc["model_code_path"]).name).exists()
    assert "python_model" not in pyfunc, f"a pickled python_model: {pyfunc}"
    pickles = [p.relative_to(local) for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert not pickles, pickles

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    lines = [json.loads(line) for line in ctx.train_file.read_text().splitlines()[:2]]
    frame = pd.DataFrame(
        {"question_text": [x["question_text"] for x in lines], "document_text": [x["document_text"] for x in lines]}
    )
    answers = model.predict(frame)
    assert isinstance(answers, pd.DataFrame) and len(answers) == 2
    assert set(ANSWER_COLUMNS) <= set(answers.columns), list(answers.columns)
    assert set(answers["yes_no_answer"]) <= {"NONE", "YES", "NO"}
    assert answers["long_answer_start"].dtype.kind == "i"


# ------------------------------------------------------------------------------------ outage + resume
@dataclass
class OutageRun:
    job: Job
    run_id: str
    out: Path
    down_ms: int
    """When the server was gone (after ``stop()`` returned)."""
    up_ms: int
    """When it was healthy again (after ``start()`` returned)."""


@pytest.fixture(scope="module")
def outage_run(ctx):
    """The uninterrupted reference training (``python entrypoints/train.py``), during which the
    tracking server is stopped and, a few seconds later, started again.

    The run folder appears once the run is open and its params are queued, just before the loop
    starts. The trainer is paused (SIGSTOP) while the server is taken down, so that every training
    step runs with the server gone however fast the steps are, then continued (SIGCONT)."""
    ctx.wait_all()  # nothing else may be talking to the server when it goes away
    out = ctx.root / "out-reference"
    job = ctx.script("reference", "train.py", _resume_args(ctx, out))
    _wait_for("run folder", lambda: any((out / "runs").glob("*/run.json")), job, poll=0.01)
    os.killpg(job.proc.pid, signal.SIGSTOP)
    try:
        ctx.server.stop()
        down_ms = int(time.time() * 1000)
    finally:
        os.killpg(job.proc.pid, signal.SIGCONT)
    try:
        time.sleep(3)
    finally:
        ctx.server.start()
    up_ms = int(time.time() * 1000)
    job.ok()
    ctx.timings["reference_with_outage"] = round(job.seconds, 1)
    return OutageRun(job, _run_dir(out).name, out, down_ms, up_ms)


def test_training_survives_tracking_server_outage(ctx, outage_run):
    r = outage_run
    assert "tracking server unreachable" in r.job.output, "the run never noticed the outage:\n" + r.job.tail()
    run = ctx.client.get_run(r.run_id)
    assert run.info.status == "FINISHED"
    history = ctx.metric_history(r.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, RESUME_STEPS + 1)), [m.step for m in history]
    during = [m.step for m in history if r.down_ms <= m.timestamp < r.up_ms]
    assert during, "no loss was logged while the server was down"
    assert "model/MLmodel" in ctx.artifact_paths(r.run_id, "model")
    assert run.data.params["train.max_steps"] == str(RESUME_STEPS)
    assert (r.out / "runs" / r.run_id / "final" / "model.safetensors").exists()


def test_sigkilled_training_resumes_into_same_run_bit_exact(ctx, outage_run):
    import torch
    from safetensors.torch import load_file

    ctx.prefetch("albert")  # independent of this test: runs meanwhile
    out = ctx.root / "out-killed"
    args = _resume_args(ctx, out)
    killed = ctx.script("killed", "train.py", args)
    _wait_for(
        "first checkpoint",
        lambda: any(_complete_checkpoints(p / "checkpoints") for p in (out / "runs").glob("*")),
        killed,
        poll=0.01,
    )
    alive = killed.running
    killed.kill()
    assert alive, f"the training ended before it could be killed:\n{killed.tail()}"
    run_dir = _run_dir(out)
    run_id = run_dir.name
    assert not (run_dir / "final").exists(), "killed after it had finished"
    saved = _complete_checkpoints(run_dir / "checkpoints")
    resume_step = int(saved[-1].name.split("-")[1])
    ctx.timings["resume_from_step"] = resume_step
    assert resume_step < RESUME_STEPS, saved
    assert ctx.client.get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves it open

    resume_ms = int(time.time() * 1000)
    resumed = ctx.script("resumed", "train.py", [*args, "--resume", "auto"], extra_env={"MLFLOW_RUN_ID": run_id})
    resumed.ok()
    ctx.timings["killed"], ctx.timings["resumed"] = round(killed.seconds, 1), round(resumed.seconds, 1)
    assert _run_dir(out).name == run_id, "the resumed training wrote into another run's folder"

    run = ctx.client.get_run(run_id)
    assert run.info.status == "FINISHED", run.info.status
    assert not any(k.startswith("tfqa.param_conflict.") for k in run.data.tags), run.data.tags
    assert "tfqa.error" not in run.data.tags
    # The resumed process continued after the checkpoint: it logged every later step, none before.
    history = ctx.metric_history(run_id, "train/loss")
    after = [m.step for m in history if m.timestamp >= resume_ms]
    assert sorted(set(after)) == list(range(resume_step + 1, RESUME_STEPS + 1)), (resume_step, after)
    assert set(range(1, RESUME_STEPS + 1)) == {m.step for m in history}
    assert "model/MLmodel" in ctx.artifact_paths(run_id, "model")

    got = load_file(str(run_dir / "final" / "model.safetensors"))
    want = load_file(str(outage_run.out / "runs" / outage_run.run_id / "final" / "model.safetensors"))
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"resumed (from step {resume_step}) weights differ from the uninterrupted run's: {differ}"


def test_a_run_killed_while_the_server_is_down_resends_its_checkpoints_metrics_when_reattached(ctx):
    """A training killed while the tracking server is away: its checkpoint keeps the metric points
    the server never confirmed, and the run re-attached with `mlflow run . -e train_bert_base
    --run-id <id>` (docs/stages.md's way) sends them with their own steps and timestamps, so the run's
    history holds every step once, the ones only the checkpoint remembered included."""
    ctx.wait_all()  # nothing else may be talking to the server when it goes away
    out = ctx.root / "out-killed-offline"
    args = _resume_args(ctx, out)
    job = ctx.script("killed-offline", "train.py", args)
    _wait_for("run folder", lambda: any((out / "runs").glob("*/run.json")), job, poll=0.01)
    os.killpg(job.proc.pid, signal.SIGSTOP)  # every training step runs with the server gone
    try:
        ctx.server.stop()
    finally:
        os.killpg(job.proc.pid, signal.SIGCONT)
    try:
        _wait_for("a checkpoint", lambda: any(_complete_checkpoints(p / "checkpoints") for p in (out / "runs").glob("*")), job)
        alive = job.running
        job.kill()
    finally:
        ctx.server.start()
    assert alive, f"the training ended before it could be killed:\n{job.tail()}"
    run_dir = _run_dir(out)
    run_id = run_dir.name
    (ckpt,) = _complete_checkpoints(run_dir / "checkpoints")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    kept = [p for p in state["unsent_metrics"] if p["key"] == "train/loss"]
    # Nothing reached the server from step 1 on: the checkpoint holds each step's loss up to itself.
    assert [p["step"] for p in kept] == list(range(1, state["step"] + 1)), (state["step"], kept)
    assert not ctx.metric_history(run_id, "train/loss")
    assert ctx.client.get_run(run_id).info.status == "RUNNING"  # SIGKILL leaves it open

    params = dict(zip(args[::2], args[1::2]))
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "train_bert_base", "--env-manager", "local"]
    cmd += ["--run-id", run_id, "--experiment-name", ctx.experiment]
    for flag, value in params.items():
        key = flag.removeprefix("--").replace("-", "_")
        if key != "entry_point":
            cmd += ["-P", f"{key}={value}"]
    reattached = Job("reattached", cmd, ctx.env, ctx.root / "reattached.log").ok()
    assert reattached.run_id == run_id, "mlflow run made a new run instead of re-attaching"

    run = ctx.client.get_run(run_id)
    assert run.info.status == "FINISHED" and "tfqa.error" not in run.data.tags
    assert not any(k.startswith("tfqa.param_conflict.") for k in run.data.tags), run.data.tags
    history = ctx.metric_history(run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, RESUME_STEPS + 1)), [m.step for m in history]
    # The checkpoint's points arrived as they were logged before the kill, timestamps and all.
    sent = {(m.step, m.value, m.timestamp) for m in history}
    assert {(p["step"], p["value"], p["timestamp"]) for p in kept} <= sent


# ------------------------------------------------------------------------------------ mining
def _mining_shards(out: Path) -> list[Path]:
    return sorted(out.glob("mining/*/part-*-of-00006.parquet"))


def test_mining_scores_every_negative_once_and_hard_beats_random(ctx, tmp_path):
    from tfqa.features.dataset import FeatureStore

    train_id = ctx.job("train").run_id
    job = ctx.job("mine")
    run = ctx.client.get_run(job.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tfqa.upstream.model"] == train_id and run.data.tags["tfqa.stage"] == "mine_hard_negatives"
    scores = pd.read_parquet(ctx.download(job.run_id, "mining/scores.parquet", tmp_path / "s"))
    hard = pd.read_parquet(ctx.download(job.run_id, "mining/hard_negatives.parquet", tmp_path / "h"))

    store = FeatureStore(ctx.root / "out-mine" / "features" / run.data.tags["tfqa.data_fingerprint"])
    assert store.manifest["selection"]["strategy"] == "all"
    # Candidates are cut as the scoring model saw them in training (no max_seq_len given to mining).
    trained_on = FeatureStore(ctx.client.get_run(ctx.job("prepare").run_id).data.tags["tfqa.features_path"])
    trained_len = trained_on.manifest["features"]["max_seq_len"]
    assert store.manifest["features"]["max_seq_len"] == trained_len == int(run.data.params["features.max_seq_len"])
    meta = store.meta
    negatives = meta[meta["label"] == 0]
    want = set(zip(negatives["example_id"].astype(str), negatives["candidate_index"].astype(int)))
    got = list(zip(scores["example_id"].astype(str), scores["candidate_index"].astype(int)))
    assert len(got) == len(set(got)), "a negative was scored twice"
    assert set(got) == want, (len(set(got) - want), len(want - set(got)))
    assert run.data.metrics["mine/negatives_scored"] == len(want)
    assert scores["score"].between(0, 1).all()

    # The hard negatives are each example's k best-scored negatives, scores as in the table ...
    k = int(run.data.params["mine.negatives_per_example"])
    assert (hard.groupby("example_id").size() == scores.groupby("example_id").size().clip(upper=k)).all()
    keyed = scores.set_index(["example_id", "candidate_index"])["score"]
    hard_keyed = hard.set_index(["example_id", "candidate_index"])["score"]
    assert (keyed.loc[hard_keyed.index] == hard_keyed).all()
    rest = keyed.drop(hard_keyed.index)
    lowest_hard = hard_keyed.groupby(level="example_id").min()
    highest_rest = rest.groupby(level="example_id").max()
    both = lowest_hard.index.intersection(highest_rest.index)
    assert (lowest_hard[both] >= highest_rest[both]).all()
    # ... so they score higher than as many negatives picked at random (seeded) per example.
    random_pick = scores.sample(frac=1.0, random_state=0).groupby("example_id").head(k)
    assert len(random_pick) == len(hard)
    hard_mean, random_mean = hard["score"].astype(float).mean(), random_pick["score"].astype(float).mean()
    assert hard_mean > random_mean, (hard_mean, random_mean)


def test_killed_sharded_mining_reruns_only_missing_shards(ctx, tmp_path):
    train_id = ctx.job("train").run_id
    reference = ctx.job("mine")
    out = ctx.root / "out-mine-killed"
    args = ["--model", train_id, "--train-data", str(ctx.train_file), "--output-dir", str(out), "--n-shards", "6"]
    killed = ctx.script("mine_killed", "mine_hard_negatives.py", args)
    _wait_for("two shards", lambda: len(_mining_shards(out)) >= 2, killed, poll=0.01)
    alive = killed.running
    killed.kill()
    done = len(_mining_shards(out))
    assert alive and done < 6, f"the mining job finished ({done} shards) before it could be killed"

    rerun = ctx.script("mine_rerun", "mine_hard_negatives.py", args).ok()
    ctx.timings["mine_killed"], ctx.timings["mine_rerun"] = round(killed.seconds, 1), round(rerun.seconds, 1)
    exp = ctx.client.get_experiment_by_name(ctx.experiment)
    runs = ctx.client.search_runs([exp.experiment_id], f"params.`mine.output_dir` = '{out}' and attributes.status = 'FINISHED'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    m = runs[0].data.metrics
    assert m["mine/shards_reused"] == done > 0 and m["mine/shards_scored"] == 6 - done, m

    got = pd.read_parquet(ctx.download(runs[0].info.run_id, "mining/scores.parquet", tmp_path / "got"))
    want = pd.read_parquet(ctx.download(reference.run_id, "mining/scores.parquet", tmp_path / "want"))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


# ------------------------------------------------------------------------------------ SQuAD -> ALBERT variant
def test_finetune_squad_logs_squad_metrics_and_model(ctx):
    job = ctx.job("squad")
    run = ctx.client.get_run(job.run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in (
        "squad/exact",
        "squad/f1",
        "squad/best_f1",
        "squad/HasAns_exact",
        "squad/HasAns_f1",
        "squad/NoAns_exact",
        "squad/NoAns_f1",
    ):
        assert key in m and 0.0 <= m[key] <= 100.0, (key, sorted(m))
    assert m["squad/train_questions"] == 60 and m["squad/dev_questions"] == 40
    assert m["squad/HasAns_total"] + m["squad/NoAns_total"] == 40
    assert [h.step for h in ctx.metric_history(job.run_id, "train/loss")][-1] == 4
    assert "model/MLmodel" in ctx.artifact_paths(job.run_id, "model")


def test_albert_variant_trains_from_squad_model_with_mined_negatives(ctx):
    squad_id, mine_id = ctx.job("squad").run_id, ctx.job("mine").run_id
    job = ctx.job("albert")
    run = ctx.client.get_run(job.run_id)
    assert run.info.status == "FINISHED"
    t, p = run.data.tags, run.data.params
    assert t["tfqa.stage"] == "train_albert" and t["tfqa.variant"] == "2"
    assert t["tfqa.upstream.init"] == squad_id
    assert t["tfqa.upstream.mine_hard_negatives"] == mine_id
    assert p["variant.init"] == "squad" and p["variant.negatives"] == "hard" and p["stage.init_model"] == squad_id
    assert [h.step for h in ctx.metric_history(job.run_id, "train/loss")][-1] == 2
    assert "model/MLmodel" in ctx.artifact_paths(job.run_id, "model")
