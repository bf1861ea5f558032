"""The one home for distributed concerns (``tfqa.core.distributed``), where one process can show
it: the work split, the batch layout refusal, and the GPU decisions a CPU can only show with the
CUDA queries answered as a GPU machine answers them (the real ranks are in
tests/stages/test_distributed.py)."""

from __future__ import annotations

import pytest
import torch

from tfqa.core import distributed
from tfqa.core.distributed import Distributed, check_batch_split, shard_bounds
from tfqa.core.errors import UserError
from tfqa.training import checkpoint
from tfqa.training.loop import resolve_precision


@pytest.mark.parametrize("n, parts", [(0, 3), (7, 1), (7, 3), (8, 8), (5, 8), (1000, 7)])
def test_shards_tile_the_work_in_rank_order(n, parts):
    bounds = shard_bounds(n, parts)
    assert [i for s in bounds for i in range(n)[s]] == list(range(n))
    sizes = [s.stop - s.start for s in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_is_the_identity():
    job = Distributed()
    assert job.decide(lambda: 41 + 1) == 42 and job.broadcast("x") == "x" and job.gather("y") == ["y"]
    assert job.shard(10) == slice(0, 10) and job.any(True) and not job.any(False)
    with pytest.raises(ValueError, match="rank 0's own"):
        job.decide(lambda: (_ for _ in ()).throw(ValueError("rank 0's own")))


@pytest.mark.parametrize(
    "batch, accum, world, ok",
    [(32, 1, 8, 4), (32, 4, 8, 1), (32, 2, 1, 16), (32, 3, 1, None), (8, 1, 16, None), (7, 1, 2, None)],
)
def test_a_batch_that_does_not_split_names_the_numbers(batch, accum, world, ok):
    if ok is not None:
        assert check_batch_split(batch, accum, world) == ok
        return
    with pytest.raises(UserError) as e:
        check_batch_split(batch, accum, world)
    assert str(e.value) == (
        f"batch_size {batch} does not split into {world} process(es) x grad_accum_steps {accum}: "
        f"it must be a multiple of {world * accum}"
    )


class _FakeCuda:
    """The CUDA queries as a machine with ``count`` GPUs of compute capability ``major`` answers."""

    def __init__(self, monkeypatch, count: int, major: int = 9):
        self.current, self.rng_set = 0, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(self, "current", torch.device(d).index))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (major, 0))
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d="cuda": torch.tensor([self.current]))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d="cuda": self.rng_set.append(int(s[0])))

        def refuse_all(states):
            raise RuntimeError("set_rng_state_all indexes every saved device")

        monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse_all)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.tensor([i]) for i in range(count)])


def test_each_rank_computes_on_its_own_gpu_and_a_rank_beyond_them_is_one_line(monkeypatch):
    cuda = _FakeCuda(monkeypatch, count=8)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert distributed.local_device() == torch.device("cuda", 5) and cuda.current == 5
    monkeypatch.setenv("LOCAL_RANK", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    with pytest.raises(UserError) as e:
        distributed.local_device()
    assert str(e.value) == (
        "LOCAL_RANK 8 wants cuda:8, but this process sees 8 GPU(s) (CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7): "
        "start at most 8 processes per node"
    )


@pytest.mark.parametrize("major, want", [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_takes_bf16_only_with_bf16_tensor_cores(monkeypatch, major, want):
    _FakeCuda(monkeypatch, count=1, major=major)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # what V100/T4 say
    assert resolve_precision("auto", torch.device("cuda", 0)) == want


def test_a_rank_saves_its_own_gpus_rng_and_resumes_on_fewer_gpus(monkeypatch):
    saver = _FakeCuda(monkeypatch, count=8)
    saver.current = 3
    state = checkpoint.capture_rng_state()
    assert [int(s[0]) for s in state["cuda"]] == [3]  # this rank's device only
    resumer = _FakeCuda(monkeypatch, count=1)  # the same rank resumed where SLURM binds one GPU
    checkpoint.restore_rng_state(state)
    assert resumer.rng_set == [3]
    # A checkpoint written before kept every visible device's state: the current device's is used.
    resumer.current = 0
    checkpoint.restore_rng_state({**state, "cuda": [torch.tensor([i]) for i in range(8)]})
    assert resumer.rng_set == [3, 0]
