"""MLflow entry point `promote`: register a finished training run's model and move the alias."""

import click

from _args import StageCommand, load_settings, option_names, option_values, resolver, run_entry_point


def _variant_of(run_id: str) -> str:
    """For the run's name (promote-v3); the promotion itself checks the run."""
    from tfqa.tracking.names import VARIANT_TAG
    from tfqa.tracking.queries import run_tags

    try:
        return run_tags(run_id).get(VARIANT_TAG, "")
    except Exception:  # a bad id is refused by promote() with its own message
        return ""


@click.command(cls=StageCommand)
@click.option("--run-id", required=True, help="The finished training run.")
@click.option(
    "--manifest", default="registry/ensemble.yaml", show_default=True, help="(default: settings parameters.promote.manifest)"
)
@click.option("--name", default="", help="Registered model name (default: the manifest's entry for the run's variant).")
@click.option("--alias", default="", help="Alias to move (default: the manifest's).")
@click.option(
    "--model",
    type=click.Choice(["final", "best"]),
    default="final",
    show_default=True,
    help="The run's final model, or its best evaluated checkpoint by dev/long_f1.",
)
@click.pass_context
def main(ctx, run_id, **_):
    # Imported here, after run_entry_point's handover to the prefork server (when there is one).
    from tfqa import tracking
    from tfqa.inference.manifest import EnsembleManifest
    from tfqa.tracking.registry import promote

    settings = load_settings()
    with tracking.start_run(
        run_name=tracking.run_name("promote", _variant_of(run_id)),
        tags={tracking.names.STAGE_TAG: "promote", f"{tracking.names.UPSTREAM_TAG_PREFIX}train": run_id},
    ) as run:
        r = resolver("promote", ctx, settings, run)
        r.fill_parameters(option_names(ctx))
        o = option_values(ctx, r.finish())
        r.record(run)
        m = EnsembleManifest.load(o["manifest"])
        p = promote(run_id, m, name=o["name"] or None, alias=o["alias"] or None, model=o["model"])
        run.log_params({"run_id": run_id, "manifest": o["manifest"], "name": p.name, "alias": p.alias})
        run.set_tags({tracking.names.REGISTERED_MODEL_TAG: p.name, tracking.names.MODEL_VERSION_TAG: p.version})
        run.set_tags({f"{tracking.names.MODEL_ID_TAG}.{p.name}": p.model_id})
        run.log_inputs(model_ids=[p.model_id])
    click.echo(f"{p.name} version {p.version} is now @{p.alias} (run {run_id})")


if __name__ == "__main__":
    run_entry_point(lambda: main)
