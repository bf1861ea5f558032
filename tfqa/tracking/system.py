"""System metrics (``system/...``, the UI's System Metrics tab) sampled by MLflow's samplers and
published through the run's resilient logger."""

from __future__ import annotations

import logging
import os
import threading

_log = logging.getLogger(__name__)


def system_metrics_wanted(explicit: bool | None) -> bool:
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


class SystemMetrics:
    """MLflow's system-metrics samplers (``system/...`` metrics, the UI's System Metrics tab),
    published through the run's resilient logger.

    MLflow's own ``SystemMetricsMonitor`` thread logs directly and stops for good at the first
    failed request, so an outage would end system metrics for the rest of the run; here only its
    sampling and aggregation are used (sampling interval and node id follow MLflow's variables
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` / ``..._SAMPLES_BEFORE_LOGGING`` / ``..._NODE_ID``).
    """

    def __init__(self, logger, first_step: int):
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


def next_system_metrics_step(client, run) -> int:
    """Resume the ``system/`` step count of a re-attached run instead of restarting at 0."""
    keys = [k for k in run.data.metrics if k.startswith("system/")]
    if not keys:
        return 0
    try:
        return max(m.step for m in client.get_metric_history(run.info.run_id, keys[0])) + 1
    except Exception:
        return 0
