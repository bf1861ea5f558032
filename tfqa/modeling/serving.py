"""The MLflow model behind every logged tfqa model (a "model from code": nothing is pickled).

Loaded by ``mlflow.pyfunc.load_model`` / ``mlflow models serve``; its only artifact is the model
folder (safetensors weights, configs, tokenizer files). Input: a DataFrame with ``question_text``
and ``document_text`` (optionally ``long_answer_candidates``); output: one answer per row.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class TFQAModel(PythonModel):
    def load_context(self, context):
        from tfqa.inference.answering import Answerer
        from tfqa.modeling.saved import WEIGHTS_KEY

        self.answerer = Answerer(context.artifacts[WEIGHTS_KEY])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.answerer.answer_frame(model_input)


mlflow.models.set_model(TFQAModel())
