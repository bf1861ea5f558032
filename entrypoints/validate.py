"""MLflow entry point `validate`: the registered ensemble, by alias, scored on the dev set."""
import json

import click
from _args import StageCommand, load_settings, normalised_argv, option_names, option_values, resolver

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.stages.validate import ValidateConfig, run_validate


@click.command(cls=StageCommand)
@click.option("--manifest", default="registry/ensemble.yaml", show_default=True, help="(default: settings parameters.validate.manifest)")
@click.option("--dev-data", default="", help="NQ dev file (original jsonl.gz or simplified; default: settings data.dev).")
@click.option("--alias", default="", help="Alias to pull (default: the manifest's).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--fit-weights", type=bool, default=False, show_default=True)
@click.option("--dev-examples", default=0, show_default=True, help="Only the first N dev examples (0: all).")
@click.option("--decode", type=click.Choice(["", "joint", "original"]), default="", help="Decoding (default: the manifest's).")
@click.option("--max-answer-words", default=0, show_default=True, help="Joint decoding's longest answer (0: the manifest's).")
@click.option("--cascade", type=click.Choice(["", "none"]), default="", help="none: skip the manifest's pruning cascade.")
@click.option("--promotions", default="", help="Upstream promote run ids (recorded).")
@click.option("--manifest-digest", default="", help="Hash of the manifest's content (recorded: a pipeline reuse key).")
@click.pass_context
def main(ctx, **_):
    settings = load_settings()
    with tracking.start_run(run_name=tracking.run_name("validate"), tags={tracking.names.STAGE_TAG: "validate"}) as run:
        r = resolver("validate", ctx, settings, run)
        r.fill_parameters(option_names(ctx))
        resolve.validate_inputs(r)
        values = r.finish()
        r.record(run)
        cfg = ValidateConfig(**option_values(ctx, values, skip=("manifest_digest",)))
        result = run_validate(cfg, run)
    keys = [k for k in sorted(result) if k.startswith(("ensemble/long-best", "ensemble/short-best", "ensemble/kaggle", "thresholds."))]
    click.echo(json.dumps({k: result[k] for k in keys}, indent=1))


if __name__ == "__main__":
    main(args=normalised_argv())
