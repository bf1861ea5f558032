"""MLflow entry point `predict`: Kaggle submission.csv from a finished validate run."""
import click
from _args import StageCommand, normalised_argv

from tfqa import tracking
from tfqa.stages.predict import PredictConfig, run_predict


@click.command(cls=StageCommand)
@click.option("--validate-run", required=True, help="A finished validate run id.")
@click.option("--test-data", required=True, help="Test jsonl (Kaggle simplified format).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--thresholds", type=click.Choice(["kaggle", "official"]), default="kaggle", show_default=True)
def main(**opts):
    cfg = PredictConfig(**opts)
    with tracking.start_run(run_name="predict", tags={"tfqa.stage": "predict"}) as run:
        path = run_predict(cfg, run)
    click.echo(f"submission: {path}")


if __name__ == "__main__":
    main(args=normalised_argv())
