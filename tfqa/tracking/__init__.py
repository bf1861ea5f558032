"""The one place that talks to MLflow's tracking server: runs and their logger (``run``), the
background delivery behind it (``delivery``), system metrics (``system``), reusing finished runs
(``reuse``), lookups of runs (``queries``), the Model Registry (``registry``), the names of tags and
artifacts (``names``), what a stage consumed (``upstream``, ``datasets``).

``from tfqa import tracking`` gives the run API stages use; the registry, upstream and dataset
helpers are imported from their modules (they pull in more of tfqa).
"""

from tfqa.tracking import names
from tfqa.tracking.delivery import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
from tfqa.tracking.names import (
    CODE_VERSION_TAG,
    ENTRY_POINT_TAGS,
    ERROR_TAG,
    LOG_TOKEN_TAG,
    MODEL_ID_TAG,
    PARAM_CONFLICT_TAG_PREFIX,
    PARENT_RUN_TAG,
    REUSED_RUN_TAG,
)
from tfqa.tracking.queries import client
from tfqa.tracking.reuse import code_version, find_finished_run, record_reuse
from tfqa.tracking.run import (
    PARENT_RUN_ENV,
    NullRunLogger,
    RunLogger,
    Tracker,
    failure_tag,
    flatten_params,
    is_generated_name,
    record_failure,
    run_name,
    start_run,
)

__all__ = [
    "CODE_VERSION_TAG",
    "ENTRY_POINT_TAGS",
    "ERROR_TAG",
    "LOG_TOKEN_TAG",
    "MAX_PARAM_VAL_LENGTH",
    "MAX_TAG_VAL_LENGTH",
    "MODEL_ID_TAG",
    "PARAM_CONFLICT_TAG_PREFIX",
    "PARENT_RUN_ENV",
    "PARENT_RUN_TAG",
    "REUSED_RUN_TAG",
    "names",
    "NullRunLogger",
    "RunLogger",
    "Tracker",
    "client",
    "code_version",
    "failure_tag",
    "find_finished_run",
    "flatten_params",
    "is_generated_name",
    "record_failure",
    "record_reuse",
    "run_name",
    "start_run",
]
