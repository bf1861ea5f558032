"""Reading the YAML files a user writes (the settings file, ensemble manifests) one way: UTF-8
(a byte-order mark accepted), and a key given twice in one mapping refused, naming the key and
both lines. PyYAML keeps the last of two equal keys without a word, so a setting a user edits in
one place may be overridden by a forgotten copy further down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tfqa.core import jsontext
from tfqa.core.errors import UserError


class YamlFileError(UserError, ValueError):
    """A YAML file that cannot be read as such; ``str()`` names the file and the line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding one key twice."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # merge keys (<<) first: what they bring may be overridden
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader refuses it below
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (lines {first} and {line})", key_node.start_mark
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def loads(text: str) -> Any:
    """``yaml.safe_load`` of ``text`` that refuses duplicate keys (a ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe


def load_file(path: str | os.PathLike, what: str) -> Any:
    """The YAML document in ``path``; every problem a ``YamlFileError`` naming the file, the line
    and (for YAML) the column. ``what`` names the file's role in the message ("settings file")."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YamlFileError(f"cannot read the {what} ({exc.strerror or exc})", path) from None
    try:
        text = jsontext.decode_utf8(data)
    except jsontext.JsonTextError as exc:
        raise YamlFileError(f"{what} is {exc.reason}", path, line=exc.line) from None
    try:
        return loads(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is None:
            raise YamlFileError(f"not valid YAML: {problem}", path) from None
        raise YamlFileError(f"not valid YAML: {problem} (column {mark.column + 1})", path, line=mark.line + 1) from None
