"""A local HTTP server process (``mlflow ui``, ``mlflow server``, ``mlflow models serve``): started in
its own session, ready once a URL of it answers 200, stopped together with every worker it forked.
The pictures script (``scripts/docs_images.py``) and the tests that drive real MLflow servers share
it, so starting, waiting and stopping are written once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class ServerFailed(RuntimeError):
    """The server exited before it answered, or did not answer in time (the message ends with its log)."""


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_group(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """End a process started with ``start_new_session`` and everything it forked: SIGTERM to its
    group, SIGKILL if the leader lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def http_status(url: str, timeout_s: float = 5.0) -> int | None:
    """The HTTP status of GET ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@dataclass
class ServerProcess:
    """``args`` run in ``cwd`` with ``env``, output appended to ``log``; ready when ``url + ready_path``
    answers 200 within ``start_timeout_s``."""

    args: list[str]
    url: str
    log: Path
    ready_path: str = "/health"
    cwd: Path | None = None
    env: dict | None = None
    start_timeout_s: float = 120.0
    proc: subprocess.Popen | None = None
    """The last process started (kept after ``stop`` for its return code)."""
    _stopped: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ServerProcess:
        self._stopped = False
        with open(self.log, "ab") as out:
            # Own session: stop() signals the server's whole process group (the servers fork workers).
            self.proc = subprocess.Popen(
                self.args, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ServerFailed(f"{' '.join(self.args)} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            if http_status(self.url + self.ready_path, timeout_s=2) == 200:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(
                    f"{' '.join(self.args)}: {self.ready_path} not answering after {self.start_timeout_s:.0f} s:\n"
                    f"{self.output()[-4000:]}"
                )
            time.sleep(0.25)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL if it lingers; then wait until the port is free again
        (workers may outlive the leader for a moment), so the same port can be started again."""
        proc = self.proc
        if proc is None or self._stopped:
            return
        self._stopped = True
        stop_group(proc)
        port = urllib.parse.urlsplit(self.url).port
        deadline = time.monotonic() + 10
        while port and time.monotonic() < deadline and port_in_use(port):
            time.sleep(0.1)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
