"""MLflow entry point `validate`: the registered ensemble, by alias, scored on the dev set."""

import json

from _args import StageCommand, load_settings, run_entry_point, stage_config


def command():
    import click

    from tfqa import tracking
    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.validate import ValidateConfig, run_validate

    options = StageOptions(ValidateConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        settings = load_settings()
        with tracking.start_run(run_name=tracking.run_name("validate"), tags={tracking.names.STAGE_TAG: "validate"}) as run:
            cfg, _ = stage_config(ctx, options, "validate", settings, run, resolve.validate_inputs)
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
