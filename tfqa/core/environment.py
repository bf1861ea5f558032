"""Process environment changes that hold for one block only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def scoped_env(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (None: left as it is), and what was there before
    put back after it, whatever the block itself set."""
    before = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
