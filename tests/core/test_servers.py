"""tfqa.core.servers with real processes: a static HTTP server that forks a child is ready once its
URL answers, and stopping it ends the whole group (the child too) and frees the port; a server that
exits, or never answers, is one ServerFailed carrying its log."""

from __future__ import annotations

import os
import sys
import time

import pytest

from tfqa.core.servers import ServerFailed, ServerProcess, free_port, http_status, port_in_use


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_ready_when_it_answers_and_stopped_with_everything_it_forked(tmp_path):
    (tmp_path / "health").write_text("ok")
    port = free_port()
    child_pid = tmp_path / "child.pid"
    # The shell forks a child that would outlive a stop aimed at the leader alone.
    script = f"sleep 600 & echo $! > {child_pid}; exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    server = ServerProcess(["bash", "-c", script], f"http://127.0.0.1:{port}", tmp_path / "log", cwd=tmp_path)
    with server:
        assert server.running and http_status(f"{server.url}/health") == 200
        assert http_status(f"{server.url}/missing") == 404
        child = int(child_pid.read_text())
        assert _alive(child)
    assert not server.running and server.proc.returncode is not None
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the forked child outlived the stop"
    assert not port_in_use(port) and http_status(f"{server.url}/health") is None
    server.stop()  # a second stop is a no-op


def test_a_server_that_exits_is_one_error_with_its_log(tmp_path):
    server = ServerProcess(["bash", "-c", "echo cannot bind >&2; exit 3"], f"http://127.0.0.1:{free_port()}", tmp_path / "log")
    with pytest.raises(ServerFailed, match=r"exited with 3:\ncannot bind"):
        server.start()


def test_a_server_that_never_answers_is_stopped_and_refused(tmp_path):
    server = ServerProcess(
        ["bash", "-c", "echo still loading; exec sleep 600"],
        f"http://127.0.0.1:{free_port()}",
        tmp_path / "log",
        start_timeout_s=1.0,
    )
    with pytest.raises(ServerFailed, match=r"/health not answering after 1 s:\nstill loading"):
        server.start()
    assert server.proc.poll() is not None  # stopped, not left behind
