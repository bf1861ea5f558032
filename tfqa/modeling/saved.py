"""Log a trained tfqa model as an MLflow model that loads without unpickling anything.

The MLflow model is a code-based pyfunc (``tfqa/modeling/serving.py``) whose artifact is the model folder:
safetensors weights, encoder config, head config and tokenizer files. It is saved locally, then
logged as the run's MLflow 3 LoggedModel named ``model`` (``models:/<model_id>``; MLflow also
resolves ``runs:/<run id>/model`` to it), carrying the run's key settings as its params and, at run
end, the run's ``dev/`` and ``squad/`` metrics. Registering it is
``create_model_version(source="models:/<model_id>")``; serving it is
``mlflow models serve -m models:/<name>@<alias>``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tfqa.tracking.names import BACKBONE_TAG, MODEL_ARTIFACT, STAGE_TAG, VARIANT_TAG

MODEL_TYPE = "tfqa-candidate-qa"
MODEL_METRIC_PREFIXES = ("dev/", "squad/")
"""The run metrics a LoggedModel carries: how good the model is, not how training went."""
WEIGHTS_KEY = "tfqa_model"
HEAD_FILE = "tfqa_head.json"
FEATURES_FILE = "tfqa_features.json"
"""The feature settings the model was trained with; inference must build its inputs the same way."""


def serving_code_path() -> Path:
    return Path(__file__).with_name("serving.py")


def trained_settings(model_dir: str | Path) -> dict:
    path = Path(model_dir) / FEATURES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def read_feature_config(model_dir: str | Path):
    """The ``FeatureConfig`` a model folder was trained with (the defaults for folders without one)."""
    from tfqa.features.featurize import FeatureConfig

    settings = trained_settings(model_dir)
    defaults = FeatureConfig()
    return FeatureConfig(
        int(settings.get("max_seq_len", defaults.max_seq_len)),
        int(settings.get("max_question_len", defaults.max_question_len)),
        str(settings.get("html_tokens", defaults.html_tokens)),
    )


def read_decode_config(model_dir: str | Path):
    """How the model's own outputs are decoded when it answers alone (joint for older folders)."""
    from tfqa.inference.decode import DecodeConfig

    return DecodeConfig.from_dict(trained_settings(model_dir).get("decode"))


def read_top_level_only(model_dir: str | Path) -> bool:
    """Whether the model was trained on top-level candidates only, and so answers only with them
    (``score_candidates(top_level_only=...)``)."""
    return bool(trained_settings(model_dir).get("top_level_only", False))


INPUT_EXAMPLE = {"question_text": "who wrote it", "document_text": "<P> It was written by Ann . </P>"}
"""One short record of what the model answers: a question and its page's tokens, space-separated as in
Kaggle's simplified NQ (the UI's example request, ``serving_input_example.json``)."""
# Output columns and their types (a long answer's tokens [start, end), -1 and "" where there is none).
OUTPUT_COLUMNS = {
    "long_answer": "string",
    "long_answer_start": "long",
    "long_answer_end": "long",
    "long_answer_score": "double",
    "short_answer": "string",
    "short_answer_start": "long",
    "short_answer_end": "long",
    "short_answer_score": "double",
    "yes_no_answer": "string",
}


def model_signature():
    """The columns a served model takes and gives, declared (not inferred from an example, which
    cannot say that an int column never holds a missing value)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", name) for name in INPUT_EXAMPLE]),
        outputs=Schema([ColSpec(kind, name) for name, kind in OUTPUT_COLUMNS.items()]),
    )


def save_tfqa_model(model_dir: Path, dst: Path, features: dict) -> Path:
    """Write the MLflow model folder for ``model_dir`` at ``dst``."""
    import mlflow.pyfunc
    import pandas as pd

    (Path(model_dir) / FEATURES_FILE).write_text(json.dumps(features))
    mlflow.pyfunc.save_model(
        path=str(dst),
        python_model=str(serving_code_path()),
        artifacts={WEIGHTS_KEY: str(model_dir)},
        code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole tfqa package
        signature=model_signature(),
        input_example=pd.DataFrame([INPUT_EXAMPLE]),
        pip_requirements=["torch", "transformers>=5,<6", "safetensors", "pandas", "numpy", "pyarrow", "mlflow>=3,<4"],
    )
    return dst


def log_tfqa_model(
    run,
    model_dir: Path,
    features: dict,
    *,
    params: dict | None = None,
    tags: dict | None = None,
    name: str = MODEL_ARTIFACT,
    step: int = 0,
    metrics: dict | None = None,
):
    """Save the MLflow model beside ``model_dir`` and queue it as the run's LoggedModel ``name``
    (``model``; a training run's evaluated checkpoints are ``checkpoint``s at their ``step``, with
    their dev ``metrics``).

    Its params are the feature settings it was trained with plus ``params`` (the stage's key
    settings); ``tags`` go on the model. The folder stays on disk: a logger that lost its server
    retries from it later. Returns the logger's handle (``run.delete_model`` takes it).
    """
    dst = Path(model_dir).parent / "mlflow_model"
    shutil.rmtree(dst, ignore_errors=True)
    save_tfqa_model(Path(model_dir), dst, features)
    return run.log_model(
        dst,
        name=name,
        params={**features, **(params or {})},
        tags=tags,
        model_type=MODEL_TYPE,
        step=step,
        metric_prefixes=MODEL_METRIC_PREFIXES if name == MODEL_ARTIFACT else (),
        metrics=metrics,
    )


def variant_model_info(v) -> dict:
    """``params`` and ``tags`` of a training run's LoggedModel: what tells it from the others (the
    variant row's deciding settings; the feature settings come with ``features``)."""
    return {
        "params": {
            "variant": v.key,
            "entry_point": v.entry_point,
            "backbone": v.backbone_name,
            "init": v.init,
            "negatives": v.negatives,
            "random_negatives": v.random_negatives,
            "seed": v.seed,
            "lr": v.lr,
            "epochs": v.epochs,
            "batch_size": v.batch_size,
        },
        "tags": {STAGE_TAG: v.entry_point, VARIANT_TAG: v.key, BACKBONE_TAG: v.backbone_name},
    }


def find_model_dir(path: Path) -> Path:
    """The tfqa model folder inside ``path``: itself, or the weights artifact of an MLflow model."""
    path = Path(path)
    if (path / HEAD_FILE).exists():
        return path
    for candidate in [path / "artifacts" / WEIGHTS_KEY, *sorted(path.glob("artifacts/*"))]:
        if (candidate / HEAD_FILE).exists():
            return candidate
    hits = sorted(path.rglob(HEAD_FILE))
    if hits:
        return hits[0].parent
    raise FileNotFoundError(f"{path}: no tfqa model folder ({HEAD_FILE}) inside")
