"""The NQ training stages (``bert_base`` and variants 1-5): one recipe, settings from the table.

load settings -> resolve upstream (features, mining scores, SQuAD init) -> build/reuse features ->
model -> train loop (checkpoints, resume) -> log the final model. The loop itself lives in
``tfqa.training.loop``; this module only wires the stage's inputs and outputs to MLflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tfqa.core.bounds import bounded, check_bounds
from tfqa.features.cache import MANIFEST, BuildConfig, build_features
from tfqa.features.featurize import FeatureConfig
from tfqa.features.selection import SelectionConfig
from tfqa.inference.decode import DecodeConfig
from tfqa.tracking.datasets import EVALUATION, TRAINING, features_input, log_data_inputs, read_nq_input
from tfqa.tracking.names import (
    BACKBONE_DIR_TAG,
    BACKBONE_TAG,
    DATA_FINGERPRINT_TAG,
    FEATURES_PATH_TAG,
    MINING_SCORES_ARTIFACT,
    MODEL_TYPE_TAG,
    REGISTERED_MODEL_TAG,
    UPSTREAM_TAG_PREFIX,
)
from tfqa.tracking.upstream import download_run_artifact, is_run_id, run_tag
from tfqa.training.checkpoint import CHECKPOINTS_DIR
from tfqa.training.loop import OPTIMIZERS, PRECISIONS
from tfqa.training.variants import Variant


@dataclass(frozen=True)
class TrainStageConfig:
    variant: Variant
    backbone: str
    """Local dir of the pretrained backbone, tokenizer + weights (default: settings backbones.<name>,
    or the SQuAD run's)."""
    train_data: str
    """NQ train file, a feature cache dir, or a ``prepare`` run id (default: settings data.train,
    or the mining run's)."""
    dev_data: str = ""
    """NQ dev file: the run ends with an evaluation on its first ``dev_examples`` examples, and
    evaluates every ``eval_every`` steps as well when that is set (empty: no evaluation; default:
    settings data.dev)."""
    dev_examples: int = bounded(200, min=0)
    mining_run: str = ""
    """Run id of ``mine_hard_negatives``, needed when the variant samples hard negatives (default:
    the latest FINISHED one on this train file)."""
    init_model: str = ""
    """Start from this tfqa/SQuAD model (run id, runs:/ or models:/) instead of the backbone
    (ALBERT variants; default: the latest FINISHED SQuAD run on this backbone)."""
    output_dir: str = "outputs"
    max_steps: int = bounded(0, min=0)
    """Stop after this many optimizer steps (0: train ``variant.epochs``)."""
    checkpoint_every: int = bounded(500, min=0)
    checkpoint_every_minutes: float = bounded(0.0, min=0)
    """Also checkpoint when this many minutes passed since the last one (0: off)."""
    keep_checkpoints: int = bounded(3, min=0)
    """Resumable checkpoints kept on local disk, newest first (0: all). The tracking store keeps
    one, replaced at each save (``checkpoints/latest``)."""
    keep_best_models: int = bounded(2, min=0)
    """At each evaluation the weights are logged as a LoggedModel ``checkpoint`` with their step and
    dev metrics; the best this many by ``dev/long_f1`` stay (0: none are logged), beside the final ``model``."""
    eval_every: int = bounded(0, min=0)
    log_every: int = bounded(10, min=1)
    precision: Literal[PRECISIONS] = "auto"
    optimizer: Literal[OPTIMIZERS] = "adamw"
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory for big backbones, about a third more compute."""
    compile: bool = False
    """``torch.compile`` the model for training."""
    resume: str = "auto"
    """``auto`` (from the latest checkpoint of this run's output dir, if any), ``none`` or a checkpoint dir."""
    workers: int = bounded(0, min=0)
    """Feature-building processes (0: one per CPU core)."""
    max_lines: int = bounded(0, min=0)
    """Train on the first this many examples of a train file (0: all), e.g. the ones a mining run
    limited to them scored."""

    def __post_init__(self) -> None:
        check_bounds(self)


def selection_for(v: Variant) -> SelectionConfig:
    """Which candidates of each training example the variant trains on."""
    # random_negatives only adds to mined ones: `-P negatives=random` on a hard variant drops it.
    return SelectionConfig(
        v.negatives, v.negatives_per_example, v.top_level_only, v.seed, v.random_negatives if v.negatives == "hard" else 0
    )


def resolve_train_features(cfg: TrainStageConfig, tokenizer_dir: str, run) -> tuple[Path, dict[str, str]]:
    """The feature cache to train on, and the upstream run ids it came from."""
    v = cfg.variant
    upstream: dict[str, str] = {}
    data = cfg.train_data
    if (Path(data) / MANIFEST).exists():
        return Path(data), upstream
    if is_run_id(data) and not Path(data).exists():
        upstream["prepare"] = data
        return Path(run_tag(data, FEATURES_PATH_TAG)), upstream
    scores = None
    if v.negatives == "hard":
        if not cfg.mining_run:
            raise ValueError(f"variant {v.key} samples hard negatives: pass mining_run (a mine_hard_negatives run id)")
        upstream["mine_hard_negatives"] = cfg.mining_run
        scores = str(download_run_artifact(cfg.mining_run, MINING_SCORES_ARTIFACT))
    build = BuildConfig(
        features=FeatureConfig(v.max_seq_len, v.max_question_len, v.html_tokens),
        selection=selection_for(v),
        scores_path=scores,
        workers=cfg.workers,
        max_lines=cfg.max_lines,
    )
    info = build_features(data, tokenizer_dir, Path(cfg.output_dir) / "features", build)
    return info.path, upstream


def run_train(cfg: TrainStageConfig, run) -> dict:
    """Train one variant inside an open tracking run; returns the final metrics."""
    import torch

    from tfqa.core import distributed
    from tfqa.features.dataset import CandidateDataset, FeatureStore
    from tfqa.features.tokenization import load_tokenizer
    from tfqa.modeling.loading import StartingPoint
    from tfqa.modeling.saved import variant_model_info
    from tfqa.training.checkpoint import save_final_model
    from tfqa.training.loop import TrainConfig, resolve_precision, train

    v = cfg.variant
    if v.init == "squad" and not cfg.init_model:
        raise ValueError(
            f"variant {v.key} starts from the SQuAD 2.0 fine-tuned model: "
            "pass init_model (a finetune_squad run id or models:/ URI)"
        )
    job = distributed.init()
    # Refused on every rank, before any data is built.
    micro_batch = distributed.check_batch_split(v.batch_size, v.grad_accum_steps, job.world_size)
    start = StartingPoint.of(cfg.backbone, cfg.init_model)

    features_dir, upstream = resolve_train_features(cfg, str(start.dir), run)
    if start.source and start.source.run_id:
        upstream["init"] = start.source.run_id
    store = FeatureStore(features_dir)
    tok = load_tokenizer(store.tokenizer_dir)
    torch.manual_seed(v.seed)  # the new heads are initialised from the global RNG
    model = start.build(len(tok))

    train_cfg = TrainConfig(
        lr=v.lr,
        weight_decay=v.weight_decay,
        warmup_fraction=v.warmup_fraction,
        epochs=v.epochs,
        max_steps=cfg.max_steps or None,
        batch_size=v.batch_size,
        grad_accum_steps=v.grad_accum_steps,
        seed=v.seed,
        precision=cfg.precision,
        optimizer=cfg.optimizer,
        checkpoint_every_steps=cfg.checkpoint_every,
        checkpoint_every_minutes=cfg.checkpoint_every_minutes,
        keep_checkpoints=cfg.keep_checkpoints or None,
        log_every_steps=cfg.log_every,
        eval_every_steps=cfg.eval_every,
        gradient_checkpointing=cfg.gradient_checkpointing,
        compile=cfg.compile,
    )
    run.log_params(
        {
            "variant": asdict(v),
            "stage": {k: val for k, val in asdict(cfg).items() if k != "variant"},
            "train": asdict(train_cfg),
            "encoder": model.describe(),
            "hardware": {
                **distributed.describe(job),
                "batch_per_device": micro_batch,
                "precision": resolve_precision(train_cfg.precision, job.device),
            },
        }
    )
    run.set_tags(
        {
            BACKBONE_TAG: v.backbone_name,
            BACKBONE_DIR_TAG: str(cfg.backbone),
            MODEL_TYPE_TAG: model.encoder.config.model_type,
            DATA_FINGERPRINT_TAG: store.fingerprint,
            REGISTERED_MODEL_TAG: v.registered_model,
            **{f"{UPSTREAM_TAG_PREFIX}{k}": val for k, val in upstream.items()},
        }
    )
    log_data_inputs(
        run,
        [
            features_input(store.manifest, TRAINING),
            *([read_nq_input(cfg.dev_data, EVALUATION, cfg.dev_examples)] if cfg.dev_data else []),
        ],
        model_ids=[start.source.model_id] if start.source else [],
    )
    # What the features were built with decides (a prepared cache may differ from the variant row).
    top_level_only = bool(store.manifest.get("selection", {}).get("top_level_only", False))
    evaluator = make_dev_eval(cfg, store, top_level_only, job) if cfg.dev_data else None

    out_dir = Path(cfg.output_dir) / "runs" / run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").write_text(json.dumps({"run_id": run.run_id, "variant": v.key}))
    model_features = {
        **store.manifest["features"],
        "top_level_only": top_level_only,
        "decode": DecodeConfig(decode=v.decode).to_dict(),
    }
    keeper = BestCheckpointModels(run, tok, out_dir, model_features, variant_model_info(v), cfg.keep_best_models)
    if cfg.resume == "auto" and job.is_main:
        fetch_resumable_checkpoint(run.run_id, out_dir / CHECKPOINTS_DIR)
    result = train(
        model,
        CandidateDataset(store),
        train_cfg,
        out_dir=out_dir / CHECKPOINTS_DIR,
        logger=run,
        eval_fn=keeper.evaluating(evaluator) if evaluator is not None else None,
        resume=cfg.resume if cfg.resume != "none" else None,
        pad_id=tok.pad_token_id,
    )
    metrics = {**result.metrics, **final_dev_evaluation(evaluator, model, result.step, run)}
    save_final_model(run, model, tok, out_dir, model_features, **variant_model_info(v))
    return metrics


class BestCheckpointModels:
    """The weights at each evaluation as a LoggedModel ``checkpoint`` (its step, its dev metrics
    on it), the best ``keep`` by ``dev/long_f1`` kept: a run's store holds those plus the final
    ``model``, however long it trains (rank 0; ties go to the later step)."""

    def __init__(self, run, tok, out_dir: Path, features: dict, info: dict, keep: int):
        self.run, self.tok, self.root, self.features, self.info, self.keep = (
            run,
            tok,
            out_dir / "checkpoint-models",
            features,
            info,
            keep,
        )
        self.kept: list[tuple[float, int, object, Path]] = []

    def evaluating(self, evaluator):
        """``evaluator`` that also logs the model it evaluated (the loop calls it on every rank)."""
        from tfqa.training.checkpoint import is_rank_zero

        def evaluate(model, step: int) -> dict[str, float]:
            metrics = evaluator(model, step)
            if self.keep and is_rank_zero() and "dev/long_f1" in metrics:
                self.add(model, step, metrics)
            return metrics

        return evaluate

    def add(self, model, step: int, metrics: dict[str, float]) -> None:
        from tfqa.modeling.saved import log_tfqa_model
        from tfqa.tracking.names import CHECKPOINT_MODEL

        folder = self.root / f"step-{step:06d}"
        model.save_pretrained(folder / "weights")
        self.tok.save_pretrained(str(folder / "weights"))
        handle = log_tfqa_model(
            self.run,
            folder / "weights",
            self.features,
            params=self.info["params"],
            tags={**self.info["tags"], "tfqa.checkpoint_step": str(step)},
            name=CHECKPOINT_MODEL,
            step=step,
            metrics={k: v for k, v in metrics.items() if k.startswith("dev/")},
        )
        self.kept.append((float(metrics["dev/long_f1"]), step, handle, folder))
        self.kept.sort(key=lambda k: (k[0], k[1]), reverse=True)
        for _, _, dropped, local in self.kept[self.keep :]:
            self.run.delete_model(dropped, local)
        del self.kept[self.keep :]


def fetch_resumable_checkpoint(run_id: str, ckpt_root: Path) -> Path | None:
    """With no checkpoint on this machine, the run's one in the tracking store
    (``checkpoints/latest``), downloaded into ``ckpt_root`` under its step's name: a run resumes
    on another machine from the store alone. None when there is neither."""
    import shutil

    import mlflow
    from mlflow.exceptions import MlflowException

    from tfqa.training.checkpoint import RESUMABLE_ARTIFACT, STATE_FILE, latest_checkpoint, read_trainer_state, step_dir_name

    if latest_checkpoint(ckpt_root) is not None:
        return None
    tmp = ckpt_root / ".download"
    try:
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=RESUMABLE_ARTIFACT, dst_path=str(tmp)))
    except (MlflowException, OSError):
        local = None  # the run stored none (yet)
    if local is None or not (local / STATE_FILE).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    final = ckpt_root / step_dir_name(int(read_trainer_state(local)["step"]))
    local.rename(final)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"resuming from the run's checkpoint in the tracking store: {final}", flush=True)
    return final


def final_dev_evaluation(evaluator, model, step: int, run) -> dict[str, float]:
    """The final model's dev metrics, logged at the last step; every rank scores its share (the
    others' logger logs nothing). The loop's own evaluation already ran there when ``eval_every``
    is set: it is not repeated, and its metrics are the loop's last ones (the caller has them)."""
    if evaluator is None or evaluator.last_step == step:
        return {}
    metrics = evaluator(model, step)
    run.log_metrics(metrics, step)
    return metrics


def make_dev_eval(cfg: TrainStageConfig, store, top_level_only: bool = False, job=None):
    """The dev evaluation (``tfqa.evaluation.dev.dev_metrics``) on the first ``dev_examples`` dev
    examples, with inputs built as the training features were."""
    from tfqa.evaluation.dev import DevEvaluator

    return DevEvaluator.from_file(
        cfg.dev_data,
        str(store.tokenizer_dir),
        Path(cfg.output_dir) / "features",
        limit=cfg.dev_examples,
        features=FeatureConfig(**store.manifest["features"]),
        top_level_only=top_level_only,
        decode=DecodeConfig(decode=cfg.variant.decode),
        **({"job": job} if job is not None else {}),
    )
