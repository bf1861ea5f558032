"""tfqa.pipeline.prefork: a stage handed to the prefork server runs as if it were its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfqa.pipeline import prefork

REPO = Path(__file__).resolve().parents[2]

STAGE = r"""from tfqa.pipeline.prefork import delegate_if_configured
delegate_if_configured()
import os, sys, time
mode = sys.argv[1]
print(f"pid={os.getpid()}\ncwd={os.getcwd()}\nx={os.environ.get('X')}\nprefork={os.environ.get('TFQA_PREFORK')}")
print("args=" + ",".join(sys.argv[2:]))
print("to stderr", file=sys.stderr)
if mode == "raise":
    raise RuntimeError("stage failed")
if mode == "sleep":
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
sys.exit(int(mode))
"""


@pytest.fixture(scope="module")
def server():
    # The real preload: what the pipeline's stages get.
    with prefork.server() as path:
        assert path is not None and os.environ[prefork.ENV] == path
        yield path
    assert prefork.ENV not in os.environ and not os.path.exists(path)


@pytest.fixture
def stage(tmp_path) -> Path:
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    return script


def run(script: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def fields(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines())


def sleeping_stage(stage: Path, tmp_path: Path, **popen) -> tuple[subprocess.Popen, int]:
    """A stage that sleeps in the server; returns its client and the stage's own pid."""
    marker = tmp_path / "stage.pid"
    proc = subprocess.Popen([sys.executable, str(stage), "sleep", str(marker)], cwd=tmp_path, **popen)
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, int(marker.read_text())


def gone(pid: int, within_s: float = 30.0) -> bool:
    """Whether process ``pid`` no longer exists (reaped by the server), polled up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_stage_gets_its_argv_environment_cwd_streams_and_exit_status(server, stage, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(stage), "3", "a", "b c"],
        cwd=tmp_path,
        env={**os.environ, "X": "42"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3
    f = fields(out)
    assert f["args"] == "a,b c" and f["x"] == "42" and f["cwd"] == str(tmp_path)
    assert int(f["pid"]) != proc.pid  # it ran in a process forked by the server, not in the client
    assert f["prefork"] == "None"  # and does not hand itself over again
    assert err.strip() == "to stderr"


def test_an_uncaught_exception_is_exit_status_1_with_its_traceback(server, stage, tmp_path):
    r = run(stage, "raise", cwd=tmp_path)
    assert r.returncode == 1
    assert "RuntimeError: stage failed" in r.stderr and "Traceback" in r.stderr


def test_terminating_the_client_terminates_the_stage(server, stage, tmp_path):
    proc, stage_pid = sleeping_stage(stage, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.send_signal(signal.SIGTERM)  # what MLflow does to cancel a run
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert gone(stage_pid), f"stage process {stage_pid} still alive 30 s after its client was terminated"


def test_without_a_server_the_script_runs_in_its_own_process(stage, tmp_path):
    socket_path = str(tmp_path / "no-such-socket")
    proc = subprocess.Popen(
        [sys.executable, str(stage), "0", "a"],
        cwd=tmp_path,
        env={**os.environ, prefork.ENV: socket_path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err.strip() == "to stderr"
    f = fields(out)
    assert int(f["pid"]) == proc.pid  # the process the test started ran the stage itself
    assert f["prefork"] == socket_path and f["args"] == "a"


def test_torchrun_workers_are_not_handed_over(server, stage, tmp_path):
    r = run(stage, "0", cwd=tmp_path, RANK="0")
    # the script itself saw TFQA_PREFORK: it was not delegated
    assert r.returncode == 0 and fields(r.stdout)["prefork"] == server


def test_a_real_entry_point_runs_through_the_server(server, tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "entrypoints" / "promote.py"), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "--run-id" in r.stdout


def test_a_large_environment_arrives_whole(server, stage, tmp_path):
    # 500 kB in all, more than a Unix socket's buffer (one variable may hold at most 128 kB)
    r = run(stage, "0", cwd=tmp_path, X="x" * 100_000, **{f"PAD{i}": "p" * 100_000 for i in range(4)})
    assert r.returncode == 0 and fields(r.stdout)["x"] == "x" * 100_000


def test_a_killed_client_takes_its_stage_down_and_the_server_serves_on(server, stage, tmp_path):
    proc, stage_pid = sleeping_stage(stage, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.kill()  # no chance to forward anything: the server sees its connection close
    proc.wait(timeout=30)
    assert gone(stage_pid), f"stage process {stage_pid} still alive 30 s after its client was killed"
    assert run(stage, "5", cwd=tmp_path).returncode == 5
