"""MLflow entry point `prepare`: candidate features of an NQ file, cached by fingerprint."""
import click
from _args import StageCommand, normalised_argv

from tfqa import tracking
from tfqa.errors import echo_skipped
from tfqa.stages.prepare import PrepareConfig, build_config, run_prepare, skipped_errors


@click.command(cls=StageCommand)
@click.option("--input", "input_path", required=True, help="NQ jsonl (simplified or original, plain or .gz).")
@click.option("--tokenizer", required=True, help="Local directory of the backbone's tokenizer.")
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
def main(input_path, tokenizer, cache_dir, max_seq_len, max_question_len, html_tokens, strategy, negatives, random_negatives,
         top_level_only, seed, scores, max_bad_lines, allow_empty, workers):
    build = build_config(
        max_seq_len=max_seq_len, max_question_len=max_question_len, html_tokens=html_tokens, strategy=strategy, negatives=negatives,
        random_negatives=random_negatives, top_level_only=top_level_only, seed=seed, scores=scores, max_bad_lines=max_bad_lines, workers=workers,
        allow_empty=allow_empty,
    )
    cfg = PrepareConfig(input=input_path, tokenizer=tokenizer, cache_dir=cache_dir, build=build)
    with tracking.start_run(run_name="prepare", tags={"tfqa.stage": "prepare"}) as run:
        info = run_prepare(cfg, run)
    echo_skipped(skipped_errors(cfg, info), where=str(info.path / "manifest.json"))
    click.echo(f"features: {info.path} ({'reused' if info.reused else 'built'}; {info.manifest['rows']} rows)")


if __name__ == "__main__":
    main(args=normalised_argv())
