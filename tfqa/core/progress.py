"""Progress that reads well where it ends up: a tqdm bar on a terminal, and elsewhere (a log
file, a CI job, the pipeline's captured output) one plain line per 10% of the work, or, when the
total is not known, one line per ``every_s`` seconds and one at the end."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def quiet_library_bars() -> None:
    """What a stage does first: MLflow's artifact-download bars off (one redrawn bar per
    downloaded artifact says nothing a stage's own progress does not), and off a terminal the
    Hugging Face bars too (``Loading weights`` for every model loaded). An operator's own setting
    of either variable wins."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if on_terminal():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].strip().lower() in ("1", "true", "yes") and "transformers" in sys.modules:
        # Imported already (the prefork server preloads it): it read the variable then.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class LineProgress:
    """The off-terminal stand-in for a tqdm bar: ``update(n)`` and ``close()``."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        *,
        stream: TextIO | None = None,
        every_s: float = 30.0,
        clock=time.monotonic,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0
        self._stream = stream
        self._every_s = every_s
        self._clock = clock
        self._t0 = self._last = clock()
        self._tenths = 0
        self._closed = False

    def _write(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)

    def _line(self) -> str:
        seconds = self._clock() - self._t0
        rate = f", {self.n / seconds:.1f} {self.unit}/s" if seconds > 0 and self.n else ""
        if self.total:
            return f"{self.desc}: {100 * self.n // self.total:3d}% ({self.n}/{self.total} {self.unit}, {seconds:.0f}s{rate})"
        return f"{self.desc}: {self.n} {self.unit} ({seconds:.0f}s{rate})"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            tenths = min(10, 10 * self.n // self.total)
            if tenths > self._tenths:
                self._tenths = tenths
                self._write(self._line())
        elif self._clock() - self._last >= self._every_s:
            self._last = self._clock()
            self._write(self._line())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n and (not self.total or self._tenths < 10):
            self._write(self._line())


def bar(desc: str, total: int | None = None, unit: str = "it", *, disable: bool = False):
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, nothing when ``disable``."""
    if disable:
        return LineProgress(desc, total, unit, stream=_Null())
    if on_terminal():
        from tqdm import tqdm

        return tqdm(desc=desc, total=total, unit=unit, mininterval=2.0)
    return LineProgress(desc, total, unit)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", *, disable: bool = False) -> Iterator[T]:
    """``items`` with progress reported as :func:`bar` does."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    progress = bar(desc, total, unit, disable=disable)
    try:
        for item in items:
            yield item
            progress.update(1)
    finally:
        progress.close()


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass
