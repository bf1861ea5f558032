"""What a stage records about the data it read: MLflow dataset inputs (``mlflow.log_input``).

Each input names the file, carries tfqa's own fingerprint of what was read as its digest, the
file as its source, the stage's context (``training``, ``evaluation``, ``test``) and a profile
(examples, candidates, and the positives by answer class). MLflow keeps one dataset per (name,
digest) in an experiment, so the digest always identifies exactly what the profile counts:

* features (prepare, training, mining): the feature-cache fingerprint (input bytes, tokenizer,
  settings, candidate selection), and the cache manifest's counts;
* an NQ file read as examples (validate, predict, a training run's dev subset): the file's
  blake2b, or that of its first ``limit`` lines (equal to the subset file ``validate`` writes);
* SQuAD questions: the file's blake2b with the ids of the questions taken (samples and the
  split by article read different questions of one file).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfqa.data.records import AnswerClass

TRAINING, EVALUATION, TEST = "training", "evaluation", "test"
CONTEXT_TAG = "mlflow.data.context"
SOURCE_TYPE = "local"
"""MLflow's ``LocalArtifactDatasetSource`` type: the source is ``{"uri": <path>}``."""


@dataclass(frozen=True)
class DataInput:
    name: str
    digest: str
    source: str
    context: str
    profile: dict = field(default_factory=dict)

    def to_mlflow(self):
        """The ``mlflow.entities.DatasetInput`` that ``mlflow.log_input`` would log."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=self.name,
            digest=self.digest,
            source_type=SOURCE_TYPE,
            source=json.dumps({"uri": self.source}),
            profile=json.dumps(self.profile),
        )
        return DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, self.context)])


def log_data_inputs(run, inputs: Iterable[DataInput], model_ids: Iterable[str | None] = ()) -> None:
    """Queue ``inputs`` (and the LoggedModels the stage started from or scored with) on ``run``."""
    run.log_inputs(datasets=[i.to_mlflow() for i in inputs], model_ids=[m for m in model_ids if m])


def _class_counts(by_class: dict[AnswerClass, int]) -> dict[str, int]:
    return {f"class_{c.value}_{c.name.lower()}": int(by_class.get(c, 0)) for c in AnswerClass}


def features_input(manifest: dict, context: str) -> DataInput:
    """A feature cache (its ``manifest.json``): the candidates chosen from the file, tokenised."""
    src = manifest["input"]["path"]
    profile = {
        **manifest["counts"],
        "rows": manifest["rows"],
        "lines": manifest["lines"],
        "skipped_lines": manifest["skipped_lines"],
        "input_blake2b": manifest["input"]["blake2b"],
    }
    return DataInput(Path(src).name, manifest["fingerprint"], src, context, profile)


def data_digest(path: str | os.PathLike, limit: int = 0) -> str:
    """blake2b of the file, or of its first ``limit`` lines as plain jsonl (``write_subset``'s
    bytes) when it has more: a read of every line has the file's digest, limit or not (a training
    run's 200-example dev subset of a 100-example file is the file validate reads)."""
    from tfqa.data.readers import iter_lines
    from tfqa.features.cache import file_digest

    if not limit:
        return file_digest(path)
    h = hashlib.blake2b(digest_size=16)
    for n, (_, raw) in enumerate(iter_lines(str(path))):
        if n >= limit:
            return h.hexdigest()
        h.update(raw if raw.endswith(b"\n") else raw + b"\n")
    return file_digest(path)


def nq_input(path: str | os.PathLike, examples: Iterable, context: str, limit: int = 0) -> DataInput:
    """NQ examples as a stage read them (any iterable: they are counted, not kept); positives by
    class follow the training labels' rule (``tfqa.features.labels``), so an annotated file's profile is
    comparable to its features'."""
    from tfqa.features.labels import candidate_labels

    by_class: Counter = Counter()
    n = candidates = top_level = with_long = annotated = 0
    for ex in examples:
        n += 1
        candidates += len(ex.candidates)
        top_level += sum(c.top_level for c in ex.candidates)
        annotated += bool(ex.annotations)
        labels = candidate_labels(ex)
        with_long += bool(labels)
        by_class.update(lab.label for lab in labels.values())
    by_class[AnswerClass.NOT_ANSWER] = candidates - sum(by_class.values())
    profile = {
        "examples": n,
        "candidates": candidates,
        "top_level_candidates": top_level,
        "annotated_examples": annotated,
        "examples_with_long_answer": with_long,
        **_class_counts(by_class),
    }
    return DataInput(Path(path).name, data_digest(path, limit), str(Path(path).resolve()), context, profile)


def read_nq_input(path: str | os.PathLike, context: str, limit: int = 0) -> DataInput:
    """``nq_input`` of the first ``limit`` examples of ``path`` (all when 0), streamed from it."""
    from itertools import islice

    from tfqa.data.readers import read_examples

    examples = read_examples(str(path))
    return nq_input(path, islice(examples, limit) if limit else examples, context, limit)


def squad_input(path: str | os.PathLike, examples: Sequence, features: dict, context: str) -> DataInput:
    """SQuAD questions and the windows built from them (a window holding its answer is SHORT)."""
    from tfqa.features.cache import file_digest

    h = hashlib.blake2b(file_digest(path).encode(), digest_size=16)
    h.update("\n".join(sorted(ex.qid for ex in examples)).encode())
    windows = int(len(features["answerable"]))
    positive = int(features["answerable"].sum())
    answerable = sum(not ex.is_impossible for ex in examples)
    profile = {
        "questions": len(examples),
        "answerable": answerable,
        "unanswerable": len(examples) - answerable,
        "articles": len({ex.title for ex in examples}),
        "windows": windows,
        **_class_counts({AnswerClass.NOT_ANSWER: windows - positive, AnswerClass.SHORT: positive}),
    }
    return DataInput(Path(path).name, h.hexdigest(), str(Path(path).resolve()), context, profile)
