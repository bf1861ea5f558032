"""MLflow entry point `finetune_squad`: SQuAD 2.0 fine-tuning, the ALBERT variants' starting point.
What is left empty comes from the settings file (tfqa.pipeline.resolve)."""
import click
from _args import StageCommand, format_metrics, load_settings, normalised_argv, option_names, option_values, resolver

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.stages.squad import SquadStageConfig, run_squad
from tfqa.training.variants import VARIANTS


@click.command(cls=StageCommand)
@click.option("--backbone", default="", help="Local dir of the pretrained backbone (default: settings backbones.<backbone name>; "
              "the name defaults to the ALBERT variants' backbone).")
@click.option("--init-model", default="", help="Start from this tfqa model (run id / models:/ URI) instead of the backbone.")
@click.option("--squad-data", default="", help="SQuAD 2.0 JSON (train, or one file to split by article; default: settings data.squad).")
@click.option("--squad-dev", default="", help="SQuAD 2.0 dev JSON (default: settings data.squad_dev, else split squad-data).")
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
@click.pass_context
def main(ctx, **_):
    settings = load_settings()
    with tracking.start_run(run_name=tracking.run_name("finetune_squad"), tags={tracking.names.STAGE_TAG: "finetune_squad"}) as run:
        r = resolver("finetune_squad", ctx, settings, run)
        r.fill_parameters(option_names(ctx))
        resolve.squad_inputs(r, VARIANTS["2"].backbone_name)
        values = r.finish()
        r.record(run)
        cfg = SquadStageConfig(**option_values(ctx, values))
        metrics = run_squad(cfg, run)
    click.echo(f"SQuAD 2.0 dev: {format_metrics(metrics)}")


if __name__ == "__main__":
    main(args=normalised_argv())
