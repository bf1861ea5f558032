"""`tfqa` command line: tools that need no MLflow run (convert, generate, score)."""
from __future__ import annotations

import json
import sys

import click


@click.group()
def main() -> None:
    """tfqa: Natural Questions tools."""


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--max-bad-lines", default=0, show_default=True)
def convert(src: str, dst: str, max_bad_lines: int) -> None:
    """Original NQ jsonl(.gz) -> Kaggle simplified jsonl(.gz)."""
    from tfqa.readers import BadInputError, convert_file

    try:
        report = convert_file(src, dst, max_bad_lines=max_bad_lines)
    except BadInputError as err:
        raise click.ClickException(str(err)) from None
    for err in report.skipped:
        click.echo(f"skipped {err}", err=True)
    click.echo(json.dumps({"lines": report.lines, "examples": report.examples, "skipped": len(report.skipped)}))


@main.command()
@click.option("--gold", required=True, help="NQ dev file with 5 annotations (original jsonl.gz or simplified).")
@click.option("--predictions", required=True, help="Official NQ prediction JSON.")
def score(gold: str, predictions: str) -> None:
    """Official NQ metrics + Kaggle micro-F1; the last stdout line is one JSON object."""
    from tfqa.predictions import PredictionError
    from tfqa.readers import BadInputError
    from tfqa.scoring import GoldError
    from tfqa.scoring import main as score_main

    try:
        score_main(gold, predictions)
    except (BadInputError, PredictionError, GoldError) as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.argument("dst")
@click.option("--examples", default=1000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["original", "simplified", "test"]), default="simplified", show_default=True)
@click.option("--annotations", default=1, show_default=True, help="Annotations per example (original format).")
def generate(dst: str, examples: int, seed: int, fmt: str, annotations: int) -> None:
    """Generated NQ-like data (see tfqa.synth): original (.jsonl.gz), simplified, or test (no answers)."""
    from tfqa.synth import SynthConfig, write_original, write_simplified

    cfg = SynthConfig(n_examples=examples, seed=seed, n_annotations=annotations)
    if fmt == "original":
        write_original(dst, cfg)
    else:
        write_simplified(dst, cfg, with_annotations=fmt == "simplified")
    click.echo(dst)


if __name__ == "__main__":
    sys.exit(main())
