"""A stage's command-line options, generated from its settings dataclass.

The dataclass is the one place a setting is written: its name (``max_seq_len`` becomes
``--max-seq-len``), its type (``bool``, ``int``, ``float``, ``str``; a ``Literal[...]`` becomes a
choice), its default and its help (the field's docstring). A field holding another dataclass
contributes that one's fields, with the defaults of the instance it defaults to (``prepare``
takes ``FeatureConfig``'s ``max_seq_len`` through ``PrepareConfig.build.features``). A field
without a default is an input the stage resolves when it is left empty (``tfqa.pipeline.resolve``):
its option defaults to ``""``. A field declared with a range (``tfqa.core.bounds.bounded``) gives
its option that range, and a value outside it is refused naming the option.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tfqa.core.bounds import Bounds, OutOfRange, bounds_of
from tfqa.core.errors import UserError


@dataclass(frozen=True)
class Setting:
    """One option: a field of the stage's dataclass, or of a dataclass nested in it."""

    name: str
    """The option's name (``max_seq_len``: ``--max-seq-len``)."""
    path: tuple[str, ...]
    """Field names from the stage's dataclass down to this field."""
    kind: Any
    """``bool``, ``int``, ``float``, ``str`` or a tuple of choices."""
    default: Any
    help: str = ""
    optional: bool = False
    """Annotated ``X | None``: an empty value is None."""
    bounds: Bounds | None = None
    """The range the dataclass declares for the field (``tfqa.core.bounds``)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def option(self) -> Callable:
        import click

        kind = click.Choice(list(self.kind)) if isinstance(self.kind, tuple) else self.kind
        if self.bounds is not None and self.kind in (int, float):
            ranged = click.IntRange if self.kind is int else click.FloatRange
            kind = ranged(self.bounds.min, self.bounds.max)
        if self.optional and self.kind in (int, float):  # MLproject passes an unset parameter as "": not a number, None
            kind = _EmptyOr(kind if isinstance(kind, click.ParamType) else click.types.convert_type(kind))
        shown = self.default not in ("", None)
        return click.option(
            self.flag,
            self.name,
            type=kind,
            default="" if self.default is None else self.default,
            show_default=shown,
            help=self.help or None,
        )


def _EmptyOr(inner):
    """A click type that takes ``""`` as is (``build`` makes it None) and converts the rest."""
    import click

    class EmptyOr(click.ParamType):
        name = inner.name

        def convert(self, value, param, ctx):
            return "" if value == "" else inner.convert(value, param, ctx)

    return EmptyOr()


@dataclass(frozen=True)
class StageOptions:
    """The options of a stage whose settings are ``cls``; ``skip`` names fields that are no
    option (given by the entry point itself, or internal), ``names`` renames an option."""

    cls: type
    skip: Collection[str] = ()
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def settings(self) -> list[Setting]:
        out = list(_settings(self.cls, None, (), set(self.skip), dict(self.names)))
        seen: set[str] = set()
        for s in out:
            if s.name in seen:
                raise TypeError(f"{self.cls.__name__}: two settings are named {s.name!r}")
            seen.add(s.name)
        return out

    @property
    def option_names(self) -> set[str]:
        return {s.name for s in self.settings}

    def __call__(self, command: Callable) -> Callable:
        """Decorate a click command with the options (in field order)."""
        for s in reversed(self.settings):
            command = s.option()(command)
        return command

    def build(self, values: Mapping[str, Any], **fixed: Any):
        """The dataclass from option values (by option name; a missing one is its default) and
        the fields the entry point gives itself (``fixed``, e.g. the training variant)."""
        nested: dict[tuple[str, ...], dict[str, Any]] = {}
        for s in self.settings:
            if s.name in values:
                value = values[s.name]
                nested.setdefault(s.path[:-1], {})[s.path[-1]] = None if s.optional and value == "" else value
        try:
            return _build(self.cls, None, (), nested, fixed)
        except OutOfRange as err:
            setting = next((s for s in self.settings if s.path[-1] == err.field and s.bounds == err.bounds), None)
            if setting is None:  # a field that is no option (fixed by the entry point)
                raise
            raise UserError(f"option {setting.flag}: {err.reason}") from None


def _build(cls: type, default, path: tuple[str, ...], values: dict, fixed: Mapping[str, Any]):
    kwargs = {**values.get(path, {}), **fixed}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = hints[f.name]
        below = (*path, f.name)
        if _is_dataclass(inner) and f.name not in kwargs and any(p[: len(below)] == below for p in values):
            kwargs[f.name] = _build(inner, _default_of(f, default), below, values, {})
    # A nested dataclass starts from the instance its field defaults to, the stage's own from its
    # field defaults.
    if default is None or default is dataclasses.MISSING:
        return cls(**kwargs)
    return dataclasses.replace(default, **kwargs)


def _default_of(f: dataclasses.Field, instance) -> Any:
    if instance is not None:
        return getattr(instance, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _is_dataclass(hint) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _settings(cls: type, instance, path: tuple[str, ...], skip: set[str], names: dict[str, str]):
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = _default_of(f, instance)
        hint = hints[f.name]
        if _is_dataclass(hint):
            yield from _settings(hint, hint() if default is dataclasses.MISSING else default, (*path, f.name), skip, names)
            continue
        kind, optional = _kind(cls, f.name, hint)
        yield Setting(
            names.get(f.name, f.name),
            (*path, f.name),
            kind,
            "" if default is dataclasses.MISSING else default,
            docs.get(f.name, ""),
            optional,
            bounds_of(f),
        )


def _kind(cls: type, name: str, hint) -> tuple[Any, bool]:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{name}: no option type for {hint}")
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        return tuple(typing.get_args(hint)), optional
    if hint in (bool, int, float, str):
        return hint, optional
    raise TypeError(f"{cls.__name__}.{name}: no option type for {hint}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings of a dataclass's fields (the string right below each), one line each:
    Python keeps none of them at run time, so they are read from the class's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    out = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            out[node.target.id] = _one_line(after.value.value)
    return out


def _one_line(doc: str) -> str:
    """A docstring as help text: one paragraph, reST's ``code`` marks dropped."""
    return re.sub(r"\s+", " ", inspect.cleandoc(doc).replace("``", "")).strip()
