"""The table of the demo's dev scores (docs/measured.md) and the demo's row of the README's headline
figures are scripts/demo_table.py's output (every cell in the script's format, the tolerance the page
states included), and the script's --check tells a demo run elsewhere from the page by that
tolerance, naming each figure beyond it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "demo_table.py"


def demo_table():
    spec = importlib.util.spec_from_file_location("demo_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary_of(dt, figures: dict[str, tuple[float, float]]) -> dict:
    """A demo summary with these figures (row label -> long, short), as the demo writes it."""
    out = {}
    for label, prefix in dt.ROWS:
        out[f"{prefix}long-best-threshold-f1"], out[f"{prefix}short-best-threshold-f1"] = figures[label]
    return out


def test_the_pages_table_and_the_readme_headline_are_the_script_output():
    dt = demo_table()
    readme = dt.PAGE.read_text()
    shown = dt.parse(dt.block(readme))
    assert list(shown) == [label for label, _ in dt.ROWS]
    assert shown["baseline: always null"] == (0.0, 0.0)
    # Every cell exactly as the script writes it from a summary with these figures.
    assert dt.block(readme) == dt.table(summary_of(dt, shown))
    # The summary the table was written from (kept by --write, committed).
    record = json.loads(dt.RECORD.read_text())
    assert dt.block(readme) == dt.table(record)
    # The README's headline row: the ensemble beside the best single model, from the same summary.
    row = dt.headline_row(dt.README.read_text())
    assert row == dt.headline(record)
    assert "**0.635** / 0.218 (best single model 0.592 / 0.177)" in row  # v5 is the best by long F1


def _check(summary: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--summary", str(path)], capture_output=True, text=True, timeout=60
    )


def test_check_accepts_a_run_within_the_tolerance_and_names_each_figure_beyond_it(tmp_path):
    dt = demo_table()
    summary = summary_of(dt, dt.parse(dt.block(dt.PAGE.read_text())))
    key = "model/tfqa-demo-v4/long-best-threshold-f1"
    within = {**summary, key: round(summary[key] + dt.TOLERANCE * 0.75, 4)}
    r = _check(within, tmp_path)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.strip() == f"0 of 16 figures more than {dt.TOLERANCE} off measured.md's table"

    beyond = {**within, key: round(summary[key] + dt.TOLERANCE * 1.5, 4), "ensemble/short-best-threshold-f1": 0.9}
    r = _check(beyond, tmp_path)
    assert r.returncode == 1
    named = [line.split(":")[1].strip() for line in r.stderr.splitlines()]
    assert named == ["ensemble", "variant 4 (bert_base init, all candidates; the cascade's second cut)"], r.stderr
    assert "short F1 0.9000 in the summary" in r.stderr.splitlines()[0]


def test_the_readmes_copy_of_the_demos_last_lines_is_what_the_demo_prints_for_that_summary():
    """The README shows the end of the demo's output; each score line it shows is the line
    tfqa.pipeline.demo.format_summary prints for the summary the tables were written from."""
    from tfqa.pipeline.demo import format_summary

    dt = demo_table()
    printed = format_summary(json.loads(dt.RECORD.read_text())).splitlines()
    readme = dt.README.read_text()
    shown = readme[readme.index("It ends with the ensemble's dev scores") :].split("```")[1].splitlines()
    score_lines = [line for line in shown if line.startswith(("ensemble", "tfqa-demo-", "baseline", "thresholds:"))]
    assert len(score_lines) >= 4, shown
    assert set(score_lines) <= set(printed), set(score_lines) - set(printed)
    assert printed[0] in shown  # the header, spaces included
