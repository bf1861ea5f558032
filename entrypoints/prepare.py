"""MLflow entry point `prepare`: candidate features of an NQ file, cached by fingerprint."""

from _args import StageCommand, load_settings, run_entry_point, stage_config


def command():
    import click

    from tfqa import tracking
    from tfqa.core.errors import echo_skipped
    from tfqa.pipeline import resolve
    from tfqa.stages.options import StageOptions
    from tfqa.stages.prepare import PrepareConfig, run_prepare, skipped_errors
    from tfqa.training.variants import VARIANTS

    # chunk_lines: how the work is split among the workers, not a setting of the features.
    options = StageOptions(PrepareConfig, skip=("chunk_lines",), names={"scores_path": "scores"})

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        settings = load_settings()
        # The tokenizer is the one the first model (train_bert_base) trains with.
        tokenizer_name = next(
            (value for key, (value, _) in settings.parameters_for("train_bert_base").items() if key == "backbone_name"),
            VARIANTS["bert_base"].backbone_name,
        )
        # No upstream runs to look up: resolved, and the input checked, before a run is opened.
        cfg, r = stage_config(ctx, options, "prepare", settings, None, lambda r: resolve.prepare_inputs(r, tokenizer_name))
        with tracking.start_run(run_name=tracking.run_name("prepare"), tags={tracking.names.STAGE_TAG: "prepare"}) as run:
            r.record(run)
            info = run_prepare(cfg, run)
        echo_skipped(skipped_errors(cfg, info), where=str(info.path / "manifest.json"))
        click.echo(f"features: {info.path} ({'reused' if info.reused else 'built'}; {info.manifest['rows']} rows)")

    return main


if __name__ == "__main__":
    run_entry_point(command)
