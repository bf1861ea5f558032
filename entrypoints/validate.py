"""MLflow entry point `validate`: the registered ensemble, by alias, scored on the dev set."""

import json

from _args import StageCommand, run_entry_point, stage_run


def command():
    import click

    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.validate import ValidateConfig, run_validate

    options = StageOptions(ValidateConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        with stage_run(ctx, options, "validate", resolve.validate_inputs) as (run, cfg):
            result = run_validate(cfg, run)
        keys = [
            k
            for k in sorted(result)
            if k.startswith(("ensemble/long-best", "ensemble/short-best", "ensemble/kaggle", "thresholds."))
        ]
        click.echo(json.dumps({k: result[k] for k in keys}, indent=1))

    return main


if __name__ == "__main__":
    run_entry_point(command)
