"""The tfqa stages end to end, through their real entry points, on tiny generated data.

prepare -> train_bert_base -> mine_hard_negatives -> train_bert (variant 1); finetune_squad ->
train_albert (variant 2, from the SQuAD run, on the mined negatives); promote both -> validate ->
predict. Each stage is ``python entrypoints/<stage>.py --option value ...`` in its own process,
as ``mlflow run`` would start it, against a local store (``sqlite:///<work>/mlflow.db``, artifacts
under ``<work>/mlartifacts``) in experiment ``gpu-check``, with no settings file (``TFQA_CONFIG=``)
so nothing of the user's setup leaks in.

The data comes from ``python -m tfqa.cli generate`` (train, a five-way-annotated dev set, a test
set), SQuAD from the real SQuAD 2.0 sample, the backbone is a 2-layer BERT written from a config
on the given tokenizer (bert-base-uncased's vocabulary).

Which device a stage used is read from the stage process itself: each entry point runs under
``gpu_check.py --probe REPORT -- entrypoints/<stage>.py ...``, which runs the script as
``__main__`` (``runpy``: same process, same ``sys.argv`` and ``sys.path`` as a plain run) and at
exit writes whether CUDA was initialised, the device's name and the peak memory its tensors took.
A stage that trains or scores passes only if it finished, its MLflow run is FINISHED and (on a
GPU) it held CUDA memory; ``prepare`` and ``promote`` run no model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "gpu-check"
BACKBONE_NAME = "gpucheck-tiny"
MODEL_NAMES = {"1": "gpucheck-v1", "2": "gpucheck-v2"}


@dataclass(frozen=True)
class StageSizes:
    train_examples: int
    dev_examples: int
    test_examples: int
    max_seq_len: int
    max_steps: int
    batch_size: int
    squad_questions: int
    squad_dev_questions: int
    stage_timeout_s: float
    """Kill a stage that runs longer (it is then reported failed)."""


GPU_SIZES = StageSizes(64, 24, 8, 128, 12, 16, 128, 48, stage_timeout_s=150)
SMOKE_SIZES = StageSizes(16, 8, 4, 96, 2, 4, 16, 8, stage_timeout_s=600)


@dataclass
class StageResult:
    stage: str
    status: str = "skipped"
    """``ok``, ``failed`` or ``skipped``."""
    seconds: float = 0.0
    returncode: int | None = None
    run_id: str = ""
    run_status: str = ""
    expects_device: bool = True
    """Whether the stage runs a model (on the GPU when there is one)."""
    device: str = ""
    """What the stage process reported at exit: the GPU's name when it initialised CUDA, else
    ``cpu``; empty when it reported nothing."""
    cuda: bool = False
    max_memory_mib: float = 0.0
    command: str = ""
    note: str = ""


@dataclass
class Stage:
    name: str
    script: str
    args: Callable[[dict[str, StageResult]], list[str]]
    needs: tuple[str, ...] = ()
    expects_device: bool = True


@dataclass
class Inputs:
    work: Path
    tokenizer: Path
    squad: Path
    sizes: StageSizes
    cuda: bool
    """Whether the stages must run on CUDA (False: CUDA is hidden from them)."""
    paths: dict[str, Path] = field(default_factory=dict)


def child_env(inp: Inputs) -> dict[str, str]:
    """The stages' environment: the local store, no settings file, offline, this checkout first."""
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{inp.work / 'mlflow.db'}",
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
            "TFQA_CONFIG": "",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
    )
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "TFQA_PREFORK"):
        env.pop(key, None)
    if not inp.cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def prepare_inputs(inp: Inputs, log: Callable[[str], None]) -> None:
    """Generated data (``tfqa generate``), the tiny backbone, the manifest and the store."""
    work, s = inp.work, inp.sizes
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = child_env(inp)
    files = {
        "train": (data / "train.jsonl", ["--examples", str(s.train_examples), "--seed", "1", "--format", "simplified"]),
        "dev": (
            data / "dev.jsonl.gz",
            ["--examples", str(s.dev_examples), "--seed", "2", "--format", "original", "--annotations", "5"],
        ),
        "test": (data / "test.jsonl", ["--examples", str(s.test_examples), "--seed", "3", "--format", "test"]),
    }
    for key, (path, args) in files.items():
        cmd = [sys.executable, "-m", "tfqa.cli", "generate", str(path), *args, "--force"]
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tfqa generate {key} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-800:]}")
        inp.paths[key] = path
    from tfqa.pipeline.demo import tiny_backbone

    inp.paths["backbone"] = Path(tiny_backbone(work, tokenizer_dir=str(inp.tokenizer)))
    manifest = work / "manifest.yaml"
    manifest.write_text(
        "alias: champion\nhtml_tokens: tfqa\ndecode: original\nmodels:\n"
        + "".join(
            f'  - {{name: {name}, variant: "{v}", backbone: {BACKBONE_NAME}, weight: 0.5}}\n' for v, name in MODEL_NAMES.items()
        )
    )
    inp.paths["manifest"] = manifest
    inp.paths["outputs"] = work / "outputs"
    # One process creates the store and the experiment (its artifacts in the work dir) before any
    # stage opens it: two first openers of a new sqlite store race in its schema migration.
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=(work / "mlartifacts").as_uri())
    log(f"  data in {data}, backbone {inp.paths['backbone']}, store {env['MLFLOW_TRACKING_URI']} (mlflow {mlflow.__version__})")


def stages(inp: Inputs) -> list[Stage]:
    p, s = inp.paths, inp.sizes
    out = str(p["outputs"])
    half = str(max(1, s.max_steps // 2))
    training = [
        "--backbone", str(p["backbone"]),
        "--dev-data", str(p["dev"]),
        "--dev-examples", str(s.dev_examples),
        "--output-dir", out,
        "--max-steps", str(s.max_steps),
        "--checkpoint-every", half,
        "--eval-every", half,
        "--log-every", "1",
        "--workers", "2",
        # Variant overrides (training's extra options): tiny sizes and the backbone's name.
        "--batch-size", str(s.batch_size),
        "--max-seq-len", str(s.max_seq_len),
        "--lr", "5e-4",
        "--backbone-name", BACKBONE_NAME,
    ]  # fmt: skip

    def run_of(name: str) -> Callable[[dict[str, StageResult]], str]:
        return lambda r: r[name].run_id

    return [
        Stage(
            "prepare",
            "entrypoints/prepare.py",
            lambda r: [
                "--input",
                str(p["train"]),
                "--tokenizer",
                str(p["backbone"]),
                "--cache-dir",
                str(p["outputs"] / "features"),
                "--max-seq-len",
                str(s.max_seq_len),
                "--strategy",
                "random",
                "--negatives",
                "2",
                "--workers",
                "2",
            ],  # fmt: skip
            expects_device=False,
        ),
        Stage(
            "train_bert_base",
            "entrypoints/train.py",
            lambda r: ["--entry-point", "train_bert_base", "--train-data", run_of("prepare")(r), *training],
            needs=("prepare",),
        ),
        Stage(
            "mine_hard_negatives",
            "entrypoints/mine_hard_negatives.py",
            lambda r: [
                "--model",
                r["train_bert_base"].run_id,
                "--train-data",
                str(p["train"]),
                "--output-dir",
                out,
                "--n-shards",
                "2",
                "--workers",
                "2",
            ],  # fmt: skip
            needs=("train_bert_base",),
        ),
        Stage(
            "train_bert-v1",
            "entrypoints/train.py",
            lambda r: [
                "--entry-point",
                "train_bert",
                "--variant",
                "1",
                "--train-data",
                str(p["train"]),
                "--mining-run",
                r["mine_hard_negatives"].run_id,
                *training,
            ],  # fmt: skip
            needs=("mine_hard_negatives",),
        ),
        Stage(
            "finetune_squad",
            "entrypoints/finetune_squad.py",
            lambda r: [
                "--backbone",
                str(p["backbone"]),
                "--backbone-name",
                BACKBONE_NAME,
                "--squad-data",
                str(inp.squad),
                "--output-dir",
                out,
                "--max-steps",
                str(s.max_steps),
                "--checkpoint-every",
                half,
                "--batch-size",
                str(s.batch_size),
                "--max-seq-len",
                "128",
                "--doc-stride",
                "32",
                "--max-questions",
                str(s.squad_questions),
                "--max-dev-questions",
                str(s.squad_dev_questions),
            ],  # fmt: skip
        ),
        Stage(
            "train_albert-v2",
            "entrypoints/train.py",
            lambda r: [
                "--entry-point",
                "train_albert",
                "--variant",
                "2",
                "--train-data",
                str(p["train"]),
                "--init-model",
                r["finetune_squad"].run_id,
                "--mining-run",
                r["mine_hard_negatives"].run_id,
                *training,
            ],  # fmt: skip
            needs=("finetune_squad", "mine_hard_negatives"),
        ),
        Stage(
            "promote-v1",
            "entrypoints/promote.py",
            lambda r: ["--run-id", r["train_bert-v1"].run_id, "--manifest", str(p["manifest"])],
            needs=("train_bert-v1",),
            expects_device=False,
        ),
        Stage(
            "promote-v2",
            "entrypoints/promote.py",
            lambda r: ["--run-id", r["train_albert-v2"].run_id, "--manifest", str(p["manifest"])],
            needs=("train_albert-v2",),
            expects_device=False,
        ),
        Stage(
            "validate",
            "entrypoints/validate.py",
            lambda r: ["--manifest", str(p["manifest"]), "--dev-data", str(p["dev"]), "--output-dir", out],
            needs=("promote-v1", "promote-v2"),
        ),
        Stage(
            "predict",
            "entrypoints/predict.py",
            lambda r: ["--validate-run", r["validate"].run_id, "--test-data", str(p["test"]), "--output-dir", out],
            needs=("validate",),
        ),
    ]


def run_stages(
    inp: Inputs,
    *,
    deadline: float | None,
    log: Callable[[str], None],
    on_result: Callable[[list[StageResult]], None] = lambda results: None,
) -> list[StageResult]:
    """Every stage in order; a stage whose upstream failed, or that would start past ``deadline``
    (``time.monotonic()``), is skipped with the reason. ``on_result`` sees the results so far after each."""
    from mlflow.tracking import MlflowClient

    env = child_env(inp)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    logs = inp.work / "logs"
    logs.mkdir(exist_ok=True)
    results: dict[str, StageResult] = {}
    plan = stages(inp)
    for i, st in enumerate(plan, 1):
        res = results[st.name] = StageResult(st.name, expects_device=st.expects_device and inp.cuda)
        failed = [n for n in st.needs if results[n].status != "ok"]
        if failed:
            res.note = f"upstream {', '.join(failed)} did not pass"
        elif deadline is not None and time.monotonic() > deadline:
            res.note = "time budget spent"
        else:
            log(f"[stage {i}/{len(plan)}] {st.name}")
            run_one(st, res, st.args(results), inp, env, client, experiment_id, logs / f"{st.name}.log")
            where = f" on {res.device}" if res.device else ""
            log(f"  {res.status} in {res.seconds:.1f}s{where}{': ' + res.note if res.note else ''}")
        on_result(list(results.values()))
    return list(results.values())


def run_one(st: Stage, res: StageResult, args: list[str], inp: Inputs, env, client, experiment_id: str, log_path: Path) -> None:
    report = log_path.with_suffix(".probe.json")
    probe = [sys.executable, str(Path(__file__).with_name("gpu_check.py")), "--probe", str(report), "--"]
    cmd = [*probe, str(REPO / st.script), *args]
    res.command = " ".join(["python", st.script, *args])
    t0 = time.time()
    try:
        with open(log_path, "w") as fh:
            proc = subprocess.run(
                cmd, cwd=inp.work, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=inp.sizes.stage_timeout_s
            )
        res.returncode = proc.returncode
    except subprocess.TimeoutExpired:
        res.note = f"killed after {inp.sizes.stage_timeout_s:.0f}s"
    res.seconds = round(time.time() - t0, 1)
    if report.exists():
        probe = json.loads(report.read_text())
        res.cuda = bool(probe.get("cuda_initialized"))
        res.device = probe.get("device", "") if res.cuda else "cpu"
        res.max_memory_mib = round(probe.get("max_memory_allocated", 0) / 2**20, 1)
    # The stage's own run: the newest run of its entry point (the `tfqa.stage` tag every stage sets).
    entry_point = args[args.index("--entry-point") + 1] if "--entry-point" in args else Path(st.script).stem
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`tfqa.stage` = '{entry_point}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and runs[0].info.start_time >= (t0 - 1) * 1000:
        res.run_id, res.run_status = runs[0].info.run_id, runs[0].info.status
        error = runs[0].data.tags.get("tfqa.error")
        if error:
            res.note = error.splitlines()[0][:300]
    problems = []
    if res.returncode != 0:
        problems.append(f"exit {res.returncode}")
    if res.run_status != "FINISHED":
        problems.append(f"run {res.run_status or 'not found'}")
    if res.expects_device and not (res.cuda and res.max_memory_mib > 0):
        problems.append("did not use CUDA")
    res.status = "failed" if problems else "ok"
    if problems and not res.note:
        res.note = "; ".join(problems) + ": " + _last_lines(log_path)
    elif problems:
        res.note = "; ".join(problems) + ": " + res.note


def _last_lines(path: Path, n: int = 3) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:]


def probe(report: str, script: str, argv: list[str]) -> None:
    """Run ``script`` as ``__main__`` in this process; at exit write what it did with CUDA to ``report``."""
    import atexit
    import runpy

    def write() -> None:
        info: dict = {"cuda_initialized": False}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            info = {
                "cuda_initialized": True,
                "device": torch.cuda.get_device_name(),
                "max_memory_allocated": torch.cuda.max_memory_allocated(),
            }
        Path(report).write_text(json.dumps(info))

    atexit.register(write)
    sys.argv = [script, *argv]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python entrypoints/<stage>.py` has it
    runpy.run_path(script, run_name="__main__")


def as_rows(results: list[StageResult]) -> list[dict]:
    return [asdict(r) for r in results]
