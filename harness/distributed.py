"""`harness run ... --devices N`: one run trained by N processes with DistributedDataParallel.

The parent checks everything and builds the preprocessing cache, then starts N processes (spawn).
Each joins a process group: NCCL with one GPU per process on CUDA, gloo on CPU. Rank 0 is the run:
MLflow, checkpoints, the console. The other ranks train and evaluate their share and record nothing.

What keeps N processes equal to one:
- every batch of the single-process run is split across the ranks (batch_size / N samples each),
  from the same seeded order, so the steps, schedule and global batch are the variant's;
- validation is sharded and gathered back into loader order, so every rank computes the metrics of
  the whole validation set and takes the same early-stopping decision;
- a stop (Ctrl-C, SIGTERM) is agreed on by all ranks after the same batch.
"""
from __future__ import annotations

import os
import socket
import sys
import traceback

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


# ---------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank_: int, world: int, port: int, use_cuda: bool):
    global _cpu_group
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if use_cuda:
        torch.cuda.set_device(rank_)
    # intra-op threads: the parent chose them for every rank (runner.thread_choice), so the CPU ranks
    # share the free cores; runner.execute / runner.follow apply them
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank_, world_size=world)
    _cpu_group = dist.new_group(backend="gloo") if use_cuda else dist.group.WORLD


def _worker(rank_: int, world: int, port: int, use_cuda: bool, plan, resume_at):
    """One rank: rank 0 runs `runner.execute` (the MLflow run), the others `runner.follow`."""
    from rich.console import Console

    from harness import resume as resume_mod
    from harness import runner
    from harness.errors import HarnessError

    _join(rank_, world, port, use_cuda)
    try:
        resume = None
        if resume_at:  # each rank loads the checkpoint itself rather than receive it pickled
            run_id, path = resume_at
            resume = resume_mod.ResumePoint(run_id, path, resume_mod.load_checkpoint(path))
        if rank_ == 0:
            runner.execute(plan, Console(highlight=False, soft_wrap=True), resume=resume)
        else:
            runner.follow(plan, resume)
    except HarnessError as exc:
        if rank_ == 0:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        sys.exit(getattr(exc, "exit_code", 130))
    except Exception:  # a bug, not a user mistake: its traceback, as one process would show it
        print(f"rank {rank_}:\n{traceback.format_exc()}", file=sys.stderr)
        sys.exit(1)
    finally:
        dist.destroy_process_group()


def _forward_to(pids: list[int]):
    """A signal handler for the waiting parent: SIGINT and SIGTERM passed on to the ranks, which stop
    together after the same batch. A rank that also got the signal itself (Ctrl-C reaches the
    terminal's whole process group) counts the two as one (run_states.stops_between_batches)."""
    def forward(signum, frame):
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    return forward


def launch(plan, devices: int, use_cuda: bool, resume=None, grace_s: float = 60.0) -> int:
    """Train `plan` with `devices` processes; returns the run's exit code: rank 0's (0, a stop's
    130/143, an error's), else the first failed rank's."""
    import time
    from multiprocessing.connection import wait

    import torch.multiprocessing as mp

    from harness.run_states import stop_signals_to  # run_states imports this module

    resume_at = (resume.run_id, resume.path) if resume else None
    ctx = mp.start_processes(_worker, args=(devices, _free_port(), use_cuda, plan, resume_at), nprocs=devices,
                             join=False, start_method="spawn")
    procs, deadline, escalation = ctx.processes, None, [lambda p: p.terminate(), lambda p: p.kill()]
    with stop_signals_to(_forward_to(ctx.pids())):
        # not ctx.join(): it kills the other ranks as soon as one exits, and rank 0 may still be
        # writing its checkpoint or the run's end. They get `grace_s` to finish on their own, then
        # SIGTERM, then (a rank stuck in a collective with a dead peer ignores that) SIGKILL.
        while any(p.is_alive() for p in procs):
            wait([p.sentinel for p in procs if p.is_alive()], timeout=1.0)
            if deadline is None and any(p.exitcode not in (None, 0) for p in procs):
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline and escalation:
                stop = escalation.pop(0)
                for p in procs:
                    if p.is_alive():
                        stop(p)
                deadline = time.monotonic() + 10.0
    codes = [128 - p.exitcode if p.exitcode < 0 else p.exitcode for p in procs]  # -N: killed by signal N
    return codes[0] or next((c for c in codes if c), 0)
