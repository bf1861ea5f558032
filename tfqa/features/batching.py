"""Batches for training: length-grouped, shuffled, sharded across processes, resumable mid-epoch.

Candidates range from a dozen to ``max_seq_len`` tokens; padding every batch to its longest row
wastes little only if the rows of a batch have similar lengths. ``LengthGroupedSampler`` gets that
without giving up a random order:

1. shuffle all rows (seeded by ``(seed, epoch)``);
2. cut the shuffled rows into mega-batches of ``mega_batch_steps`` steps' worth of rows;
3. sort each mega-batch by length and cut it into steps (``batch_size * world_size`` rows each)
   of neighbouring lengths;
4. shuffle the order of the steps; at each step rank ``r`` takes the ``r``-th ``batch_size`` rows.

Every rank computes the same plan from the same seed, so no communication is needed; ranks of one
step get rows of similar length, so none of them waits long for the others at the all-reduce.
The plan depends on ``world_size`` only through ``batch_size * world_size``: a run resumed with
the per-process batch scaled to keep that product sees the same rows in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

PADDED_KEYS = ("input_ids", "token_type_ids")


class LengthGroupedSampler(Sampler[list[int]]):
    """Batch sampler (``DataLoader(batch_sampler=...)``) over row ``lengths``.

    Each epoch every rank yields ``num_batches`` batches of row indices; ``set_epoch(epoch,
    start_batch=k)`` makes the next iteration start at this rank's ``k``-th batch of that epoch
    (resuming mid-epoch) without loading the skipped rows.

    The plan is made of optimizer steps of ``step_rows`` rows (``batch_size`` per rank and
    micro-batch x ``world_size`` x ``accum_steps``), and each step is cut into its micro-batches
    for the ranks: micro-batch ``m`` of rank ``r`` is piece ``m * world_size + r``. So one process
    with batch 32, 8 ranks with 4 each, and one process accumulating 4 micro-batches of 8 all train
    step ``s`` on the same 32 rows.

    The last step of an epoch may be short. With several ranks its rows are padded by wrapping
    around to the start of the epoch's shuffle (at most ``world_size - 1`` rows, as
    ``DistributedSampler`` does) and split evenly, so every rank always runs the same number of
    batches (possibly fewer micro-batches than ``accum_steps``). ``drop_last`` drops that short
    step instead.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        mega_batch_steps: int = 50,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        accum_steps: int = 1,
    ):
        if batch_size < 1 or mega_batch_steps < 1 or accum_steps < 1:
            raise ValueError(
                f"batch_size ({batch_size}), mega_batch_steps ({mega_batch_steps}) and accum_steps ({accum_steps}) must be >= 1"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_steps = mega_batch_steps
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.accum_steps = accum_steps
        self.epoch = 0
        self.start_batch = 0
        if drop_last and len(self.lengths) < self.step_rows:
            raise ValueError(f"{len(self.lengths)} rows cannot fill one step of {self.step_rows} rows with drop_last")

    @property
    def step_rows(self) -> int:
        """Rows of one optimizer step over all ranks and micro-batches."""
        return self.batch_size * self.world_size * self.accum_steps

    def _micro_batches(self, rows: int) -> int:
        """Micro-batches of a step of ``rows`` rows (``accum_steps`` for a full one)."""
        return math.ceil(rows / (self.batch_size * self.world_size))

    @property
    def num_batches(self) -> int:
        """Batches (micro-batches) each rank runs in a full epoch."""
        full, rest = divmod(len(self.lengths), self.step_rows)
        if rest and not self.drop_last:
            return full * self.accum_steps + self._micro_batches(rest + (-rest) % self.world_size)
        return full * self.accum_steps

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch {start_batch} outside 0..{self.num_batches}")
        self.epoch, self.start_batch = epoch, start_batch

    def steps(self, epoch: int) -> list[np.ndarray]:
        """The epoch's plan: one array of ``step_rows`` row indices per step, for all ranks.
        Index arithmetic only; no row is read."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        mega = self.step_rows * self.mega_batch_steps
        steps: list[np.ndarray] = []
        for lo in range(0, len(order), mega):
            chunk = order[lo : lo + mega]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            steps.extend(chunk[i : i + self.step_rows] for i in range(0, len(chunk), self.step_rows))
        if steps and len(steps[-1]) < self.step_rows:
            # Only the very last chunk can end in a short step; it keeps its place in the shuffle below.
            if self.drop_last:
                steps.pop()
            elif self.world_size > 1:
                short = steps[-1]
                fill = (-len(short)) % self.world_size
                steps[-1] = np.concatenate([short, order[:fill]])
        step_order = rng.permutation(len(steps))
        return [steps[i] for i in step_order]

    def micro_batches_per_step(self, epoch: int) -> dict[int, int]:
        """For each step of ``epoch``: the index of its first micro-batch -> how many it has
        (``accum_steps``, fewer for the short step, which may fall anywhere in the shuffle)."""
        out, start = {}, 0
        for rows in self.steps(epoch):
            n = self._micro_batches(len(rows))
            out[start] = n
            start += n
        return out

    def batches(self, epoch: int, start_batch: int = 0) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` from ``start_batch`` on."""
        out = []
        for rows in self.steps(epoch):
            n_micro = self._micro_batches(len(rows))
            pieces = np.array_split(rows, n_micro * self.world_size)
            out.extend(pieces[m * self.world_size + self.rank] for m in range(n_micro))
        return out[start_batch:]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches(self.epoch, self.start_batch):
            yield batch.tolist()

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


def collate(
    rows: Sequence[dict], pad_id: int = 0, pad_to: int | None = None, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack dataset rows into int64 tensors, padded to the longest row of the batch.

    ``pad_to`` pads to at least that width (inference's fixed-width baseline); ``pad_to_multiple_of``
    rounds the width up (8 suits tensor cores). ``input_ids`` are padded with ``pad_id``,
    ``token_type_ids`` with 0; ``attention_mask`` is 1 on real tokens. Scalar fields (``label``,
    ``start_position``, ``end_position``, ...) become ``[B]`` tensors.
    """
    if not rows:
        raise ValueError("collate: empty batch")
    width = max(len(r["input_ids"]) for r in rows)
    if pad_to:
        width = max(width, pad_to)
    if pad_to_multiple_of:
        width = math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
    batch_size = len(rows)
    input_ids = np.full((batch_size, width), pad_id, dtype=np.int64)
    token_type_ids = np.zeros((batch_size, width), dtype=np.int64)
    attention_mask = np.zeros((batch_size, width), dtype=np.int64)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = row["input_ids"]
        if "token_type_ids" in row:
            token_type_ids[i, :n] = row["token_type_ids"]
        attention_mask[i, :n] = 1
    out = {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask),
    }
    for key, value in rows[0].items():
        if key not in PADDED_KEYS and np.ndim(value) == 0:
            values = np.asarray([r[key] for r in rows])
            # Class and position targets must be int64 for cross-entropy, whatever int type came in.
            out[key] = torch.from_numpy(values.astype(np.int64) if values.dtype.kind in "iub" else values)
    return out
