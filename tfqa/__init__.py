"""tfqa: the 1st-place Natural Questions training system as an MLflow-tracked experiment registry.

The stable names users and scripts import, whatever module they live in::

    from tfqa import read_examples, CandidateFeaturizer, FeatureConfig, decode, score

They are loaded on first use, so ``import tfqa`` stays cheap (no torch, no MLflow) for the
command line and for tools that only read a file. The folders say where each thing lives
(docs/architecture.md, "Module map").
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it; the one table both __getattr__ and __all__ read.
_EXPORTS: dict[str, str] = {
    # data: reading NQ (both formats) and Google's conversion between them
    "Example": "tfqa.data.records",
    "Candidate": "tfqa.data.records",
    "Annotation": "tfqa.data.records",
    "Span": "tfqa.data.records",
    "AnswerClass": "tfqa.data.records",
    "read_examples": "tfqa.data.readers",
    "parse_line": "tfqa.data.readers",
    "BadInputError": "tfqa.data.readers",
    "simplify_nq_example": "tfqa.data.convert",
    # features
    "load_tokenizer": "tfqa.features.tokenization",
    "FeatureConfig": "tfqa.features.featurize",
    "CandidateFeaturizer": "tfqa.features.featurize",
    "SelectionConfig": "tfqa.features.selection",
    "BuildConfig": "tfqa.features.cache",
    "build_features": "tfqa.features.cache",
    # inference: decoding and ensembling per-candidate outputs
    "DecodeConfig": "tfqa.inference.decode",
    "CandidateOutputs": "tfqa.inference.decode",
    "decode": "tfqa.inference.decode",
    "apply_thresholds": "tfqa.inference.decode",
    "align": "tfqa.inference.ensemble",
    "ensemble": "tfqa.inference.ensemble",
    "fit_weights": "tfqa.inference.ensemble",
    "Answerer": "tfqa.inference.answering",
    # metrics: Google's nq_eval (long/short F1) with Kaggle's micro-F1, and SQuAD 2.0's
    "build_gold": "tfqa.evaluation.nq_metric",
    "score_answers": "tfqa.evaluation.nq_metric",
    "score": "tfqa.evaluation.nq_metric",
    "squad_evaluate": "tfqa.squad.metric:evaluate",
    # the stages' configs
    "PrepareConfig": "tfqa.stages.prepare",
    "TrainStageConfig": "tfqa.stages.train",
    "MineConfig": "tfqa.stages.mine",
    "SquadStageConfig": "tfqa.stages.squad",
    "ValidateConfig": "tfqa.stages.validate",
    "PredictConfig": "tfqa.stages.predict",
    "Variant": "tfqa.training.variants",
    "VARIANTS": "tfqa.training.variants",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'tfqa' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
