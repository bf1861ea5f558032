"""The training loop and its parts: LR schedule, length-grouped sampler, collate, checkpoints,
learning on tiny BERT/ALBERT, exact resume after SIGKILL, and a 2-process gloo DDP run."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tfqa.features.batching import LengthGroupedSampler, collate
from tfqa.modeling.model import CandidateQAModel
from tfqa.training.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
)
from tfqa.training.loop import TrainConfig, build_optimizer, lr_at, train

from tiny_training import FakeCandidates, RecordingLogger, tiny_model, tiny_train_config, write_backbone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HELPER = Path(__file__).resolve().parents[1] / "tiny_training.py"
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ schedule
def test_lr_warmup_then_linear_decay():
    lrs = [lr_at(s, peak=1.0, warmup_steps=4, total_steps=12) for s in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(1 / 8) and lrs[-1] > 0
    assert lr_at(12, peak=1.0, warmup_steps=4, total_steps=12) == 0.0
    assert lr_at(0, peak=2.0, warmup_steps=0, total_steps=10) == 2.0


# ------------------------------------------------------------------------------------ sampler
def _lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(10, 360, size=n)


def test_sampler_deterministic_and_covers_every_row_once():
    lengths = _lengths()
    a = LengthGroupedSampler(lengths, 16, seed=3).batches(0)
    b = LengthGroupedSampler(lengths, 16, seed=3).batches(0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == math.ceil(1000 / 16)
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    other_epoch = LengthGroupedSampler(lengths, 16, seed=3).batches(1)
    other_seed = LengthGroupedSampler(lengths, 16, seed=4).batches(0)
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_epoch))
    assert not np.array_equal(np.concatenate(a), np.concatenate(other_seed))


def _padded_tokens(batches, lengths):
    return sum(len(b) * lengths[b].max() for b in batches)


def test_length_grouping_pads_less_than_random_order_yet_stays_shuffled():
    lengths = _lengths(4000)
    sampler = LengthGroupedSampler(lengths, 32, seed=0)
    grouped = sampler.batches(0)
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    real = lengths.sum()
    grouped_waste = _padded_tokens(grouped, lengths) / real - 1
    random_waste = _padded_tokens(random_batches, lengths) / real - 1
    assert grouped_waste < 0.1 < 0.5 < random_waste
    # The batch order is not sorted: consecutive batches' lengths jump around.
    means = np.array([lengths[b].mean() for b in grouped])
    assert not (np.all(np.diff(means) >= 0) or np.all(np.diff(means) <= 0))
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.3


@pytest.mark.parametrize("n", [1000, 1003, 2])
def test_ddp_sharding_partitions_the_batches(n):
    lengths = _lengths(n)
    world = 3
    shards = [LengthGroupedSampler(lengths, 8, seed=1, rank=r, world_size=world) for r in range(world)]
    per_rank = [s.batches(0) for s in shards]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == shards[0].num_batches
    for step in zip(*per_rank):  # every step: same batch size on each rank
        assert len({len(b) for b in step}) == 1
    rows = np.concatenate([np.concatenate(b) for b in per_rank])
    assert set(rows.tolist()) == set(range(n))
    assert len(rows) - n < world  # at most world-1 rows repeated to even out the last step
    # Ranks of one step see rows of neighbouring lengths (one sorted run split in three).
    if n >= 1000:
        spread = np.mean([np.ptp([lengths[b].mean() for b in step]) for step in zip(*per_rank)])
        assert spread < 20
    # The plan only depends on rows per step: 1 rank x 24 rows = 3 ranks x 8 rows (but for the
    # rows that pad a short last step over 3 ranks).
    single = LengthGroupedSampler(lengths, 24, seed=1).steps(0)
    assert all(np.array_equal(a, b[: len(a)]) for a, b in zip(single, shards[0].steps(0), strict=True))


def test_resume_skip_equals_tail_of_full_epoch():
    lengths = _lengths(500)
    sampler = LengthGroupedSampler(lengths, 8, seed=5, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=11)
    assert len(sampler) == len(full) - 11
    assert list(sampler) == full[11:]
    sampler.set_epoch(2, start_batch=sampler.num_batches)
    assert list(sampler) == []
    with pytest.raises(ValueError):
        sampler.set_epoch(2, start_batch=sampler.num_batches + 1)


# ------------------------------------------------------------------------------------ collate
def test_collate_pads_dynamically():
    rows = FakeCandidates(5, seed=2)
    items = [rows[i] for i in range(5)]
    longest = max(len(r["input_ids"]) for r in items)
    batch = collate(items, pad_id=9)
    assert batch["input_ids"].shape == (5, longest) and batch["input_ids"].dtype == torch.int64
    for i, r in enumerate(items):
        n = len(r["input_ids"])
        assert batch["attention_mask"][i].sum() == n
        assert (batch["input_ids"][i, n:] == 9).all() and (batch["token_type_ids"][i, n:] == 0).all()
        assert batch["input_ids"][i, :n].tolist() == r["input_ids"].tolist()
    assert batch["label"].tolist() == [r["label"] for r in items]
    assert batch["start_position"].dtype == torch.int64
    assert collate(items, pad_id=0, pad_to_multiple_of=8)["input_ids"].shape[1] == math.ceil(longest / 8) * 8
    assert collate(items, pad_id=0, pad_to=64)["input_ids"].shape[1] == 64


# ------------------------------------------------------------------------------------ checkpoints
def _save(root, step, model, optimizer=None, keep=None):
    return save_checkpoint(
        root,
        step,
        model=model,
        optimizer=optimizer,
        data_position={"epoch": 0, "batch_in_epoch": step},
        config={"lr": 1.0},
        metrics={"train/loss": 0.5},
        keep_last=keep,
    )


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model = tiny_model()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    batch = collate([FakeCandidates(4)[i] for i in range(4)])
    model.loss(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)["total"].backward()
    optimizer.step()
    torch.manual_seed(123)
    path = _save(tmp_path, 7, model, optimizer)
    after = torch.rand(3)
    assert path.name == "step-000007"
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "tfqa_head.json",
        "optimizer.pt",
        "rng.pt",
        "trainer_state.json",
    }
    state = read_trainer_state(path)
    assert state["step"] == 7 and state["batch_in_epoch"] == 7 and state["metrics"]["train/loss"] == 0.5

    fresh = tiny_model(seed=1)
    fresh_opt = build_optimizer(fresh, TrainConfig(lr=1e-3), torch.device("cpu"))
    torch.manual_seed(999)
    loaded = load_checkpoint(path, model=fresh, optimizer=fresh_opt)
    assert loaded["rng_restored"] and torch.equal(torch.rand(3), after)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name])
    exp_avg = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
    fresh_avg = [s["exp_avg"] for s in fresh_opt.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(exp_avg, fresh_avg))
    # The folder is a model folder too.
    assert torch.equal(CandidateQAModel.from_pretrained(path).classifier.weight, model.classifier.weight)


def test_checkpoint_atomicity_and_keep_last(tmp_path):
    model = tiny_model()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    # A save killed half-way leaves a tmp folder (and maybe a step folder without its state file):
    # neither counts as a checkpoint.
    shutil.copytree(tmp_path / "step-000003", tmp_path / "step-000009.tmp")
    (tmp_path / "step-000008").mkdir()
    (tmp_path / "step-000008" / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert latest_checkpoint(tmp_path / "nothing-here") is None
    # The next save clears the leftover tmp folder.
    _save(tmp_path, 4, model, keep=2)
    assert not (tmp_path / "step-000009.tmp").exists()
    assert latest_checkpoint(tmp_path).name == "step-000004"
    # Saving the same step again replaces it whole.
    _save(tmp_path, 4, model, keep=2)
    assert read_trainer_state(tmp_path / "step-000004")["step"] == 4
    assert not any(p.name.endswith((".tmp", ".old")) for p in tmp_path.iterdir())
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "step-000008", model=model)


def test_rng_state_is_weights_only_loadable(tmp_path):
    torch.save({"ranks": [capture_rng_state()]}, tmp_path / "rng.pt")
    torch.load(tmp_path / "rng.pt", weights_only=True)


# ------------------------------------------------------------------------------------ config
def test_train_config_validation_and_apex_message():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(batch_size=10, grad_accum_steps=4)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.5)
    try:
        import apex.optimizers  # noqa: F401

        pytest.skip("NVIDIA apex is installed here")  # only on a GPU machine with apex built from source
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="NVIDIA apex"):
        build_optimizer(tiny_model(), TrainConfig(optimizer="apex_fused_adam"), torch.device("cpu"))


# ------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_a_few_dozen_steps_lower_the_loss(kind, tmp_path, capsys):
    logger = RecordingLogger()
    result = train(tiny_model(kind), FakeCandidates(160, seed=0), tiny_train_config(), out_dir=tmp_path, logger=logger)
    assert result.step == 40 and result.total_steps == 40
    # One progress line per logging window on stderr, the last one at the end with nothing left.
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train step ")]
    assert len(progress) == len(logger.metrics) and progress[-1].startswith("train step 40/40 (100%) loss ")
    assert progress[-1].endswith("seq/s, 0m00s left"), progress[-1]
    losses = [m["train/loss"] for _, m in logger.metrics]
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses
    last = logger.metrics[-1][1]
    for key in (
        "train/loss",
        "train/class_loss",
        "train/span_loss",
        "train/lr",
        "train/grad_norm",
        "train/seqs_per_s",
        "train/tokens_per_s",
        "train/padding_fraction",
    ):
        assert math.isfinite(last[key]), key
    assert 0 <= last["train/padding_fraction"] < 0.5
    # Checkpoints at each epoch end (160 rows / 16 = 10 steps) and the end; keep_checkpoints=1.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000040"]
    # Each save goes to the store's one resumable slot, from a snapshot that pruning cannot touch.
    assert [a[1] for a in logger.artifacts] == ["checkpoints/latest"] * 4
    assert [Path(a[0]).name for a in logger.artifacts] == [f"step-0000{s}" for s in (10, 20, 30, 40)]


def test_bf16_autocast_trains_with_fp32_master_weights(tmp_path):
    # On CPU bf16 is emulated (slow), so auto picks fp32; asked for, the autocast path still works.
    logger = RecordingLogger()
    model = tiny_model()
    cfg = tiny_train_config(max_steps=3, batch_size=8, precision="bf16")
    result = train(model, FakeCandidates(32), cfg, out_dir=tmp_path, logger=logger)
    assert read_trainer_state(result.checkpoint)["config"]["precision_used"] == "bf16"
    assert all(math.isfinite(m["train/loss"]) for _, m in logger.metrics)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="fp16"):
        train(tiny_model(), FakeCandidates(8), tiny_train_config(precision="fp16"), out_dir=tmp_path / "x")


def test_resume_from_a_copied_checkpoint_matches_and_eval_does_not_disturb(tmp_path):
    data = FakeCandidates(40, seed=4)
    cfg = tiny_train_config(
        max_steps=12,
        batch_size=8,
        grad_accum_steps=2,
        checkpoint_every_steps=4,
        keep_checkpoints=None,
        eval_every_steps=5,
        warmup_steps=2,
    )
    calls = []

    def eval_fn(model, step):
        assert not model.training
        calls.append(step)
        torch.rand(100)  # draws from the global RNG: must not change the training
        return {"score": float(step)}

    logger = RecordingLogger()
    full = tiny_model()
    train(full, data, cfg, out_dir=tmp_path / "a", logger=logger, eval_fn=eval_fn)
    assert calls == [5, 10, 12]
    assert (10, {"eval/score": 10.0}) in logger.metrics

    # Same run without evaluation: same weights.
    quiet = tiny_model()
    train(quiet, data, cfg, out_dir=tmp_path / "b")
    assert all(torch.equal(v, quiet.state_dict()[k]) for k, v in full.state_dict().items())

    # Resume from the middle (step 4: mid-epoch, 5 rows batches, 10 per epoch) in a fresh folder.
    shutil.copytree(tmp_path / "b" / "step-000004", tmp_path / "c" / "step-000004")
    resumed = tiny_model(seed=5)
    result = train(resumed, data, cfg, out_dir=tmp_path / "c", resume="auto")
    assert result.resumed_from.name == "step-000004" and result.step == 12
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())


def _run_helper(args, **popen):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    backbone = write_backbone(tmp_path / "backbone")
    common = ["--backbone", backbone, "--steps", 20, "--checkpoint-every", 5, "--keep", 2]
    # 60 rows, 4 rows per micro-batch, 2 micro-batches per step: 8 steps per epoch (the last one short).
    reference = _run_helper([*common, "--out", tmp_path / "ref"])
    progress = tmp_path / "progress"
    victim = _run_helper([*common, "--out", tmp_path / "run", "--workers", 1, "--progress", progress, "--hang-at-step", 7])
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text() == "7"):
        assert victim.poll() is None, victim.stdout.read()
        assert time.monotonic() < deadline, "the run never reached step 7"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    # Killed after step 7; its newest checkpoint is step 5 (mid-epoch: batch 10 of 15).
    assert latest_checkpoint(tmp_path / "run").name == "step-000005"
    assert read_trainer_state(tmp_path / "run" / "step-000005")["batch_in_epoch"] == 10

    resumed = _run_helper([*common, "--out", tmp_path / "run", "--workers", 1])
    for proc in (reference, resumed):
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000016", "step-000020"]
    ref = load_file(str(tmp_path / "ref" / "step-000020" / "model.safetensors"))
    got = load_file(str(tmp_path / "run" / "step-000020" / "model.safetensors"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # ...and training did move the weights.
    start = CandidateQAModel.from_backbone(backbone).state_dict()
    assert not torch.equal(start["encoder.embeddings.word_embeddings.weight"], got["encoder.embeddings.word_embeddings.weight"])


def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path):
    backbone = write_backbone(tmp_path / "backbone")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HELPER),
        "--backbone",
        str(backbone),
        "--out",
        str(tmp_path / "ckpt"),
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
        "--report",
        str(tmp_path / "report"),
    ]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / "report" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["step"] == reports[1]["step"] == 6
    # Only rank 0 logs and writes checkpoints.
    assert reports[0]["logged"] == 6 and reports[0]["artifacts"] == 2 and reports[0]["checkpoint"]
    assert reports[1]["logged"] == 0 and reports[1]["artifacts"] == 0 and reports[1]["checkpoint"] is None
    w0 = load_file(str(tmp_path / "report" / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "report" / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step-000003", "step-000006"]
    state = read_trainer_state(tmp_path / "ckpt" / "step-000006")
    assert state["world_size"] == 2 and state["step_rows"] == 8  # rows of one optimizer step
    ranks = torch.load(tmp_path / "ckpt" / "step-000006" / "rng.pt", weights_only=True)["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    ckpt = load_file(str(tmp_path / "ckpt" / "step-000006" / "model.safetensors"))
    assert all(torch.equal(w0[k], ckpt[k]) for k in w0)


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_gradient_checkpointing_trains_the_same_weights(tmp_path, kind):
    """Recomputing activations in backward changes memory, not the result (ALBERT, which
    transformers refuses, gets its shared layer group checkpointed by tfqa)."""
    weights = []
    for on in (False, True):
        model = tiny_model(kind, dropout=0.0)
        cfg = tiny_train_config(max_steps=3, gradient_checkpointing=on, checkpoint_every_steps=0)
        train(model, FakeCandidates(48, seed=1), cfg, out_dir=tmp_path / f"{kind}-{on}", resume=None)
        weights.append(model.state_dict())
    plain, checkpointed = weights
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)
    assert not torch.equal(plain["classifier.weight"], tiny_model(kind, dropout=0.0).state_dict()["classifier.weight"])


def test_a_start_removes_what_killed_saves_left(tmp_path):
    (tmp_path / "step-000005.tmp").mkdir(parents=True)
    (tmp_path / "step-000005.tmp" / "model.safetensors").write_bytes(b"half")
    (tmp_path / "step-000003.old").mkdir()
    (tmp_path / ".upload" / "step-000003").mkdir(parents=True)
    cfg = tiny_train_config(max_steps=1, checkpoint_every_steps=0)
    train(tiny_model(), FakeCandidates(16), cfg, out_dir=tmp_path, resume="auto")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
