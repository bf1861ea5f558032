"""MLflow entry point `finetune_squad`: SQuAD 2.0 fine-tuning, the ALBERT variants' starting point.
What is left empty comes from the settings file (tfqa.pipeline.resolve)."""

from _args import StageCommand, format_metrics, run_entry_point, stage_run


def command():
    import click

    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.squad import SquadStageConfig, run_squad
    from tfqa.training.variants import VARIANTS

    options = StageOptions(SquadStageConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        def inputs(r):
            # The SQuAD model is the ALBERT variants' starting point: theirs is its backbone.
            return resolve.squad_inputs(r, VARIANTS["2"].backbone_name)

        with stage_run(ctx, options, "finetune_squad", inputs, stop_at_safe_points=True) as (run, cfg):
            metrics = run_squad(cfg, run)
        click.echo(f"SQuAD 2.0 dev: {format_metrics(metrics)}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
