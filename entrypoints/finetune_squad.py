"""MLflow entry point `finetune_squad`: SQuAD 2.0 fine-tuning, the ALBERT variants' starting point."""
import click
from _args import StageCommand, normalised_argv, format_metrics

from tfqa import tracking
from tfqa.stages.squad import SquadStageConfig, run_squad


@click.command(cls=StageCommand)
@click.option("--backbone", required=True, help="Local dir of the pretrained backbone.")
@click.option("--init-model", default="", help="Start from this tfqa model (run id / models:/ URI) instead of the backbone.")
@click.option("--squad-data", required=True, help="SQuAD 2.0 JSON (train, or one file to split by article).")
@click.option("--squad-dev", default="", help="SQuAD 2.0 dev JSON (default: split squad-data).")
@click.option("--dev-fraction", default=0.25, show_default=True)
@click.option("--max-questions", default=0, show_default=True)
@click.option("--max-dev-questions", default=600, show_default=True)
@click.option("--max-seq-len", default=384, show_default=True)
@click.option("--doc-stride", default=128, show_default=True)
@click.option("--max-question-len", default=64, show_default=True)
@click.option("--html-tokens", type=click.Choice(["tfqa", "original"]), default="tfqa", show_default=True)
@click.option("--lr", default=3e-5, show_default=True)
@click.option("--epochs", default=2.0, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--max-steps", default=0, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--backbone-name", default="", help="Name recorded as the backbone (default: the dir name).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--precision", default="auto", show_default=True)
@click.option("--resume", default="auto", show_default=True)
def main(**opts):
    cfg = SquadStageConfig(**opts)
    with tracking.start_run(run_name="finetune_squad", tags={"tfqa.stage": "finetune_squad"}) as run:
        metrics = run_squad(cfg, run)
    click.echo(f"SQuAD 2.0 dev: {format_metrics(metrics)}")


if __name__ == "__main__":
    main(args=normalised_argv())
