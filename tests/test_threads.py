"""Thread settings: chosen from the free cores (a real competing process makes fewer), set by
train.threads in a real run, recorded with it, and kept by its resume."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import harness_cli
from mlflow import MlflowClient
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from harness.core import threads
from harness.core.config import TrainConfig
from harness.core.errors import UsageError
from harness.data.dataset import DirectSource
from harness.training import resume
from harness.training.execute import execute, find_resume
from harness.training.loaders import loaders
from harness.training.plan import prepare
from harness.training.trainer import Hook

FOLD = 3  # the small demo's fold with Moderate and Severe in validation
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture
def keep_threads():
    """In-process runs set this process's thread counts: put them back for the tests that follow."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def test_free_cores_and_compute_threads():
    assert threads.free_cores(2, 0.0) == 2 and threads.free_cores(2, 0.39) == 2
    assert threads.free_cores(2, 0.45) == 1 and threads.free_cores(2, 1.0) == 1 and threads.free_cores(2, 2.0) == 1
    assert threads.free_cores(4, 1.5) == 2 and threads.free_cores(8, 0.2) == 8
    assert threads.compute_threads(8, 2) == 6 and threads.compute_threads(8, 1, processes=2) == 3
    assert threads.compute_threads(2, 2) == 1 and threads.compute_threads(2, 1, processes=2) == 1
    with pytest.raises(UsageError, match="train.threads must be >= 0"):
        TrainConfig(threads=-1)


@pytest.mark.skipif(threads.usable_cores() < 2, reason="one core: there is nothing to give up")
def test_a_competing_cpu_hog_leaves_fewer_threads():
    """On an idle machine the choice is every core (PyTorch's default); a process spinning on one
    of them makes it fewer. The machine is shared, so 'without' is the quietest of a few samples."""
    cores = threads.usable_cores()
    without = [threads.choose(0, 0) for _ in range(4)]
    hog = subprocess.Popen([sys.executable, "-c", HOG.format(seconds=60)])
    try:
        time.sleep(0.5)  # interpreter start-up: spinning from here on
        cpu0, wall0 = _cpu_seconds(hog.pid), time.monotonic()
        with_hog = threads.choose(0, 0)
        hog_share = (_cpu_seconds(hog.pid) - cpu0) / (time.monotonic() - wall0)
        assert hog.poll() is None  # it spun the whole time
    finally:
        hog.kill()
        hog.wait()
    assert with_hog.source == "free cores" and with_hog.cores == cores
    # the hog's CPU time is counted as busy elsewhere (the sampling window is inside the one above)
    assert with_hog.busy_elsewhere >= hog_share - 0.15 and hog_share > 0.3, (with_hog, hog_share)
    assert with_hog.compute < cores, with_hog
    assert with_hog.compute <= max(c.compute for c in without), (with_hog, without)


class _OpenCvThreads(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return cv2.getNumThreads()


def test_loader_workers_run_one_opencv_thread(demo_root, workdir, keep_threads):
    plan = prepare("v9", FOLD, str(demo_root), "smoke", None, {"data.num_workers": 1}, Console(file=io.StringIO()))
    train, val, _ = loaders(plan, torch.device("cpu"), DirectSource(plan.table, plan.cfg.data, workdir / "u.tsv"))
    assert train.worker_init_fn is val.worker_init_fn is threads.single_threaded_worker
    threads.apply(2, loader_workers=1)  # as a run with data.num_workers=1 starts
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 1
    cv2.resize(np.zeros((1024, 1024), np.uint8), (512, 512))  # the main process's OpenCV has run
    for context in ("fork", "spawn"):  # a forked worker inherits its count, a spawned one is given it
        loader = DataLoader(_OpenCvThreads(), num_workers=1, worker_init_fn=train.worker_init_fn,
                            multiprocessing_context=context)
        assert [int(n) for n in loader] == [1, 1], context
    threads.apply(2)  # no workers: the images are prepared here, with the compute threads
    assert cv2.getNumThreads() == 2


BUILD = """
import sys, cv2, numpy as np
from harness.data import cache
from harness.data.rsna import data_fingerprint, load_samples
from harness.core.config import DataConfig
cv2.setNumThreads(2)
for _ in range(5):  # OpenCV's thread pool is live in this process when the build forks its workers
    cv2.createCLAHE(2.0, (8, 8)).apply(np.random.randint(0, 255, (2048, 2048), np.uint8))
root = sys.argv[1]
cache.build(load_samples(root), DataConfig(img_size=64, crop_radius=32), __import__("pathlib").Path(sys.argv[2]),
            data_fingerprint(root), "k", workers=2)
print("threads after", cv2.getNumThreads())
"""


def test_the_cache_builds_with_workers_after_opencv_ran_threaded(demo_root, tmp_path):
    """The build's forked workers get one OpenCV thread without changing it themselves (which
    deadlocks on the parent's pool); the parent's count is back afterwards."""
    res = subprocess.run([sys.executable, "-c", BUILD, str(demo_root), str(tmp_path / "c")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and "threads after 2" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow
def test_train_threads_is_applied_and_recorded(demo_root, tmp_path):
    n = 1 if threads.usable_cores() > 1 else 2  # never PyTorch's default here, so not applying it shows
    res = harness_cli("run", "v9", "--fold", str(FOLD), "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", "train.epochs=1", "--set", f"train.threads={n}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"^threads: {n} compute, 0 loader workers \({threads.usable_cores()} cores, "
                     r"\d+\.\d busy elsewhere; train.threads\)$", res.stdout, re.M), res.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rsna-spinal_canal_stenosis").experiment_id])
    assert run.data.params["train.threads"] == str(n)
    assert run.data.params["train.threads_used"] == str(n)  # torch.get_num_threads() inside the run
    tags = run.data.tags
    assert tags["harness.threads"] == str(n) and tags["harness.threads_source"] == "train.threads"
    assert tags["harness.cpu_cores"] == str(threads.usable_cores())
    assert 0 <= float(tags["harness.cpu_busy_elsewhere"]) <= threads.usable_cores()


class _ThreadsAtStart(Hook):
    def __init__(self):
        self.seen = []

    def before_train(self, t):
        self.seen.append(torch.get_num_threads())


class _FailAfterFirstEpoch(Hook):
    def after_epoch(self, t):
        if t.next_epoch == 1:
            raise RuntimeError("injected fault")


@pytest.mark.slow
def test_a_resumed_run_computes_with_the_threads_it_started_with(demo_root, workdir, keep_threads):
    started, now = 1, 2
    quiet = Console(file=io.StringIO())
    sets = {"train.epochs": 2, "train.batch_size": 4, "train.threads": started}
    with pytest.raises(RuntimeError, match="injected fault"):
        execute(prepare("v9", FOLD, str(demo_root), "smoke", None, sets, quiet), quiet, hooks=[_FailAfterFirstEpoch()])
    # the same run asked to go on with another count: train.threads may differ on resume, and is ignored
    plan = prepare("v9", FOLD, str(demo_root), "smoke", None, sets | {"train.threads": now}, quiet)
    point = find_resume(plan, "latest", quiet)
    assert point is not None and point.threads == started
    assert resume.load_checkpoint(point.path)["threads"] == started
    torch.set_num_threads(now)  # the process's count before the resume: execute must replace it
    seen, out = _ThreadsAtStart(), io.StringIO()
    outcome = execute(plan, Console(file=out, width=200), hooks=[seen], resume=point)
    assert seen.seen == [started]
    assert f"threads: {started} compute" in out.getvalue()
    assert f"resumed run; train.threads={now} ignored" in out.getvalue()
    run = MlflowClient().get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["harness.resumed_after_epoch"] == "1"
    assert run.data.params["train.threads_used"] == str(started) and run.data.tags["harness.threads"] == str(started)
