"""Start a stage's ranks with PyTorch's own launcher, from the stage's own command line.

``mlflow run . -e train_albert -P variant=2`` starts one process. With ``nproc_per_node`` above 1
(``auto``, the default, is every visible GPU) that process becomes a launcher: it runs
``python -m torch.distributed.run`` on the same script and arguments and waits for it, inside the
MLflow run ``mlflow run`` made (``MLFLOW_RUN_ID`` reaches every rank; rank 0 logs, the others
train). Already under ``torchrun`` (or any launcher that set ``RANK``/``WORLD_SIZE``), nothing
changes.

Several machines (static rendezvous, so that node 0 holds rank 0 and its MLflow run is the job's)::

    node 0:  mlflow run . -e train_albert -P variant=2 -P nnodes=2 -P node_rank=0 -P master_addr=host0
    node k:  python entrypoints/train.py --entry-point train_albert --nnodes 2 --node-rank k --master-addr host0

Node k needs no other option: rank 0 resolves the stage's settings and sends them to every rank.
This module imports nothing heavy: it runs before the stage's imports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tfqa.core.errors import UserError

LAUNCH_OPTIONS = ("nproc-per-node", "nnodes", "node-rank", "master-addr", "master-port")
"""Command-line options (``-P nproc_per_node=...`` arrives as ``--nproc_per_node``) that belong
to the launch, not to the stage: taken off the command line before the stage parses it."""
DEFAULT_MASTER_PORT = 29500
RENDEZVOUS_WAIT_ENV = "TFQA_RENDEZVOUS_WAIT_S"


@dataclass(frozen=True)
class LaunchPlan:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def launches(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:
            # --standalone: a free port on localhost, so two jobs on one machine never collide.
            return ["--standalone", f"--nproc-per-node={self.nproc_per_node}"]
        return [
            f"--nnodes={self.nnodes}",
            f"--node-rank={self.node_rank}",
            f"--nproc-per-node={self.nproc_per_node}",
            f"--master-addr={self.master_addr}",
            f"--master-port={self.master_port}",
        ]


def under_launcher() -> bool:
    """True in a process that a launcher started as one of several ranks."""
    return bool(os.environ.get("TORCHELASTIC_RUN_ID")) or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def split_launch_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """(launch options given, the rest of ``argv``); ``--key value`` and ``--key=value`` both."""
    found, rest, i = {}, [], 0
    while i < len(argv):
        tok = argv[i]
        name, eq, value = tok[2:].partition("=") if tok.startswith("--") else ("", "", "")
        name = name.replace("_", "-")
        if name in LAUNCH_OPTIONS:
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
                i += 1
            found[name] = value
        else:
            rest.append(tok)
        i += 1
    return found, rest


def _int(option: str, value: str, minimum: int) -> int:
    try:
        n = int(float(value))
    except ValueError:
        raise UserError(f"{option} must be an integer, got {value!r}") from None
    if n < minimum or n != float(value):
        raise UserError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return n


def visible_gpus() -> int:
    """The NVIDIA GPUs this process may use, asked of the driver, not of torch: importing torch
    here would cost every stage of the pipeline the seconds its prefork server saves."""
    driver = Path("/proc/driver/nvidia/gpus")
    present = len(list(driver.iterdir())) if driver.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    ids = [x for x in visible.split(",") if x.strip()]
    # CUDA stops at the first invalid id ("-1" hides every GPU).
    n = next((i for i, x in enumerate(ids) if x.strip().startswith("-")), len(ids))
    return min(n, present) if present else n


def plan_launch(given: dict[str, str], settings_value: str = "") -> LaunchPlan:
    """The launch that ``given`` (the command line) and the settings file ask for. ``auto`` or
    nothing: every visible GPU, 1 without one."""
    raw = given.get("nproc-per-node") or settings_value or "auto"
    if raw == "auto":
        nproc = max(1, visible_gpus())
    else:
        nproc = _int("nproc_per_node", raw, 1)
        gpus = visible_gpus()
        if gpus and nproc > gpus:
            raise UserError(
                f"nproc_per_node {nproc} is more than the {gpus} GPU(s) this machine shows "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')})"
            )
    nnodes = _int("nnodes", given.get("nnodes") or "1", 1)
    node_rank = _int("node_rank", given.get("node-rank") or "0", 0)
    if node_rank >= nnodes:
        raise UserError(f"node_rank {node_rank} is not below nnodes {nnodes}")
    port = _int("master_port", given.get("master-port") or str(DEFAULT_MASTER_PORT), 1)
    addr = given.get("master-addr") or "127.0.0.1"
    if nnodes > 1 and not given.get("master-addr"):
        raise UserError(f"nnodes {nnodes}: give master_addr, the address of node 0 (every node the same)")
    return LaunchPlan(nproc, nnodes, node_rank, addr, port)


def wait_for_rendezvous(plan: LaunchPlan) -> None:
    """Node k > 0: node 0's rendezvous must answer within ``TFQA_RENDEZVOUS_WAIT_S`` (default 300)
    seconds, else one line instead of torchrun's long wait and longer traceback."""
    if plan.nnodes == 1 or plan.node_rank == 0:
        return
    limit = float(os.environ.get(RENDEZVOUS_WAIT_ENV, "300"))
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection((plan.master_addr, plan.master_port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(
                    f"node 0's rendezvous at {plan.master_addr}:{plan.master_port} did not answer within {limit:.0f} s "
                    f"({RENDEZVOUS_WAIT_ENV}); start node 0 first and check master_addr/master_port"
                ) from None
            time.sleep(1)


def relaunch(plan: LaunchPlan, script: str, args: list[str]) -> int:
    """Run ``script args`` under ``torch.distributed.run`` and return its exit status. A stop
    signal sent to this process goes on to the launcher, which passes it to every rank (each
    checkpoints and ends its run KILLED). Call ``wait_for_rendezvous`` first on a node k > 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *plan.torchrun_args(), script, *args]
    print(f"tfqa: starting {plan.nproc_per_node * plan.nnodes} ranks: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    child = subprocess.Popen(cmd)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, forward)
    rc = child.wait()
    # torchrun reports any rank's non-zero exit as 1; a stop we passed on is 128 + the signal.
    return 128 + received[0] if rc and received else rc
