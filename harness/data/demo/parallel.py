"""The train studies drawn in order, serially or by a pool of spawned processes; each study draws
from its own seed, so the files are the same either way."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing

import numpy as np

from harness.data.demo.study import _make_study, _StudyOut

PARALLEL_MIN_STUDIES = 32  # below this a process pool costs more to start (~1 s) than it saves


def _train_study(task) -> _StudyOut:
    seed_seq, *args = task
    return _make_study(np.random.default_rng(seed_seq), *args)


def _train_studies(tasks: list, workers: int):
    """_StudyOut of each task, in task order. Every study draws from its own seed and writes its own
    folder, so the files do not depend on which process made them or when."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_train_study, tasks)
        return
    # spawn, not fork: the caller may run threads (a progress bar's refresh), and a fork copies their locks
    pool = cf.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(_train_study, tasks, chunksize=4)
    finally:
        # on an error or interrupt, drop what has not started and wait for what has: the caller
        # deletes the folder next, and no worker may still be writing into it
        pool.shutdown(wait=True, cancel_futures=True)
