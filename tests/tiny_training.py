"""Tiny models, a learnable fake candidate set, and a training script for the subprocess tests.

``FakeCandidates`` follows the ``CandidateDataset`` contract (``lengths``, rows of ``input_ids``,
``token_type_ids``, ``label``, ``start_position``, ``end_position``) and is learnable: a signal
token in the candidate names the class, and for short-span rows two marker tokens sit at the
span's start and end.

Run as a script it trains a tiny model with ``tfqa.train_loop.train`` (used for the SIGKILL and
torchrun tests): ``python tests/tiny_training.py --backbone DIR --out DIR --steps 20 ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CLS, SEP, PAD = 1, 2, 0
SIGNAL = {0: 3, 1: 4, 2: 5, 3: 6, 4: 7}
"""Class -> the token that marks it; for class 2 the token also marks the span start."""
SPAN_END = 8
VOCAB = 100


class FakeCandidates:
    def __init__(self, n: int = 64, seed: int = 0, min_len: int = 6, max_len: int = 40):
        rng = np.random.default_rng(seed)
        self.rows = []
        for _ in range(n):
            question = rng.integers(10, 30, size=int(rng.integers(2, 6)))
            cand_len = int(rng.integers(max(3, min_len - len(question) - 3), max_len - len(question) - 3 + 1))
            cand = rng.integers(30, VOCAB, size=cand_len)
            label = int(rng.integers(0, 5))
            at = int(rng.integers(0, cand_len - 1))
            cand[at] = SIGNAL[label]
            offset = len(question) + 2
            start = end = -1
            if label == 2:
                end_at = min(cand_len - 1, at + int(rng.integers(1, 3)))
                cand[end_at] = SPAN_END
                start, end = offset + at, offset + end_at
            ids = np.concatenate([[CLS], question, [SEP], cand, [SEP]]).astype(np.int32)
            types = np.zeros(len(ids), dtype=np.int32)
            types[offset:] = 1
            self.rows.append(
                {"input_ids": ids, "token_type_ids": types, "label": label, "start_position": start, "end_position": end}
            )
        self.lengths = np.array([len(r["input_ids"]) for r in self.rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def tiny_config(kind: str = "bert", vocab_size: int = VOCAB, dropout: float = 0.1, **overrides):
    """A tiny encoder config of ``kind``; ``overrides`` replace or add config fields."""
    from transformers import AlbertConfig, BertConfig, DistilBertConfig

    # ALBERT names its sizes as BERT does; it only adds the factorised embedding size.
    bert_sizes = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if kind == "bert":
        return BertConfig(**{**bert_sizes, **overrides})
    if kind == "albert":
        return AlbertConfig(**{"embedding_size": 16, **bert_sizes, **overrides})
    if kind == "distilbert":  # no pooler, no token types
        return DistilBertConfig(
            **{
                "vocab_size": vocab_size,
                "dim": 32,
                "n_layers": 2,
                "n_heads": 2,
                "hidden_dim": 64,
                "max_position_embeddings": 64,
                "dropout": dropout,
                "attention_dropout": dropout,
                **overrides,
            }
        )
    raise ValueError(kind)


def tiny_model(kind: str = "bert", seed: int = 0, **config):
    """A freshly initialised CandidateQAModel on ``tiny_config(kind, **config)``, the same for a seed."""
    import torch

    from tfqa.modeling.model import CandidateQAModel

    torch.manual_seed(seed)
    return CandidateQAModel.from_config(tiny_config(kind, **config))


def tiny_train_config(**overrides):
    """The TrainConfig of the tiny training runs: a few dozen steps of a high lr, logging every step,
    checkpointing only at epoch ends, keeping one; ``overrides`` are each test's own values."""
    from tfqa.training.loop import TrainConfig

    base = dict(
        lr=3e-3,
        warmup_steps=4,
        max_steps=40,
        batch_size=16,
        log_every_steps=1,
        checkpoint_every_steps=0,
        keep_checkpoints=1,
        seed=0,
        mega_batch_steps=4,
    )
    return TrainConfig(**{**base, **overrides})


def write_backbone(path: Path, kind: str = "bert", seed: int = 0) -> Path:
    """A pretrained-looking encoder folder (config.json + model.safetensors), as from_backbone reads."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(kind)).save_pretrained(str(path))
    return path


class RecordingLogger:
    """Keeps every call; optionally writes progress to a file and hangs at a given step (so a test
    can SIGKILL it at a known point)."""

    def __init__(self, progress: Path | None = None, hang_at_step: int | None = None):
        self.metrics: list[tuple[int, dict]] = []
        self.artifacts: list[tuple[str, str]] = []
        self.progress, self.hang_at_step = progress, hang_at_step

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((step, dict(metrics)))
        if self.progress is not None:
            self.progress.write_text(str(step))
        if self.hang_at_step is not None and step >= self.hang_at_step:
            while True:
                time.sleep(1)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None, **_) -> None:
        self.artifacts.append((local_dir, artifact_path))

    # Every call reaches this logger at once: nothing is ever left unsent.
    def flush_metrics(self, timeout: float | None = None) -> bool:
        return True

    def unsent_metrics(self) -> list[dict]:
        return []

    def log_metric_points(self, points) -> None:
        for p in points:
            self.metrics.append((int(p["step"]), {p["key"]: p["value"]}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--keep", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--hang-at-step", type=int, default=None)
    parser.add_argument("--progress", default=None)
    parser.add_argument("--report", default=None, help="write {rank}.json / rank{rank}.safetensors here")
    parser.add_argument("--resume", default="auto", help="auto, none or a checkpoint folder")
    args = parser.parse_args(argv)
    # "{rank}" in --out gives each rank a folder of its own: node-local output folders.
    args.out = args.out.replace("{rank}", os.environ.get("RANK", "0"))

    import torch
    from safetensors.torch import save_model

    from tfqa.modeling.model import CandidateQAModel
    from tfqa.training.loop import train

    torch.set_num_threads(1)  # the same in every run: thread count changes float summation order
    torch.manual_seed(0)
    model = CandidateQAModel.from_backbone(args.backbone)
    cfg = tiny_train_config(
        lr=2e-3,
        warmup_steps=3,
        max_steps=args.steps,
        batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum,
        checkpoint_every_steps=args.checkpoint_every,
        keep_checkpoints=args.keep or None,
        seed=7,
        num_workers=args.workers,
        mega_batch_steps=2,
    )
    logger = RecordingLogger(Path(args.progress) if args.progress else None, args.hang_at_step)
    result = train(model, FakeCandidates(args.rows, seed=3), cfg, out_dir=args.out, logger=logger, resume=args.resume)
    if args.report:
        rank = int(os.environ.get("RANK", "0"))
        report = Path(args.report)
        report.mkdir(parents=True, exist_ok=True)
        save_model(model, str(report / f"rank{rank}.safetensors"))
        (report / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "step": result.step,
                    "logged": len(logger.metrics),
                    "artifacts": len(logger.artifacts),
                    "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                    "resumed_from": str(result.resumed_from) if result.resumed_from else None,
                }
            )
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
