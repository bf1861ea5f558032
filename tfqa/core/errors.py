"""How every tfqa command refuses: ONE line on stderr and a non-zero exit.

    tfqa: <file>[:<line>]: [field '<x>': ]<reason>      (about a file)
    tfqa: <reason>                                      (anything else)

The traceback is printed only with ``--debug`` or ``TFQA_DEBUG=1``. A refusal is an error the
user can act on: a :class:`UserError` (every reader error is one), an ``OSError`` (it names its
file), a ``ValueError`` or ``LookupError`` a stage raised about its settings or data, or an
``MlflowException`` (a run id that does not exist). ``KeyError`` / ``IndexError`` and every other
exception are bugs: they keep their traceback, since hiding it would hide where the bug is.

Commands get this by being a :class:`RefusingCommand` / :class:`RefusingGroup` (``cls=`` of
``click.command`` / ``click.group``); usage errors are one line too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from tfqa.core.stopping import StopRequested

DEBUG_ENV = "TFQA_DEBUG"
PREFIX = "tfqa: "
SHOWN_SKIPPED = 20


class UserError(Exception):
    """Something the user can fix; ``str()`` is ``<file>[:<line>]: [field '<x>': ]<reason>``."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, line: int | None = None, field: str | None = None):
        self.reason, self.line, self.field = reason, line, field
        self.path = None if path is None else str(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = "" if self.path is None else f"{self.path}{'' if self.line is None else f':{self.line}'}: "
        return f"{where}{'' if not self.field else f'field {self.field!r}: '}{self.reason}"

    def __reduce__(self):
        # Subclasses take other constructor arguments; rebuild from the attributes so the error
        # survives a trip through a multiprocessing pool.
        return _restore, (type(self), dict(self.__dict__))


def _restore(cls: type, state: dict) -> UserError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def refusal_message(exc: BaseException) -> str | None:
    """The one line (without the ``tfqa:`` prefix) for a refusal; None for a bug."""
    if isinstance(exc, UserError):
        return one_line(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        names = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return one_line(f"{names}: {exc.strerror}")
    if isinstance(exc, (KeyError, IndexError)):
        return None
    if isinstance(exc, (ValueError, LookupError, OSError, EOFError)):
        return one_line(str(exc)) or type(exc).__name__
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # not loaded: it cannot be one
    if mlflow_exceptions is not None and isinstance(exc, mlflow_exceptions.MlflowException):
        return one_line(exc.message)
    return None


def debug_wanted(ctx: click.Context | None = None) -> bool:
    if ctx is not None and ctx.meta.get("tfqa.debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Refusal(click.ClickException):
    """A refusal on its way out of click: shown as its one line."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"{PREFIX}{self.message}", err=True)


def _usage_line(err: click.ClickException) -> str:
    text = one_line(err.format_message())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, click.UsageError) and ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:
        ctx.meta["tfqa.debug"] = True  # ctx.meta is shared by a group and its subcommands


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help=f"Show the traceback of a refusal (also: {DEBUG_ENV}=1).",
    )


class _Refusing:
    """Mixin for click commands: refusals become one line, usage errors too (see module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())

    def on_refusal(self, exc: BaseException) -> None:
        """Called before a refusal is shown (an entry point records it on its MLflow run)."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except Refusal:
            raise
        except click.ClickException as err:  # bad options: parsed before invoke
            raise Refusal(_usage_line(err), err.exit_code) from err

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Refusal:
            raise
        except click.ClickException as err:
            raise Refusal(_usage_line(err), err.exit_code) from err
        except StopRequested as exc:  # a scheduler's stop, not a failure: 128 + the signal, as a shell reports it
            raise Refusal(str(exc), exc.exit_code) from None
        except Exception as exc:  # KeyboardInterrupt and SystemExit go on as they are
            message = refusal_message(exc)
            if message is None or debug_wanted(ctx):
                raise
            self.on_refusal(exc)
            raise Refusal(message) from None


class RefusingCommand(_Refusing, click.Command):
    pass


class RefusingGroup(_Refusing, click.Group):
    command_class = RefusingCommand


def skipped_lines(skipped: Sequence[Exception], *, limit: int = SHOWN_SKIPPED, where: str = "") -> list[str]:
    """What to print about lines skipped under ``--max-bad-lines``: the first ``limit``, then a count."""
    lines = [f"skipped {err}" for err in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"... and {len(skipped) - limit} more skipped lines{f' (all are in {where})' if where else ''}")
    return lines


def echo_skipped(skipped: Sequence[Exception], *, where: str = "") -> None:
    for line in skipped_lines(skipped, where=where):
        click.echo(line, err=True)
