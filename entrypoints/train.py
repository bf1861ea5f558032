"""MLflow entry points `train_bert_base`, `train_bert`, `train_albert`, `train_bert_large`.

One script for all of them: the entry point picks the row of the variants table, and any other
`-P key=value` (MLflow passes undeclared ones as `--key value`) overrides a setting of that row,
e.g. `mlflow run . -e train_albert -P variant=2 -P lr=1e-5 -P epochs=1`. What is left empty comes
from the settings file and the experiment's upstream runs (tfqa.pipeline.resolve).
"""
from dataclasses import fields

import click
from _args import (StageCommand, format_metrics, given_options, load_settings, normalised_argv, option_names, option_values,
                   resolver)

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.stages.train import TrainStageConfig, run_train
from tfqa.training.variants import Variant, variant_for, with_overrides

VARIANT_SETTINGS = {f.name for f in fields(Variant)} - {"key", "entry_point"}


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
@click.option("--backbone", default="", help="Local dir of the pretrained backbone (default: settings backbones.<name>, "
              "or the SQuAD run's).")
@click.option("--train-data", default="", help="NQ train file, feature cache dir or prepare run id (default: settings "
              "data.train, or the mining run's).")
@click.option("--dev-data", default="", help="NQ dev file for periodic evaluation (default: settings data.dev).")
@click.option("--dev-examples", default=200, show_default=True)
@click.option("--mining-run", default="", help="mine_hard_negatives run id (hard-negative variants; default: the latest "
              "FINISHED one on this train file).")
@click.option("--init-model", default="", help="finetune_squad run id / models:/ URI (ALBERT variants; default: the latest "
              "FINISHED SQuAD run on this backbone).")
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
def main(ctx, entry_point, variant, **_):
    # A wrong variant is refused before anything else.
    key = variant_for(entry_point, "bert_base" if entry_point == "train_bert_base" else str(variant)).key
    settings = load_settings()
    options = option_names(ctx, skip=("entry_point", "variant"))
    with tracking.start_run(run_name=tracking.run_name(entry_point, key), tags={tracking.names.STAGE_TAG: entry_point, tracking.names.VARIANT_TAG: key}) as run:
        given = {**given_options(ctx, skip=("entry_point", "variant")), **_overrides(ctx.args)}
        r = resolver(entry_point, ctx, settings, run, given=given)
        r.fill_parameters(options | VARIANT_SETTINGS)
        v = with_overrides(variant_for(entry_point, key), {k: val for k, val in r.values.items() if k not in options})
        resolve.training_inputs(r, v)
        values = r.finish()
        r.record(run)
        cfg = TrainStageConfig(variant=v, **option_values(ctx, {k: val for k, val in values.items() if k in options},
                                                          skip=("entry_point", "variant")))
        metrics = run_train(cfg, run)
    click.echo(f"trained variant {v.key}: {format_metrics(metrics)}")


if __name__ == "__main__":
    main(args=normalised_argv())
