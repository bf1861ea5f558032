"""The one place that talks to MLflow for runs: opening or re-attaching a run, and a logger that
keeps training alive when the tracking server goes away.

Every logging call is queued and delivered by one background thread through ``MlflowClient`` with
the run id spelled out (the fluent active-run global is never used, so the thread needs no
context). While the server is unreachable the queue keeps everything - metric points keep the
step and timestamp they were logged with - and the thread retries with back-off; when the server
returns the backlog goes out in order. A training step therefore never waits on the network.

Consequences for callers:

* Artifacts are uploaded from the local path *later*. Keep the file (checkpoints included) until
  ``flush()`` returns True or the run has ended; a file deleted before its upload (e.g. rotated
  out by ``keep_last``) is reported and skipped.
* Reading back what this run logged (its tags, its artifacts) within the run needs ``flush()``
  first.
* If the process is killed outright (SIGKILL, ``os._exit``) whatever is still queued is lost;
  exceptions and Ctrl-C go through the context manager, which flushes.

Models and datasets travel the same queue. ``log_model`` turns a saved MLflow model folder into an
MLflow 3 LoggedModel of the run (create, link as the run's output, upload, mark READY: what
``mlflow.<flavor>.log_model(name=...)`` does), one step at a time so that a retry after an outage
resumes at the step that failed instead of creating a second model; at run end the run's latest
metrics under the model's prefixes (``dev/``, ``squad/``) are logged on the model too.
``log_inputs`` records datasets (``mlflow.log_input``) and models the run consumed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

TAG_PREFIX = "tfqa."
UPSTREAM_TAG_PREFIX = "tfqa.upstream."
PARAM_CONFLICT_TAG_PREFIX = "tfqa.param_conflict."
ERROR_TAG = "tfqa.error"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
CODE_VERSION_TAG = "tfqa.code_version"
# Set by `mlflow run` on the runs it creates; tfqa's own stages also tag themselves tfqa.stage.
ENTRY_POINT_TAGS = ("mlflow.project.entryPoint", "tfqa.stage")
MODEL_ID_TAG = "tfqa.model_id"
"""The run's LoggedModel, tagged once it is READY."""
LOG_TOKEN_TAG = "tfqa.log_token"
"""On a LoggedModel: which ``log_model`` call made it, so a retry finds it instead of making another."""
UNKNOWN_COMMIT = "unknown"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"
REUSED_RUN_TAG = "tfqa.reused_run"
# The pipeline names its parent run here for the stage runs it launches (tfqa.pipeline.steps); a stage
# that finds it nests its run under that parent.
PARENT_RUN_ENV = "TFQA_PARENT_RUN_ID"

# MLflow's own limits (mlflow.utils.validation); the server rejects anything beyond them.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000

# MLflow retries each HTTP request 7 times with exponential back-off (minutes in all) and waits
# up to 120 s per request. The logger retries on its own, so while a run is open the client is
# made to give up fast: a dead server costs the background thread ~3 s per attempt instead of
# ~4 min, and the backlog goes out within a second or two of the server coming back. Only unset
# variables are set, and only for the life of the run, so an operator's choice wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


# ---------------------------------------------------------------------------------------- helpers
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


def _truncate(value: str, limit: int, what: str) -> str:
    if len(value) <= limit:
        return value
    _log.warning("%s is %d characters; MLflow keeps at most %d, truncating", what, len(value), limit)
    return value[:limit]


def git_commit(repo: str | os.PathLike | None = None) -> str:
    """HEAD of the git checkout holding ``repo`` (default: the one holding this package), or "unknown"."""
    where = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else UNKNOWN_COMMIT


def standard_tags(stage: str, variant: str | None = None, backbone: str | None = None,
                  data_fingerprint: str | None = None, upstream_run_ids: Mapping[str, str] | None = None,
                  *, commit: str | None = None) -> dict[str, str]:
    """The tags every tfqa run carries; ``commit`` defaults to :func:`git_commit`."""
    tags = {f"{TAG_PREFIX}stage": stage}
    for name, value in (("variant", variant), ("backbone", backbone), ("data_fingerprint", data_fingerprint)):
        if value is not None and value != "":
            tags[f"{TAG_PREFIX}{name}"] = str(value)
    for name, run_id in (upstream_run_ids or {}).items():
        tags[f"{UPSTREAM_TAG_PREFIX}{name}"] = str(run_id)
    commit = git_commit() if commit is None else commit
    if commit and commit != UNKNOWN_COMMIT:
        tags[GIT_COMMIT_TAG] = commit
    return tags


def _is_permanent(exc: BaseException) -> bool:
    """True when retrying cannot help (bad request, missing local file); False for outages."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
    elif isinstance(exc, requests.RequestException):
        return False  # connection refused / reset / timeout: requests' errors are OSErrors too
    elif isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError, TypeError)):
        return True
    else:
        return False
    return 400 <= status < 500 and status not in (408, 429)


@contextmanager
def _http_defaults() -> Iterator[None]:
    added = [k for k in HTTP_DEFAULTS if k not in os.environ]
    for k in added:
        os.environ[k] = HTTP_DEFAULTS[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def stamp_mlmodel(model_dir: Path, model_id: str, run_id: str, artifact_location: str) -> None:
    """Write the LoggedModel's identity into a saved model's ``MLmodel`` (as ``log_model`` does
    when it saves the model after creating the LoggedModel)."""
    from mlflow.models import Model

    path = Path(model_dir) / "MLmodel"
    m = Model.load(str(path))
    m.model_id, m.model_uuid, m.run_id, m.artifact_path = model_id, model_id, run_id, artifact_location
    m.save(str(path))


# ------------------------------------------------------------------------------------- the queue
@dataclasses.dataclass
class _Batch:
    # Metric entities, ("p", key, value) params and ("t", key, value) tags, in one list so that a
    # rejected batch can be bisected and a failed one requeued without caring about kinds.
    items: list


@dataclasses.dataclass
class _Upload:
    local: Path
    artifact_path: str | None
    contents: bool = False  # a directory whose *contents* go under artifact_path (log_artifacts)
    spooled: bool = False  # a file this logger wrote (log_dict / log_text): removed once uploaded


@dataclasses.dataclass
class _ModelJob:
    """One ``log_model`` call. Each step is done once; the job keeps what it has done, so a retry
    after an outage picks up at the failed step (one LoggedModel per call, linked once)."""

    local: Path
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    model_type: str | None
    step: int
    metric_prefixes: tuple[str, ...]
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    model_id: str | None = None
    artifact_location: str = ""
    created_tried: bool = False
    link_tried: bool = False
    linked: bool = False
    uploaded: bool = False
    ready: bool = False


@dataclasses.dataclass
class _ModelMetrics:
    """At run end: the run's latest metrics under ``model.metric_prefixes``, logged on the model."""

    model: _ModelJob


@dataclasses.dataclass
class _Inputs:
    datasets: list  # mlflow.entities.DatasetInput
    model_ids: list[str]


@dataclasses.dataclass
class _Terminate:
    status: str


def _describe(item: object) -> str:
    if isinstance(item, tuple):
        kind, key, value = item
        return f"{'param' if kind == 'p' else 'tag'} {key!r}={value[:80]!r}"
    return f"metric {item.key!r}={item.value} (step {item.step})"


class _Transient(Exception):
    """A delivery failed for a reason that may pass; carries what is still undelivered."""

    def __init__(self, items: list, cause: BaseException):
        super().__init__(str(cause))
        self.items = items
        self.cause = cause


class RunLogger:
    """Logs into one MLflow run without ever letting the tracking server stall or kill the caller.

    Thread-safe. Calls enqueue and return at once; a background thread delivers. See the module
    docstring for what callers must keep in mind (local files, ``flush`` before reading back).
    """

    def __init__(self, client, run_id: str, *, existing_params: Mapping[str, str] | None = None,
                 max_buffered_metrics: int = 100_000, retry_initial_s: float = 0.5, retry_max_s: float = 15.0):
        self._client = client
        self.run_id = run_id
        self.max_buffered_metrics = max_buffered_metrics
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._cond = threading.Condition()
        self._known_params: dict[str, str] = dict(existing_params or {})
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._metrics: deque = deque()
        self._jobs: deque[_Upload | _ModelJob | _ModelMetrics | _Inputs] = deque()
        self._models: list[_ModelJob] = []
        self._experiment_id: str | None = None
        self._terminal: _Terminate | None = None
        self._inflight: object | None = None
        self._kick = False
        self._flushers = 0
        self._stopping = False
        self._abandon = False
        self._dead = False
        self._offline_since: float | None = None
        self._warned_full = False
        self._spool: Path | None = None
        self.dropped_metrics = 0
        self._thread = threading.Thread(target=self._loop, name=f"tfqa-tracking-{run_id[:8]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ public API
    def log_params(self, params: Any) -> None:
        """Flattened (dotted keys), stringified, truncated to MLflow's limit. Re-logging a param
        with its current value is a no-op; a *different* value is not allowed by MLflow, so it is
        kept as a ``tfqa.param_conflict.<key>`` tag and warned about instead of failing the run."""
        flat = flatten_params(params)
        conflicts: dict[str, str] = {}
        with self._cond:
            for key, value in flat.items():
                value = _truncate(value, MAX_PARAM_VAL_LENGTH, f"param {key!r}")
                known = self._known_params.get(key)
                if known is None:
                    self._known_params[key] = value
                    self._params[key] = value
                elif known != value:
                    conflicts[key] = value
            self._cond.notify_all()
        for key, value in conflicts.items():
            _log.warning("run %s: param %r was logged as %r; keeping it, new value %r goes to tag %s%s",
                         self.run_id, key, self._known_params[key], value, PARAM_CONFLICT_TAG_PREFIX, key)
        if conflicts:
            self.set_tags({f"{PARAM_CONFLICT_TAG_PREFIX}{k}": v for k, v in conflicts.items()})

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
        with self._cond:
            self._metrics.extend(points)
            self._enforce_bound_locked()
            self._cond.notify_all()

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        with self._cond:
            for key, value in tags.items():
                self._tags[str(key)] = _truncate(str(value), MAX_TAG_VAL_LENGTH, f"tag {key!r}")
            self._cond.notify_all()

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_artifact(self, local_path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue a file (or a directory, uploaded under its own name) for upload; keep it until flushed."""
        self._queue_upload(_Upload(self._existing(local_path), artifact_path))

    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue a directory's contents for upload under ``artifact_path``; keep them until flushed."""
        path = self._existing(local_dir)
        if not path.is_dir():
            raise NotADirectoryError(f"log_artifacts needs a directory: {path}")
        self._queue_upload(_Upload(path, artifact_path, contents=True))

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        """JSON (or YAML for .yaml/.yml) under ``artifact_file``, written to a spool file now."""
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(dictionary, default_flow_style=False)
        else:
            text = json.dumps(dictionary, indent=2, default=str)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._cond:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix=f"tfqa-spool-{self.run_id[:8]}-"))
            spool = self._spool
        local = spool / uuid.uuid4().hex / Path(artifact_file).name
        local.parent.mkdir(parents=True)
        local.write_text(text, encoding="utf-8")
        parent = str(Path(artifact_file).parent).replace(os.sep, "/")
        self._queue_upload(_Upload(local, None if parent in ("", ".") else parent, spooled=True))

    def log_model(self, local_dir: str | os.PathLike, *, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None, model_type: str | None = None, step: int = 0,
                  metric_prefixes: Iterable[str] = ()) -> None:
        """Queue a saved MLflow model folder as a LoggedModel ``name`` of this run, with its own
        ``params`` (flattened like ``log_params``) and ``tags``; keep the folder until flushed.

        At run end the run's latest value of every metric whose name starts with one of
        ``metric_prefixes`` is logged on the model as well, whenever it was logged."""
        path = self._existing(local_dir)
        if not (path / "MLmodel").is_file():
            raise FileNotFoundError(f"not an MLflow model folder (no MLmodel file): {path}")
        job = _ModelJob(path, name,
                        {k: _truncate(v, MAX_PARAM_VAL_LENGTH, f"model param {k!r}") for k, v in flatten_params(params or {}).items()},
                        {str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH, f"model tag {k!r}") for k, v in (tags or {}).items()},
                        model_type, int(step), tuple(metric_prefixes))
        with self._cond:
            self._models.append(job)
            self._jobs.append(job)
            self._cond.notify_all()

    def log_inputs(self, datasets: Iterable[Any] = (), model_ids: Iterable[str] = ()) -> None:
        """Record what the run read: ``mlflow.entities.DatasetInput``s (what ``mlflow.log_input``
        logs: name, digest, source, profile, context tag) and LoggedModel ids it consumed."""
        job = _Inputs(list(datasets), [m for m in model_ids if m])
        if job.datasets or job.model_ids:
            self._queue_upload(job)

    def logged_model_ids(self) -> list[str]:
        """The ids of the LoggedModels this logger has created so far (READY or not)."""
        with self._cond:
            return [m.model_id for m in self._models if m.model_id]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is delivered (or dropped as undeliverable).

        Returns False when ``timeout`` ran out first; nothing is lost then, it stays queued."""
        return self._wait_until_sent(lambda: self._has_work_locked() or self._inflight is not None, timeout)

    def flush_metrics(self, timeout: float | None = None) -> bool:
        """``flush`` for metric points, params and tags only (they travel in the same batches):
        queued artifact uploads do not hold it up, one upload already in flight does."""
        return self._wait_until_sent(
            lambda: not self._dead and bool(self._metrics or self._params or self._tags or isinstance(self._inflight, _Batch)),
            timeout)

    def _wait_until_sent(self, busy: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushers += 1
            self._kick = True
            self._cond.notify_all()
            try:
                while busy():
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or not self._thread.is_alive():
                        return False
                    self._cond.wait(timeout=0.5 if left is None else min(left, 0.5))
                return True
            finally:
                self._flushers -= 1

    def unsent_metrics(self) -> list[dict[str, Any]]:
        """The metric points not yet confirmed by the server, as plain dicts (for a checkpoint)."""
        with self._cond:
            inflight = self._inflight.items if isinstance(self._inflight, _Batch) else []
            points = [m for m in inflight if not isinstance(m, tuple)] + list(self._metrics)
        return [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in points]

    def log_metric_points(self, points: Iterable[Mapping[str, Any]]) -> None:
        """Queue points from ``unsent_metrics`` again, timestamps kept: MLflow stores a point
        identical to one it has (key, value, step, timestamp) once, so a re-send is harmless."""
        from mlflow.entities import Metric

        metrics = [Metric(key=str(p["key"]), value=float(p["value"]), timestamp=int(p["timestamp"]), step=int(p["step"]))
                   for p in points]
        with self._cond:
            self._metrics.extend(metrics)
            self._enforce_bound_locked()
            self._cond.notify_all()

    def pending(self) -> dict[str, int]:
        """What is still queued, by kind (for tests and progress messages)."""
        with self._cond:
            return {**self._pending_locked(), "inflight": int(self._inflight is not None)}

    @property
    def online(self) -> bool:
        """False while the last delivery attempt failed for an outage."""
        with self._cond:
            return self._offline_since is None

    def close(self, status: str = "FINISHED", timeout: float | None = 120.0) -> bool:
        """Deliver everything, then mark the run ``status``; give up after ``timeout`` seconds."""
        if status not in _TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {_TERMINAL_STATUSES}")
        with self._cond:
            # After every model job (the queue is in order), before the final status.
            self._jobs.extend(_ModelMetrics(m) for m in self._models if m.metric_prefixes)
            self._terminal = _Terminate(status)
            self._stopping = True
            self._cond.notify_all()
        delivered = self.flush(timeout)
        with self._cond:
            left = {k: v for k, v in self._pending_locked().items() if v}
            self._abandon = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        if not delivered:
            _log.error("run %s: tracking server unreachable at run end; not delivered: %s. "
                       "Local outputs are unaffected.", self.run_id, left or "the final status")
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)
        return delivered

    # ------------------------------------------------------------------------------- internals
    @staticmethod
    def _existing(path: str | os.PathLike) -> Path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"nothing to log at {p}")
        return p.resolve()

    def _queue_upload(self, upload: _Upload | _Inputs) -> None:
        with self._cond:
            self._jobs.append(upload)
            self._cond.notify_all()

    def _pending_locked(self) -> dict[str, int]:
        kinds = [type(j) for j in self._jobs]
        return {"params": len(self._params), "tags": len(self._tags), "metrics": len(self._metrics),
                "artifacts": kinds.count(_Upload), "models": kinds.count(_ModelJob) + kinds.count(_ModelMetrics),
                "inputs": kinds.count(_Inputs)}

    def _has_work_locked(self) -> bool:
        if self._dead:
            return False
        return bool(self._params or self._tags or self._metrics or self._jobs or self._terminal)

    def _enforce_bound_locked(self) -> None:
        # Only metric points are dropped: params and tags are few and define the run.
        excess = len(self._metrics) - self.max_buffered_metrics
        if excess <= 0:
            return
        for _ in range(excess):
            self._metrics.popleft()
        self.dropped_metrics += excess
        if not self._warned_full:
            self._warned_full = True
            _log.warning("run %s: %d metric points buffered while the tracking server is unreachable; "
                         "dropping the oldest from now on", self.run_id, self.max_buffered_metrics)

    def _take_locked(self) -> object | None:
        if self._params or self._tags or self._metrics:
            params = [("p", k, self._params.pop(k)) for k in list(self._params)[:MAX_PARAMS_TAGS_PER_BATCH]]
            tags = [("t", k, self._tags.pop(k)) for k in list(self._tags)[:MAX_PARAMS_TAGS_PER_BATCH]]
            room = MAX_ENTITIES_PER_BATCH - len(params) - len(tags)
            metrics = [self._metrics.popleft() for _ in range(min(room, len(self._metrics)))]
            return _Batch(params + tags + metrics)
        if self._jobs:
            return self._jobs.popleft()
        return self._terminal

    def _requeue_locked(self, job: object, undelivered: list) -> None:
        if isinstance(job, _Batch):
            # Back in front of anything newer; a tag set again meanwhile keeps its newer value.
            self._metrics.extendleft(reversed([x for x in undelivered if not isinstance(x, tuple)]))
            self._params = {**{k: v for kind, k, v in (x for x in undelivered if isinstance(x, tuple)) if kind == "p"},
                            **self._params}
            self._tags = {**{k: v for kind, k, v in (x for x in undelivered if isinstance(x, tuple)) if kind == "t"},
                          **self._tags}
            self._enforce_bound_locked()
        elif isinstance(job, (_Upload, _ModelJob, _ModelMetrics, _Inputs)):
            self._jobs.appendleft(job)  # a model job keeps the steps it has done

    # --------------------------------------------------------------------------- the thread
    def _loop(self) -> None:
        delay = self._retry_initial_s
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_work_locked() or self._stopping or self._abandon)
                if self._abandon or (self._stopping and not self._has_work_locked()):
                    return
                job = self._take_locked()
                self._inflight = job
            error: _Transient | None = None
            try:
                self._deliver(job)
            except _Transient as t:
                error = t
            except Exception as e:  # a bug here must not take training down; keep the data
                error = _Transient(job.items if isinstance(job, _Batch) else [], e)
                _log.exception("run %s: unexpected tracking error", self.run_id)
            with self._cond:
                self._inflight = None
                if isinstance(job, _Terminate) and error is None:
                    self._terminal = None
                if error is None:
                    if self._offline_since is not None:
                        _log.warning("run %s: tracking server reachable again after %.0f s; sending the backlog",
                                     self.run_id, time.monotonic() - self._offline_since)
                        self._offline_since = None
                        self._warned_full = False
                    delay = self._retry_initial_s
                    self._cond.notify_all()
                    continue
                self._requeue_locked(job, error.items)
                if self._offline_since is None:
                    self._offline_since = time.monotonic()
                    _log.warning("run %s: tracking server unreachable (%s); buffering and retrying",
                                 self.run_id, str(error.cause).splitlines()[0][:300] if str(error.cause) else type(error.cause).__name__)
                self._kick = False
                self._cond.notify_all()
                # A waiting flush() wants the server's return noticed quickly.
                wait = min(delay, 1.0) if self._flushers else delay
                self._cond.wait_for(lambda: self._kick or self._abandon, timeout=wait)
                delay = min(delay * 2, self._retry_max_s)

    def _deliver(self, job: object) -> None:
        if isinstance(job, _Batch):
            self._send_batch(job.items)
        elif isinstance(job, _Upload):
            self._upload(job)
        elif isinstance(job, _ModelJob):
            self._deliver_model(job)
        elif isinstance(job, _ModelMetrics):
            self._deliver_model_metrics(job)
        elif isinstance(job, _Inputs):
            self._deliver_inputs(job)
        elif isinstance(job, _Terminate):
            try:
                self._client.set_terminated(self.run_id, status=job.status)
            except Exception as e:
                if not _is_permanent(e):
                    raise _Transient([], e) from e
                _log.warning("run %s: could not set status %s: %s", self.run_id, job.status, e)

    def _send_batch(self, items: list) -> None:
        from mlflow.entities import Param, RunTag

        try:
            self._client.log_batch(
                self.run_id,
                metrics=[x for x in items if not isinstance(x, tuple)],
                params=[Param(k, v) for kind, k, v in (x for x in items if isinstance(x, tuple)) if kind == "p"],
                tags=[RunTag(k, v) for kind, k, v in (x for x in items if isinstance(x, tuple)) if kind == "t"],
                synchronous=True,
            )
        except Exception as e:
            if not _is_permanent(e):
                raise _Transient(items, e) from e
            if self._run_is_gone():
                return
            if len(items) == 1:
                _log.warning("run %s: MLflow rejected %s: %s", self.run_id, _describe(items[0]), e)
                return
            # Bisect so one bad entry does not cost the rest of the batch.
            mid = len(items) // 2
            try:
                self._send_batch(items[:mid])
            except _Transient as t:
                raise _Transient(t.items + items[mid:], t.cause) from e
            self._send_batch(items[mid:])

    def _upload(self, up: _Upload) -> None:
        if not up.local.exists():
            _log.warning("run %s: %s was removed before it could be uploaded; skipped", self.run_id, up.local)
            return
        try:
            if up.contents:
                self._client.log_artifacts(self.run_id, str(up.local), up.artifact_path)
            else:  # MlflowClient.log_artifact takes a file or a directory (kept under its own name)
                self._client.log_artifact(self.run_id, str(up.local), up.artifact_path)
        except Exception as e:
            if not _is_permanent(e):
                raise _Transient([], e) from e
            _log.warning("run %s: could not upload %s: %s", self.run_id, up.local, e)
        if up.spooled:
            shutil.rmtree(up.local.parent, ignore_errors=True)

    def _run_experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._client.get_run(self.run_id).info.experiment_id
        return self._experiment_id

    def _deliver_model(self, job: _ModelJob) -> None:
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        try:
            if job.model_id is None:
                found = self._find_model(job) if job.created_tried else None
                if found is None:
                    job.created_tried = True
                    from mlflow.tracking.context.registry import resolve_tags

                    found = self._client.create_logged_model(
                        self._run_experiment_id(), name=job.name, source_run_id=self.run_id,
                        tags=resolve_tags({**job.tags, LOG_TOKEN_TAG: job.token}), params=job.params,
                        model_type=job.model_type)
                job.model_id, job.artifact_location = found.model_id, found.artifact_location
            if not job.linked:
                # log_outputs adds a row per call: after a failed call, look before linking again.
                if not (job.link_tried and self._is_linked(job.model_id)):
                    job.link_tried = True
                    self._client.log_outputs(self.run_id, [LoggedModelOutput(job.model_id, job.step)])
                job.linked = True
            if not job.uploaded:
                stamp_mlmodel(job.local, job.model_id, self.run_id, job.artifact_location)
                self._client.log_model_artifacts(job.model_id, str(job.local))
                job.uploaded = True
            self._client.finalize_logged_model(job.model_id, LoggedModelStatus.READY)
        except Exception as e:
            if not _is_permanent(e):
                raise _Transient([], e) from e
            _log.warning("run %s: could not log model %s from %s: %s", self.run_id, job.name, job.local, e)
            if job.model_id is not None:
                try:
                    self._client.finalize_logged_model(job.model_id, LoggedModelStatus.FAILED)
                except Exception:
                    pass
            return
        job.ready = True
        self.set_tags({MODEL_ID_TAG: job.model_id})

    def _find_model(self, job: _ModelJob):
        """The LoggedModel an earlier try of ``job`` created (its request may have gone through)."""
        found = self._client.search_logged_models(
            experiment_ids=[self._run_experiment_id()],
            filter_string=f"source_run_id = '{self.run_id}' AND tags.`{LOG_TOKEN_TAG}` = '{job.token}'")
        return found[0] if found else None

    def _is_linked(self, model_id: str) -> bool:
        outputs = self._client.get_run(self.run_id).outputs
        return any(o.model_id == model_id for o in (outputs.model_outputs if outputs else []))

    def _deliver_model_metrics(self, job: _ModelMetrics) -> None:
        from mlflow.entities import Metric

        model = job.model
        if not model.ready:
            return  # the model never made it (reported when it failed)
        try:
            keys = [k for k in self._client.get_run(self.run_id).data.metrics if k.startswith(model.metric_prefixes)]
            points = []
            for key in keys:
                last = max(self._client.get_metric_history(self.run_id, key), key=lambda m: (m.step, m.timestamp))
                points.append(Metric(key, last.value, last.timestamp, last.step, model_id=model.model_id))
            for lo in range(0, len(points), MAX_ENTITIES_PER_BATCH):
                self._client.log_batch(self.run_id, metrics=points[lo:lo + MAX_ENTITIES_PER_BATCH], synchronous=True)
        except Exception as e:
            if not _is_permanent(e):
                raise _Transient([], e) from e
            _log.warning("run %s: could not log metrics on model %s: %s", self.run_id, model.model_id, e)

    def _deliver_inputs(self, job: _Inputs) -> None:
        from mlflow.entities import LoggedModelInput

        try:
            self._client.log_inputs(self.run_id, datasets=job.datasets or None,
                                    models=[LoggedModelInput(m) for m in job.model_ids] or None)
        except Exception as e:
            if not _is_permanent(e):
                raise _Transient([], e) from e
            _log.warning("run %s: could not record inputs %s: %s", self.run_id,
                         [d.dataset.name for d in job.datasets] + job.model_ids, e)

    def _run_is_gone(self) -> bool:
        """A deleted run rejects everything: stop trying instead of bisecting every batch."""
        try:
            gone = self._client.get_run(self.run_id).info.lifecycle_stage == "deleted"
        except Exception as e:
            gone = _is_permanent(e)
        if gone:
            with self._cond:
                self._dead = True
                self._params.clear()
                self._tags.clear()
                self._metrics.clear()
                self._jobs.clear()
                self._terminal = None
            _log.error("run %s no longer exists or was deleted; tracking disabled for it", self.run_id)
        return gone


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
    def log_artifacts(self, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None: ...
    def log_dict(self, dictionary: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_model(self, local_dir: str | os.PathLike, **kwargs: Any) -> None: ...
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


# ------------------------------------------------------------------------------- system metrics
def _system_metrics_wanted(explicit: bool | None) -> bool:
    import importlib.util

    if explicit is not None:
        wanted = explicit
    else:
        env = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
        wanted = True if env is None else env.strip().lower() in ("1", "true", "yes")
    if wanted and importlib.util.find_spec("psutil") is None:
        _log.info("psutil is not installed: no system metrics")
        return False
    return wanted


class _SystemMetrics:
    """MLflow's system-metrics samplers (``system/...`` metrics, the UI's System Metrics tab),
    published through the run's resilient logger.

    MLflow's own ``SystemMetricsMonitor`` thread logs directly and stops for good at the first
    failed request, so an outage would end system metrics for the rest of the run; here only its
    sampling and aggregation are used (sampling interval and node id follow MLflow's variables
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` / ``..._SAMPLES_BEFORE_LOGGING`` / ``..._NODE_ID``).
    """

    def __init__(self, logger: RunLogger, first_step: int):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # Constructing it contacts nothing (resume_logging=False); it only builds the samplers.
        self._monitor = SystemMetricsMonitor(logger.run_id, resume_logging=False)
        self._logger = logger
        self._step = first_step
        self._prefix = "system/" + (f"{self._monitor.node_id}/" if self._monitor.node_id else "")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tfqa-system-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        mon = self._monitor
        try:
            while not self._stop.is_set():
                samples = 0
                for _ in range(int(mon.samples_before_logging)):
                    mon.collect_metrics()
                    samples += 1
                    if self._stop.wait(float(mon.sampling_interval)):
                        break
                if samples:
                    values = mon.aggregate_metrics()
                    for m in mon.monitors:
                        m.clear_metrics()
                    self._logger.log_metrics({self._prefix + k: v for k, v in values.items()}, step=self._step)
                    self._step += 1
        except Exception:
            _log.warning("system metrics sampling stopped", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _next_system_metrics_step(client, run) -> int:
    """Resume the ``system/`` step count of a re-attached run instead of restarting at 0."""
    keys = [k for k in run.data.metrics if k.startswith("system/")]
    if not keys:
        return 0
    try:
        return max(m.step for m in client.get_metric_history(run.info.run_id, keys[0])) + 1
    except Exception:
        return 0


# ------------------------------------------------------------------------------------- the run
def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _share_run_id(run_id: str) -> str:
    """Rank 0's run id for every rank, when a process group is up and no id was given to all."""
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
def start_run(*, experiment: str | None = None, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
              resume_run_id: str | None = None, log_system_metrics: bool | None = None,
              flush_timeout: float = 120.0, max_buffered_metrics: int = 100_000) -> Iterator[Tracker]:
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
        yield NullRunLogger(given_id or _share_run_id(""))
        return

    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    with _http_defaults():
        client = MlflowClient()
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
        logger = RunLogger(client, run.info.run_id, existing_params=run.data.params,
                           max_buffered_metrics=max_buffered_metrics)
        if given_id and str_tags:
            logger.set_tags(str_tags)
        sampler = None
        if _system_metrics_wanted(log_system_metrics):
            try:
                sampler = _SystemMetrics(logger, _next_system_metrics_step(client, run) if given_id else 0)
            except Exception:
                _log.warning("could not start system metrics", exc_info=True)

        status, timeout = "FINISHED", flush_timeout
        try:
            yield logger
        except KeyboardInterrupt:
            status, timeout = "KILLED", min(flush_timeout, 10.0)
            raise
        except SystemExit as e:
            if e.code not in (None, 0):
                status = "FAILED"
                logger.set_tags({ERROR_TAG: f"SystemExit({e.code!r})"})
            raise
        except BaseException as e:
            status = "FAILED"
            logger.set_tags({ERROR_TAG: failure_tag(e)})
            raise
        finally:
            if sampler is not None:
                sampler.stop()
            logger.close(status, timeout)


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
    from mlflow.tracking import MlflowClient

    with _http_defaults():
        try:
            MlflowClient().set_tag(run_id, ERROR_TAG, _truncate(failure_tag(exc), MAX_TAG_VAL_LENGTH, "the error tag"))
        except Exception as e:  # the server may be what is failing: the one-line message still goes out
            _log.warning("could not record the error on run %s: %s", run_id, e)


# ----------------------------------------------------------------------------------------- reuse
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


def find_finished_run(experiment: str, entry_point: str, params: Mapping[str, Any],
                      upstream_run_ids: Mapping[str, str] | None, git_commit: str,
                      code_version: str | None = None) -> str | None:
    """The newest FINISHED run of ``entry_point`` in ``experiment`` that can stand in for a new one.

    It must carry every given param with the same value (compared as strings; extra params are
    fine), a ``tfqa.upstream.<name>`` tag equal to each given upstream run id, and the same
    ``mlflow.source.git.commit`` - or, when ``git_commit`` is "unknown", no known commit either.
    The entry point is read from ``mlflow.project.entryPoint`` (set by ``mlflow run``) or
    ``tfqa.stage``. With ``code_version``, the ``tfqa.code_version`` tag is compared instead of
    the commit. Returns the run id, or None.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    want_params = {str(k): str(v) for k, v in params.items()}
    want_tags = {f"{UPSTREAM_TAG_PREFIX}{k}": str(v) for k, v in (upstream_run_ids or {}).items()}
    commit = git_commit if git_commit and git_commit != UNKNOWN_COMMIT else None
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=500, page_token=token)
        for run in page:
            t, p = run.data.tags, run.data.params
            if not any(t.get(name) == entry_point for name in ENTRY_POINT_TAGS):
                continue
            if code_version is not None:
                if t.get(CODE_VERSION_TAG) != code_version:
                    continue
            else:
                run_commit = t.get(GIT_COMMIT_TAG)
                if (run_commit if run_commit not in ("", UNKNOWN_COMMIT) else None) != commit:
                    continue
            if all(p.get(k) == v for k, v in want_params.items()) and all(t.get(k) == v for k, v in want_tags.items()):
                return run.info.run_id
        token = page.token
        if not token:
            return None


def record_reuse(reused_run_id: str, parent_run_id: str, run_name: str, step: str) -> str:
    """A small FINISHED run under ``parent_run_id`` that stands for a reused stage: named
    ``<run name> (reused)``, tagged ``tfqa.reused_run`` with the run it stands for and a note
    linking to it. It carries no ``tfqa.stage`` tag, so no search for a stage's runs finds it.
    Returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    reused = client.get_run(reused_run_id)
    exp = reused.info.experiment_id
    note = (f"Step `{step}` of this pipeline reused the finished run "
            f"[{reused.info.run_name or reused_run_id}](#/experiments/{exp}/runs/{reused_run_id}) ({reused_run_id}).")
    run = client.create_run(exp, run_name=f"{run_name} (reused)", tags={
        PARENT_RUN_TAG: parent_run_id, REUSED_RUN_TAG: reused_run_id, "tfqa.step": step, NOTE_TAG: note})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
