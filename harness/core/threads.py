"""How many threads and processes a run computes with, chosen to fit the cores that are free.

PyTorch's default (one intra-op thread per core) assumes the machine is ours. Its OpenMP parallel
regions end at a barrier, so one thread that shares its core with another process holds up every
other thread; on a 2-core machine with one core busy elsewhere an epoch took 1.9x as long with the
default as with one thread (benchmarks/threads.md). The DataLoader workers and the preprocessing cache builder's
processes compete for the same cores. So, at the start of a run:

  free cores = the cores this process may use (its CPU affinity), less those other processes keep
               busy right now (/proc/stat sampled for SAMPLE_S; a core busy elsewhere for at least
               BUSY_CORE of the time counts as taken), at least 1
  compute    = free cores less one per loader worker (split between the --devices processes), >= 1

The cache is built before training starts and the check decodes alone, so each of those takes all
the free cores as processes. `train.threads=N` sets the compute threads instead. The count changes
a run's numbers (float sums split across threads round differently), so it is recorded with the run
and a resumed run takes the count it started with.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

SAMPLE_S = 0.3  # long enough for the 10 ms jiffies of /proc/stat to resolve a tenth of a core
# OpenMP threads wait for the slowest at every barrier, and spin while they wait: sharing a core
# that is busy elsewhere for 40% of the time already costs more than giving that core up
BUSY_CORE = 0.4


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS)
        return os.cpu_count() or 1


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _busy_seconds(cpus: set[int] | None) -> float | None:
    """Busy time (user, nice, system, irq, softirq, steal) of these CPUs since boot, in seconds;
    None where /proc/stat is absent or unreadable."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for name, *values in lines:
        if name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue  # per-CPU lines only: cores outside the affinity mask are no concern of ours
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in (values + ["0"] * 8)[:8])
        total += user + nice + system + irq + softirq + steal
    return total / ticks


def _own_seconds() -> float:
    t = os.times()  # every thread of this process: a spinning OpenMP pool is ours, not elsewhere's
    return t.user + t.system


def busy_elsewhere(seconds: float = SAMPLE_S) -> float | None:
    """How many of this process's cores other processes keep busy now (0.0 = idle, 1.0 = one core
    fully), from two samples of /proc/stat `seconds` apart less this process's own CPU time; None
    where it cannot be measured."""
    cpus = _affinity()
    busy0, own0, wall0 = _busy_seconds(cpus), _own_seconds(), time.monotonic()
    if busy0 is None:
        return None
    time.sleep(seconds)
    busy1, own1, wall1 = _busy_seconds(cpus), _own_seconds(), time.monotonic()
    if busy1 is None or wall1 <= wall0:
        return None
    elsewhere = ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
    return min(max(elsewhere, 0.0), float(len(cpus) if cpus else usable_cores()))


def free_cores(cores: int | None = None, busy: float | None = None) -> int:
    """Cores free for this process's work: `cores` (default: usable_cores()) less those busy
    elsewhere (default: measured now; unknown counts as none), at least 1."""
    cores = usable_cores() if cores is None else cores
    busy = busy_elsewhere() if busy is None else busy
    taken = math.floor((busy or 0.0) + 1 - BUSY_CORE)
    return max(1, cores - max(0, taken))


@dataclass(frozen=True)
class ThreadChoice:
    """A run's thread settings and what they were chosen from; recorded with the run."""

    compute: int
    """Intra-op threads of each training process (torch.set_num_threads)."""
    loader_workers: int
    """DataLoader worker processes of each training process (data.num_workers)."""
    cores: int
    """CPUs in this process's affinity mask."""
    busy_elsewhere: float | None
    """Cores other processes kept busy when the choice was made; None: not measurable here."""
    source: str
    """Why this count: 'free cores', 'train.threads' or 'resumed run' (with any ignored setting)."""
    processes: int = 1
    """Training processes sharing the cores (train.devices on CPU)."""

    def line(self) -> str:
        busy = "load unknown" if self.busy_elsewhere is None else f"{self.busy_elsewhere:.1f} busy elsewhere"
        each = f" in each of {self.processes} processes" if self.processes > 1 else ""
        return (f"threads: {self.compute} compute, {self.loader_workers} loader workers{each} "
                f"({self.cores} cores, {busy}; {self.source})")

    def tags(self) -> dict[str, str]:
        busy = "unknown" if self.busy_elsewhere is None else f"{self.busy_elsewhere:.2f}"
        return {"harness.threads": str(self.compute), "harness.cpu_cores": str(self.cores),
                "harness.cpu_busy_elsewhere": busy, "harness.threads_source": self.source}


def choose(threads: int, loader_workers: int, processes: int = 1, resumed: int | None = None) -> ThreadChoice:
    """The compute threads of a run: `resumed` (the count a resumed run started with), else
    `threads` (train.threads) when positive, else chosen from the free cores."""
    cores, busy = usable_cores(), busy_elsewhere()
    if resumed:
        ignored = f"; train.threads={threads} ignored" if threads and threads != resumed else ""
        return ThreadChoice(resumed, loader_workers, cores, busy, "resumed run" + ignored, processes)
    if threads > 0:
        return ThreadChoice(threads, loader_workers, cores, busy, "train.threads", processes)
    compute = compute_threads(free_cores(cores, busy if busy is not None else 0.0), loader_workers, processes)
    return ThreadChoice(compute, loader_workers, cores, busy, "free cores", processes)


def compute_threads(free: int, loader_workers: int, processes: int = 1) -> int:
    """Intra-op threads per training process: the free cores less one per loader worker (each keeps
    its core busy while the step runs), shared between the processes; at least 1."""
    return max(1, (free - processes * loader_workers) // processes)


def apply(compute: int, loader_workers: int = 0) -> None:
    """Set this process's intra-op threads: torch's, and OpenCV's. Without loader workers the images
    are prepared here, between the steps, so OpenCV may use the same cores; with them this process
    prepares none, and its count of 1 is what the forked workers inherit (see single_threaded_worker)."""
    import cv2
    import torch

    torch.set_num_threads(compute)
    cv2.setNumThreads(compute if loader_workers == 0 else 1)


@contextlib.contextmanager
def single_threaded_opencv():
    """OpenCV at one thread in this process while it forks worker processes (the cache builder): they
    inherit the count, and this process only collects their results meanwhile."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


_IMPORTED_IN = os.getpid()  # a forked child shares the module (and this value) with its parent


def single_threaded_worker(*_) -> None:
    """worker_init_fn of the loaders: one OpenCV thread in a worker started by spawn or forkserver,
    whose fresh OpenCV would start one per core (the worker is already one of the cores counted;
    PyTorch sets its own threads to 1 there). A forked worker is left alone: changing the count in a
    forked child deadlocks on the parent's OpenCV thread pool, whose threads the child does not have;
    it inherits 1 from a parent that ran `apply` with loader workers, or `single_threaded_opencv`."""
    if os.getpid() != _IMPORTED_IN:
        return  # forked: this module was imported by the parent
    import cv2

    cv2.setNumThreads(1)
