"""MLflow entry point `predict`: Kaggle submission.csv from a finished validate run."""
import click
from _args import StageCommand, load_settings, normalised_argv, option_names, option_values, resolver

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.stages.predict import PredictConfig, run_predict


@click.command(cls=StageCommand)
@click.option("--validate-run", default="", help="A finished validate run id (default: the latest FINISHED one).")
@click.option("--test-data", default="", help="Test jsonl (Kaggle simplified format; default: settings data.test).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--thresholds", type=click.Choice(["kaggle", "official"]), default="kaggle", show_default=True)
@click.pass_context
def main(ctx, **_):
    settings = load_settings()
    with tracking.start_run(run_name=tracking.run_name("predict"), tags={tracking.names.STAGE_TAG: "predict"}) as run:
        r = resolver("predict", ctx, settings, run)
        r.fill_parameters(option_names(ctx))
        resolve.predict_inputs(r)
        values = r.finish()
        r.record(run)
        cfg = PredictConfig(**option_values(ctx, values))
        path = run_predict(cfg, run)
    click.echo(f"submission: {path}")


if __name__ == "__main__":
    main(args=normalised_argv())
