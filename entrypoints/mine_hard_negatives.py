"""MLflow entry point `mine_hard_negatives`: score every negative training candidate.

Under torchrun each rank scores its share of the shards; rank 0 merges and logs."""

from _args import StageCommand, format_metrics, run_entry_point, stage_run


def command():
    import click

    from tfqa.pipeline import resolve
    from tfqa.stages.mine import MineConfig, run_mine
    from tfqa.stages.options import StageOptions

    options = StageOptions(MineConfig)

    def inputs(r):
        resolve.mine_inputs(r)
        r.need("model", "-P model=<train_bert_base run id, models:/ URI or model dir>")

    @click.command(cls=StageCommand)
    @options
    @click.pass_context
    def main(ctx, **_):
        with stage_run(ctx, options, "mine_hard_negatives", inputs, stop_at_safe_points=True) as (run, cfg):
            summary = run_mine(cfg, run)
        click.echo(f"mined: {format_metrics(summary)}")

    return main


if __name__ == "__main__":
    run_entry_point(command)
