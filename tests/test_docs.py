"""The README and docs/ cannot rot silently: every relative link and ``#anchor`` resolves, every
``mlflow run . -e <name>`` names an entry point of MLproject, and every ``-P key=`` given to it is a
parameter or a setting that stage accepts."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from tfqa.core.launch import LAUNCH_OPTIONS
from tfqa.training.variants import Variant

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ENTRY_POINTS = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
RUN = re.compile(r"mlflow run \. -e (\w+)((?:[^\n`]|\\\n)*)")
PARAM = re.compile(r"-P (\w+)=")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def _stage_options() -> dict[str, set[str]]:
    """Entry point -> the ``-P`` names it takes: its MLproject parameters, its script's options,
    the launch options, and (training) every setting of a variant row."""
    import sys

    sys.path.insert(0, str(REPO / "entrypoints"))
    out = {}
    variant_settings = {f.name for f in dataclasses.fields(Variant)}
    for name, spec in ENTRY_POINTS.items():
        script = re.match(r"python entrypoints/(\w+)\.py", " ".join(spec["command"].split())).group(1)
        module = importlib.import_module(script)
        command = module.command() if hasattr(module, "command") else module.main
        options = {o[2:].replace("-", "_") for p in command.params for o in p.opts if o.startswith("--")}
        options |= set(spec.get("parameters") or {}) | {o.replace("-", "_") for o in LAUNCH_OPTIONS}
        if script == "train":
            options |= variant_settings
        out[name] = options
    return out


def test_every_mlflow_run_command_names_an_entry_point_and_its_parameters(monkeypatch):
    monkeypatch.setenv("TFQA_PREFORK", "/nonexistent/tfqa-prefork.sock")
    accepted = _stage_options()
    wrong = []
    for page in PAGES:
        for entry_point, rest in RUN.findall(page.read_text()):
            if entry_point not in ENTRY_POINTS:
                wrong.append(f"{page.name}: no entry point {entry_point!r}")
                continue
            wrong += [
                f"{page.name}: {entry_point} takes no -P {p}" for p in PARAM.findall(rest) if p not in accepted[entry_point]
            ]
    assert not wrong, wrong
