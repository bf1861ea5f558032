"""Where a command writes a file: never over its own input, over an existing file only when
forced, never into a folder that is not there (a typo in a path must not create folders), and
the file appears whole or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        _refuse_if_full(exc, dst)
        raise
    os.replace(tmp, dst)


# A device (or quota) that fills up while a file is written: the error names the temporary file,
# which is gone by then; the refusal names the file that was not written instead.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _refuse_if_full(exc: BaseException, dst: str | os.PathLike) -> None:
    if isinstance(exc, OSError) and exc.errno in _FULL:
        reason = exc.strerror or os.strerror(exc.errno)
        raise UserError(f"not written: {reason} (nothing was left in its place)", dst) from None


def write_text_whole(dst: str | os.PathLike, text: str) -> None:
    """``Path(dst).write_text(text)`` (UTF-8), through ``written_whole``."""
    with written_whole(dst) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


@contextlib.contextmanager
def folder_written_whole(dst: str | os.PathLike) -> Iterator[str]:
    """A temporary folder beside ``dst`` to fill; it takes the place of ``dst`` (an older ``dst`` is
    removed) when the block succeeds and is removed when it fails: a later step that finds ``dst``
    finds every file of it."""
    dst = os.path.abspath(dst)
    stem = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{uuid.uuid4().hex[:12]}")
    tmp, old = f"{stem}.tmp", f"{stem}.old"
    os.mkdir(tmp)
    try:
        yield tmp
        if os.path.lexists(dst):
            os.rename(dst, old)
        os.rename(tmp, dst)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, UserError) and exc.path and exc.path.startswith(tmp + os.sep):
            # A refusal about a file inside: named where it would have been, not in the folder now gone.
            raise UserError(exc.reason, dst + exc.path[len(tmp) :], exc.line, exc.field) from None
        _refuse_if_full(exc, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
