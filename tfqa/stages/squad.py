"""The ``finetune_squad`` stage: SQuAD 2.0 before NQ, as the original did for its ALBERTs.

The candidate model is reused unchanged: a window that holds the answer is class SHORT with its
span, one that does not is class 0. The NQ variants then start from this model, heads included.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tfqa.core import distributed
from tfqa.core.bounds import bounded, check_bounds
from tfqa.core.distributed import Distributed
from tfqa.core.errors import UserError
from tfqa.data.records import AnswerClass
from tfqa.features.tokenization import HtmlTokenMode
from tfqa.squad.data import (
    SquadFeatureConfig,
    build_squad_features,
    postprocess,
    predictions_for_eval,
    read_squad,
    split_by_article,
)
from tfqa.squad.metric import evaluate
from tfqa.tracking.datasets import EVALUATION, TRAINING, log_data_inputs, squad_input
from tfqa.tracking.names import BACKBONE_DIR_TAG, BACKBONE_TAG, STAGE_TAG, UPSTREAM_TAG_PREFIX
from tfqa.training.checkpoint import CHECKPOINTS_DIR
from tfqa.training.loop import PRECISIONS


@dataclass(frozen=True)
class SquadStageConfig:
    backbone: str
    """Local dir of the pretrained backbone (default: settings backbones.<backbone_name>; the name
    defaults to the ALBERT variants' backbone)."""
    squad_data: str
    """SQuAD 2.0 JSON to train on (split by article into train/dev when ``squad_dev`` is empty;
    default: settings data.squad)."""
    squad_dev: str = ""
    """SQuAD 2.0 dev JSON (default: settings data.squad_dev, else split ``squad_data``)."""
    dev_fraction: float = 0.25
    """The share of ``squad_data``'s articles split off as the dev set when there is no ``squad_dev``."""
    max_questions: int = bounded(0, min=0)
    """Train on a seeded sample of this many questions (0: all)."""
    max_dev_questions: int = bounded(600, min=0)
    max_seq_len: int = bounded(384, min=16)
    doc_stride: int = bounded(128, min=1)
    max_question_len: int = bounded(64, min=1)
    html_tokens: HtmlTokenMode = "tfqa"
    """The tag vocabulary the tokenizer carries on to the NQ variants trained from this model
    (SQuAD paragraphs hold no tags; see ``FeatureConfig.html_tokens``)."""
    lr: float = 3e-5
    epochs: float = 2.0
    batch_size: int = bounded(32, min=1)
    """Windows per optimizer step over all processes and micro-batches (as ``TrainConfig.batch_size``)."""
    grad_accum_steps: int = bounded(1, min=1)
    """Micro-batches per optimizer step: albert-xxlarge's batch of 32 at 384 subwords fits one GPU
    only in pieces."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, about a third more compute."""
    compile: bool = False
    """``torch.compile`` the model for training."""
    max_steps: int = bounded(0, min=0)
    seed: int = 42
    backbone_name: str = ""
    """Name recorded as the backbone (default: the dir name)."""
    init_model: str = ""
    """Start from this tfqa model (run id, runs:/ or models:/ URI) instead of the bare backbone;
    its tokenizer comes along. The backbone still names what the model is built on."""
    output_dir: str = "outputs"
    checkpoint_every: int = bounded(500, min=0)
    precision: Literal[PRECISIONS] = "auto"
    resume: str = "auto"
    """``auto`` (from the latest checkpoint of this run's output dir, if any), ``none`` or a checkpoint dir."""

    def __post_init__(self) -> None:
        check_bounds(self)


class SquadWindows:
    """SQuAD windows in the candidate-model row contract, padding stripped (dynamic padding)."""

    def __init__(self, feats: dict[str, np.ndarray]):
        self.f = feats
        self.lengths = feats["attention_mask"].sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        n = int(self.lengths[i])
        answerable = bool(self.f["answerable"][i])
        return {
            "input_ids": self.f["input_ids"][i, :n].astype(np.int32),
            "token_type_ids": self.f["token_type_ids"][i, :n].astype(np.int32),
            "label": int(AnswerClass.SHORT if answerable else AnswerClass.NOT_ANSWER),
            "start_position": int(self.f["start_positions"][i]) if answerable else -1,
            "end_position": int(self.f["end_positions"][i]) if answerable else -1,
        }


def window_logits(model, ds: SquadWindows, pad_id: int, batch_tokens: int = 16384, job: Distributed = Distributed()):
    """(start, end, answerable) logits per window; start/end padded to the longest window.

    The model runs where its weights are (a trained model stays on its GPU); each rank of ``job``
    scores a contiguous share of the windows and rank 0 gets them all (the others get None)."""
    import torch

    from tfqa.features.batching import collate
    from tfqa.inference.batch_scoring import InferenceConfig, plan_batches

    device = next(model.parameters()).device
    width = int(ds.lengths.max()) if len(ds) else 0
    mine = np.arange(len(ds))[job.shard(len(ds))]
    start = np.full((len(mine), width), -1e4, dtype=np.float32)
    end = np.full((len(mine), width), -1e4, dtype=np.float32)
    answerable = np.zeros(len(mine), dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for idx in plan_batches(ds.lengths[mine], InferenceConfig(batch_tokens=batch_tokens)):
            b = collate([ds[int(i)] for i in mine[idx]], pad_id=pad_id)
            cls, s, e = model(*(b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
            w = s.shape[1]
            start[idx, :w], end[idx, :w] = s.float().cpu().numpy(), e.float().cpu().numpy()
            answerable[idx] = (cls[:, AnswerClass.SHORT] - cls[:, AnswerClass.NOT_ANSWER]).float().cpu().numpy()
    parts = job.gather((start, end, answerable))
    if parts is None:
        return None
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def squad_metrics(model, examples, feats, pad_id: int, job: Distributed = Distributed()) -> dict[str, float]:
    """The official SQuAD 2.0 metrics of ``model`` on the dev windows, the same on every rank."""
    ds = SquadWindows(feats)
    logits = window_logits(model, ds, pad_id, job=job)
    metrics = {}
    if logits is not None:
        start, end, answerable = logits
        width = start.shape[1]
        preds = postprocess(examples, feats["example_index"], feats["offset_mapping"][:, :width], start, end, answerable)
        texts, na_probs = predictions_for_eval(preds)
        metrics = {f"squad/{k}": float(v) for k, v in evaluate(examples, texts, na_probs).items()}
    return job.broadcast(metrics)


def run_squad(cfg: SquadStageConfig, run) -> dict[str, float]:
    from tfqa.features.tokenization import load_tokenizer, pad_id_of
    from tfqa.modeling.loading import StartingPoint
    from tfqa.training.checkpoint import save_final_model
    from tfqa.training.loop import TrainConfig, resolve_precision, train

    job = distributed.init()
    # A batch that does not split over the processes is refused on every rank before anything is read.
    micro_batch = distributed.check_batch_split(cfg.batch_size, cfg.grad_accum_steps, job.world_size)
    # The data first: a file with nothing to train on is refused before any model loads.
    examples = read_squad(cfg.squad_data)
    if cfg.squad_dev:
        train_ex, dev_ex = examples, read_squad(cfg.squad_dev)
    else:
        train_ex, dev_ex = split_by_article(examples, cfg.dev_fraction, seed=cfg.seed)
        if not dev_ex:
            raise UserError(
                f"its {len({e.title for e in examples})} article(s) leave no dev questions after the split "
                "by article: pass --squad-dev",
                cfg.squad_data,
            )
    start = StartingPoint.of(cfg.backbone, cfg.init_model)
    tok = load_tokenizer(start.dir, cfg.html_tokens)
    rng = random.Random(cfg.seed)
    if cfg.max_questions and len(train_ex) > cfg.max_questions:
        train_ex = sorted(rng.sample(train_ex, cfg.max_questions), key=lambda e: e.qid)
    if cfg.max_dev_questions and len(dev_ex) > cfg.max_dev_questions:
        dev_ex = sorted(random.Random(cfg.seed + 1).sample(dev_ex, cfg.max_dev_questions), key=lambda e: e.qid)
    fcfg = SquadFeatureConfig(cfg.max_seq_len, cfg.doc_stride, cfg.max_question_len)
    train_feats, dev_feats = build_squad_features(train_ex, tok, fcfg), build_squad_features(dev_ex, tok, fcfg)

    log_data_inputs(
        run,
        [
            squad_input(cfg.squad_data, train_ex, train_feats, TRAINING),
            squad_input(cfg.squad_dev or cfg.squad_data, dev_ex, dev_feats, EVALUATION),
        ],
        model_ids=[start.source.model_id] if start.source else [],
    )
    model = start.build(len(tok))
    tcfg = TrainConfig(
        lr=cfg.lr,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps or None,
        batch_size=cfg.batch_size,
        grad_accum_steps=cfg.grad_accum_steps,
        seed=cfg.seed,
        precision=cfg.precision,
        checkpoint_every_steps=cfg.checkpoint_every,
        gradient_checkpointing=cfg.gradient_checkpointing,
        compile=cfg.compile,
    )
    backbone_name = cfg.backbone_name or Path(cfg.backbone).name
    run.log_params(
        {
            "squad": asdict(cfg),
            "train": asdict(tcfg),
            "encoder": model.describe(),
            "hardware": {
                **distributed.describe(job),
                "batch_per_device": micro_batch,
                "precision": resolve_precision(tcfg.precision, job.device),
            },
        }
    )
    run.set_tags(
        {
            BACKBONE_TAG: backbone_name,
            BACKBONE_DIR_TAG: cfg.backbone,
            **({f"{UPSTREAM_TAG_PREFIX}init": start.source.run_id} if start.source and start.source.run_id else {}),
        }
    )
    run.log_metrics(
        {
            "squad/train_questions": len(train_ex),
            "squad/train_windows": len(train_feats["input_ids"]),
            "squad/dev_questions": len(dev_ex),
        },
        step=0,
    )
    out_dir = Path(cfg.output_dir) / "runs" / run.run_id
    pad_id = pad_id_of(tok)
    result = train(
        model,
        SquadWindows(train_feats),
        tcfg,
        out_dir=out_dir / CHECKPOINTS_DIR,
        logger=run,
        resume=None if cfg.resume == "none" else cfg.resume,
    )
    metrics = squad_metrics(model, dev_ex, dev_feats, pad_id, job)
    run.log_metrics(metrics, step=int(getattr(result, "step", 0) or 0))
    save_final_model(
        run,
        model,
        tok,
        out_dir,
        {"max_seq_len": cfg.max_seq_len, "max_question_len": cfg.max_question_len, "html_tokens": cfg.html_tokens},
        params={
            "backbone": backbone_name,
            "doc_stride": cfg.doc_stride,
            "seed": cfg.seed,
            "lr": cfg.lr,
            "epochs": cfg.epochs,
            "max_questions": cfg.max_questions,
        },
        tags={STAGE_TAG: "finetune_squad", BACKBONE_TAG: backbone_name},
    )
    return metrics
