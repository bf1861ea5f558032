"""A stop asked for by a signal: SIGTERM (what SLURM, Kubernetes, spot instances and ``torchrun``
send before they take a machine back), SIGINT (Ctrl-C) and SIGHUP (a closed terminal).

The first signal only raises a flag: the long loops (training, mining, scoring) look at it at
their next safe point, save what they have, and end with :class:`StopRequested`, which the MLflow
run records as KILLED and the process turns into exit status 128 + the signal. A second signal
stops at once, the way the signal would have without us.

Under ``torchrun`` every rank gets the signal at about the same moment, but "about" is not a step
boundary: the training loop reduces the flag across ranks (``Distributed.any``) so that all ranks
stop after the same step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REPEAT_WINDOW_S = 2.0
"""Signals this soon after the first are the same stop, not a second one: a scheduler that
signals a job's process group reaches each rank directly *and* through torchrun, which passes
the stop on to its ranks."""


class StopRequested(Exception):
    """Raised at a safe point after a stop signal; ``signum`` says which one."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}{f' {where}' if where else ''}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Set by the first stop signal; ``signum`` is that signal (0 while none came)."""

    def __init__(self) -> None:
        self.signum = 0
        self.at = 0.0

    @property
    def requested(self) -> bool:
        return self.signum != 0

    def raise_if_requested(self, where: str = "") -> None:
        if self.signum:
            raise StopRequested(self.signum, where)


@contextlib.contextmanager
def graceful_stop(*, at_once: bool = False) -> Iterator[StopFlag]:
    """Within the block, the first stop signal sets the returned flag; a second one acts as the
    signal's default would. The previous handlers come back after the block. Inside another
    ``graceful_stop`` block it yields that block's flag (a stage's stop reaches its training loop
    and its scoring alike). Outside the main thread (where Python cannot take signals) the flag
    simply never rises.

    ``at_once``: for work with no safe point to wait for (validate, predict, prepare: every file
    they write appears whole or not at all), the first signal raises :class:`StopRequested` where
    the program is, and the run still ends KILLED with 128 + the signal."""
    outer = getattr(signal.getsignal(signal.SIGTERM), "stop_flag", None)
    if outer is not None:
        yield outer
        return
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, _frame):
        now = time.monotonic()
        if flag.signum and now - flag.at > REPEAT_WINDOW_S:  # a second signal: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not flag.signum:
            flag.signum, flag.at = signum, now
            if at_once:
                raise StopRequested(signum)

    handle.stop_flag = flag
    previous = {}
    for sig in STOP_SIGNALS:
        # A signal the process was started with ignored stays ignored (nohup, `cmd &` in a script).
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, handle)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_stop_signals() -> None:
    """Give a child process (a pool worker) the default handlers back: it inherits ours across
    fork, and a worker that only raises a flag when its pool terminates it never ends."""
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
