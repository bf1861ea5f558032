"""MLflow entry point `predict`: Kaggle submission.csv from a finished validate run."""

from _args import StageCommand, load_settings, run_entry_point, stage_config


def command():
    import click

    from tfqa import tracking
    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.predict import PredictConfig, run_predict

    options = StageOptions(PredictConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        settings = load_settings()
        with tracking.start_run(run_name=tracking.run_name("predict"), tags={tracking.names.STAGE_TAG: "predict"}) as run:
            cfg, _ = stage_config(ctx, options, "predict", settings, run, resolve.predict_inputs)
            path = run_predict(cfg, run)
        click.echo(f"submission: {path}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
