"""Load a trained tfqa model from any reference (dir, run id, runs:/, models:/name@alias)."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from tfqa.modeling.saved import find_model_dir
from tfqa.tracking.upstream import Resolved, resolve_model


@dataclass
class LoadedModel:
    model: object
    model_dir: Path
    """Weights, configs and tokenizer files."""
    source: Resolved

    @property
    def cache_key(self) -> str:
        """Identifies these weights for output caches: registry version, else run, else file hash."""
        if self.source.model_version:
            return self.source.model_version.replace("/", "-v")
        if self.source.run_id:
            return f"run-{self.source.run_id}"
        h = hashlib.blake2b(digest_size=8)
        with open(self.model_dir / "model.safetensors", "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return f"file-{h.hexdigest()}"


def load_tfqa_model(ref: str) -> LoadedModel:
    from tfqa.modeling.model import CandidateQAModel

    source = resolve_model(ref)
    model_dir = find_model_dir(source.path)
    return LoadedModel(CandidateQAModel.from_pretrained(model_dir), model_dir, source)


@dataclass
class StartingPoint:
    """Where a training stage starts: a bare backbone, or an earlier tfqa model (``init_model``)."""

    dir: Path
    """Weights, config and tokenizer files."""
    source: Resolved | None
    """The upstream model, None for a bare backbone."""

    @classmethod
    def of(cls, backbone: str, init_model: str = "") -> StartingPoint:
        if not init_model:
            return cls(Path(backbone), None)
        source = resolve_model(init_model)
        return cls(find_model_dir(source.path), source)

    def build(self, vocab_size: int):
        """The model to train: a tfqa model folder keeps its heads, a bare encoder gets new ones
        (from the global RNG: seed before calling)."""
        from tfqa.modeling.model import CandidateQAModel
        from tfqa.modeling.saved import HEAD_FILE

        if self.source is not None and (self.dir / HEAD_FILE).exists():
            model = CandidateQAModel.from_pretrained(self.dir, vocab_size=vocab_size)
        else:
            model = CandidateQAModel.from_backbone(self.dir, vocab_size=vocab_size)
        # One line in the stage's log: which of its family's quirks this encoder has (token types,
        # pooling) and the attention implementation transformers chose for it.
        print(f"encoder {self.dir}: " + ", ".join(f"{k} {v}" for k, v in model.describe().items()), file=sys.stderr, flush=True)
        return model
