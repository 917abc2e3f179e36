"""Talking between the processes of one `--devices N` run: who am I, and the few collectives the
trainer needs (harness.training.launch starts the processes; this module never starts anything).

What keeps N processes equal to one:
- every batch of the single-process run is split across the ranks (batch_size / N samples each),
  from the same seeded order, so the steps, schedule and global batch are the variant's;
- validation is sharded and gathered back into loader order, so every rank computes the metrics of
  the whole validation set and takes the same early-stopping decision;
- a stop (Ctrl-C, SIGTERM) is agreed on by all ranks after the same batch.

Outside a process group every function here answers as the single process it is (rank 0 of 1).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, Subset

_cpu_group = None  # gloo group for small host-side collectives (the stop flag, gathered validation)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


class ShardSampler(Sampler):
    """Rank r's share of a sampler: items r, r+N, r+2N, ... of the order every rank draws alike (the
    base sampler's generator is seeded the same on each), cut to a multiple of N. With batches of
    batch_size / N, batch k of all ranks together is batch k of the single-process run."""

    def __init__(self, base: Sampler, rank: int, world: int):
        self.base, self.rank, self.world = base, rank, world

    @property
    def generator(self):  # the resume checkpoint saves the order's generator (trainer.loader_generators)
        return getattr(self.base, "generator", None)

    def __iter__(self):
        items = list(self.base)
        return iter(items[self.rank:len(items) - len(items) % self.world:self.world])

    def __len__(self) -> int:
        return len(self.base) // self.world


def shard(loader: DataLoader) -> DataLoader:
    """This rank's share of an evaluation loader: samples rank, rank+N, ... in order."""
    subset = Subset(loader.dataset, range(rank(), len(loader.dataset), world_size()))
    return DataLoader(subset, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn)


def unshard(*arrays: np.ndarray) -> list[np.ndarray]:
    """Every rank's rows of sharded arrays (rank r holds rows r, r+N, ...), back in loader order."""
    parts = [None] * world_size()
    dist.all_gather_object(parts, arrays, group=_cpu_group)
    out = []
    for i, first in enumerate(parts[0]):
        full = np.empty((sum(len(p[i]) for p in parts),) + first.shape[1:], first.dtype)
        for r, p in enumerate(parts):
            full[r::len(parts)] = p[i]
        out.append(full)
    return out


def sum_over_ranks(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sums of per-rank scalars (on the training device: one collective per epoch, not per step)."""
    packed = torch.stack([v.to(torch.float64) for v in values])
    dist.all_reduce(packed)
    return list(packed.unbind())


def any_rank(flag: bool) -> bool:
    """True on every rank when any rank passes True: all stop after the same batch. Host-side (gloo),
    so it never waits for the GPU."""
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, group=_cpu_group)
    return bool(t.item())


def sync_buffers(module: torch.nn.Module, average: bool) -> None:
    """Every rank's floating-point buffers (BatchNorm statistics) made one: rank 0's (DDP syncs them
    from rank 0 at the start of each forward, so after the last step each rank holds its own), or
    their average (after each rank recomputed them from its own share of the data)."""
    for buf in module.buffers():
        if buf.is_floating_point():
            if average:
                dist.all_reduce(buf)
                buf /= world_size()
            else:
                dist.broadcast(buf, src=0)


def join(rank_: int, world: int, port: int, use_cuda: bool) -> None:
    """Join the process group of a `--devices` run: NCCL with one GPU per process on CUDA, gloo on
    CPU, plus the gloo group the host-side collectives above use."""
    global _cpu_group
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if use_cuda:
        torch.cuda.set_device(rank_)
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank_, world_size=world)
    _cpu_group = dist.new_group(backend="gloo") if use_cuda else dist.group.WORLD


def leave() -> None:
    dist.destroy_process_group()
