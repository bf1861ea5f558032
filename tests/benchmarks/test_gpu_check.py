"""benchmarks/gpu_check.py, run end to end on CPU (``--cpu-smoke``): the rows of its tables, not its timings."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
SHARED_SQUAD = REPO.parent / "shared" / "data" / "squad2-dev-half.json"


def _gpu_check(*args: str, tmp_path: Path, timeout: float, **env_vars: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env_vars}
    env.pop("OUT", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    report = json.loads((out / "gpu_check.json").read_text()) if (out / "gpu_check.json").exists() else {}
    markdown = (out / "gpu_check.md").read_text() if (out / "gpu_check.md").exists() else ""
    return proc, report, markdown


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The data rows of the markdown table under the ``## <heading>...`` line."""
    section = markdown.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]  # header and rule first


def _configurations(rows: list[dict]) -> set[tuple]:
    return {(r["model"], r["batching"], r["attention"], r["compile"], r["checkpointing"]) for r in rows}


def test_cpu_smoke_throughput_table_has_a_row_per_batching_and_configuration(tmp_path):
    proc, report, markdown = _gpu_check(
        "--cpu-smoke", "--parts", "throughput", "--models", "bert-base", tmp_path=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = report["throughput"]
    # One factor at a time against SDPA: eager, gradient checkpointing, torch.compile; each padded and grouped.
    one_factor_at_a_time = [("sdpa", False, False), ("eager", False, False), ("sdpa", False, True), ("sdpa", True, False)]
    assert _configurations(rows) == {
        ("bert-base", batching, attention, compiled, ckpt)
        for batching in ("padded", "grouped")
        for attention, compiled, ckpt in one_factor_at_a_time
    }
    assert len(rows) == 8 and all(r["status"] == "ok" and r["timed_steps"] == 1 for r in rows), rows
    assert all(r["seqs_per_s"] > 0 and r["mfu"] is None for r in rows)  # no MFU without a GPU peak
    # Padded rows are padded to the full (smoke) width; grouped ones to their longest row.
    assert {r["mean_width"] for r in rows if r["batching"] == "padded"} == {48.0}
    assert all(r["mean_width"] < 48 for r in rows if r["batching"] == "grouped")
    table = _table_rows(markdown, "CPU smoke")
    assert len(table) == 8 and all(row[-1].startswith("ok") for row in table)
    assert "bert-base | padded | sdpa | off | on" in markdown


def test_the_probe_runs_a_script_as_its_own_main_and_reports_at_exit(tmp_path):
    """What each stage's device column rests on: the entry point runs in the probe's own process,
    with its own argv and sys.path[0], keeps its exit status, and the report is written at exit."""
    script = tmp_path / "stage" / "entry.py"
    script.parent.mkdir()
    script.write_text(
        "import json, sys\n"
        "print(json.dumps({'name': __name__, 'argv': sys.argv, 'path0': sys.path[0], 'torch': 'torch' in sys.modules}))\n"
        "sys.exit(3)\n"
    )
    report = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--probe", str(report), "--", str(script), "--run-id", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {"name": "__main__", "argv": [str(script), "--run-id", "abc"], "path0": str(script.parent), "torch": False}
    assert json.loads(report.read_text()) == {"cuda_initialized": False}


def test_peak_is_matched_on_the_device_name():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.peak_tflops_for("NVIDIA H200") == 989.0
    assert gpu_check.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.peak_tflops_for("Tesla T4") is None


def test_an_unknown_model_is_refused_in_one_line(tmp_path):
    proc, report, _ = _gpu_check("--cpu-smoke", "--models", "bert-base,gpt-9", tmp_path=tmp_path, timeout=120)
    assert proc.returncode != 0 and report == {}
    assert proc.stderr.strip() == "gpu_check: --models: gpt-9 given; choose from bert-base, bert-large, albert-xxlarge"


def test_without_cuda_it_asks_for_the_cpu_smoke_run(tmp_path):
    proc, report, _ = _gpu_check("--parts", "throughput", tmp_path=tmp_path, timeout=120, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2 and report == {}
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu_check: CUDA is not available here")


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage_through_its_entry_point_and_the_whole_table(tmp_path):
    proc, report, markdown = _gpu_check(
        "--cpu-smoke", "--squad-data", str(SHARED_SQUAD), "--work-dir", str(tmp_path / "work"), tmp_path=tmp_path, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    stages = report["stages"]
    assert [s["stage"] for s in stages] == [
        "prepare",
        "train_bert_base",
        "mine_hard_negatives",
        "train_bert-v1",
        "finetune_squad",
        "train_albert-v2",
        "promote-v1",
        "promote-v2",
        "validate",
        "predict",
    ]
    for s in stages:
        assert s["status"] == "ok" and s["returncode"] == 0 and s["run_status"] == "FINISHED", s
        assert s["device"] == "cpu", s  # the stage process itself reported where its tensors were
        assert s["command"].startswith("python entrypoints/")
    assert len({s["run_id"] for s in stages}) == len(stages)  # each stage its own MLflow run
    assert (tmp_path / "work" / "mlflow.db").exists()
    assert len(_table_rows(markdown, "Stages")) == len(stages)

    rows = report["throughput"]
    assert len(rows) == 3 * 4 * 2 and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    assert {r["model"] for r in rows} == {"bert-base", "bert-large", "albert-xxlarge"}
    albert_ckpt = [r for r in rows if r["model"] == "albert-xxlarge" and r["checkpointing"]]
    assert albert_ckpt and all(r["note"] == "checkpointing: wrapped layer groups" for r in albert_ckpt)
    assert len(_table_rows(markdown, "CPU smoke")) == 24
