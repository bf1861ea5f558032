"""`tfqa` command line: tools that need no MLflow run (convert, generate, score).

Every refusal is one line on stderr and a non-zero exit (see tfqa.core.errors); ``--debug`` shows the
traceback."""

from __future__ import annotations

import json
import sys

import click

from tfqa.core.errors import RefusingGroup, echo_skipped


@click.group(cls=RefusingGroup)
def main() -> None:
    """tfqa: Natural Questions tools."""


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--max-bad-lines",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip up to N malformed lines (each is printed).",
)
@click.option("--force", is_flag=True, help="Replace DST if it exists (never SRC itself).")
@click.option("--allow-empty", is_flag=True, help="Accept a SRC without a single line.")
def convert(src: str, dst: str, max_bad_lines: int, force: bool, allow_empty: bool) -> None:
    """Original NQ jsonl(.gz) -> Kaggle simplified jsonl(.gz). DST's folder must exist."""
    from tfqa.data.readers import convert_file

    report = convert_file(src, dst, max_bad_lines=max_bad_lines, force=force, allow_empty=allow_empty)
    echo_skipped(report.skipped)
    click.echo(json.dumps({"lines": report.lines, "examples": report.examples, "skipped": len(report.skipped)}))


@main.command()
@click.option("--gold", required=True, help="NQ dev file with 5 annotations (original jsonl.gz or simplified).")
@click.option("--predictions", required=True, help="Official NQ prediction JSON.")
def score(gold: str, predictions: str) -> None:
    """Official NQ metrics + Kaggle micro-F1; the last stdout line is one JSON object."""
    from tfqa.data.readers import require_file
    from tfqa.evaluation.nq_metric import score_files

    require_file(gold)
    require_file(predictions)  # before the gold, which may take a while to read
    click.echo(json.dumps(score_files(gold, predictions)))


@main.command()
@click.argument("dst")
@click.option("--examples", default=1000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["original", "simplified", "test"]), default="simplified", show_default=True)
@click.option("--annotations", default=1, show_default=True, help="Annotations per example (original format).")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
def generate(dst: str, examples: int, seed: int, fmt: str, annotations: int, force: bool) -> None:
    """Generated NQ-like data (see tfqa.data.synth): original (.jsonl.gz), simplified, or test (no answers)."""
    from tfqa.core.destinations import check_destination, written_whole
    from tfqa.data.synth import SynthConfig, write_original, write_simplified

    check_destination(dst, force=force)
    cfg = SynthConfig(n_examples=examples, seed=seed, n_annotations=annotations)
    compress = dst.endswith(".gz")
    with written_whole(dst) as tmp:
        if fmt == "original":
            write_original(tmp, cfg, compress=compress)
        else:
            write_simplified(tmp, cfg, with_annotations=fmt == "simplified", compress=compress)
    click.echo(dst)


if __name__ == "__main__":
    sys.exit(main())
