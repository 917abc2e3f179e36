"""A run matrix shared out through a queue (harness.training.cell_queue): `--workers N` on one machine,
`--storage URL` on several. Every cell trains exactly once, a killed worker's cell is retried by another
worker (resumed from its checkpoint on the same machine), one parent run gets the aggregates once."""
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import harness_cli
from mlflow import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

MATRIX = ["run", "v9", "--fold", "0,1", "--seed", "42", "--profile", "smoke", "--set", "train.epochs=3"]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeats
FAST_HEARTBEAT = {"HARNESS_QUEUE_HEARTBEAT_S": "1", "HARNESS_QUEUE_GRACE_S": "5"}


def test_queue_arguments_are_one_line_errors_before_any_heavy_import(tmp_path):
    """A fresh interpreter: each mistake exits 2 with one line, and neither torch nor MLflow nor Optuna
    is imported to say so."""
    cases = [
        (["run", "v9", "--fold", "0,1", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["run", "v9", "--fold", "0,1", "--storage", "db.sqlite"], "--storage db.sqlite: expected an SQLAlchemy URL"),
        (["run", "v9", "--fold", "0", "--workers", "2"], "this is one run"),
        (["run", "v9", "--fold", "0", "--storage", "sqlite:///q.db"], "this is one run"),
        (["run", "v9", "--fold", "0,1", "--workers", "2", "--resume"], "--resume with --workers or --storage"),
        (["run", "v9", "--fold", "0,1", "--storage", "sqlite:///q.db", "--devices", "2"],
         "--devices with --workers or --storage"),
    ]
    code = ("import contextlib, io, json, sys; from harness.cli import main; out = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        out.append([main(argv + ['--profile', 'smoke']), err.getvalue()])\n"
            "heavy = [m for m in ('torch', 'mlflow', 'optuna', 'sqlalchemy') if m in sys.modules]\n"
            "print(json.dumps({'results': out, 'heavy': heavy}))")
    res = subprocess.run([sys.executable, "-c", code, json.dumps([argv for argv, _ in cases])], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                         env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    for (argv, needle), (rc, err) in zip(cases, answer["results"]):
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (argv, err)
    assert answer["heavy"] == []
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "q.db").exists()


def _queue(tmp_path, keys):
    """A real queue as open_queue leaves it, without MLflow: SQLite, 1 s heartbeat, 2 s grace."""
    from harness.training import cell_queue

    storage = RDBStorage(f"sqlite:///{tmp_path / 'queue.db'}", heartbeat_interval=1, grace_period=2,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    study = optuna.create_study(study_name="matrix-test", storage=storage, direction="maximize")
    for key in keys:
        fold, seed = map(int, key.split(","))
        study.enqueue_trial({"fold": fold, "seed": seed}, user_attrs={cell_queue.STEP: key})
    study.enqueue_trial({}, user_attrs={cell_queue.STEP: cell_queue.SUMMARY})
    return cell_queue.Queue(storage, study, keys, parent="unused")


def test_each_cell_is_taken_once_the_aggregates_last_a_twin_dropped_and_a_silent_worker_retried(tmp_path):
    from harness.training.cell_queue import STEP, SUMMARY, claim

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    queue = _queue(tmp_path, ["0,42", "1,42"])
    first, second = claim(queue), claim(queue)
    assert (first.user_attrs[STEP], second.user_attrs[STEP]) == ("0,42", "1,42")
    assert claim(queue) is None  # the aggregates wait for every cell
    # the same step queued twice (two workers re-queue one failed cell at once): the later copy is dropped
    queue.study.enqueue_trial({"fold": 1, "seed": 42}, user_attrs={STEP: "1,42"})
    assert claim(queue) is None
    (twin,) = queue.trials((TrialState.PRUNED,))
    assert twin.user_attrs["harness.duplicate_of"] == second.number
    queue.storage.set_trial_state_values(first._trial_id, TrialState.COMPLETE, values=[0.5])
    # the second cell's worker goes silent: after the grace period it is failed and queued again
    time.sleep(3)
    fail_stale_trials(queue.study)
    assert queue.storage.get_trial(second._trial_id).state == TrialState.FAIL
    retry = claim(queue)
    assert retry.user_attrs[STEP] == "1,42" and retry.system_attrs["failed_trial"] == second.number
    queue.storage.set_trial_state_values(retry._trial_id, TrialState.COMPLETE, values=[0.6])
    summary = claim(queue)
    assert summary.user_attrs[STEP] == SUMMARY and claim(queue) is None


def _runs(cwd):
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "matrix"]
    cells = [r for r in runs if r.data.tags.get("harness.kind") == "training"]
    return client, parents, cells


def _assert_every_cell_finished_once_under_one_parent(cwd):
    client, parents, cells = _runs(cwd)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert sorted((r.data.tags["harness.fold"], r.data.tags["harness.seed"]) for r in cells) == [("0", "42"),
                                                                                                 ("1", "42")]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in cells)
    assert {"ba/mean", "ba/sd", "ba/fold0", "ba/fold1", "oof/balanced_accuracy"} <= set(parent.data.metrics)
    assert {"cells.csv", "oof_predictions.csv", "cells.png"} <= {a.path for a in client.list_artifacts(
        parent.info.run_id)}
    return parent, cells


def _trials(url, parent):
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    assert name == f"matrix-{parent.data.tags['harness.matrix']}"
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    return study.get_trials(deepcopy=False)


@pytest.mark.slow
def test_two_local_workers_share_the_cells_and_the_same_command_then_has_nothing_to_train(demo_root, tmp_path):
    res = harness_cli(*MATRIX, "--workers", "2", "--data-dir", str(demo_root), cwd=tmp_path, env=FAST_HEARTBEAT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert "[worker 0]" in res.stdout and "[worker 1]" in res.stdout and "0/2 cells done" in res.stdout
    assert "2/2 cells FINISHED" in res.stdout.splitlines()[-1]
    parent, cells = _assert_every_cell_finished_once_under_one_parent(tmp_path)
    # each worker computes with its share of the cores, chosen once by the launcher
    assert {r.data.tags["harness.threads_source"] for r in cells} == {"its --workers share of the free cores"}
    (db,) = (tmp_path / ".harness" / "matrices").glob("*.db")  # the local queue, under the harness home
    trials = _trials(f"sqlite:///{db}", parent)
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3  # two cells and the aggregates, once each
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {parent.info.run_id} | {r.info.run_id for r in cells}

    again = harness_cli(*MATRIX, "--workers", "2", "--data-dir", str(demo_root), cwd=tmp_path, env=FAST_HEARTBEAT)
    assert again.returncode == 0 and "every cell is FINISHED" in again.stdout, again.stdout[-2000:]
    assert len(_runs(tmp_path)[2]) == 2


@pytest.mark.slow
def test_two_machines_through_postgresql_one_killed_mid_cell(demo_root, tmp_path, postgres_url):
    """Two `harness run ... --storage URL` processes (as on two machines sharing the store and the
    checkpoints folder); the first is SIGKILLed in its cell's second epoch. The second trains its own
    cell, takes the killed one over once its heartbeat is stale, resumes it and writes the aggregates."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(tmp_path / ".harness"), COLUMNS="200", **FAST_HEARTBEAT)
    command = [sys.executable, "-m", "harness", *MATRIX, "--set", "train.threads=1", "--data-dir", str(demo_root),
               "--storage", postgres_url]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, stdin=subprocess.DEVNULL)
    second, log, seen = None, tmp_path / "second.log", []
    try:
        for line in first.stdout:
            seen.append(line)
            if second is None and line.startswith("fold "):  # the first worker holds a cell: start the second
                killed_cell = line.split(" (")[0]
                with open(log, "w") as out:
                    second = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              text=True, stdin=subprocess.DEVNULL)
            if line.startswith("epoch  2/3"):  # epoch 1's checkpoint is written by now
                first.send_signal(signal.SIGKILL)
                break
        first.wait(timeout=60)
        assert first.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
        assert second.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    out = log.read_text()
    assert f"{killed_cell} (1/2 cells done" in out and "retried, resuming run" in out, out[-4000:]
    parent, cells = _assert_every_cell_finished_once_under_one_parent(tmp_path)
    fold = killed_cell.split()[1]
    (resumed,) = [r for r in cells if r.data.tags["harness.fold"] == fold]
    assert resumed.data.tags["harness.resumed_after_epoch"] in ("1", "2")  # the same run, from its checkpoint
    trials = _trials(postgres_url, parent)
    by_state = lambda state: [t for t in trials if t.state == state]
    (dead,) = by_state(TrialState.FAIL)
    assert dead.user_attrs["harness.cell"] == f"{fold},42" and dead.user_attrs["harness.worker"].endswith(
        f":{first.pid}")
    assert len(by_state(TrialState.COMPLETE)) == 3 and len(trials) == 4  # two cells, one retry, the aggregates
    (retry,) = [t for t in by_state(TrialState.COMPLETE) if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.user_attrs["mlflow_run_id"] == resumed.info.run_id
