"""Reusing a stage's finished run instead of running it again: the code version a run is keyed
by, finding a run that can stand in, and the marker run a reused step leaves under its pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfqa.tracking.names import CODE_VERSION_TAG, ENTRY_POINT_TAGS, NOTE_TAG, PARENT_RUN_TAG, REUSED_RUN_TAG, STEP_TAG
from tfqa.tracking.queries import client


def code_version() -> str:
    """A hash of the code that decides what a stage produces: the ``tfqa`` package, the entry
    points and ``MLproject``. Unlike the git commit it ignores docs and tests, so editing the
    README does not invalidate every finished run; unlike the commit it sees uncommitted edits."""
    import hashlib

    root = Path(__file__).resolve().parents[2]
    h = hashlib.blake2b(digest_size=12)
    files = sorted([*root.joinpath("tfqa").rglob("*.py"), *root.joinpath("entrypoints").glob("*.py"), root / "MLproject"])
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def find_finished_run(experiment: str, entry_point: str, params: Mapping[str, Any], code_version: str) -> str | None:
    """The newest FINISHED run of ``entry_point`` in ``experiment`` that can stand in for a new one.

    It must carry every given param with the same value (compared as strings; extra params are
    fine) and the ``tfqa.code_version`` tag ``code_version``. The entry point is read from
    ``mlflow.project.entryPoint`` (set by ``mlflow run``) or ``tfqa.stage``. Returns the run id,
    or None.
    """
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    want_params = {str(k): str(v) for k, v in params.items()}
    token = None
    while True:
        page = c.search_runs(
            [exp.experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=500,
            page_token=token,
        )
        for run in page:
            t, p = run.data.tags, run.data.params
            if not any(t.get(name) == entry_point for name in ENTRY_POINT_TAGS):
                continue
            if t.get(CODE_VERSION_TAG) != code_version:
                continue
            if all(p.get(k) == v for k, v in want_params.items()):
                return run.info.run_id
        token = page.token
        if not token:
            return None


def record_reuse(reused_run_id: str, parent_run_id: str, run_name: str, step: str) -> str:
    """A small FINISHED run under ``parent_run_id`` that stands for a reused stage: named
    ``<run name> (reused)``, tagged ``tfqa.reused_run`` with the run it stands for and a note
    linking to it. It carries no ``tfqa.stage`` tag, so no search for a stage's runs finds it.
    Returns its id."""
    c = client()
    reused = c.get_run(reused_run_id)
    exp = reused.info.experiment_id
    note = (
        f"Step `{step}` of this pipeline reused the finished run "
        f"[{reused.info.run_name or reused_run_id}](#/experiments/{exp}/runs/{reused_run_id}) ({reused_run_id})."
    )
    run = c.create_run(
        exp,
        run_name=f"{run_name} (reused)",
        tags={PARENT_RUN_TAG: parent_run_id, REUSED_RUN_TAG: reused_run_id, STEP_TAG: step, NOTE_TAG: note},
    )
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
