"""The table of the demo's dev scores (docs/measured.md) and the demo's row of the README's headline
figures, made from the summary the demo writes.

    python scripts/demo_table.py                 # print the table for demo/summary.json
    python scripts/demo_table.py --write         # put it into docs/measured.md, between its markers, and the
                                                 # headline row into README.md, and keep the summary it came
                                                 # from in benchmarks/demo_summary.json
    python scripts/demo_table.py --check         # does demo/summary.json agree with docs/measured.md's table?

Run ``--write`` after every change that moves a demo score, so no page holds a figure typed
by hand. ``--check`` compares a demo run of your own with the page: another machine (thread count,
CPU) changes the last digits of the float sums, and on 100 dev examples one example that tips the
other way moves an F1 by about 0.01 to 0.02, so it allows ``TOLERANCE`` either way and names every
row beyond it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from tfqa.core.destinations import write_text_whole

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "measured.md"
README = REPO / "README.md"
HEADLINE = "| the demo's ensemble, long / short F1 (100 dev examples) |"
"""How the demo's row of the README's headline table starts (the rest is ``headline(summary)``)."""
SUMMARY = REPO / "demo" / "summary.json"
RECORD = REPO / "benchmarks" / "demo_summary.json"
"""The summary the page's table was written from (committed: the test compares the two)."""
BEGIN = "<!-- demo-table: begin (python scripts/demo_table.py --write; do not edit by hand) -->"
END = "<!-- demo-table: end -->"
TOLERANCE = 0.02
"""How far a demo run on another machine may differ from the page, in each F1."""

ROWS = (
    ("ensemble", "ensemble/"),
    ("variant 1 (bert_base init, all candidates; weight 0, the cascade's first cut)", "model/tfqa-demo-v1/"),
    ("variant 2 (SQuAD init, all candidates)", "model/tfqa-demo-v2/"),
    ("variant 3 (SQuAD init, top-level candidates)", "model/tfqa-demo-v3/"),
    ("variant 4 (bert_base init, all candidates; the cascade's second cut)", "model/tfqa-demo-v4/"),
    ("variant 5 (bert_base init, top-level candidates)", "model/tfqa-demo-v5/"),
    ("baseline: always null", "baseline/null/"),
    ("baseline: candidate with the most question words", "baseline/question_overlap/"),
)
_CELL = re.compile(r"^\*{0,2}(-?\d+\.\d+)\*{0,2}$")


def figures(summary: dict) -> dict[str, tuple[float, float]]:
    """Row label -> (long F1, short F1) from a demo summary."""
    try:
        return {
            label: (float(summary[f"{prefix}long-best-threshold-f1"]), float(summary[f"{prefix}short-best-threshold-f1"]))
            for label, prefix in ROWS
        }
    except KeyError as e:
        raise SystemExit(f"demo_table: the summary has no {e.args[0]!r}: not a summary of the demo's manifest") from None


def table(summary: dict) -> str:
    """The block between the markers: the table, then what a run elsewhere may differ by."""
    lines = ["| | long F1 | short F1 |", "|---|---|---|"]
    for label, (long, short) in figures(summary).items():
        cell = f"**{long:.3f}**" if label == "ensemble" else f"{long:.3f}"
        lines.append(f"| {label} | {cell} | {short:.3f} |")
    lines += [
        "",
        f"A demo run on another machine may differ from these figures by up to {TOLERANCE} in each F1 (thread",
        "count and CPU change the last digits of the float sums; one of the 100 dev examples tipping the",
        "other way moves an F1 by 0.01 to 0.02): `python scripts/demo_table.py --check` compares your",
        "`demo/summary.json` with this table.",
    ]
    return "\n".join(lines)


def headline(summary: dict) -> str:
    """The README's headline row: the ensemble's F1s beside the best single model's."""
    rows = figures(summary)
    best = max((pair for label, pair in rows.items() if label.startswith("variant")), key=lambda pair: pair[0])
    ens = rows["ensemble"]
    figures_cell = f"**{ens[0]:.3f}** / {ens[1]:.3f} (best single model {best[0]:.3f} / {best[1]:.3f})"
    return f"{HEADLINE} {figures_cell} | [the demo's scores](docs/measured.md#the-demos-scores) |"


def headline_row(readme: str) -> str:
    """The README's line that starts with ``HEADLINE``."""
    rows = [line for line in readme.splitlines() if line.startswith(HEADLINE)]
    if len(rows) != 1:
        raise SystemExit(f"demo_table: {README.name}: one line must start with {HEADLINE!r}, found {len(rows)}")
    return rows[0]


def block(page: str) -> str:
    """The text between the page's markers (without them)."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise SystemExit(f"demo_table: {PAGE.name}: the markers {BEGIN!r} ... {END!r} must appear once each, in order")
    return page[page.index(BEGIN) + len(BEGIN) : page.index(END)].strip("\n")


def parse(text: str) -> dict[str, tuple[float, float]]:
    """Row label -> (long F1, short F1) from the table in a block."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and all(_CELL.match(c) for c in cells[1:]):
            out[cells[0]] = (float(_CELL.match(cells[1])[1]), float(_CELL.match(cells[2])[1]))
    return out


def disagreements(summary: dict, page: str, tolerance: float = TOLERANCE) -> list[str]:
    """One line per figure of the summary that the page's table misses by more than ``tolerance``."""
    want, shown = figures(summary), parse(block(page))
    out = []
    for label, pair in want.items():
        if label not in shown:
            out.append(f"{label}: no such row in the page's table")
            continue
        for what, a, b in zip(("long F1", "short F1"), pair, shown[label]):
            if abs(a - b) > tolerance + 1e-9:
                out.append(f"{label}: {what} {a:.4f} in the summary, {b:.3f} on the page (more than {tolerance} apart)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summary", type=Path, default=SUMMARY, help="a demo's summary.json (default: demo/summary.json)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--write",
        action="store_true",
        help="write the table into docs/measured.md, the headline row into README.md; keep the summary",
    )
    mode.add_argument("--check", action="store_true", help=f"exit 1 when a figure is more than {TOLERANCE} off the page")
    args = ap.parse_args(argv)
    try:
        summary = json.loads(args.summary.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"demo_table: {args.summary}: {e}", file=sys.stderr)
        return 1
    if args.check:
        bad = disagreements(summary, PAGE.read_text())
        for line in bad:
            print(f"demo_table: {line}", file=sys.stderr)
        print(f"{len(bad)} of {2 * len(ROWS)} figures more than {TOLERANCE} off {PAGE.name}'s table")
        return 1 if bad else 0
    if args.write:
        page, readme = PAGE.read_text(), README.read_text()
        write_text_whole(PAGE, page.replace(block(page), table(summary), 1))
        write_text_whole(README, readme.replace(headline_row(readme), headline(summary), 1))
        if args.summary.resolve() != RECORD.resolve():
            shutil.copyfile(args.summary, RECORD)
        print(f"wrote the table into {PAGE}, the headline row into {README} and the summary to {RECORD}")
        return 0
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
