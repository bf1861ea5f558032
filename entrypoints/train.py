"""MLflow entry points `train_bert_base`, `train_bert`, `train_albert`, `train_bert_large`.

One script for all of them: the entry point picks the row of the variants table, and any other
`-P key=value` (MLflow passes undeclared ones as `--key value`) overrides a setting of that row,
e.g. `mlflow run . -e train_albert -P variant=2 -P lr=1e-5 -P epochs=1`.
"""
import click
from _args import StageCommand, normalised_argv, format_metrics

from tfqa import tracking
from tfqa.stages.train import TrainStageConfig, run_train
from tfqa.variants import variant_for, with_overrides


def _overrides(extra: list[str]) -> dict[str, str]:
    out, it = {}, iter(extra)
    for token in it:
        if not token.startswith("--"):
            raise click.UsageError(f"unexpected argument {token!r}")
        key, _, value = token[2:].partition("=")
        out[key.replace("-", "_")] = value if value else next(it, "")
    return out


@click.command(cls=StageCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--entry-point", required=True, type=click.Choice(["train_bert_base", "train_bert", "train_albert", "train_bert_large"]))
@click.option("--variant", default="", help="Variant key (1..5); train_bert_base takes none.")
@click.option("--backbone", required=True, help="Local dir of the pretrained backbone.")
@click.option("--train-data", required=True, help="NQ train file, feature cache dir or prepare run id.")
@click.option("--dev-data", default="", help="NQ dev file for periodic evaluation.")
@click.option("--dev-examples", default=200, show_default=True)
@click.option("--mining-run", default="", help="mine_hard_negatives run id (hard-negative variants).")
@click.option("--init-model", default="", help="finetune_squad run id / models:/ URI (ALBERT variants).")
@click.option("--output-dir", default="outputs", show_default=True)
@click.option("--max-steps", default=0, show_default=True, help="0: train the variant's epochs.")
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--eval-every", default=0, show_default=True)
@click.option("--log-every", default=10, show_default=True)
@click.option("--precision", default="auto", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), show_default=True)
@click.option("--optimizer", default="adamw", type=click.Choice(["adamw", "apex_fused_adam"]), show_default=True)
@click.option("--resume", default="auto", show_default=True, help="auto | none | checkpoint dir.")
@click.option("--workers", default=0, show_default=True, help="Feature-building processes.")
@click.option("--max-lines", default=0, show_default=True, help="Train on the first N examples of a train file (0: all).")
@click.pass_context
def main(ctx, entry_point, variant, **opts):
    key = "bert_base" if entry_point == "train_bert_base" else str(variant)
    v = with_overrides(variant_for(entry_point, key), _overrides(ctx.args))
    cfg = TrainStageConfig(variant=v, **opts)
    with tracking.start_run(run_name=f"{entry_point}-{v.key}", tags={"tfqa.stage": entry_point, "tfqa.variant": v.key}) as run:
        metrics = run_train(cfg, run)
    click.echo(f"trained variant {v.key}: {format_metrics(metrics)}")


if __name__ == "__main__":
    main(args=normalised_argv())
