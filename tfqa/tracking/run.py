"""Runs as the stages see them: opening or re-attaching a run, and a logger that keeps training
alive when the tracking server goes away (its calls are queued and delivered in the background by
``tfqa.tracking.delivery``).

Consequences for callers:

* Artifacts are uploaded from the local path *later*. Keep the file (checkpoints included) until
  ``flush()`` returns True or the run has ended; a file deleted before its upload (e.g. rotated
  out by ``keep_last``) is reported and skipped.
* Reading back what this run logged (its tags, its artifacts) within the run needs ``flush()``
  first.
* If the process is killed outright (SIGKILL, ``os._exit``) whatever is still queued is lost;
  exceptions and Ctrl-C go through the context manager, which flushes.

``log_model`` makes an MLflow 3 LoggedModel of the run from a saved MLflow model folder; at run
end the run's latest metrics under the model's prefixes (``dev/``, ``squad/``) are logged on the
model too. ``log_inputs`` records datasets (``mlflow.log_input``) and models the run consumed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tfqa.core.stopping import StopRequested
from tfqa.tracking.delivery import (
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    TERMINAL_STATUSES,
    DeleteArtifacts,
    DeleteModel,
    Delivery,
    Inputs,
    ModelJob,
    Upload,
    http_defaults,
    truncate,
)
from tfqa.tracking.names import CODE_VERSION_TAG, ERROR_TAG, PARAM_CONFLICT_TAG_PREFIX, PARENT_RUN_TAG, STOP_TAG
from tfqa.tracking.queries import client as _client
from tfqa.tracking.reuse import code_version
from tfqa.tracking.system import SystemMetrics, next_system_metrics_step, system_metrics_wanted

_log = logging.getLogger(__name__)

# The pipeline names its parent run here for the stage runs it launches (tfqa.pipeline.steps); a stage
# that finds it nests its run under that parent.
PARENT_RUN_ENV = "TFQA_PARENT_RUN_ID"


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings / dataclass instances -> ``{"a.b.c": "value"}`` with string values."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping or a dataclass instance, not {type(params).__name__}")
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


class RunLogger:
    """Logs into one MLflow run without ever letting the tracking server stall or kill the caller.

    Thread-safe. Calls enqueue and return at once; a background thread delivers. See the module
    docstring for what callers must keep in mind (local files, ``flush`` before reading back).
    """

    def __init__(
        self,
        client,
        run_id: str,
        *,
        existing_params: Mapping[str, str] | None = None,
        max_buffered_metrics: int = 100_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 15.0,
    ):
        self.run_id = run_id
        self._delivery = Delivery(
            client,
            run_id,
            known_params=existing_params,
            max_buffered_metrics=max_buffered_metrics,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
        )
        self._spool_lock = threading.Lock()
        self._spool: Path | None = None

    @property
    def dropped_metrics(self) -> int:
        """Metric points dropped, oldest first, because the buffer was full during an outage."""
        return self._delivery.dropped_metrics

    def log_params(self, params: Any) -> None:
        """Flattened (dotted keys), stringified, truncated to MLflow's limit. Re-logging a param
        with its current value is a no-op; a *different* value is not allowed by MLflow, so it is
        kept as a ``tfqa.param_conflict.<key>`` tag and warned about instead of failing the run."""
        flat = {key: truncate(value, MAX_PARAM_VAL_LENGTH, f"param {key!r}") for key, value in flatten_params(params).items()}
        conflicts = self._delivery.add_params(flat)
        for key, (known, value) in conflicts.items():
            _log.warning(
                "run %s: param %r was logged as %r; keeping it, new value %r goes to tag %s%s",
                self.run_id,
                key,
                known,
                value,
                PARAM_CONFLICT_TAG_PREFIX,
                key,
            )
        if conflicts:
            self.set_tags({f"{PARAM_CONFLICT_TAG_PREFIX}{k}": v for k, (_, v) in conflicts.items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        step = int(step or 0)
        points = []
        for key, value in metrics.items():
            try:
                points.append(Metric(key=str(key), value=float(value), timestamp=timestamp, step=step))
            except (TypeError, ValueError):
                _log.warning("metric %r=%r is not a number; skipped", key, value)
        self._delivery.add_metrics(points)

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._delivery.add_tags(
            {str(key): truncate(str(value), MAX_TAG_VAL_LENGTH, f"tag {key!r}") for key, value in tags.items()}
        )

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue a file (or a directory, uploaded under its own name) for upload; keep it until flushed."""
        self._delivery.add_job(Upload(_existing(local_path), artifact_path))

    def log_artifacts(
        self, local_dir: str | os.PathLike, artifact_path: str | None = None, *, slot: str | None = None, snapshot: bool = False
    ) -> None:
        """Queue a directory's contents for upload under ``artifact_path``; keep them until flushed.

        ``slot``: a newer upload in the same slot replaces this one while it still waits.
        ``snapshot``: the folder was made for this upload; it is removed once uploaded (or replaced)."""
        path = _existing(local_dir)
        if not path.is_dir():
            raise NotADirectoryError(f"log_artifacts needs a directory: {path}")
        self._delivery.add_job(Upload(path, artifact_path, contents=True, slot=slot, snapshot=snapshot))

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        """JSON (or YAML for .yaml/.yml) under ``artifact_file``, written to a spool file now."""
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(dictionary, default_flow_style=False)
        else:
            text = json.dumps(dictionary, indent=2, default=str)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._spool_lock:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix=f"tfqa-spool-{self.run_id[:8]}-"))
            spool = self._spool
        local = spool / uuid.uuid4().hex / Path(artifact_file).name
        local.parent.mkdir(parents=True)
        local.write_text(text, encoding="utf-8")
        parent = str(Path(artifact_file).parent).replace(os.sep, "/")
        self._delivery.add_job(Upload(local, None if parent in ("", ".") else parent, spooled=True))

    def log_model(
        self,
        local_dir: str | os.PathLike,
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        model_type: str | None = None,
        step: int = 0,
        metric_prefixes: Iterable[str] = (),
        metrics: Mapping[str, float] | None = None,
    ) -> ModelJob:
        """Queue a saved MLflow model folder as a LoggedModel ``name`` of this run, with its own
        ``params`` (flattened like ``log_params``) and ``tags``; keep the folder until flushed.

        At run end the run's latest value of every metric whose name starts with one of
        ``metric_prefixes`` is logged on the model as well, whenever it was logged; ``metrics`` are
        logged on it at ``step`` as soon as it is READY. Returns a handle for ``delete_model``."""
        path = _existing(local_dir)
        if not (path / "MLmodel").is_file():
            raise FileNotFoundError(f"not an MLflow model folder (no MLmodel file): {path}")
        job = ModelJob(
            path,
            name,
            {k: truncate(v, MAX_PARAM_VAL_LENGTH, f"model param {k!r}") for k, v in flatten_params(params or {}).items()},
            {str(k): truncate(str(v), MAX_TAG_VAL_LENGTH, f"model tag {k!r}") for k, v in (tags or {}).items()},
            model_type,
            int(step),
            tuple(metric_prefixes),
            dict(metrics or {}),
        )
        self._delivery.add_job(job)
        return job

    def delete_artifacts(self, artifact_path: str) -> None:
        """Remove the run's artifact folder ``artifact_path`` once everything queued before is uploaded."""
        self._delivery.add_job(DeleteArtifacts(artifact_path))

    def delete_model(self, handle: ModelJob, local: str | os.PathLike | None = None) -> None:
        """Delete (after its upload, in queue order) the LoggedModel ``log_model`` returned
        ``handle`` for, and then its local folder ``local``."""
        self._delivery.add_job(DeleteModel(handle, Path(local) if local is not None else None))

    def log_inputs(self, datasets: Iterable[Any] = (), model_ids: Iterable[str] = ()) -> None:
        """Record what the run read: ``mlflow.entities.DatasetInput``s (what ``mlflow.log_input``
        logs: name, digest, source, profile, context tag) and LoggedModel ids it consumed."""
        job = Inputs(list(datasets), [m for m in model_ids if m])
        if job.datasets or job.model_ids:
            self._delivery.add_job(job)

    def logged_model_ids(self) -> list[str]:
        """The ids of the LoggedModels this logger has created so far (READY or not)."""
        return self._delivery.logged_model_ids()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is delivered (or dropped as undeliverable).

        Returns False when ``timeout`` ran out first; nothing is lost then, it stays queued."""
        return self._delivery.flush(timeout)

    def flush_metrics(self, timeout: float | None = None) -> bool:
        """``flush`` for metric points, params and tags only (they travel in the same batches):
        queued artifact uploads do not hold it up, one upload already in flight does."""
        return self._delivery.flush_metrics(timeout)

    def unsent_metrics(self) -> list[dict[str, Any]]:
        """The metric points not yet confirmed by the server, as plain dicts (for a checkpoint)."""
        return [
            {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in self._delivery.unsent_metrics()
        ]

    def log_metric_points(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Queue points from ``unsent_metrics`` again, timestamps kept: MLflow stores a point
        identical to one it has (key, value, step, timestamp) once, so a re-send is harmless."""
        from mlflow.entities import Metric

        self._delivery.add_metrics(
            [
                Metric(key=str(p["key"]), value=float(p["value"]), timestamp=int(p["timestamp"]), step=int(p["step"]))
                for p in points
            ]
        )

    def pending(self) -> dict[str, int]:
        """What is still queued, by kind (for tests and progress messages)."""
        return self._delivery.pending()

    @property
    def online(self) -> bool:
        """False while the last delivery attempt failed for an outage."""
        return self._delivery.online

    def close(self, status: str = "FINISHED", timeout: float | None = 120.0) -> bool:
        """Deliver everything, then mark the run ``status``; give up after ``timeout`` seconds."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}")
        delivered = self._delivery.close(status, timeout)
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
        return delivered


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"nothing to log at {p}")
    return p.resolve()


class NullRunLogger:
    """What ranks other than 0 get under torch distributed: the same methods, nothing logged."""

    def __init__(self, run_id: str = ""):
        self.run_id = run_id
        self.dropped_metrics = 0
        self.online = True

    def log_params(self, params: Any) -> None: ...
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def log_metric(self, key: str, value: Any, step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def set_tag(self, key: str, value: Any) -> None: ...
    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None, **kwargs: Any) -> None: ...
    def log_dict(self, dictionary: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_model(self, local_dir: str | os.PathLike, **kwargs: Any) -> None: ...
    def delete_model(self, handle: Any, local: Any = None) -> None: ...
    def delete_artifacts(self, artifact_path: str) -> None: ...
    def log_inputs(self, datasets: Iterable[Any] = (), model_ids: Iterable[str] = ()) -> None: ...

    def logged_model_ids(self) -> list[str]:
        return []

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def flush_metrics(self, timeout: float | None = None) -> bool:
        return True

    def unsent_metrics(self) -> list[dict[str, Any]]:
        return []

    def log_metric_points(self, points: Iterable[Mapping[str, Any]]) -> None: ...

    def pending(self) -> dict[str, int]:
        return {"params": 0, "tags": 0, "metrics": 0, "artifacts": 0, "models": 0, "inputs": 0, "inflight": 0}


Tracker = RunLogger | NullRunLogger


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _share_run_id(run_id: str) -> str:
    """Rank 0's run id for every rank, when a process group is up (every rank calls it once)."""
    if "torch.distributed" not in sys.modules:
        return run_id
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return run_id
    box = [run_id]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _experiment_id(client, name: str | None) -> str:
    from mlflow.exceptions import MlflowException

    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name:
        return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name)
        except MlflowException as e:  # another process created it between the two calls
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {name!r} is deleted; restore it or pick another name")
    return exp.experiment_id


def run_name(entry_point: str, variant: str | None = None) -> str:
    """What a stage's run is called in the runs table: ``train_albert-v2``, ``promote-v3``,
    ``validate``; ``train_bert_base`` (its one variant needs no number)."""
    variant = str(variant or "")
    return f"{entry_point}-v{variant}" if variant and variant != "bert_base" else entry_point


def is_generated_name(name: str | None) -> bool:
    """True for a name MLflow made up (``overjoyed-hen-33``): one that nobody chose."""
    import re

    from mlflow.utils.name_utils import _GENERATOR_NOUNS, _GENERATOR_PREDICATES

    if not name:
        return True
    m = re.fullmatch(r"([a-z]+)-([a-z]+)-(\d+)", name)
    return bool(m) and m.group(1) in _GENERATOR_PREDICATES and m.group(2) in _GENERATOR_NOUNS


@contextmanager
def start_run(
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    resume_run_id: str | None = None,
    log_system_metrics: bool | None = None,
    flush_timeout: float = 120.0,
    max_buffered_metrics: int = 100_000,
) -> Iterator[Tracker]:
    """Open a run (or re-attach to one) and yield its :class:`RunLogger`.

    Re-attaches to ``resume_run_id``, else to ``$MLFLOW_RUN_ID`` (how ``mlflow run`` hands its run
    to the entry point; the run is set RUNNING again, ``tags`` are added, and ``run_name`` replaces
    a name MLflow made up, never one somebody gave), else creates a run in ``experiment`` / ``$MLFLOW_EXPERIMENT_NAME`` /
    ``$MLFLOW_EXPERIMENT_ID`` / the default experiment, on ``$MLFLOW_TRACKING_URI``. On exit the run
    is FINISHED, FAILED on an exception (which propagates; its text goes to tag ``tfqa.error``) or
    KILLED on KeyboardInterrupt, after everything queued was delivered (at most ``flush_timeout``
    seconds; 10 s after Ctrl-C). Ranks other than 0 (``$RANK``) get a :class:`NullRunLogger`.
    System metrics are logged when psutil is importable unless ``log_system_metrics=False`` (or
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false``). With ``$TFQA_PARENT_RUN_ID`` (set by the
    pipeline for its stages) the run is nested under that run.
    """
    given_id = resume_run_id or os.environ.get("MLFLOW_RUN_ID") or ""
    if _rank() != 0:
        # Rank 0's run, always: on other nodes of a multi-node job no `mlflow run` made one.
        run_id = _share_run_id(given_id)
        try:
            yield NullRunLogger(run_id)
        except (KeyboardInterrupt, StopRequested):
            raise
        except BaseException as e:
            # Rank 0 may never learn why (torchrun stops it with SIGTERM): the failing rank says
            # so on the run itself, and rank 0 keeps FAILED when it closes.
            if not (isinstance(e, SystemExit) and e.code in (None, 0)):
                _record_rank_failure(run_id, e)
            raise
        return

    from mlflow.tracking.context.registry import resolve_tags

    with http_defaults():
        client = _client()
        str_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        str_tags.setdefault(CODE_VERSION_TAG, code_version())
        parent = os.environ.get(PARENT_RUN_ENV, "")
        if parent and parent != given_id:
            str_tags.setdefault(PARENT_RUN_TAG, parent)
        if given_id:
            run = client.get_run(given_id)
            rename = run_name if run_name and is_generated_name(run.info.run_name) else None
            if run.info.status != "RUNNING" or rename:
                client.update_run(given_id, status="RUNNING", name=rename)
        else:
            run = client.create_run(_experiment_id(client, experiment), tags=resolve_tags(str_tags), run_name=run_name)
        _share_run_id(run.info.run_id)
        logger = RunLogger(client, run.info.run_id, existing_params=run.data.params, max_buffered_metrics=max_buffered_metrics)
        if given_id and str_tags:
            logger.set_tags(str_tags)
        sampler = None
        if system_metrics_wanted(log_system_metrics):
            try:
                sampler = SystemMetrics(logger, next_system_metrics_step(client, run) if given_id else 0)
            except Exception:
                _log.warning("could not start system metrics", exc_info=True)

        status, timeout = "FINISHED", flush_timeout
        try:
            yield logger
        except (KeyboardInterrupt, StopRequested) as e:
            status, timeout = "KILLED", min(flush_timeout, 10.0)
            if isinstance(e, StopRequested):
                logger.set_tags({STOP_TAG: str(e)})
            raise
        except SystemExit as e:
            if e.code not in (None, 0):
                status = "FAILED"
                logger.set_tags({ERROR_TAG: f"SystemExit({e.code!r})"})
            raise
        except BaseException as e:
            status = "FAILED"
            # A rank that failed first said why; what rank 0 sees then is only its echo
            # ("Connection closed by peer").
            if not _failed_on_another_rank(client, run.info.run_id):
                logger.set_tags({ERROR_TAG: failure_tag(e)})
            raise
        finally:
            if sampler is not None:
                sampler.stop()
            if status != "FINISHED" and _failed_on_another_rank(client, run.info.run_id):
                status = "FAILED"
            logger.close(status, timeout)


def _record_rank_failure(run_id: str, exc: BaseException) -> None:
    """A rank other than 0 failed: its error on the run (tag ``tfqa.error``) and the run FAILED."""
    if not run_id:
        return
    with http_defaults():
        try:
            c = _client()
            c.set_tag(run_id, ERROR_TAG, truncate(f"rank {_rank()}: {failure_tag(exc)}", MAX_TAG_VAL_LENGTH, "the error tag"))
            c.set_terminated(run_id, "FAILED")
        except Exception as e:  # the server may be what is failing: the rank's own traceback still goes out
            _log.warning("could not record rank %d's failure on run %s: %s", _rank(), run_id, e)


def _failed_on_another_rank(client, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.status == "FAILED"
    except Exception:  # noqa: BLE001 - unreachable server: close as this rank saw it
        return False


def failure_tag(exc: BaseException) -> str:
    """What tag ``tfqa.error`` of a failed run says."""
    return f"{type(exc).__name__}: {exc}"


def record_failure(exc: BaseException) -> None:
    """Tag the run ``mlflow run`` handed this process (``$MLFLOW_RUN_ID``) with the error that
    stops it, for errors raised before :func:`start_run` re-attached to it (after, ``start_run``
    has tagged it already and the same value again changes nothing). Never raises."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id or _rank() != 0:
        return
    with http_defaults():
        try:
            _client().set_tag(run_id, ERROR_TAG, truncate(failure_tag(exc), MAX_TAG_VAL_LENGTH, "the error tag"))
        except Exception as e:  # the server may be what is failing: the one-line message still goes out
            _log.warning("could not record the error on run %s: %s", run_id, e)
