"""`harness run --devices 2`: two real gloo processes train one run; rank 0 records it, a SIGTERM
stops both after the same batch and `--resume` finishes it, and its validation metrics are those of
one process evaluating the same weights."""
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import harness_cli
from mlflow import MlflowClient
from rich.console import Console
from torch.utils.data import RandomSampler, WeightedRandomSampler

from harness.core.collectives import ShardSampler
from harness.core.competition import CLASS_KEYS
from harness.losses import build_loss
from harness.training.loaders import data_source, loaders
from harness.training.plan import prepare, training_class_weights
from harness.training.trainer import Trainer

EPOCHS = 3
# SWA for evaluation with its BatchNorm refresh: each rank recomputes the statistics from its share
# of the data, so this also checks that the ranks end with one model (distributed.sync_buffers)
SETS = {"train.epochs": EPOCHS, "train.swa_start_epoch": 1, "train.swa_use_for_eval": True,
        "train.swa_update_bn": True, "data.num_workers": 1}


@pytest.mark.parametrize("base", [lambda g: RandomSampler(range(50), generator=g),
                                  lambda g: WeightedRandomSampler(np.linspace(1, 2, 50), 50, generator=g)],
                         ids=["shuffle", "weighted"])
def test_the_ranks_batches_together_are_the_single_process_batches(base):
    batch, world = 6, 3
    single = list(base(torch.Generator().manual_seed(7)))
    shards = [list(ShardSampler(base(torch.Generator().manual_seed(7)), r, world)) for r in range(world)]
    assert all(len(s) == len(ShardSampler(base(torch.Generator()), 0, world)) == 50 // world for s in shards)
    per_rank = batch // world
    for k in range(len(single) // batch):
        together = sorted(sum((s[k * per_rank:(k + 1) * per_rank] for s in shards), []))
        assert together == sorted(single[k * batch:(k + 1) * batch])


@pytest.mark.slow
def test_two_gloo_processes_stop_together_resume_and_give_the_single_process_metrics(demo_root, workdir,
                                                                                      monkeypatch):
    sets = [a for k, v in SETS.items() for a in ("--set", f"{k}={v}")]
    args = ("run", "v9", "--fold", "0", "--data-dir", str(demo_root), "--profile", "smoke", "--devices", "2", *sets)
    # SIGTERM to the launcher alone, during epoch 2: it reaches both ranks, which stop after the same batch
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            env=env | {"HARNESS_HOME": str(workdir / ".harness"), "COLUMNS": "200"})
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch  1/"):
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143, "".join(seen)
    assert "DistributedDataParallel over 2 CPU processes (gloo): 6 of every 12" in "".join(seen)
    res = harness_cli(*args, "--resume", cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming run" in res.stdout

    # rank 0 alone recorded: one run, one value per epoch
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rsna-spinal_canal_stenosis").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["harness.resumed_after_epoch"] == "1"
    assert run.data.params["train.devices"] == "2"
    for name in ("val/balanced_accuracy", "train/loss", "val/loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == list(range(1, EPOCHS + 1))

    # one process evaluates the selected checkpoint's weights on the whole validation set, 12 a batch
    ckpt_path = next(a.path for a in client.list_artifacts(run.info.run_id, "checkpoint"))
    ckpt = torch.load(client.download_artifacts(run.info.run_id, ckpt_path, str(workdir)), weights_only=True)
    monkeypatch.setenv("HARNESS_HOME", str(workdir / ".harness"))
    plan = prepare("v9", 0, str(demo_root), "smoke", None, SETS, Console(quiet=True))
    model = plan.variant.build_model(plan.cfg)
    model.load_state_dict(ckpt["model"])
    source = data_source(plan, Console(quiet=True), workdir / "unreadable.tsv")
    train_loader, val_loader, _ = loaders(plan, torch.device("cpu"), source)
    assert val_loader.batch_size == 12
    trainer = Trainer(plan.cfg, model, build_loss(plan.cfg.loss, training_class_weights(plan)),
                      plan.variant.predict, train_loader, val_loader, [], score=plan.scorer())
    # with the ranks' intra-op threads, as the run recorded them: another count splits the float sums
    # otherwise and moves the last bits
    before = torch.get_num_threads()
    torch.set_num_threads(int(run.data.tags["harness.threads"]))
    try:
        single = trainer.evaluate(model, val_loader)
    finally:
        torch.set_num_threads(before)

    assert single.metrics == pytest.approx(ckpt["metrics"], abs=1e-12)
    best = {k.removeprefix("best/"): v for k, v in run.data.metrics.items()
            if k.startswith("best/") and k not in ("best/epoch", "best/loss")}
    assert best == pytest.approx({k: single.metrics[k] for k in best}, abs=1e-6)
    assert run.data.metrics["best/loss"] == pytest.approx(single.val_loss, abs=1e-6)
    preds = pd.read_csv(client.download_artifacts(run.info.run_id, "val_predictions.csv", str(workdir)))
    preds = preds[preds["source"] == "model"]
    assert len(preds) == len(plan.val_rows)
    np.testing.assert_array_equal(preds["label"], single.labels)  # gathered back in loader order
    np.testing.assert_allclose(preds[list(CLASS_KEYS)].to_numpy(), single.probs, atol=1e-5)
