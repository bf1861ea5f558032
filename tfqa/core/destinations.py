"""Where a command writes a file: never over its own input, over an existing file only when
forced, never into a folder that is not there (a typo in a path must not create folders), and
the file appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator

from tfqa.core.errors import UserError


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both name one file: through symlinks and hard links (same inode) too."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_destination(dst: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> None:
    """Refuse ``dst`` unless writing it is safe; see the module docstring."""
    for src in inputs:
        if same_file(src, dst):
            named = "" if os.fspath(src) == os.fspath(dst) else f" ({os.fspath(src)})"
            raise UserError(f"is the input file itself{named}: a command never writes over its input", dst)
    if os.path.isdir(dst):
        raise UserError("is a directory: name the file to write", dst)
    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist (create it first)", dst)
    if os.path.lexists(dst) and not force:
        raise UserError("already exists: pass --force to replace it", dst)


@contextlib.contextmanager
def written_whole(dst: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``dst`` to write to; it replaces ``dst`` when the block succeeds and
    is removed when it fails, so ``dst`` is never left half-written."""
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(folder, f".{os.path.basename(dst)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        open(tmp, "xb").close()  # now, so an unwritable folder is refused before any work
    except OSError as exc:
        raise UserError(f"cannot write into folder {folder}: {exc.strerror or exc}", dst) from None
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    os.replace(tmp, dst)
