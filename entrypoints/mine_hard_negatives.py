"""MLflow entry point `mine_hard_negatives`: score every negative training candidate.

Under torchrun each rank scores its share of the shards; rank 0 merges and logs."""
import os

import click
from _args import StageCommand, format_metrics, load_settings, normalised_argv, option_names, option_values, resolver

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.stages.mine import MineConfig, run_mine


@click.command(cls=StageCommand)
@click.option("--model", default="", help="Scoring model (run id, runs:/, models:/ or dir). Default: the latest FINISHED "
              "train_bert_base run.")
@click.option("--train-data", default="", help="NQ training file (default: settings data.train).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--top-level-only", type=bool, default=False, show_default=True)
@click.option("--negatives-per-example", default=2, show_default=True)
@click.option("--n-shards", default=16, show_default=True)
@click.option("--max-seq-len", default=0, show_default=True, help="0: the scoring model's training setting.")
@click.option("--batch-tokens", default=16384, show_default=True)
@click.option("--workers", default=0, show_default=True)
@click.option("--max-lines", default=0, show_default=True, help="Mine the first N training examples only (0: all).")
@click.pass_context
def main(ctx, **_):
    settings = load_settings()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    with tracking.start_run(run_name=tracking.run_name("mine_hard_negatives"), tags={tracking.names.STAGE_TAG: "mine_hard_negatives"}) as run:
        r = resolver("mine_hard_negatives", ctx, settings, run)
        r.fill_parameters(option_names(ctx))
        resolve.mine_inputs(r)
        r.need("model", "-P model=<train_bert_base run id, models:/ URI or model dir>")
        values = r.finish()
        r.record(run)
        cfg = MineConfig(**option_values(ctx, values))
        summary = run_mine(cfg, run, rank=rank, world_size=world)
    click.echo(f"mined: {format_metrics(summary)}")


if __name__ == "__main__":
    main(args=normalised_argv())
