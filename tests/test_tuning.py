"""`harness tune` end to end on the demo data: a real Optuna journal (and PostgreSQL) storage, real
MLflow parent/child runs, pruning, failures, a killed worker and several workers."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import harness_cli
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

SPEC = """
name: {name}
variant: v9
fold: 0
objective: {{metric: best/balanced_accuracy, direction: maximize}}
trials: 3
sampler: {{name: random, seed: 7}}
pruner: {pruner}
fixed: {{train.epochs: {epochs}, train.warmup_epochs: 0.5, data.num_workers: 0, data.tta: [none]}}
space:
  loss.class_weights[1]: {{type: float, low: 1.0, high: 8.0}}
"""
# cuda:7 fails at run time on any machine with fewer than 8 GPUs (CI has none): a trial that raises
DEVICES = "  train.device: {type: categorical, choices: [auto, cpu, 'cuda:7']}\n"


def _spec(tmp_path, name="demo_study", pruner="{name: none}", epochs=1, extra_space=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, pruner=pruner, epochs=epochs) + extra_space)
    return path


def _study(spec_path, name="demo_study") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(spec_path.with_suffix(".journal"))))
    return optuna.load_study(study_name=name, storage=storage)


def _tune(spec, demo_root, cwd, *extra, env=None):
    return harness_cli("tune", str(spec), "--data-dir", str(demo_root), "--profile", "smoke", *extra, cwd=cwd, env=env)


def _client(cwd) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


@pytest.mark.slow
def test_study_defaults_first_children_linked_failures_recorded_and_resumed(demo_root, tmp_path):
    spec = _spec(tmp_path, extra_space=DEVICES)
    res = _tune(spec, demo_root, tmp_path, "--trials", "1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    study = _study(spec)
    (t0,) = study.trials
    assert t0.state == TrialState.COMPLETE
    assert t0.params == {"loss.class_weights[1]": 4.0, "train.device": "cpu"}  # v9's (smoke) defaults
    # a trial that raises is recorded as failed with its reason, and the study goes on
    study.enqueue_trial({"loss.class_weights[1]": 2.0, "train.device": "cuda:7"})
    study.enqueue_trial({"loss.class_weights[1]": 6.0, "train.device": "cpu"})
    res = _tune(spec, demo_root, tmp_path, "--trials", "3")  # resumes: two more, not three
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = _study(spec).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"]  # the exception's first line
    client = _client(tmp_path)
    parent_id = _study(spec).user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["harness.kind"] == "study" and parent.data.tags["harness.best_trial"] in ("0", "2")
    command = parent.data.tags["harness.reproduce"]
    assert command.startswith("harness run v9 --fold 0 --profile smoke") and "loss.class_weights=[1.0," in command
    assert {"optimization_history.png", "best.json", "study.yaml"} <= {a.path for a in client.list_artifacts(parent_id)}
    for t in (trials[0], trials[2]):
        child = client.get_run(t.user_attrs["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.data.tags["harness.trial"] == str(t.number)
        assert child.data.tags["harness.trial_state"] == "COMPLETE"
        assert child.data.metrics["best/balanced_accuracy"] == pytest.approx(t.value)
    assert "done 2, pruned 0, failed 1" in res.stdout


@pytest.mark.slow
def test_a_pruner_that_must_prune_prunes(demo_root, tmp_path):
    # BA can never reach 1.01: a threshold pruner stops every trial after its first epoch
    spec = _spec(tmp_path, "pruned", pruner="{name: threshold, lower: 1.01}", epochs=3)
    res = _tune(spec, demo_root, tmp_path, "--trials", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = _study(spec, "pruned").trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    client = _client(tmp_path)
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["harness.trial_state"] == "PRUNED"
        assert len(client.get_metric_history(run.info.run_id, "val/balanced_accuracy")) == 1  # 1 of 3 epochs


@pytest.mark.slow
def test_a_killed_study_resumes_without_losing_or_repeating_a_trial(demo_root, tmp_path):
    spec = _spec(tmp_path, "killed", epochs=2)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(tmp_path / ".harness"))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "tune", str(spec), "--data-dir", str(demo_root),
                             "--profile", "smoke", "--trials", "3"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.time() + 300
    while True:  # kill it while trial 1 runs (trial 0 finished)
        assert time.time() < deadline and proc.poll() is None
        if spec.with_suffix(".journal").exists():
            states = [t.state for t in _study(spec, "killed").trials]
            if states[:1] == [TrialState.COMPLETE] and TrialState.RUNNING in states:
                break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = _tune(spec, demo_root, tmp_path, "--trials", "3")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "marked 1 trial(s) left running by a stopped worker as failed: 1" in res.stdout
    trials = _study(spec, "killed").trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]


def _two_workers_record_every_trial_once(study: optuna.Study, client: MlflowClient, n: int):
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state, t.user_attrs) for t in trials]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == n
    children = client.search_runs([client.get_run(run_ids[0]).info.experiment_id],
                                  "tags.`harness.kind` = 'trial'")
    assert sorted(r.info.run_id for r in children) == sorted(run_ids)


@pytest.mark.slow
def test_two_local_workers_share_the_trials(demo_root, tmp_path):
    spec = _spec(tmp_path, "workers")
    res = _tune(spec, demo_root, tmp_path, "--trials", "4", "--workers", "2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _two_workers_record_every_trial_once(_study(spec, "workers"), _client(tmp_path), 4)


@pytest.mark.slow
def test_two_workers_through_postgresql(demo_root, tmp_path, postgres_url):
    spec = _spec(tmp_path, "postgres")
    res = _tune(spec, demo_root, tmp_path, "--trials", "4", "--workers", "2", "--storage", postgres_url)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    study = optuna.load_study(study_name="postgres", storage=postgres_url)
    _two_workers_record_every_trial_once(study, _client(tmp_path), 4)


@pytest.mark.slow
def test_ctrl_c_stops_in_one_line_marks_parent_and_trial_killed_and_the_study_resumes(demo_root, tmp_path):
    spec = _spec(tmp_path, "interrupted", epochs=3)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(tmp_path / ".harness"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "tune", str(spec), "--data-dir", str(demo_root),
                             "--profile", "smoke", "--trials", "2"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    client = _client(tmp_path)
    deadline = time.time() + 300
    while True:  # Ctrl-C (SIGINT to the process group, as a terminal sends it) while trial 1 trains
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        if spec.with_suffix(".journal").exists():
            trials = _study(spec, "interrupted").trials
            if [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]:
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          "tags.`harness.trial` = '1'")
                if runs and client.get_metric_history(runs[0].info.run_id, "val/loss"):
                    break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped: study interrupted"), err
    assert "Traceback" not in out + err and "resumes the study" in lines[0]

    trials = _study(spec, "interrupted").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"].startswith("stopped by a signal")
    assert trials[2].params == {} and trials[2].system_attrs["fixed_params"] == trials[1].params  # queued again
    parent = client.get_run(trials[0].user_attrs and _study(spec, "interrupted").user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["harness.stop_reason"] == "Ctrl-C"
    (killed,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   "tags.`harness.trial` = '1'")
    assert killed.info.status == "KILLED" and killed.data.tags["harness.trial_state"] == "KILLED"

    res = _tune(spec, demo_root, tmp_path, "--trials", "3")  # the same command resumes
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = _study(spec, "interrupted").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].params == trials[1].params
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
