"""The one home for what several processes of a ``torchrun`` job share: the process group, each
rank's device, rank 0's decisions sent to every rank, and work split into per-rank shards.

Training, mining, SQuAD and validate all use it the same way::

    job = distributed.init()               # at the stage's start, before its MLflow run opens
    cfg = job.decide(resolve_settings)     # rank 0 resolves; every rank gets its answer (or its error)
    mine = rows[job.shard(len(rows))]      # a contiguous share of the work
    parts = job.gather(my_outputs)         # rank 0 gets every rank's share, in rank order

Two process groups: the default one (nccl on GPUs, gloo on CPUs) carries tensors (DDP's
gradients, loss sums); a gloo *control* group carries Python objects and the long waits (rank 0
resolving upstream runs, a feature cache one rank builds while the others wait). NCCL's watchdog
ends a collective after 10 minutes, which any of those waits can outlast; the control group waits
``TFQA_DIST_WAIT_MINUTES`` (default 24 h).

Without ``WORLD_SIZE > 1`` everything here is the one-process identity: ``decide`` runs the
function, ``shard`` is everything, ``gather`` is a list of one.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from tfqa.core.errors import UserError, one_line

log = logging.getLogger(__name__)

WAIT_MINUTES_ENV = "TFQA_DIST_WAIT_MINUTES"
T = TypeVar("T")

# torch keeps its process groups per process; the control group is made with the default one and
# lives as long as it does, so it is kept beside it (keyed by the default group's identity).
_control_groups: dict[int, Any] = {}


class RankRefusal(UserError):
    """Rank 0 refused (bad settings, a missing upstream run): the other ranks stop with its line."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the default (one process, CPU) when not under a launcher."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    """True where ``init`` created the process group (and ``shutdown`` destroys it)."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def control(self):
        return _control_groups.get(id(dist.group.WORLD)) if self.enabled else None

    # ---------------------------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.control)

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def decide(self, fn: Callable[[], T]) -> T:
        """Rank 0 runs ``fn`` and every rank returns its result; when it raises, rank 0 raises it
        and every other rank raises a :class:`RankRefusal` with the same line, so no rank is left
        waiting for an answer that never comes and every rank's log says why."""
        if not self.enabled:
            return fn()
        outcome: tuple[str, Any] = ("ok", None)
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - sent on, then raised again below
                error = exc
                outcome = ("error", one_line(str(exc)) or type(exc).__name__)
        kind, value = self.broadcast(outcome)
        if error is not None:
            raise error
        if kind == "error":
            raise RankRefusal(f"rank 0 refused: {value}")
        return value

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the others."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.control)
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` (on this rank's device) over the ranks, in place; returns it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_state(self, state: Any) -> Any:
        """Rank 0's nested state (dicts, lists, tensors, plain values: an optimizer's state dict)
        on every rank: the structure goes as one object, each tensor on its own over the default
        group, so gigabytes of Adam moments are never pickled."""
        if not self.enabled:
            return state
        tensors: list[torch.Tensor] = []

        def skeleton(x):
            if isinstance(x, torch.Tensor):
                tensors.append(x)
                return _TensorSlot(len(tensors) - 1, tuple(x.shape), x.dtype)
            if isinstance(x, dict):
                return {k: skeleton(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(skeleton(v) for v in x)
            return x

        shape = self.broadcast(skeleton(state) if self.is_main else None)

        def fill(x):
            if isinstance(x, _TensorSlot):
                t = tensors[x.index].to(self.device) if self.is_main else torch.empty(x.shape, dtype=x.dtype, device=self.device)
                dist.broadcast(t, src=0)
                return t
            if isinstance(x, dict):
                return {k: fill(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(fill(v) for v in x)
            return x

        return fill(shape)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank (one tiny all-reduce)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # ---------------------------------------------------------------------------- work split
    def shard(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` items: blocks in rank order tile ``range(n)``, so
        concatenating what each rank made gives what one process makes."""
        return shard_bounds(n, self.world_size)[self.rank]


@dataclass(frozen=True)
class _TensorSlot:
    index: int
    shape: tuple[int, ...]
    dtype: torch.dtype


def shard_bounds(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of ``range(n)``, sizes differing by at most one."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        size = base + (1 if k < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def check_batch_split(batch_size: int, grad_accum_steps: int, world_size: int, what: str = "batch_size") -> int:
    """Rows per forward pass on each rank; a layout that does not divide is one line naming the numbers."""
    per_forward, rest = divmod(batch_size, grad_accum_steps * world_size)
    if rest or per_forward < 1:
        raise UserError(
            f"{what} {batch_size} does not split into {world_size} process(es) x grad_accum_steps "
            f"{grad_accum_steps}: it must be a multiple of {world_size * grad_accum_steps}"
        )
    return per_forward


# -------------------------------------------------------------------------------- set-up
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def local_device(requested: str = "auto") -> torch.device:
    """This process's device: ``auto`` is ``cuda:LOCAL_RANK`` where CUDA is, else the CPU.

    It also makes that GPU the *current* one (``torch.cuda.set_device``): code that says
    ``torch.device("cuda")`` or allocates without a device then lands on this rank's GPU, not
    every rank on GPU 0."""
    if requested != "auto":
        device = torch.device(requested)
    elif torch.cuda.is_available():
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
    else:
        return torch.device("cpu")
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        index = device.index if device.index is not None else _env_int("LOCAL_RANK", 0)
        if index >= visible:
            raise UserError(
                f"LOCAL_RANK {_env_int('LOCAL_RANK', 0)} wants cuda:{index}, but this process sees {visible} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): start at most {visible} "
                "processes per node"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    return device


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 on tensor cores (CUDA compute capability 8+).
    ``torch.cuda.is_bf16_supported()`` also answers True on V100/T4, where bf16 is emulated."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def wait_timeout() -> datetime.timedelta:
    return datetime.timedelta(minutes=_env_int(WAIT_MINUTES_ENV, 24 * 60))


def init(requested_device: str = "auto") -> Distributed:
    """Join (or reuse) the job's process group from torchrun's environment (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``) and pick this rank's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    device = local_device(requested_device)
    if world_size <= 1:
        return Distributed(device=device)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        owns = True
    if id(dist.group.WORLD) not in _control_groups:
        _control_groups[id(dist.group.WORLD)] = dist.new_group(backend="gloo", timeout=wait_timeout())
    return Distributed(rank, world_size, local_rank, device, owns)


def shutdown(job: Distributed) -> None:
    """Destroy the process group ``init`` created (a no-op where it joined one)."""
    if job.owns_group and dist.is_initialized():
        _control_groups.pop(id(dist.group.WORLD), None)
        dist.destroy_process_group()


def rank_from_env() -> int:
    """This process's rank as the launcher set it (0 when there is none), for code that runs before
    ``init``."""
    return _env_int("RANK", 0)


def describe(job: Distributed) -> dict[str, Any]:
    """How this job computes, for the run's params: two runs of one variant compared in the UI
    then say which ran on 1 GPU and which on 8."""
    local_world = _env_int("LOCAL_WORLD_SIZE", 1 if not job.enabled else job.world_size)
    cuda = job.device.type == "cuda"
    nccl = ""
    if cuda:
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001 - a build without NCCL: leave it empty
            nccl = ""
    return {
        "world_size": job.world_size,
        "nodes": max(1, job.world_size // max(1, local_world)),
        "nproc_per_node": local_world,
        "device_type": job.device.type,
        "device_name": torch.cuda.get_device_name(job.device) if cuda else "cpu",
        "device_count": torch.cuda.device_count() if cuda else 0,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "nccl_version": nccl,
    }
