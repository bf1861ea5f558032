"""MLflow entry point `prepare`: candidate features of an NQ file, cached by fingerprint."""
import click
from _args import StageCommand, load_settings, normalised_argv, option_names, option_values, resolver

from tfqa import tracking

from tfqa.pipeline import resolve
from tfqa.core.errors import echo_skipped
from tfqa.stages.prepare import PrepareConfig, build_config, run_prepare, skipped_errors


@click.command(cls=StageCommand)
@click.option("--input", default="", help="NQ jsonl (simplified or original, plain or .gz; default: settings data.train).")
@click.option("--tokenizer", default="", help="Local directory of the backbone's tokenizer (default: settings "
              "backbones.<train_bert_base's backbone name>).")
@click.option("--cache-dir", default="features", show_default=True)
@click.option("--max-seq-len", default=360, show_default=True)
@click.option("--max-question-len", default=64, show_default=True)
@click.option("--html-tokens", type=click.Choice(["tfqa", "original"]), default="tfqa", show_default=True,
              help="Tag tokens: the 1st place's (original) or tfqa's.")
@click.option("--strategy", type=click.Choice(["all", "random", "hard"]), default="random", show_default=True)
@click.option("--negatives", default=2, show_default=True, help="Negatives per example (random/hard).")
@click.option("--random-negatives", default=0, show_default=True, help="With --strategy hard: random negatives besides the hard ones.")
@click.option("--top-level-only", type=bool, default=False, show_default=True, help="Negatives from top-level candidates only.")
@click.option("--seed", default=0, show_default=True)
@click.option("--scores", default="", help="Mining scores table (Parquet) for --strategy hard.")
@click.option("--max-bad-lines", default=0, show_default=True, help="Skip up to N malformed lines (each is printed).")
@click.option("--allow-empty", type=bool, default=False, show_default=True, help="Accept an input without a single line.")
@click.option("--workers", default=0, show_default=True, help="Worker processes (0 = CPU cores).")
@click.pass_context
def main(ctx, **_):
    from tfqa.training.variants import VARIANTS

    settings = load_settings()
    # The tokenizer is the one the first model (train_bert_base) trains with.
    tokenizer_name = next((value for key, (value, _) in settings.parameters_for("train_bert_base").items()
                           if key == "backbone_name"), VARIANTS["bert_base"].backbone_name)
    # No upstream runs to look up: resolved, and the input checked, before a run is opened.
    r = resolver("prepare", ctx, settings)
    r.fill_parameters(option_names(ctx))
    resolve.prepare_inputs(r, tokenizer_name)
    o = option_values(ctx, r.finish())
    build = build_config(
        max_seq_len=o["max_seq_len"], max_question_len=o["max_question_len"], html_tokens=o["html_tokens"],
        strategy=o["strategy"], negatives=o["negatives"], random_negatives=o["random_negatives"],
        top_level_only=o["top_level_only"], seed=o["seed"], scores=o["scores"], max_bad_lines=o["max_bad_lines"],
        workers=o["workers"], allow_empty=o["allow_empty"],
    )
    cfg = PrepareConfig(input=o["input"], tokenizer=o["tokenizer"], cache_dir=o["cache_dir"], build=build)
    with tracking.start_run(run_name=tracking.run_name("prepare"), tags={tracking.names.STAGE_TAG: "prepare"}) as run:
        r.record(run)
        info = run_prepare(cfg, run)
    echo_skipped(skipped_errors(cfg, info), where=str(info.path / "manifest.json"))
    click.echo(f"features: {info.path} ({'reused' if info.reused else 'built'}; {info.manifest['rows']} rows)")


if __name__ == "__main__":
    main(args=normalised_argv())
