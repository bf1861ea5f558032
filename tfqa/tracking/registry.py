"""The Model Registry as tfqa uses it: promoting a training run's model (register a version, move
the alias), pulling the versions an ensemble manifest names, recording which versions a run used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tfqa.tracking.names import (
    BACKBONE_TAG,
    CHECKPOINT_MODEL,
    MODEL_ARTIFACT,
    MODEL_ID_TAG,
    MODEL_VERSION_TAG,
    REGISTERED_MODEL_TAG,
    VARIANT_TAG,
)
from tfqa.tracking.queries import client as _client
from tfqa.tracking.upstream import require_stage, run_logged_model, version_model_id
from tfqa.training.variants import TRAINING_STAGES

if TYPE_CHECKING:
    from tfqa.inference.manifest import EnsembleManifest


def link_version_to_model(client, model_id: str, name: str, version: str) -> None:
    """Record the version on its LoggedModel (tag ``mlflow.modelVersions``, which the UI's Logged
    Models tab shows as "Registered models"). A tracking server does this when it creates a version
    from a model id; a local store (the demo's ``mlflow.db``) does not, so the link is made here,
    once, whichever store it is."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if not any((e.get("name"), str(e.get("version"))) == (name, version) for e in linked):
        # The number as MLflow writes it, so a server's own entry and ours read the same.
        entry = {"name": name, "version": int(version)}
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*linked, entry])})


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    model_id: str = ""
    """The LoggedModel the version was created from (its source is ``models:/<model_id>``)."""


def best_checkpoint_model(run_id: str):
    """The run's READY ``checkpoint`` LoggedModel with the highest ``dev/long_f1`` (the later step
    on a tie); refused when the run kept none."""
    c = _client()
    run = c.get_run(run_id)
    found = c.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{CHECKPOINT_MODEL}'"
    )

    def score(m):
        metrics = {x.key: x.value for x in (m.metrics or [])}
        return metrics.get("dev/long_f1", float("-inf")), int(m.tags.get("tfqa.checkpoint_step", -1))

    ready = [m for m in found if str(m.status) == "READY"]
    if not ready:
        raise ValueError(f"run {run_id} kept no evaluated checkpoint model (train with eval_every and keep_best_models)")
    return max(ready, key=score)


def promote(
    run_id: str, manifest: EnsembleManifest, *, name: str | None = None, alias: str | None = None, model: str = "final"
) -> Promotion:
    """Register a finished training run's model and move the alias to the new version.

    ``model``: ``final`` (the run's ``model``) or ``best`` (its evaluated ``checkpoint`` with the
    highest ``dev/long_f1``, of the ones the run kept).

    The version is created from the run's LoggedModel (source ``models:/<model_id>``). Refuses runs
    of other stages than training, runs that did not finish, whose model is missing or never
    finished uploading, or whose variant/backbone tags do not match the manifest entry the model
    is registered under.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    run = client.get_run(run_id)
    tags = run.data.tags
    if run.info.status != "FINISHED":
        raise ValueError(f"run {run_id} is {run.info.status}, not FINISHED: only finished runs are promoted")
    require_stage(run, TRAINING_STAGES, "training")
    variant = tags.get(VARIANT_TAG)
    entry = (
        manifest.entry(name)
        if name
        else manifest.entry_for_run(variant or "?", tags.get(BACKBONE_TAG), tags.get(REGISTERED_MODEL_TAG))
    )
    if variant != entry.variant:
        raise ValueError(f"run {run_id} trained variant {variant!r}; {entry.name} takes variant {entry.variant!r}")
    if tags.get(BACKBONE_TAG) != entry.backbone:
        raise ValueError(f"run {run_id} has backbone {tags.get(BACKBONE_TAG)!r}; {entry.name} expects {entry.backbone!r}")
    if model not in ("final", "best"):
        raise ValueError(f"model must be 'final' or 'best', got {model!r}")
    model = run_logged_model(run_id, MODEL_ARTIFACT) if model == "final" else best_checkpoint_model(run_id)
    if model is None:
        raise ValueError(f"run {run_id} logged no model (no LoggedModel '{MODEL_ARTIFACT}' from this run)")
    if str(model.status) != "READY":
        raise ValueError(f"run {run_id}'s model {model.model_id} is {model.status}, not READY: it was never fully uploaded")
    try:
        registered = client.get_registered_model(entry.name)
    except MlflowException:
        registered = None
    if registered is not None:  # registered before, maybe under another manifest
        manifest.check_registered(entry, registered.tags or {}, f"registered model {entry.name!r}")
    else:
        client.create_registered_model(entry.name, tags={BACKBONE_TAG: entry.backbone, VARIANT_TAG: entry.variant})
    mv = client.create_model_version(
        entry.name,
        source=f"models:/{model.model_id}",
        run_id=run_id,
        model_id=model.model_id,
        tags={BACKBONE_TAG: entry.backbone, VARIANT_TAG: entry.variant},
    )
    link_version_to_model(client, model.model_id, entry.name, str(mv.version))
    alias = alias or manifest.alias
    client.set_registered_model_alias(entry.name, alias, mv.version)
    return Promotion(entry.name, str(mv.version), alias, run_id, model.model_id)


def model_versions(versions: dict[str, str]) -> dict[str, object]:
    """name -> ModelVersion for ``{name: version}`` (what a validation's ensemble report lists)."""
    client = _client()
    return {n: client.get_model_version(n, str(v)) for n, v in versions.items()}


def record_models_used(run, versions: dict[str, object]) -> None:
    """Tag the run with each registered model's version and LoggedModel id it used
    (``tfqa.model_version.<name>``, ``tfqa.model_id.<name>``) and log the models as its inputs."""
    ids = {n: version_model_id(mv) for n, mv in versions.items()}
    run.set_tags(
        {
            **{f"{MODEL_VERSION_TAG}.{n}": mv.version for n, mv in versions.items()},
            **{f"{MODEL_ID_TAG}.{n}": i for n, i in ids.items() if i},
        }
    )
    run.log_inputs(model_ids=[i for i in ids.values() if i])


def resolve_aliases(manifest: EnsembleManifest, alias: str | None = None) -> dict[str, object]:
    """name -> ModelVersion for every manifest entry; a clear error naming model and alias, or
    naming the manifest entry and the version when their variant or backbone disagree."""
    from mlflow.exceptions import MlflowException

    client = _client()
    alias = alias or manifest.alias
    out = {}
    for m in manifest.models:
        try:
            out[m.name] = client.get_model_version_by_alias(m.name, alias)
        except MlflowException as exc:
            raise LookupError(f"registered model {m.name!r} has no version with alias {alias!r} ({exc.message})") from None
        mv = out[m.name]
        manifest.check_registered(m, mv.tags or {}, f"registered model {m.name!r} version {mv.version} (@{alias})")
    return out
