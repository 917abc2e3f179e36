"""Run matrices: `harness run VARIANT --fold 0,1 --seed 42` trains one ordinary run per cell under one
parent run; a stop mid-cell and the same command again give every cell once, the parent's
aggregates, and the metrics of an uninterrupted matrix."""
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import harness_cli
from mlflow import MlflowClient

from harness.core.cells import parse_folds, parse_seeds
from harness.core.errors import UsageError
from harness.training.matrix_summary import aggregates, out_of_fold

MATRIX = ["run", "v9", "--fold", "0,1", "--seed", "42", "--profile", "smoke", "--set", "train.epochs=2",
          "--set", "train.threads=2"]


def test_cells_are_parsed_like_a_multirun():
    assert parse_folds("all", 5) == [0, 1, 2, 3, 4] and parse_folds("0,2,4", 5) == [0, 2, 4]
    assert parse_folds("3", 5) == [3]
    assert parse_seeds(None, 3, 42) == [42, 43, 44] and parse_seeds("1,2", None, 42) == [1, 2]
    assert parse_seeds(None, None, 42) == [42]
    for bad, message in ((lambda: parse_folds("5", 5), "fold must be within 0-4"),
                         (lambda: parse_folds("0,0", 5), "named twice"),
                         (lambda: parse_folds("a", 5), "comma-separated"),
                         (lambda: parse_seeds("1", 2, 42), "give one"),
                         (lambda: parse_seeds(None, 0, 42), "at least 1")):
        with pytest.raises(UsageError, match=message):
            bad()


def test_matrix_usage_errors_come_before_anything_trains(demo_root, tmp_path):
    res = harness_cli("run", "v9", "--fold", "all", "--resume", cwd=tmp_path)
    assert res.returncode == 2 and "a matrix resumes by itself" in res.stderr
    res = harness_cli("run", "v9", "--fold", "0,9", cwd=tmp_path)
    assert res.returncode == 2 and "fold must be within 0-4, got 9" in res.stderr
    assert not (tmp_path / "mlruns").exists()
    # the full profile wants a weights file: refused before the matrix's parent run exists
    res = harness_cli("run", "v9", "--fold", "0,1", "--data-dir", str(demo_root), cwd=tmp_path)
    assert res.returncode == 2 and "model.weights_file" in res.stderr
    db = tmp_path / "mlruns" / "mlflow.db"
    assert not db.exists() or not MlflowClient(f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{db}").search_experiments()])


def test_out_of_fold_pools_the_folds_per_seed_and_aggregates_the_cells():
    rng = np.random.default_rng(0)
    frames = []
    for fold in (0, 1):
        for seed in (1, 2):
            labels = np.array([0] * 8 + [1] * 4 + [2] * 4)
            probs = rng.dirichlet(np.ones(3), len(labels))
            frames.append(pd.DataFrame({"study_id": np.arange(16) // 5 + 100 * fold, "level": "l1_l2",
                                        "label": labels, "normal_mild": probs[:, 0], "moderate": probs[:, 1],
                                        "severe": probs[:, 2], "source": "model", "fold": fold, "seed": seed}))
    predictions = pd.concat(frames, ignore_index=True)
    oof = out_of_fold(predictions, spinal=True)
    assert list(oof["seed"]) == [1, 2] and list(oof["samples"]) == [32, 32] and list(oof["folds"]) == [2, 2]
    seed1 = predictions[predictions["seed"] == 1]
    pred = seed1[["normal_mild", "moderate", "severe"]].to_numpy().argmax(1)
    recalls = [np.mean(pred[seed1["label"].to_numpy() == c] == c) for c in range(3)]
    assert oof.loc[0, "balanced_accuracy"] == pytest.approx(np.mean(recalls))
    cells = pd.DataFrame({"fold": [0, 0, 1, 1], "seed": [1, 2, 1, 2], "balanced_accuracy": [0.5, 0.7, 0.4, 0.6]})
    agg = aggregates(cells, oof)
    assert agg["ba/mean"] == pytest.approx(0.55) and agg["ba/fold0"] == pytest.approx(0.6)
    assert agg["ba/seed2"] == pytest.approx(0.65)
    assert agg["ba/seed_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))  # the same in both folds
    assert agg["ba/fold_sd"] == pytest.approx(np.std([0.6, 0.5], ddof=1))
    assert agg["oof/balanced_accuracy"] == pytest.approx(oof["balanced_accuracy"].mean())


def _runs(cwd):
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    return client, client.search_runs([exp.experiment_id])


def _interrupted_in_second_cell(demo_root, cwd):
    """Start the matrix, send SIGINT once the second cell has finished its first epoch."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(cwd / ".harness"), COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "harness", *MATRIX, "--data-dir", str(demo_root)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    seen, in_second = [], False
    for line in proc.stdout:
        seen.append(line)
        in_second = in_second or line.startswith("cell 2/2")
        if in_second and line.startswith("epoch  1/2"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + rest


@pytest.mark.slow
def test_a_matrix_stopped_mid_cell_continues_to_every_cell_once_with_identical_metrics(demo_root, tmp_path):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    stopped.mkdir()
    straight.mkdir()
    code, out = _interrupted_in_second_cell(demo_root, stopped)
    assert code == 130, out[-3000:]
    assert "the same command continues the matrix" in out
    client, runs = _runs(stopped)
    (parent,) = [r for r in runs if r.data.tags.get("harness.kind") == "matrix"]
    assert parent.info.status == "KILLED"

    again = harness_cli(*MATRIX, "--data-dir", str(demo_root), cwd=stopped)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    assert "cell 1/2: fold 0 seed 42: FINISHED before" in again.stdout and "resuming run" in again.stdout
    client, runs = _runs(stopped)
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "matrix"]
    cells = [r for r in runs if r.data.tags.get("harness.kind") == "training"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same parent, continued
    cell_keys = sorted((r.data.tags["harness.fold"], r.data.tags["harness.seed"]) for r in cells)
    assert cell_keys == [("0", "42"), ("1", "42")]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
               for r in cells)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"cells.csv", "oof_predictions.csv", "cells.png"} <= artifacts
    oof = pd.read_csv(client.download_artifacts(parents[0].info.run_id, "oof_predictions.csv"))
    assert oof.groupby(["study_id", "level"]).size().max() == 1  # one OOF prediction per sample per seed
    assert set(oof["fold"]) == {0, 1}

    ok = harness_cli(*MATRIX, "--data-dir", str(demo_root), cwd=straight)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    _, straight_runs = _runs(straight)
    by_cell = lambda rs: {(r.data.tags["harness.fold"], r.data.tags["harness.seed"]): r for r in rs
                          if r.data.tags.get("harness.kind") == "training"}
    for key, run in by_cell(straight_runs).items():
        best = lambda r: {k: v for k, v in r.data.metrics.items() if k.startswith(("best/", "val/"))}
        assert best(by_cell(runs)[key]) == best(run), key  # the stopped cell resumed bit for bit
    parent_metrics = lambda rs: next(r for r in rs if r.data.tags.get("harness.kind") == "matrix").data.metrics
    assert parent_metrics(runs) == parent_metrics(straight_runs)
    assert {"ba/mean", "ba/sd", "ba/fold0", "ba/fold1", "oof/balanced_accuracy",
            "oof/competition_score_spinal"} <= set(parent_metrics(runs))

    third = harness_cli(*MATRIX, "--data-dir", str(demo_root), cwd=straight)
    assert third.returncode == 0 and "every cell is FINISHED" in third.stdout
    _, after = _runs(straight)
    assert len(after) == len(straight_runs)  # nothing trained, no second parent
