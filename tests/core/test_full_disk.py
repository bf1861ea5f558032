"""A device that fills up while tfqa writes: one refusal naming the file, and nothing left behind
that a later step could take for a whole output (a real tmpfs, mounted for the test)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfqa.core.destinations import folder_written_whole, write_text_whole
from tfqa.core.errors import UserError
from tfqa.pipeline.profiles import REPO


def test_a_file_that_does_not_fit_is_refused_and_leaves_nothing(small_tmpfs):
    full = small_tmpfs(16)
    write_text_whole(full / "small.json", "{}\n")  # what fits is written
    with pytest.raises(UserError) as info:
        write_text_whole(full / "big.json", "x" * (64 << 10))
    assert str(info.value) == f"{full / 'big.json'}: not written: No space left on device (nothing was left in its place)"
    assert sorted(p.name for p in full.iterdir()) == ["small.json"]


def test_a_folder_replaces_an_older_one_only_when_whole(small_tmpfs):
    full = small_tmpfs(64)
    with folder_written_whole(full / "out") as tmp:
        write_text_whole(os.path.join(tmp, "a.txt"), "first\n")
    with pytest.raises(UserError, match=r"/out/b\.txt: not written: No space left on device"):
        with folder_written_whole(full / "out") as tmp:
            write_text_whole(os.path.join(tmp, "a.txt"), "second\n")
            write_text_whole(os.path.join(tmp, "b.txt"), "x" * (128 << 10))
    # The older folder is as it was, and no temporary folder is left.
    assert sorted(p.name for p in full.iterdir()) == ["out"]
    assert (full / "out" / "a.txt").read_text() == "first\n" and not (full / "out" / "b.txt").exists()


def test_the_cli_on_a_full_device_says_so_in_one_line(small_tmpfs):
    full = small_tmpfs(32)
    dst = full / "gen.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "tfqa.cli", "generate", str(dst), "--examples", "400"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [f"tfqa: {dst}: not written: No space left on device (nothing was left in its place)"]
    assert list(full.iterdir()) == []
