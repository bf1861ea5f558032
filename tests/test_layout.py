"""The module map (docs/architecture.md) and the tests' folders follow the package's folders."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _packages() -> set[str]:
    return {p.parent.name for p in (REPO / "tfqa").glob("*/__init__.py")}


def test_the_module_map_names_every_folder_of_the_package_and_no_other():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text[text.index("## Module map") :]
    rows = set(re.findall(r"^\| `tfqa/([a-z_]+)/` \|", section, flags=re.M))
    assert rows == _packages()


def test_tests_are_laid_out_like_the_package():
    folders = {p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    # tests/benchmarks/ tests the benchmark scripts (benchmarks/ is not a package of tfqa).
    assert folders <= _packages() | {"benchmarks"}, folders - _packages()
