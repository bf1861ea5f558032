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


if __name__ == "__main__":
    sys.exit(main())
