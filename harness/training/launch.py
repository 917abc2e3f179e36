"""`harness run ... --devices N`: one run trained by N processes with DistributedDataParallel.

The parent checks everything and builds the preprocessing cache (harness.training.execute), then
this module starts N processes (spawn). Each joins a process group (harness.core.collectives.join):
NCCL with one GPU per process on CUDA, gloo on CPU. Rank 0 is the run: MLflow, checkpoints, the
console. The other ranks train and evaluate their share and record nothing.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from multiprocessing.connection import wait
from typing import Callable

import torch.multiprocessing as mp

from harness.core import collectives
from harness.core.errors import HarnessError
from harness.core.signals import stop_signals_to


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, entry: Callable, args: tuple, world: int, port: int, use_cuda: bool):
    """One rank: joins the process group, then runs `entry(rank, *args)`. A user mistake is one line
    (from rank 0 only), a stop its exit code, a bug its traceback."""
    collectives.join(rank, world, port, use_cuda)
    try:
        entry(rank, *args)
    except HarnessError as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        sys.exit(getattr(exc, "exit_code", 130))
    except Exception:  # a bug, not a user mistake: its traceback, as one process would show it
        print(f"rank {rank}:\n{traceback.format_exc()}", file=sys.stderr)
        sys.exit(1)
    finally:
        collectives.leave()


def _forward_to(pids: list[int]):
    """A signal handler for the waiting parent: SIGINT and SIGTERM passed on to the ranks, which stop
    together after the same batch. A rank that also got the signal itself (Ctrl-C reaches the
    terminal's whole process group) counts the two as one (harness.core.signals.stops_between_batches)."""
    def forward(signum, frame):
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    return forward


def launch(entry: Callable, args: tuple, devices: int, use_cuda: bool, grace_s: float = 60.0) -> int:
    """Run `entry(rank, *args)` in `devices` spawned processes, one per rank (`entry` is a module-level
    function, as spawn pickles it by name); returns the exit code: rank 0's (0, a stop's 130/143, an
    error's), else the first failed rank's."""
    ctx = mp.start_processes(_worker, args=(entry, args, devices, _free_port(), use_cuda), nprocs=devices,
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
