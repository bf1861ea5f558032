"""Training checkpoints: one readable folder per step, written atomically.

    checkpoints/
      step-000500/
        config.json  model.safetensors  tfqa_head.json   the model (loads with CandidateQAModel.from_pretrained)
        optimizer.pt  scheduler.pt  scaler.pt             state dicts (tensors and plain values; weights_only)
        rng.pt                                            python/numpy/torch/cuda generator states, one per rank
        trainer_state.json                                step, data position, config, metrics
      step-001000/
      step-001000.tmp/                                    a save that was cut short: ignored, removed by the next save

A checkpoint is written into ``step-XXXXXX.tmp`` beside its final place, every file fsynced, then
renamed in one step; ``trainer_state.json`` is written last. A folder named ``step-XXXXXX`` is
therefore always complete, whenever the process dies.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
"""Where a stage keeps its checkpoints: the folder in its output dir and among the run's artifacts."""
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_DIR = re.compile(r"^step-(\d+)\.(tmp|old)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# ------------------------------------------------------------------------------------ RNG state
def capture_rng_state() -> dict[str, Any]:
    """The generator states of python, numpy, torch (CPU) and this process's CUDA device, as
    tensors and plain values so that ``torch.load(weights_only=True)`` reads them back. Only the
    current device's: a rank uses one GPU, and a resume may see fewer GPUs than the save did
    (SLURM binds one per task; 8 GPUs -> 1)."""
    version, py_state, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    saved = state["cuda"]
    if saved and torch.cuda.is_available():
        # One entry: this rank's device. Checkpoints written before held every visible device's:
        # take the current device's when it is among them.
        current = torch.cuda.current_device()
        torch.cuda.set_rng_state(saved[current] if len(saved) > 1 and current < len(saved) else saved[0])


# ------------------------------------------------------------------------------------ save
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DDP / compiled wrappers keep the real model in .module


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rng_states: list[dict] | None = None,
    data_position: dict[str, int] | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
    keep_last: int | None = None,
    unsent_metrics: list[dict] | None = None,
) -> Path:
    """Write ``root/step-XXXXXX`` atomically and return it; then delete all but the newest
    ``keep_last`` checkpoints (``None`` or 0 keeps all).

    ``rng_states``: one ``capture_rng_state()`` per rank, in rank order (default: this process's).
    ``data_position``: where the data stream stands, e.g. ``{"epoch": 1, "batch_in_epoch": 40}``.
    ``unsent_metrics``: metric points the tracking server had not confirmed yet; a resume sends
    them again, so that a kill right after the save loses none of the steps it covers.
    Call it on one process only (rank 0).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    model = _unwrap(model)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(tmp)
    else:
        from safetensors.torch import save_model

        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    for name, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler), ("scaler.pt", scaler)):
        if obj is not None and obj.state_dict():
            torch.save(obj.state_dict(), tmp / name)
    torch.save({"ranks": rng_states if rng_states is not None else [capture_rng_state()]}, tmp / RNG_FILE)
    state = {
        "step": step,
        **(data_position or {}),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config or {},
        "metrics": metrics or {},
        "unsent_metrics": unsent_metrics or [],
    }
    # The state file goes last: its presence (with the folder's final name) marks a whole checkpoint.
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True, default=str) + "\n")
    for path in tmp.iterdir():
        _fsync_file(path)
    _fsync_dir(tmp)

    if final.exists():  # saved again at the same step (e.g. a re-run): swap, never leave a gap
        old = root / f"{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)

    for path in root.iterdir():  # leftovers of saves that were killed
        if _TMP_DIR.match(path.name) and path != tmp:
            shutil.rmtree(path, ignore_errors=True)
    if keep_last:
        for old_ckpt in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old_ckpt)
    return final


# ------------------------------------------------------------------------------------ find / load
def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first; ``*.tmp`` leftovers are not among them."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir() and (path / STATE_FILE).exists():
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_rng_states(ckpt_dir: str | os.PathLike) -> list[dict] | None:
    """Every rank's RNG state saved in ``ckpt_dir``, in rank order (None for a checkpoint without)."""
    path = Path(ckpt_dir) / RNG_FILE
    return torch.load(path, map_location="cpu", weights_only=True)["ranks"] if path.exists() else None


def read_trainer_state(ckpt_dir: str | os.PathLike) -> dict:
    return json.loads((Path(ckpt_dir) / STATE_FILE).read_text())


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    rank: int = 0,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Restore what is given from ``ckpt_dir`` and return its trainer state.

    Weights come from safetensors; optimizer/scheduler/scaler states through
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain values.
    The RNG states of ``rank`` are restored when the checkpoint has them; the returned state's
    ``rng_restored`` says whether it did (it cannot when the run now has more ranks than saved).
    """
    from tfqa.modeling.model import load_weights

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).exists():
        raise FileNotFoundError(f"{ckpt_dir}: no {STATE_FILE}; not a complete checkpoint")
    state = read_trainer_state(ckpt_dir)
    if model is not None:
        model = _unwrap(model)
        device = next(model.parameters()).device
        load_weights(model, ckpt_dir / "model.safetensors", device=device)
    for name, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler), ("scaler.pt", scaler)):
        if obj is None:
            continue
        path = ckpt_dir / name
        if path.exists():
            obj.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))
        elif name == "optimizer.pt":
            raise FileNotFoundError(f"{ckpt_dir}: no {name} to restore the optimizer from")
        elif obj.state_dict():
            # E.g. resumed in fp16 from an fp32/bf16 run, which had no grad scaler: start a fresh one.
            log.warning("%s: no %s; the %s starts fresh", ckpt_dir, name, type(obj).__name__)
    state["rng_restored"] = False
    if restore_rng and (ckpt_dir / RNG_FILE).exists():
        ranks = torch.load(ckpt_dir / RNG_FILE, map_location="cpu", weights_only=True)["ranks"]
        if rank < len(ranks):
            restore_rng_state(ranks[rank])
            state["rng_restored"] = True
    return state


# ------------------------------------------------------------------------------------ final model
def is_rank_zero() -> bool:
    """Whether this process is the first (or only) one of a ``torchrun`` launch."""
    return int(os.environ.get("RANK", "0")) == 0


def save_final_model(
    run, model, tok, out_dir: str | os.PathLike, features: dict, *, params: dict | None = None, tags: dict | None = None
) -> Path | None:
    """The trained model and its tokenizer in ``out_dir/final``, logged as the run's model (see
    ``log_tfqa_model``). Rank 0 only: under DDP every rank holds the same weights, and every rank
    writing one folder and logging one model would collide. Returns the folder (None elsewhere)."""
    if not is_rank_zero():
        return None
    from tfqa.modeling.saved import log_tfqa_model

    final = Path(out_dir) / "final"
    model.save_pretrained(final)
    tok.save_pretrained(str(final))
    log_tfqa_model(run, final, features, params=params, tags=tags)
    return final
