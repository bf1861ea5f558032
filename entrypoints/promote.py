"""MLflow entry point `promote`: register a finished training run's model and move the alias."""
import click
from _args import StageCommand, normalised_argv

from tfqa import tracking
from tfqa.registry import EnsembleManifest, promote


@click.command(cls=StageCommand)
@click.option("--run-id", required=True, help="The finished training run.")
@click.option("--manifest", default="registry/ensemble.yaml", show_default=True)
@click.option("--name", default="", help="Registered model name (default: the manifest's entry for the run's variant).")
@click.option("--alias", default="", help="Alias to move (default: the manifest's).")
def main(run_id, manifest, name, alias):
    m = EnsembleManifest.load(manifest)
    with tracking.start_run(run_name="promote", tags={"tfqa.stage": "promote", "tfqa.upstream.train": run_id}) as run:
        p = promote(run_id, m, name=name or None, alias=alias or None)
        run.log_params({"run_id": run_id, "manifest": manifest, "name": p.name, "alias": p.alias})
        run.set_tags({"tfqa.registered_model": p.name, "tfqa.model_version": p.version})
        run.set_tags({f"tfqa.model_id.{p.name}": p.model_id})
        run.log_inputs(model_ids=[p.model_id])
    click.echo(f"{p.name} version {p.version} is now @{p.alias} (run {run_id})")


if __name__ == "__main__":
    main(args=normalised_argv())
