"""Resolve what a stage consumes from earlier runs: feature caches, scores tables, models.

A reference is a local path, an MLflow run id, ``runs:/<id>/<path>``, ``models:/<name>@<alias>``
(or ``models:/<name>/<version>``) or ``models:/<model_id>`` (an MLflow 3 LoggedModel). Whatever it
is, the stage gets a local path plus the run id it came from, which it records as an upstream tag,
and for a model its LoggedModel id (a run's model is its LoggedModel named ``model``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from tfqa.core.errors import UserError
from tfqa.tracking.names import ENTRY_POINT_TAG, ENTRY_POINT_TAGS, MODEL_ARTIFACT
from tfqa.tracking.queries import client

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Resolved:
    path: Path
    run_id: str | None
    """The MLflow run that produced it (None for a plain local path)."""
    model_version: str | None = None
    """``name/version`` when it came from the Model Registry."""
    model_id: str | None = None
    """The LoggedModel it is (None for a plain folder or a run's artifact folder)."""


def is_run_id(ref: str) -> bool:
    return bool(_RUN_ID.match(ref))


def resolve_model_version(ref: str):
    """``models:/name@alias`` or ``models:/name/version`` -> the ModelVersion (clear error if absent)."""
    from mlflow.exceptions import MlflowException

    body = ref[len("models:/") :]
    c = client()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return c.get_model_version_by_alias(name, alias)
        name, version = body.rsplit("/", 1)
        return c.get_model_version(name, version)
    except MlflowException as exc:
        raise LookupError(f"{ref}: no such registered model version or alias ({exc.message})") from None


def is_logged_model_id(body: str) -> bool:
    """``m-<hex>``: what MLflow 3 calls a LoggedModel (``models:/<model_id>``)."""
    return bool(re.fullmatch(r"m-[0-9a-f]{32}", body))


def version_model_id(mv) -> str | None:
    """The LoggedModel a registry version was created from: its ``model_id``, which MLflow's SQL
    registry does not keep, else the ``models:/<model_id>`` of its source (None for a version
    made from a run's artifact folder)."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    body = str(mv.source or "")[len("models:/") :] if str(mv.source or "").startswith("models:/") else ""
    return body if is_logged_model_id(body) else None


def run_logged_model(run_id: str, name: str = MODEL_ARTIFACT):
    """The run's newest READY LoggedModel called ``name``, else its newest one of any status,
    else None (runs logged before LoggedModels keep a ``model`` artifact folder instead)."""
    c = client()
    run = c.get_run(run_id)
    models = c.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
    )
    if not models:
        return None
    models = sorted(models, key=lambda m: m.creation_timestamp, reverse=True)
    return next((m for m in models if str(m.status) == "READY"), models[0])


def download_logged_model(model_id: str, dst: Path | None = None) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=str(dst) if dst else None))


def download_run_artifact(run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst) if dst else None)
    )


def run_tag(run_id: str, tag: str) -> str:
    run = client().get_run(run_id)
    value = run.data.tags.get(tag)
    if value is None:
        raise LookupError(f"run {run_id} has no tag {tag!r}: is it the right kind of run?")
    return value


def stage_of(run) -> str | None:
    """The stage a run is of: its ``tfqa.stage`` tag, else the entry point ``mlflow run`` tagged
    it with (a stage refused before it could tag its run)."""
    tags = run.data.tags
    return next((tags[t] for t in reversed(ENTRY_POINT_TAGS) if tags.get(t)), None)


def require_stage(run, stages: Collection[str], what: str, *, refused_as: str = "") -> str:
    """The run's stage; a run of another stage than ``stages`` is refused naming what it is:
    "run X is a validate run (entry point validate), not a training run" (``refused_as`` added)."""
    stage = stage_of(run)
    if stage in stages:
        return stage
    if stage is None:
        raise UserError(
            f"run {run.info.run_id} is not a {what} run: it has no tfqa.stage tag (not a tfqa stage's run){refused_as}"
        )
    entry_point = run.data.tags.get(ENTRY_POINT_TAG) or stage
    raise UserError(f"run {run.info.run_id} is a {stage} run (entry point {entry_point}), not a {what} run{refused_as}")


def resolve_model(ref: str, artifact_path: str = MODEL_ARTIFACT) -> Resolved:
    """A local directory holding an MLflow model logged by tfqa (or a plain model dir)."""
    if ref.startswith("models:/") and is_logged_model_id(ref[len("models:/") :]):
        from mlflow.exceptions import MlflowException

        model_id = ref[len("models:/") :]
        try:
            lm = client().get_logged_model(model_id)
        except MlflowException as exc:
            raise LookupError(f"{ref}: no such logged model ({exc.message})") from None
        return Resolved(download_logged_model(model_id), lm.source_run_id, None, model_id)
    if ref.startswith("models:/"):
        mv = resolve_model_version(ref)
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}"))
        return Resolved(local, mv.run_id, f"{mv.name}/{mv.version}", version_model_id(mv))
    run_id, path = None, artifact_path
    if ref.startswith("runs:/"):
        run_id, _, given = ref[len("runs:/") :].partition("/")
        path = given or artifact_path
    elif is_run_id(ref) and not Path(ref).exists():
        run_id = ref
    if run_id is not None:
        lm = run_logged_model(run_id, path) if "/" not in path else None
        if lm is not None:
            return Resolved(download_logged_model(lm.model_id), run_id, None, lm.model_id)
        return Resolved(download_run_artifact(run_id, path), run_id)
    path = Path(ref)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {ref} (expected a directory, a run id, runs:/ or models:/ URI)")
    return Resolved(path, None)
