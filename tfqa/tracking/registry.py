"""The Model Registry as tfqa uses it: promoting a training run's model (register a version, move
the alias), pulling the versions an ensemble manifest names, recording which versions a run used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tfqa.tracking.names import (
    BACKBONE_TAG,
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


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    alias: str
    run_id: str
    model_id: str = ""
    """The LoggedModel the version was created from (its source is ``models:/<model_id>``)."""


def promote(run_id: str, manifest: EnsembleManifest, *, name: str | None = None, alias: str | None = None) -> Promotion:
    """Register a finished training run's model and move the alias to the new version.

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
    model = run_logged_model(run_id, MODEL_ARTIFACT)
    if model is None:
        raise ValueError(f"run {run_id} logged no model (no LoggedModel '{MODEL_ARTIFACT}' from this run)")
    if str(model.status) != "READY":
        raise ValueError(f"run {run_id}'s model {model.model_id} is {model.status}, not READY: it was never fully uploaded")
    try:
        client.get_registered_model(entry.name)
    except MlflowException:
        client.create_registered_model(entry.name, tags={BACKBONE_TAG: entry.backbone, VARIANT_TAG: entry.variant})
    mv = client.create_model_version(
        entry.name,
        source=f"models:/{model.model_id}",
        run_id=run_id,
        model_id=model.model_id,
        tags={BACKBONE_TAG: entry.backbone, VARIANT_TAG: entry.variant},
    )
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
    """name -> ModelVersion for every manifest entry; a clear error naming model and alias."""
    from mlflow.exceptions import MlflowException

    client = _client()
    alias = alias or manifest.alias
    out = {}
    for m in manifest.models:
        try:
            out[m.name] = client.get_model_version_by_alias(m.name, alias)
        except MlflowException as exc:
            raise LookupError(f"registered model {m.name!r} has no version with alias {alias!r} ({exc.message})") from None
    return out
