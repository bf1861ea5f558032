"""Stop signals, sent to real child processes: the first one raises a flag (or, ``at_once``, a
StopRequested), repeats within the window are the same stop, a later second one stops at once,
and a refusing command turns the stop into 128 + the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys, time
    from tfqa.core.stopping import StopRequested, graceful_stop

    mode = sys.argv[1]
    with graceful_stop(at_once=mode == "at_once") as flag:
        try:
            print("ready", flush=True)
            for tick in range(3000):
                if mode == "flag" and flag.requested:
                    print(f"flag {flag.signum} after {tick} ticks", flush=True)
                    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
                    print("saved", flush=True)
                    flag.raise_if_requested("at a safe point")
                time.sleep(0.01)
        except StopRequested as e:
            print(f"stop: {e} exit {e.exit_code}", flush=True)
            sys.exit(e.exit_code)
    print("ran to the end", flush=True)
    """
)


def _start(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A child of a non-interactive shell may have SIGINT ignored, one under nohup SIGHUP (and
        # graceful_stop leaves an ignored signal ignored): give both their default back.
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)],
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_the_first_signal_raises_the_flag_and_the_loop_stops_at_its_safe_point(sig):
    proc = _start("flag")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[0].startswith(f"flag {int(sig)} after ") and lines[1] == "saved"
    assert lines[2] == f"stop: stopped by {sig.name} at a safe point exit {128 + sig}"
    assert proc.returncode == 128 + sig


def test_repeats_within_the_window_are_one_stop_and_a_later_second_signal_stops_at_once():
    # What a scheduler does to a job's process group: the rank gets SIGTERM directly and again
    # from torchrun a moment later. The "safe point" here takes 3 s, past the 2 s window.
    proc = _start("flag", "3")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().startswith("flag 15")
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)  # the user insists: no checkpoint, stop now
    out, _ = proc.communicate(timeout=60)
    assert "saved" not in out and proc.returncode == -signal.SIGTERM


def test_at_once_stops_where_the_program_is():
    proc = _start("at_once")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "stop: stopped by SIGTERM exit 143" and proc.returncode == 143
