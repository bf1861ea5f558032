"""The names re-exported at ``tfqa``: each resolves to the object its module defines, and importing
the package alone stays free of the heavy libraries."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import tfqa


@pytest.mark.parametrize("name", [n for n in tfqa.__all__ if n != "__version__"])
def test_every_exported_name_is_its_modules_object(name):
    module, _, attr = tfqa._EXPORTS[name].partition(":")
    expected = getattr(importlib.import_module(module), attr or name)
    assert getattr(tfqa, name) is expected
    # A class or function re-exported from where it is defined, not from a module that imports it.
    if hasattr(expected, "__module__") and callable(expected):
        assert expected.__module__ == module


def test_unknown_names_are_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        tfqa.no_such_thing  # noqa: B018


def test_dir_lists_the_public_api():
    assert set(tfqa.__all__) <= set(dir(tfqa))


def test_importing_tfqa_imports_neither_torch_nor_mlflow():
    code = "import sys, tfqa; print(sorted(m for m in ('torch', 'mlflow', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
