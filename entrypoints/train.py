"""MLflow entry points `train_bert_base`, `train_bert`, `train_albert`, `train_bert_large`.

One script for all of them: the entry point picks the row of the variants table, and any other
`-P key=value` (MLflow passes undeclared ones as `--key value`) overrides a setting of that row,
e.g. `mlflow run . -e train_albert -P variant=2 -P lr=1e-5 -P epochs=1`. What is left empty comes
from the settings file and the experiment's upstream runs (tfqa.pipeline.resolve).
"""

from _args import StageCommand, format_metrics, run_entry_point, stage_run


def _overrides(extra: list[str]) -> dict[str, str]:
    import click

    out, it = {}, iter(extra)
    for token in it:
        if not token.startswith("--"):
            raise click.UsageError(f"unexpected argument {token!r}")
        key, _, value = token[2:].partition("=")
        out[key.replace("-", "_")] = value if value else next(it, "")
    return out


def command():
    from dataclasses import fields

    import click

    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.train import TrainStageConfig, run_train
    from tfqa.training.variants import TRAINING_STAGES, Variant, variant_for, with_overrides

    variant_settings = {f.name for f in fields(Variant)} - {"key", "entry_point"}
    # The variant is the entry point's own: its row of the table, then -P overrides of that row.
    options = StageOptions(TrainStageConfig, skip=("variant",))

    @click.command(cls=StageCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.option("--entry-point", required=True, type=click.Choice(TRAINING_STAGES))
    @click.option("--variant", default="", help="Variant key (1..5); train_bert_base takes none.")
    @options
    @click.pass_context
    def main(ctx, entry_point, variant, **_):
        # A wrong variant is refused before anything else.
        key = variant_for(entry_point, "bert_base" if entry_point == "train_bert_base" else str(variant)).key

        def inputs(r):
            v = with_overrides(
                variant_for(entry_point, key), {k: val for k, val in r.values.items() if k not in options.option_names}
            )
            resolve.training_inputs(r, v)
            return {"variant": v}

        overrides = _overrides(ctx.args)
        with stage_run(
            ctx, options, entry_point, inputs, variant=key, given=overrides, accepts=variant_settings, stop_at_safe_points=True
        ) as (run, cfg):
            metrics = run_train(cfg, run)
        click.echo(f"trained variant {cfg.variant.key}: {format_metrics(metrics)}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
