"""Delivery of one run's logging calls to the tracking server, without ever letting the server
stall or kill the caller.

Every call is queued and delivered by one background thread through ``MlflowClient`` with the run
id spelled out (the fluent active-run global is never used, so the thread needs no context).
While the server is unreachable the queue keeps everything - metric points keep the step and
timestamp they were logged with - and the thread retries with back-off; when the server returns
the backlog goes out in order. Failures are sorted into outages (retried) and rejections (bad
request, missing local file: reported and dropped; a rejected batch is bisected so one bad entry
does not cost the rest).

A model job turns a saved MLflow model folder into an MLflow 3 LoggedModel of the run (create,
link as the run's output, upload, mark READY: what ``mlflow.<flavor>.log_model(name=...)`` does),
one step at a time so that a retry after an outage resumes at the step that failed instead of
creating a second model; at run end the run's latest metrics under the model's prefixes are
logged on the model too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tfqa.tracking.names import LOG_TOKEN_TAG, MODEL_ID_TAG

_log = logging.getLogger(__name__)

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

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def truncate(value: str, limit: int, what: str) -> str:
    if len(value) <= limit:
        return value
    _log.warning("%s is %d characters; MLflow keeps at most %d, truncating", what, len(value), limit)
    return value[:limit]


def is_permanent(exc: BaseException) -> bool:
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
def http_defaults() -> Iterator[None]:
    """``HTTP_DEFAULTS`` for the variables the operator left unset, for the life of the block."""
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
class Batch:
    # Metric entities, ("p", key, value) params and ("t", key, value) tags, in one list so that a
    # rejected batch can be bisected and a failed one requeued without caring about kinds.
    items: list


@dataclasses.dataclass
class Upload:
    local: Path
    artifact_path: str | None
    contents: bool = False  # a directory whose *contents* go under artifact_path (log_artifacts)
    spooled: bool = False  # a file this logger wrote (log_dict / log_text): removed once uploaded
    slot: str | None = None
    """Uploads sharing a slot replace each other: a newer one queued drops an older one still
    waiting (a resumable checkpoint: only the newest is worth its gigabytes)."""
    snapshot: bool = False  # a folder made for this upload (hard links): removed once uploaded or dropped


@dataclasses.dataclass
class ModelJob:
    """One ``log_model`` call. Each step is done once; the job keeps what it has done, so a retry
    after an outage picks up at the failed step (one LoggedModel per call, linked once)."""

    local: Path
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    model_type: str | None
    step: int
    metric_prefixes: tuple[str, ...]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Logged on the model at ``step`` once it is READY (a checkpoint's dev metrics)."""
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    model_id: str | None = None
    artifact_location: str = ""
    created_tried: bool = False
    link_tried: bool = False
    linked: bool = False
    uploaded: bool = False
    ready: bool = False


@dataclasses.dataclass
class ModelMetrics:
    """At run end: the run's latest metrics under ``model.metric_prefixes``, logged on the model."""

    model: ModelJob


@dataclasses.dataclass
class DeleteModel:
    """Delete the LoggedModel an earlier ``ModelJob`` created (a checkpoint that fell out of the best K)."""

    model: ModelJob
    local: Path | None = None
    """The model's local folder, removed once the model is deleted (its upload came first)."""


@dataclasses.dataclass
class DeleteArtifacts:
    """Remove a run's artifact folder (a finished run's resumable checkpoint), after every upload queued before."""

    path: str


@dataclasses.dataclass
class Inputs:
    datasets: list  # mlflow.entities.DatasetInput
    model_ids: list[str]


@dataclasses.dataclass
class Terminate:
    status: str


def _drop_snapshot(up: Upload) -> None:
    if up.snapshot:
        shutil.rmtree(up.local, ignore_errors=True)


def describe(item: object) -> str:
    if isinstance(item, tuple):
        kind, key, value = item
        return f"{'param' if kind == 'p' else 'tag'} {key!r}={value[:80]!r}"
    return f"metric {item.key!r}={item.value} (step {item.step})"


class Transient(Exception):
    """A delivery failed for a reason that may pass; carries what is still undelivered."""

    def __init__(self, items: list, cause: BaseException):
        super().__init__(str(cause))
        self.items = items
        self.cause = cause


class Delivery:
    """The queue of one run and the thread that delivers it. Thread-safe; every ``add_*``
    enqueues and returns at once."""

    def __init__(
        self,
        client,
        run_id: str,
        *,
        known_params: Mapping[str, str] | None = None,
        max_buffered_metrics: int = 100_000,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 15.0,
    ):
        self._client = client
        self.run_id = run_id
        self.max_buffered_metrics = max_buffered_metrics
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._cond = threading.Condition()
        self._known_params: dict[str, str] = dict(known_params or {})
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._metrics: deque = deque()
        self._jobs: deque[Upload | ModelJob | ModelMetrics | Inputs] = deque()
        self._models: list[ModelJob] = []
        self._experiment_id: str | None = None
        self._terminal: Terminate | None = None
        self._inflight: object | None = None
        self._kick = False
        self._flushers = 0
        self._stopping = False
        self._abandon = False
        self._dead = False
        self._offline_since: float | None = None
        self._warned_full = False
        self.dropped_metrics = 0
        self._thread = threading.Thread(target=self._loop, name=f"tfqa-tracking-{run_id[:8]}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ enqueueing
    def add_params(self, params: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """Queue the params the run does not have yet; a param it has with the same value is a
        no-op. Returns ``{key: (value it has, new value)}`` for the ones it has with another value,
        which are not queued (MLflow does not allow changing a param)."""
        conflicts: dict[str, tuple[str, str]] = {}
        with self._cond:
            for key, value in params.items():
                known = self._known_params.get(key)
                if known is None:
                    self._known_params[key] = value
                    self._params[key] = value
                elif known != value:
                    conflicts[key] = (known, value)
            self._cond.notify_all()
        return conflicts

    def add_metrics(self, points: list) -> None:
        """Queue ``mlflow.entities.Metric`` points; past ``max_buffered_metrics`` the oldest go."""
        with self._cond:
            self._metrics.extend(points)
            self._enforce_bound_locked()
            self._cond.notify_all()

    def add_tags(self, tags: Mapping[str, str]) -> None:
        with self._cond:
            self._tags.update(tags)
            self._cond.notify_all()

    def add_job(self, job: Upload | Inputs | ModelJob | DeleteModel | DeleteArtifacts) -> None:
        with self._cond:
            if isinstance(job, ModelJob):
                self._models.append(job)
            if isinstance(job, Upload) and job.slot is not None:
                for old in [j for j in self._jobs if isinstance(j, Upload) and j.slot == job.slot]:
                    self._jobs.remove(old)
                    _drop_snapshot(old)
            self._jobs.append(job)
            self._cond.notify_all()

    def logged_model_ids(self) -> list[str]:
        with self._cond:
            return [m.model_id for m in self._models if m.model_id]

    # -------------------------------------------------------------------------------- waiting
    def flush(self, timeout: float | None = None) -> bool:
        return self._wait_until_sent(lambda: self._has_work_locked() or self._inflight is not None, timeout)

    def flush_metrics(self, timeout: float | None = None) -> bool:
        return self._wait_until_sent(
            lambda: not self._dead and bool(self._metrics or self._params or self._tags or isinstance(self._inflight, Batch)),
            timeout,
        )

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

    def unsent_metrics(self) -> list:
        """The metric points not yet confirmed by the server, in order."""
        with self._cond:
            inflight = self._inflight.items if isinstance(self._inflight, Batch) else []
            return [m for m in inflight if not isinstance(m, tuple)] + list(self._metrics)

    def pending(self) -> dict[str, int]:
        with self._cond:
            return {**self._pending_locked(), "inflight": int(self._inflight is not None)}

    @property
    def online(self) -> bool:
        with self._cond:
            return self._offline_since is None

    def close(self, status: str, timeout: float | None) -> bool:
        """Deliver everything, then mark the run ``status``; give up after ``timeout`` seconds."""
        with self._cond:
            # After every model job (the queue is in order), before the final status.
            self._jobs.extend(ModelMetrics(m) for m in self._models if m.metric_prefixes)
            self._terminal = Terminate(status)
            self._stopping = True
            self._cond.notify_all()
        delivered = self.flush(timeout)
        with self._cond:
            left = {k: v for k, v in self._pending_locked().items() if v}
            self._abandon = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        if not delivered:
            _log.error(
                "run %s: tracking server unreachable at run end; not delivered: %s. Local outputs are unaffected.",
                self.run_id,
                left or "the final status",
            )
        return delivered

    def abandon(self) -> None:
        """Stop delivering and drop what is queued (what a killed process does)."""
        with self._cond:
            self._abandon = True
            self._cond.notify_all()

    # ------------------------------------------------------------------------------- internals
    def _pending_locked(self) -> dict[str, int]:
        kinds = [type(j) for j in self._jobs]
        return {
            "params": len(self._params),
            "tags": len(self._tags),
            "metrics": len(self._metrics),
            "artifacts": kinds.count(Upload),
            "models": kinds.count(ModelJob) + kinds.count(ModelMetrics),
            "inputs": kinds.count(Inputs),
        }

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
            _log.warning(
                "run %s: %d metric points buffered while the tracking server is unreachable; dropping the oldest from now on",
                self.run_id,
                self.max_buffered_metrics,
            )

    def _take_locked(self) -> object | None:
        if self._params or self._tags or self._metrics:
            params = [("p", k, self._params.pop(k)) for k in list(self._params)[:MAX_PARAMS_TAGS_PER_BATCH]]
            tags = [("t", k, self._tags.pop(k)) for k in list(self._tags)[:MAX_PARAMS_TAGS_PER_BATCH]]
            room = MAX_ENTITIES_PER_BATCH - len(params) - len(tags)
            metrics = [self._metrics.popleft() for _ in range(min(room, len(self._metrics)))]
            return Batch(params + tags + metrics)
        if self._jobs:
            return self._jobs.popleft()
        return self._terminal

    def _requeue_locked(self, job: object, undelivered: list) -> None:
        if isinstance(job, Batch):
            # Back in front of anything newer; a tag set again meanwhile keeps its newer value.
            self._metrics.extendleft(reversed([x for x in undelivered if not isinstance(x, tuple)]))
            self._params = {
                **{k: v for kind, k, v in (x for x in undelivered if isinstance(x, tuple)) if kind == "p"},
                **self._params,
            }
            self._tags = {
                **{k: v for kind, k, v in (x for x in undelivered if isinstance(x, tuple)) if kind == "t"},
                **self._tags,
            }
            self._enforce_bound_locked()
        elif isinstance(job, (Upload, ModelJob, ModelMetrics, Inputs, DeleteModel, DeleteArtifacts)):
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
            error: Transient | None = None
            try:
                self._deliver(job)
            except Transient as t:
                error = t
            except Exception as e:  # a bug here must not take training down; keep the data
                error = Transient(job.items if isinstance(job, Batch) else [], e)
                _log.exception("run %s: unexpected tracking error", self.run_id)
            with self._cond:
                self._inflight = None
                if isinstance(job, Terminate) and error is None:
                    self._terminal = None
                if error is None:
                    if self._offline_since is not None:
                        _log.warning(
                            "run %s: tracking server reachable again after %.0f s; sending the backlog",
                            self.run_id,
                            time.monotonic() - self._offline_since,
                        )
                        self._offline_since = None
                        self._warned_full = False
                    delay = self._retry_initial_s
                    self._cond.notify_all()
                    continue
                self._requeue_locked(job, error.items)
                if self._offline_since is None:
                    self._offline_since = time.monotonic()
                    _log.warning(
                        "run %s: tracking server unreachable (%s); buffering and retrying",
                        self.run_id,
                        str(error.cause).splitlines()[0][:300] if str(error.cause) else type(error.cause).__name__,
                    )
                self._kick = False
                self._cond.notify_all()
                # A waiting flush() wants the server's return noticed quickly.
                wait = min(delay, 1.0) if self._flushers else delay
                self._cond.wait_for(lambda: self._kick or self._abandon, timeout=wait)
                delay = min(delay * 2, self._retry_max_s)

    def _deliver(self, job: object) -> None:
        if isinstance(job, Batch):
            self._send_batch(job.items)
        elif isinstance(job, Upload):
            self._upload(job)
        elif isinstance(job, ModelJob):
            self._deliver_model(job)
        elif isinstance(job, ModelMetrics):
            self._deliver_model_metrics(job)
        elif isinstance(job, Inputs):
            self._deliver_inputs(job)
        elif isinstance(job, DeleteModel):
            self._delete_model(job)
        elif isinstance(job, DeleteArtifacts):
            self._delete_artifacts(job)
        elif isinstance(job, Terminate):
            try:
                self._client.set_terminated(self.run_id, status=job.status)
            except Exception as e:
                self._retry_unless_permanent(e, f"set status {job.status}")

    def _retry_unless_permanent(self, e: Exception, what: str) -> None:
        """A transient failure goes back to the queue (``Transient``: retried with backoff); a
        permanent one is logged and its job dropped."""
        if not is_permanent(e):
            raise Transient([], e) from e
        _log.warning("run %s: could not %s: %s", self.run_id, what, e)

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
            if not is_permanent(e):
                raise Transient(items, e) from e
            if self._run_is_gone():
                return
            if len(items) == 1:
                _log.warning("run %s: MLflow rejected %s: %s", self.run_id, describe(items[0]), e)
                return
            # Bisect so one bad entry does not cost the rest of the batch.
            mid = len(items) // 2
            try:
                self._send_batch(items[:mid])
            except Transient as t:
                raise Transient(t.items + items[mid:], t.cause) from e
            self._send_batch(items[mid:])

    def _upload(self, up: Upload) -> None:
        if not up.local.exists():
            _log.warning("run %s: %s was removed before it could be uploaded; skipped", self.run_id, up.local)
            return
        try:
            if up.contents:
                self._client.log_artifacts(self.run_id, str(up.local), up.artifact_path)
            else:  # MlflowClient.log_artifact takes a file or a directory (kept under its own name)
                self._client.log_artifact(self.run_id, str(up.local), up.artifact_path)
        except Exception as e:
            self._retry_unless_permanent(e, f"upload {up.local}")
        if up.spooled:
            shutil.rmtree(up.local.parent, ignore_errors=True)
        _drop_snapshot(up)

    def _delete_artifacts(self, job: DeleteArtifacts) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            get_artifact_repository(self._client.get_run(self.run_id).info.artifact_uri).delete_artifacts(job.path)
        except Exception as e:
            self._retry_unless_permanent(e, f"delete artifacts {job.path}")

    def _delete_model(self, job: DeleteModel) -> None:
        if job.model.model_id is not None:  # None: never created (dropped as undeliverable)
            try:
                self._client.delete_logged_model(job.model.model_id)
            except Exception as e:
                self._retry_unless_permanent(e, f"delete model {job.model.model_id}")
        if job.local is not None:
            shutil.rmtree(job.local, ignore_errors=True)

    def _run_experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._client.get_run(self.run_id).info.experiment_id
        return self._experiment_id

    def _deliver_model(self, job: ModelJob) -> None:
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        try:
            if job.model_id is None:
                found = self._find_model(job) if job.created_tried else None
                if found is None:
                    job.created_tried = True
                    from mlflow.tracking.context.registry import resolve_tags

                    found = self._client.create_logged_model(
                        self._run_experiment_id(),
                        name=job.name,
                        source_run_id=self.run_id,
                        tags=resolve_tags({**job.tags, LOG_TOKEN_TAG: job.token}),
                        params=job.params,
                        model_type=job.model_type,
                    )
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
            self._retry_unless_permanent(e, f"log model {job.name} from {job.local}")
            if job.model_id is not None:
                try:
                    self._client.finalize_logged_model(job.model_id, LoggedModelStatus.FAILED)
                except Exception:
                    pass
            return
        job.ready = True
        for key, value in job.metrics.items():
            try:
                self._client.log_metric(self.run_id, key, float(value), step=job.step, model_id=job.model_id)
            except Exception as e:  # the model is READY: a metric that does not go through is only logged
                _log.warning("run %s: could not log %s on model %s: %s", self.run_id, key, job.model_id, e)
        self.add_tags({MODEL_ID_TAG: job.model_id})

    def _find_model(self, job: ModelJob):
        """The LoggedModel an earlier try of ``job`` created (its request may have gone through)."""
        found = self._client.search_logged_models(
            experiment_ids=[self._run_experiment_id()],
            filter_string=f"source_run_id = '{self.run_id}' AND tags.`{LOG_TOKEN_TAG}` = '{job.token}'",
        )
        return found[0] if found else None

    def _is_linked(self, model_id: str) -> bool:
        outputs = self._client.get_run(self.run_id).outputs
        return any(o.model_id == model_id for o in (outputs.model_outputs if outputs else []))

    def _deliver_model_metrics(self, job: ModelMetrics) -> None:
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
                self._client.log_batch(self.run_id, metrics=points[lo : lo + MAX_ENTITIES_PER_BATCH], synchronous=True)
        except Exception as e:
            self._retry_unless_permanent(e, f"log metrics on model {model.model_id}")

    def _deliver_inputs(self, job: Inputs) -> None:
        from mlflow.entities import LoggedModelInput

        try:
            self._client.log_inputs(
                self.run_id, datasets=job.datasets or None, models=[LoggedModelInput(m) for m in job.model_ids] or None
            )
        except Exception as e:
            self._retry_unless_permanent(e, f"record inputs {[d.dataset.name for d in job.datasets] + job.model_ids}")

    def _run_is_gone(self) -> bool:
        """A deleted run rejects everything: stop trying instead of bisecting every batch."""
        try:
            gone = self._client.get_run(self.run_id).info.lifecycle_stage == "deleted"
        except Exception as e:
            gone = is_permanent(e)
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
