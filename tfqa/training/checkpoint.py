"""Training checkpoints: one readable folder per step, written atomically.

    checkpoints/
      step-000500/
        config.json  model.safetensors  tfqa_head.json   the model (loads with CandidateQAModel.from_pretrained)
        optimizer.pt  scheduler.pt  scaler.pt             state dicts (tensors and plain values; weights_only)
        rng.pt                                            python/numpy/torch/cuda generator states, one per rank
        checkpoint_manifest.json                          each file's size and sha256 (trainer_state.json's too)
        trainer_state.json                                step, data position, config, metrics
      step-001000/
      step-001000.tmp/                                    a save that was cut short: ignored, removed by the next save

A checkpoint is written into ``step-XXXXXX.tmp`` beside its final place, every file fsynced, then
renamed in one step; ``trainer_state.json`` is written last. A folder named ``step-XXXXXX`` is
therefore always complete, whenever the process dies.

What a complete checkpoint held is recorded in ``checkpoint_manifest.json`` (written just before the
state file); a load checks every file against it first, so a file damaged later (a disk fault, a
copy cut short, a stray write) is one line naming the folder and the file, never a traceback
from safetensors or torch, and never optimizer state silently taken from corrupted bytes.
``latest_checkpoint`` (what ``--resume auto`` uses) passes over a damaged newest checkpoint for the
newest intact one and says so. Folders saved before the manifest existed still load, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tfqa.core.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
"""Where a stage keeps its checkpoints: the folder in its output dir and among the run's artifacts."""
RESUMABLE_ARTIFACT = f"{CHECKPOINTS_DIR}/latest"
"""Where a run keeps its one resumable checkpoint among its artifacts, replaced as training goes."""
STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
MANIFEST_FILE = "checkpoint_manifest.json"
MANIFEST_FORMAT = "tfqa-checkpoint-manifest/1"
_HASH_CHUNK = 8 << 20
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_DIR = re.compile(r"^step-(\d+)\.(tmp|old)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


class CheckpointDamaged(UserError, ValueError):
    """A checkpoint folder whose files are not what was saved (or not what this model needs)."""


# ------------------------------------------------------------------------------------ integrity
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": _sha256_file(path)}


def _damaged(ckpt_dir: Path, name: str, reason: str) -> CheckpointDamaged:
    return CheckpointDamaged(f"checkpoint damaged: {reason}", ckpt_dir / name)


def verify_checkpoint(ckpt_dir: str | os.PathLike) -> bool:
    """Check every file of ``ckpt_dir`` against its manifest; raise :class:`CheckpointDamaged`
    naming the folder and the first file that is missing, of another size or of other content.
    Returns False (after a warning) for a checkpoint saved before manifests existed."""
    ckpt_dir = Path(ckpt_dir)
    manifest_path = ckpt_dir / MANIFEST_FILE
    if not manifest_path.exists():
        if not (ckpt_dir / STATE_FILE).exists():
            raise _damaged(ckpt_dir, STATE_FILE, "file missing; not a complete checkpoint")
        log.warning("%s: no %s (saved by an older tfqa): its files cannot be checked", ckpt_dir, MANIFEST_FILE)
        return False
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(ckpt_dir, MANIFEST_FILE, f"unreadable manifest ({type(exc).__name__})") from None
    for name, want in sorted(files.items()):
        path = ckpt_dir / name
        if not path.is_file():
            raise _damaged(ckpt_dir, name, "file missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise _damaged(ckpt_dir, name, f"{size} bytes, saved with {want['size']}")
        if _sha256_file(path) != want["sha256"]:
            raise _damaged(ckpt_dir, name, "content differs from what was saved (sha256 mismatch)")
    return True


def _check_architecture(model: torch.nn.Module, weights: Path) -> None:
    """Refuse weights saved from another architecture, counting the keys that differ, before
    safetensors' strict load would raise a multi-line RuntimeError."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import _find_shared_tensors

    try:
        with safe_open(str(weights), framework="pt") as fh:
            saved = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged(weights.parent, weights.name, f"not readable as safetensors ({_short_reason(exc)})") from None
    state = model.state_dict()
    # save_model keeps one name of each group of tied tensors; any name of the group may be the one.
    groups = [sorted(g) for g in _find_shared_tensors(state)]
    grouped = {name for g in groups for name in g}
    groups += [[name] for name in state if name not in grouped]
    missing = [g[0] for g in groups if not any(name in saved for name in g)]
    known = set(state)
    unexpected = [key for key in saved if key not in known]
    reshaped = [key for key in saved if key in state and tuple(state[key].shape) != saved[key]]
    if missing or unexpected or reshaped:
        kinds = ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
        counts = ", ".join(f"{len(keys)} {what}" for keys, what in kinds if keys)
        example = (reshaped or missing or unexpected)[0]
        raise _damaged(
            weights.parent,
            weights.name,
            f"weights of another architecture: {len(missing) + len(unexpected) + len(reshaped)} keys differ from this model's "
            f"({counts}; e.g. {example!r})",
        )


def _short_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


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
    state_bytes = (json.dumps(state, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    files = {path.name: _file_entry(path) for path in sorted(tmp.iterdir())}
    files[STATE_FILE] = {"size": len(state_bytes), "sha256": hashlib.sha256(state_bytes).hexdigest()}
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # The state file goes last: its presence (with the folder's final name) marks a whole checkpoint.
    (tmp / STATE_FILE).write_bytes(state_bytes)
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


def remove_leftovers(root: str | os.PathLike) -> list[str]:
    """Delete what killed saves and uploads left in ``root`` (``step-N.tmp``/``.old`` folders,
    upload snapshots); returns their names. Called when training starts (rank 0)."""
    root = Path(root)
    if not root.is_dir():
        return []
    gone = [p for p in root.iterdir() if _TMP_DIR.match(p.name)] + ([root / ".upload"] if (root / ".upload").exists() else [])
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in gone]


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
    """The newest intact checkpoint under ``root``: a newer one whose files fail their manifest
    is passed over with a warning naming it and why (a resume from it could only fail)."""
    found = list_checkpoints(root)
    for newer, path in enumerate(reversed(found)):
        try:
            verify_checkpoint(path)
        except CheckpointDamaged as err:
            log.warning("skipping damaged checkpoint %s: %s", path, err)
            continue
        if newer:
            log.warning("resuming from %s, the newest intact checkpoint (%d newer one(s) damaged)", path, newer)
        return path
    return None


def snapshot(ckpt_dir: Path, into: Path) -> Path:
    """Hard links of ``ckpt_dir``'s files in ``into``: what an upload reads while pruning deletes
    the checkpoint itself (no bytes copied; the files live until both names are gone)."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for f in ckpt_dir.iterdir():
        try:
            os.link(f, into / f.name)
        except OSError:  # a file system without hard links
            shutil.copy2(f, into / f.name)
    return into


def read_rng_states(ckpt_dir: str | os.PathLike) -> list[dict] | None:
    """Every rank's RNG state saved in ``ckpt_dir``, in rank order (None for a checkpoint without)."""
    path = Path(ckpt_dir) / RNG_FILE
    return torch.load(path, map_location="cpu", weights_only=True)["ranks"] if path.exists() else None


def read_trainer_state(ckpt_dir: str | os.PathLike) -> dict:
    path = Path(ckpt_dir) / STATE_FILE
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _damaged(Path(ckpt_dir), STATE_FILE, f"not readable as JSON ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise _damaged(Path(ckpt_dir), STATE_FILE, "not a JSON object")
    return state


def _torch_load(path: Path, map_location) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as exc:
        raise _damaged(path.parent, path.name, f"not readable by torch.load ({_short_reason(exc)})") from None


def _load_state_dict(obj: Any, saved: Any, path: Path) -> None:
    try:
        obj.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise _damaged(path.parent, path.name, f"does not fit this {type(obj).__name__} ({_short_reason(exc)})") from None


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
    verify: bool = True,
) -> dict:
    """Restore what is given from ``ckpt_dir`` and return its trainer state.

    Every file is checked against the checkpoint's manifest first (see ``verify_checkpoint``), and
    the weights' keys and shapes against ``model``'s: a damaged file or another architecture is
    one :class:`CheckpointDamaged` line naming the folder and the file. ``verify=False`` skips the
    checksums (not the architecture check) for a folder ``latest_checkpoint`` has just verified:
    hashing a bert-large checkpoint with Adam's state (4 GB) takes seconds.
    Weights come from safetensors; optimizer/scheduler/scaler states through
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain values.
    The RNG states of ``rank`` are restored when the checkpoint has them; the returned state's
    ``rng_restored`` says whether it did (it cannot when the run now has more ranks than saved).
    """
    from tfqa.modeling.model import load_weights

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).exists():
        raise FileNotFoundError(f"{ckpt_dir}: no {STATE_FILE}; not a complete checkpoint")
    if verify:
        verify_checkpoint(ckpt_dir)
    state = read_trainer_state(ckpt_dir)
    if model is not None:
        model = _unwrap(model)
        device = next(model.parameters()).device
        weights = ckpt_dir / "model.safetensors"
        if not weights.is_file():
            raise _damaged(ckpt_dir, weights.name, "file missing")
        _check_architecture(model, weights)
        load_weights(model, weights, device=device)
    for name, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler), ("scaler.pt", scaler)):
        if obj is None:
            continue
        path = ckpt_dir / name
        if path.exists():
            _load_state_dict(obj, _torch_load(path, map_location), path)
        elif name == "optimizer.pt":
            raise FileNotFoundError(f"{ckpt_dir}: no {name} to restore the optimizer from")
        elif obj.state_dict():
            # E.g. resumed in fp16 from an fp32/bf16 run, which had no grad scaler: start a fresh one.
            log.warning("%s: no %s; the %s starts fresh", ckpt_dir, name, type(obj).__name__)
    state["rng_restored"] = False
    if restore_rng and (ckpt_dir / RNG_FILE).exists():
        ranks = _torch_load(ckpt_dir / RNG_FILE, "cpu")["ranks"]
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
    ``log_tfqa_model``); the run's resumable checkpoint leaves the tracking store. Rank 0 only:
    under DDP every rank holds the same weights, and every rank writing one folder and logging one
    model would collide. Returns the folder (None elsewhere)."""
    if not is_rank_zero():
        return None
    from tfqa.modeling.saved import log_tfqa_model

    final = Path(out_dir) / "final"
    model.save_pretrained(final)
    tok.save_pretrained(str(final))
    log_tfqa_model(run, final, features, params=params, tags=tags)
    # Finished: nothing is left to resume, so the store keeps the model, not 3x its size in Adam state.
    run.delete_artifacts(RESUMABLE_ARTIFACT)
    return final
