"""The tag and artifact names tfqa's runs carry: what stages write and what later stages, the
pipeline and the registry look for. One spelling of each, so writer and reader cannot drift."""

from __future__ import annotations

# ----------------------------------------------------------------------------------- run tags
STAGE_TAG = "tfqa.stage"
"""The stage (entry point) a run belongs to; upstream searches and reuse go by it."""
VARIANT_TAG = "tfqa.variant"
BACKBONE_TAG = "tfqa.backbone"
BACKBONE_DIR_TAG = "tfqa.backbone_dir"
MODEL_TYPE_TAG = "tfqa.model_type"
UPSTREAM_TAG_PREFIX = "tfqa.upstream."
"""``tfqa.upstream.<name>``: the run id of an input, e.g. ``tfqa.upstream.validate``."""
DATA_FINGERPRINT_TAG = "tfqa.data_fingerprint"
FEATURES_PATH_TAG = "tfqa.features_path"
OUTPUTS_TAG_PREFIX = "tfqa.outputs."
HTML_TOKENS_TAG_PREFIX = "tfqa.html_tokens."
ERROR_TAG = "tfqa.error"
STOP_TAG = "tfqa.stopped"
"""Why a KILLED run stopped: ``stopped by SIGTERM after step 120; checkpoint ...``."""
RESOLVED_TAG_PREFIX = "tfqa.resolved."
"""``tfqa.resolved.<param>``: a setting the stage took from the settings file or an upstream run, and where from."""
PARAM_CONFLICT_TAG_PREFIX = "tfqa.param_conflict."
CODE_VERSION_TAG = "tfqa.code_version"
MODEL_ID_TAG = "tfqa.model_id"
"""The run's LoggedModel, tagged once it is READY; ``tfqa.model_id.<name>`` names the LoggedModel
of registered model ``<name>`` a run used."""
MODEL_VERSION_TAG = "tfqa.model_version"
"""The registry version a run used (``tfqa.model_version.<name>`` per registered model)."""
REGISTERED_MODEL_TAG = "tfqa.registered_model"
LOG_TOKEN_TAG = "tfqa.log_token"
"""On a LoggedModel: which ``log_model`` call made it, so a retry finds it instead of making another."""
REUSED_RUN_TAG = "tfqa.reused_run"
STEP_TAG = "tfqa.step"
"""On the marker run of a reused step: the step's name; ``tfqa.step.<name>`` on a pipeline run:
the run of each step."""
PIPELINE_TAG = "tfqa.pipeline"
WORK_DIR_TAG = "tfqa.work_dir"

# MLflow's own tags.
ENTRY_POINT_TAG = "mlflow.project.entryPoint"
ENTRY_POINT_TAGS = (ENTRY_POINT_TAG, STAGE_TAG)
"""Where a run's stage is read: set by ``mlflow run`` on the runs it creates; tfqa's own stages
also tag themselves ``tfqa.stage``."""
PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"
"""The logged tables of a run (``mlflow.log_table`` sets it; ``mlflow.load_table`` reads it)."""


# ------------------------------------------------------------------------------------ artifacts
MODEL_ARTIFACT = "model"
"""A stage's LoggedModel (and, for runs from before LoggedModels, its artifact folder)."""
CHECKPOINT_MODEL = "checkpoint"
"""A training run's weights at an evaluation, as a LoggedModel with its step and dev metrics (the
best few by ``dev/long_f1`` are kept)."""
FEATURES_MANIFEST_ARTIFACT = "features/manifest.json"
SCORES_TABLES_DIR = "outputs"
"""Where validate and predict keep each model's candidate scores table."""
VALIDATION_DIR = "validation"
THRESHOLDS_ARTIFACT = f"{VALIDATION_DIR}/thresholds.json"
ENSEMBLE_ARTIFACT = f"{VALIDATION_DIR}/ensemble.json"
MINING_DIR = "mining"
MINING_SCORES_ARTIFACT = f"{MINING_DIR}/scores.parquet"
SUBMISSION_DIR = "submission"
