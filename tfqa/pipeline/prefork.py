"""Start pipeline stages without paying the import of torch, transformers and MLflow each time.

``mlflow run`` starts every stage as a fresh ``python entrypoints/<stage>.py``, and importing
those three libraries takes ~10 s on two CPU cores: 16 stages spent more than two and a half
minutes of the demo importing. The pipeline therefore starts one server that imports them once
and waits on a Unix socket named by ``$TFQA_PREFORK``. An entry point script, first thing
(``entrypoints/_args.py``), hands its argv, environment, working directory and standard streams
to that server and exits with the status it gets back; the server forks a copy of itself that
becomes the stage. Everything MLflow sees stays as it was: it launched the command, the command
ran the entry point in the run MLflow created (``$MLFLOW_RUN_ID`` travels with the environment)
and exited with the stage's status.

Forking is safe because the server only imports: it never runs a torch op (no OpenMP pool yet)
and never opens a tracking connection; the two native helper threads those imports start (one of
torch's, pyarrow's jemalloc background thread) are the same ones every forked DataLoader worker
inherits. A stage that cannot reach the server (none running, a stale socket) simply runs in its
own process as before.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "TFQA_PREFORK"
# What every stage imports; anything else a stage needs it imports itself, as usual.
PRELOAD = (
    "torch",
    "transformers",
    "mlflow",
    "pandas",
    "pyarrow",
    "click",
    "tfqa.tracking",
    "tfqa.stages.train",
    "tfqa.stages.squad",
    "tfqa.stages.validate",
    "tfqa.stages.predict",
    "tfqa.stages.prepare",
    "tfqa.inference.manifest",
    "tfqa.tracking.registry",
)
_LEN = struct.Struct("!I")


def _send_msg(sock: socket.socket, obj, fds: list[int]) -> None:
    # The descriptors ride on the 4-byte length; the body follows with sendall, whatever its size.
    data = json.dumps(obj).encode()
    socket.send_fds(sock, [_LEN.pack(len(data))], fds)
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


# ------------------------------------------------------------------------------------------
# The client side: an entry point script handing itself over
# ------------------------------------------------------------------------------------------


def delegate(path: str) -> int | None:
    """Run this script (``sys.argv``) in the server at ``path``; its exit status, or None when no
    server answers there (the caller then runs the script itself)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    request = {"argv": [os.path.abspath(sys.argv[0]), *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    devnull = None
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # a closed stream (a daemon's stdin): the stage gets /dev/null there
            devnull = devnull if devnull is not None else os.open(os.devnull, os.O_RDWR)
            fds.append(devnull)
    _send_msg(sock, request, fds)
    if devnull is not None:
        os.close(devnull)
    try:
        pid = struct.unpack("!q", _recv_exact(sock, 8))[0]
    except EOFError:
        return None  # the server went away before forking: nothing ran yet

    def forward(signum, _frame):  # Ctrl-C / MLflow cancelling the run reach the stage
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return struct.unpack("!i", _recv_exact(sock, 4))[0]
    except EOFError:
        print(f"tfqa.pipeline.prefork: lost the server while stage process {pid} ran", file=sys.stderr)
        return 1
    finally:
        sock.close()


def delegate_if_configured() -> None:
    """Hand this entry point to the prefork server when ``$TFQA_PREFORK`` names one (not under
    torchrun: its workers stay the processes it started and watches); exits with the stage's status."""
    path = os.environ.get(ENV, "")
    if not path or "RANK" in os.environ:
        return
    code = delegate(path)
    if code is not None:
        sys.exit(code)


# ------------------------------------------------------------------------------------------
# The server side
# ------------------------------------------------------------------------------------------


def _run_stage(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested script run as ``__main__``, then exit."""
    import runpy
    import traceback

    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    env = {k: v for k, v in request["env"].items() if k != ENV}
    os.environ.clear()
    os.environ.update(env)
    os.chdir(request["cwd"])
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path.insert(0, os.path.dirname(script))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def serve(path: str, preload: tuple[str, ...] = PRELOAD) -> None:
    """Listen on ``path``, import ``preload``, then fork one stage per connection until SIGTERM."""
    import importlib

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # bound before the imports: early clients wait in the backlog
    listener.listen(16)
    for name in preload:
        importlib.import_module(name)
    running: dict[int, socket.socket | None] = {}  # None: its client is gone, nobody to report to
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stages through their clients
    try:
        while not stop:
            try:
                ready, _, _ = select.select([listener, *(c for c in running.values() if c)], [], [], 0.2)
            except InterruptedError:
                continue
            for s in ready:
                if s is listener:
                    conn, _ = listener.accept()
                    _start(conn, listener, running)
                elif not s.recv(1):  # a client closed early: stop its stage, stop watching it
                    pid = next(p for p, c in running.items() if c is s)
                    s.close()
                    running[pid] = None
                    _kill(pid)
            _reap(running)
    finally:
        for pid in list(running):
            _kill(pid)
        listener.close()
        with _ignore_missing():
            os.unlink(path)


def _start(conn: socket.socket, listener: socket.socket, running: dict[int, socket.socket | None]) -> None:
    conn.settimeout(30)  # a client that connects and sends nothing must not stall the server
    try:
        head, fds, _, _ = socket.recv_fds(conn, _LEN.size, 3, socket.MSG_WAITALL)
        (n,) = _LEN.unpack(head)
        request = json.loads(_recv_exact(conn, n))
    except Exception as e:  # a malformed request must not take the server down
        print(f"tfqa.pipeline.prefork: bad request: {e}", file=sys.stderr)
        conn.close()
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        # Its own session: a Ctrl-C in the terminal reaches the stage once, through its client,
        # not a second time straight from the terminal while it is shutting down.
        os.setsid()
        listener.close()
        for other in running.values():
            if other is not None:
                other.close()
        conn.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _run_stage(request, fds)
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    conn.sendall(struct.pack("!q", pid))
    running[pid] = conn


def _reap(running: dict[int, socket.socket | None]) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            with _ignore_missing():
                conn.sendall(struct.pack("!i", code if code >= 0 else 128 - code))
            conn.close()


def _kill(pid: int) -> None:
    with _ignore_missing():
        os.kill(pid, signal.SIGTERM)


@contextmanager
def _ignore_missing():
    try:
        yield
    except (ProcessLookupError, FileNotFoundError, BrokenPipeError, ConnectionResetError, OSError):
        pass


# ------------------------------------------------------------------------------------------
# What the pipeline uses
# ------------------------------------------------------------------------------------------


@contextmanager
def server(enabled: bool = True, preload: tuple[str, ...] = ()) -> Iterator[str | None]:
    """A prefork server for the duration of the block, its socket in ``$TFQA_PREFORK`` (which the
    stages MLflow launches inherit); yields the socket path, or None when disabled. ``preload``
    replaces the modules it imports (default ``PRELOAD``)."""
    if not enabled:
        yield None
        return
    tmp = tempfile.mkdtemp(prefix="tfqa-prefork-")
    path = str(Path(tmp) / "socket")
    proc = subprocess.Popen([sys.executable, "-m", "tfqa.pipeline.prefork", path, *preload], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    before = os.environ.get(ENV)
    if os.path.exists(path):
        os.environ[ENV] = path
    try:
        yield path if os.path.exists(path) else None
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        with _ignore_missing():
            os.unlink(path)
        with _ignore_missing():
            os.rmdir(tmp)


if __name__ == "__main__":
    serve(sys.argv[1], tuple(sys.argv[2:]) or PRELOAD)
