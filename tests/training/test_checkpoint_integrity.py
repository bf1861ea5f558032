"""Checkpoint integrity: every file checked against the manifest written at save, a damaged file or
another architecture is one line naming the folder and the file, and ``--resume auto`` passes over
a damaged newest checkpoint for the newest intact one."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from tfqa.core.errors import refusal_message
from tfqa.features.batching import collate
from tfqa.training.checkpoint import (
    MANIFEST_FILE,
    STATE_FILE,
    CheckpointDamaged,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tfqa.training.loop import TrainConfig, build_optimizer, train

from tiny_training import FakeCandidates, tiny_model, tiny_train_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_checkpoint(root, step=3, model=None):
    """A checkpoint with real Adam moments (one optimizer step taken)."""
    model = model or tiny_model()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    batch = collate([FakeCandidates(4)[i] for i in range(4)])
    model.loss(model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]), batch)["total"].backward()
    optimizer.step()
    path = save_checkpoint(root, step, model=model, optimizer=optimizer, data_position={"epoch": 0, "batch_in_epoch": step})
    return path


def _load_into_fresh(path):
    model = tiny_model(seed=1)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    return load_checkpoint(path, model=model, optimizer=optimizer)


def _refusal(path) -> str:
    with pytest.raises(CheckpointDamaged) as info:
        _load_into_fresh(path)
    line = refusal_message(info.value)
    assert line is not None and "\n" not in line
    return line


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    path = _trained_checkpoint(tmp_path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    on_disk = {p.name for p in path.iterdir()} - {MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk and STATE_FILE in on_disk and "optimizer.pt" in on_disk
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size and len(entry["sha256"]) == 64
    assert _load_into_fresh(path)["step"] == 3


def _half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _zero_64_in_the_middle(path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        ("model.safetensors", _half, "bytes, saved with"),
        ("model.safetensors", _empty, "0 bytes, saved with"),
        ("optimizer.pt", _zero_64_in_the_middle, "sha256 mismatch"),
        ("rng.pt", lambda p: p.unlink(), "file missing"),
        (STATE_FILE, lambda p: p.write_text(p.read_text().replace('"step": 3', '"step": 9')), "sha256 mismatch"),
    ],
)
def test_a_damaged_file_is_one_line_naming_folder_and_file(tmp_path, name, damage, says):
    path = _trained_checkpoint(tmp_path)
    damage(path / name)
    line = _refusal(path)
    assert f"{path / name}: checkpoint damaged:" in line and says in line


def test_weights_of_another_architecture_say_how_many_keys_differ(tmp_path):
    # A whole, intact checkpoint (its manifest agrees) of a 3-layer model, resumed into a 2-layer one.
    path = _trained_checkpoint(tmp_path, model=tiny_model(num_hidden_layers=3))
    line = _refusal(path)
    assert f"{path / 'model.safetensors'}: checkpoint damaged: weights of another architecture:" in line
    assert "keys differ" in line and "unexpected" in line
    # Another width: every key of the encoder has another shape.
    other = _trained_checkpoint(tmp_path / "wide", model=tiny_model(hidden_size=48, intermediate_size=96))
    line = _refusal(other)
    assert "of another shape" in line and "unexpected" not in line


def test_old_checkpoint_without_manifest_still_loads_and_damage_is_still_one_line(tmp_path, caplog):
    path = _trained_checkpoint(tmp_path)
    (path / MANIFEST_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="tfqa.training.checkpoint"):
        assert _load_into_fresh(path)["step"] == 3
    assert f"no {MANIFEST_FILE}" in caplog.text
    _half(path / "model.safetensors")
    assert "model.safetensors: checkpoint damaged: not readable as safetensors" in _refusal(path)
    path = _trained_checkpoint(tmp_path / "b")
    (path / MANIFEST_FILE).unlink()
    _half(path / "optimizer.pt")
    assert "optimizer.pt: checkpoint damaged: not readable by torch.load" in _refusal(path)


def test_latest_checkpoint_skips_a_damaged_newest_and_says_so(tmp_path, caplog):
    model = tiny_model()
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, model=model, data_position={"epoch": 0, "batch_in_epoch": step})
    _zero_64_in_the_middle(tmp_path / "step-000006" / "model.safetensors")
    (tmp_path / "step-000004" / "rng.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="tfqa.training.checkpoint"):
        assert latest_checkpoint(tmp_path).name == "step-000002"
    assert "skipping damaged checkpoint" in caplog.text and "step-000006" in caplog.text and "step-000004" in caplog.text
    assert "newest intact checkpoint (2 newer one(s) damaged)" in caplog.text


def test_resume_auto_in_the_training_loop_goes_on_from_the_newest_intact_checkpoint(tmp_path, caplog):
    data = FakeCandidates(40, seed=4)
    cfg = tiny_train_config(max_steps=8, batch_size=8, grad_accum_steps=2, checkpoint_every_steps=4, keep_checkpoints=None)
    full = tiny_model()
    train(full, data, cfg, out_dir=tmp_path / "a")
    # A copy of the run, stopped at step 8, whose step-8 checkpoint was damaged: the resume must go on
    # from step 4 and reach step 8's weights again.
    shutil.copytree(tmp_path / "a" / "step-000004", tmp_path / "b" / "step-000004")
    shutil.copytree(tmp_path / "a" / "step-000008", tmp_path / "b" / "step-000008")
    _half(tmp_path / "b" / "step-000008" / "optimizer.pt")
    resumed = tiny_model(seed=5)
    with caplog.at_level(logging.WARNING, logger="tfqa.training.checkpoint"):
        result = train(resumed, data, cfg, out_dir=tmp_path / "b", resume="auto")
    assert result.resumed_from.name == "step-000004" and result.step == 8
    assert "skipping damaged checkpoint" in caplog.text
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())


def test_resume_from_a_named_damaged_checkpoint_is_refused(tmp_path):
    data = FakeCandidates(40, seed=4)
    cfg = tiny_train_config(max_steps=4, batch_size=8, grad_accum_steps=2, checkpoint_every_steps=4, keep_checkpoints=None)
    train(tiny_model(), data, cfg, out_dir=tmp_path / "a")
    ckpt = tmp_path / "a" / "step-000004"
    _empty(ckpt / "model.safetensors")
    with pytest.raises(CheckpointDamaged, match="model.safetensors: checkpoint damaged: 0 bytes"):
        cfg = tiny_train_config(max_steps=6, batch_size=8, grad_accum_steps=2)
        train(tiny_model(), data, cfg, out_dir=tmp_path / "b", resume=ckpt)
