"""The tracking server's client, and the lookups of runs and experiments the stages and the
pipeline make: every ``MlflowClient`` of tfqa is made here."""

from __future__ import annotations

from tfqa.tracking.names import STAGE_TAG


def client():
    """An ``MlflowClient`` on ``$MLFLOW_TRACKING_URI``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def get_run(run_id: str):
    return client().get_run(run_id)


def run_tags(run_id: str) -> dict[str, str]:
    return get_run(run_id).data.tags


def run_metrics(run_id: str) -> dict[str, float]:
    """The latest value of each of the run's metrics."""
    return get_run(run_id).data.metrics


def run_experiment_id(run_id: str) -> str:
    return get_run(run_id).info.experiment_id


def experiment_name(experiment_id: str) -> str:
    return client().get_experiment(experiment_id).name


def set_run_tag(run_id: str, key: str, value: str) -> None:
    client().set_tag(run_id, key, value)


def stage_runs(experiment_id: str, stage: str, max_results: int) -> list:
    """The newest ``max_results`` runs tagged ``tfqa.stage`` = ``stage``, any status, newest first."""
    return client().search_runs(
        [experiment_id], f"tags.`{STAGE_TAG}` = '{stage}'", order_by=["attributes.start_time DESC"], max_results=max_results
    )
