"""MLflow entry point `predict`: Kaggle submission.csv from a finished validate run."""

from _args import StageCommand, run_entry_point, stage_run


def command():
    import click

    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.predict import PredictConfig, run_predict

    options = StageOptions(PredictConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        with stage_run(ctx, options, "predict", resolve.predict_inputs) as (run, cfg):
            path = run_predict(cfg, run)
        click.echo(f"submission: {path}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
