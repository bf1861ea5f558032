"""MLflow entry point `finetune_squad`: SQuAD 2.0 fine-tuning, the ALBERT variants' starting point.
What is left empty comes from the settings file (tfqa.pipeline.resolve)."""

from _args import StageCommand, format_metrics, load_settings, run_entry_point, stage_config


def command():
    import click

    from tfqa import tracking
    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.squad import SquadStageConfig, run_squad
    from tfqa.training.variants import VARIANTS

    options = StageOptions(SquadStageConfig)

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        settings = load_settings()
        with tracking.start_run(
            run_name=tracking.run_name("finetune_squad"), tags={tracking.names.STAGE_TAG: "finetune_squad"}
        ) as run:
            cfg, _ = stage_config(
                ctx, options, "finetune_squad", settings, run, lambda r: resolve.squad_inputs(r, VARIANTS["2"].backbone_name)
            )
            metrics = run_squad(cfg, run)
        click.echo(f"SQuAD 2.0 dev: {format_metrics(metrics)}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
