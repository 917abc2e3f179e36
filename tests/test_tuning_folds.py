"""`harness tune` on several folds, end to end on the demo data (real Optuna journal storage, real
MLflow store): the objective is the mean over the folds, the cumulative mean is reported after each
fold, a pruner can stop a trial after its first fold, the runs nest study > trial > fold, and a
Ctrl-C in a later fold queues the whole trial again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
folds: [0, 1]
objective: {{metric: best/balanced_accuracy, direction: maximize}}
trials: 2
sampler: {{name: random, seed: 7}}
pruner: {pruner}
fixed: {{train.epochs: 1, train.warmup_epochs: 0.5, data.num_workers: 0, data.tta: [none]}}
space:
  loss.class_weights[1]: {{type: float, low: 1.0, high: 8.0}}
"""


def _setup(tmp_path, name, pruner):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, pruner=pruner))
    return spec


def _trials(spec, name):
    storage = JournalStorage(JournalFileBackend(str(spec.with_suffix(".journal"))))
    study = optuna.load_study(study_name=name, storage=storage)
    return study, study.trials


def _tune(spec, demo_root, cwd, *extra):
    res = harness_cli("tune", str(spec), "--data-dir", str(demo_root), "--profile", "smoke", *extra, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _client(cwd) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


@pytest.mark.slow
def test_two_folds_objective_is_the_mean_of_the_fold_runs_and_reports_cumulative_means(demo_root, tmp_path):
    spec = _setup(tmp_path, "two_folds", "{name: none}")
    res = _tune(spec, demo_root, tmp_path, "--trials", "2")
    study, trials = _trials(spec, "two_folds")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].params == {"loss.class_weights[1]": 4.0}  # trial 0 is still v9's defaults
    client = _client(tmp_path)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["harness.folds"] == "0,1" and "harness.fold" not in parent.data.tags
    for t in trials:
        run_ids = t.user_attrs["fold_run_ids"]
        assert list(run_ids) == ["0", "1"]
        fold_ba = [client.get_run(run_ids[f]).data.metrics["best/balanced_accuracy"] for f in ("0", "1")]
        assert t.value == pytest.approx(sum(fold_ba) / 2)  # the objective: the mean of the fold runs' best BA
        assert t.intermediate_values == pytest.approx({0: fold_ba[0], 1: (fold_ba[0] + fold_ba[1]) / 2})
        assert t.user_attrs["fold_values"] == pytest.approx({"0": fold_ba[0], "1": fold_ba[1]})
        assert t.user_attrs["fold_mean"] == pytest.approx(t.value)
        # study > trial > fold: the trial's own run holds the per-fold figures and the mean
        trial_run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert trial_run.info.status == "FINISHED"
        assert trial_run.data.tags["mlflow.parentRunId"] == parent_id
        tags = trial_run.data.tags
        assert tags["harness.kind"] == "trial" and tags["harness.trial_state"] == "COMPLETE"
        assert trial_run.data.metrics["best/balanced_accuracy"] == pytest.approx(t.value)
        assert trial_run.data.metrics["fold1/balanced_accuracy"] == pytest.approx(fold_ba[1])
        means = client.get_metric_history(trial_run.info.run_id, "folds_mean/balanced_accuracy")
        assert {m.step: m.value for m in means} == pytest.approx(t.intermediate_values)
        for fold, run_id in run_ids.items():
            run = client.get_run(run_id)
            assert run.info.status == "FINISHED" and run.data.tags["harness.fold"] == fold
            assert run.data.tags["mlflow.parentRunId"] == trial_run.info.run_id
            assert run.data.tags["harness.kind"] == "trial_fold" and run.data.tags["harness.trial"] == str(t.number)
            assert run.data.tags["harness.trial_state"] == "COMPLETE"
    # the console shows trials and folds; the summary the best trial's per-fold values
    assert "trial 1 fold 1 (2/2): balanced_accuracy" in res.stdout and "mean so far" in res.stdout
    assert "(folds 0: " in res.stdout and "done 2, pruned 0, failed 0" in res.stdout
    best = json.loads(Path(client.download_artifacts(parent_id, "best.json", str(tmp_path))).read_text())
    assert best["folds"] == [0, 1] and best["fold_values"] == study.best_trial.user_attrs["fold_values"]
    assert best["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["harness.reproduce"].startswith("harness run v9 --fold 0,1 --profile smoke")
    assert parent.data.metrics["best/fold1/balanced_accuracy"] == pytest.approx(best["fold_values"]["1"])


@pytest.mark.slow
def test_a_pruner_stops_a_trial_after_its_first_fold(demo_root, tmp_path):
    # BA can never reach 1.01: a threshold pruner stops every trial at step 0, the mean after fold 0
    spec = _setup(tmp_path, "pruned_folds", "{name: threshold, lower: 1.01}")
    res = _tune(spec, demo_root, tmp_path, "--trials", "2")
    _, trials = _trials(spec, "pruned_folds")
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    client = _client(tmp_path)
    for t in trials:
        assert list(t.intermediate_values) == [0] and list(t.user_attrs["fold_run_ids"]) == ["0"]
        trial_run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert trial_run.data.tags["harness.trial_state"] == "PRUNED" and trial_run.info.status == "FINISHED"
        children = client.search_runs([trial_run.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{trial_run.info.run_id}'")
        assert [r.data.tags["harness.fold"] for r in children] == ["0"]  # fold 1 never trained
    assert "trial 0 fold 0 (1/2): balanced_accuracy" in res.stdout and "trial 0 fold 1" not in res.stdout
    assert "trial 0 PRUNED" in res.stdout and "; not trained: 1; mean " in res.stdout
    assert "no trial completed" in res.stdout


@pytest.mark.slow
def test_ctrl_c_in_a_later_fold_kills_the_trial_run_and_the_trial_runs_again_whole(demo_root, tmp_path):
    spec = _setup(tmp_path, "stopped_folds", "{name: none}")
    spec.write_text(spec.read_text().replace("train.epochs: 1", "train.epochs: 3"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RSNA_DATA_DIR")}
    env.update(HARNESS_HOME=str(tmp_path / ".harness"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "tune", str(spec), "--data-dir", str(demo_root),
                             "--profile", "smoke", "--trials", "1"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    client = _client(tmp_path)
    deadline = time.time() + 300
    while True:  # Ctrl-C while trial 0 trains its second fold (the first one finished)
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        if spec.with_suffix(".journal").exists() and (tmp_path / "mlruns" / "mlflow.db").exists():
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      "tags.`harness.kind` = 'trial_fold' and tags.`harness.fold` = '1'")
            if runs and client.get_metric_history(runs[0].info.run_id, "val/loss"):
                break
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().startswith("stopped: study stopped_folds"), err

    _, trials = _trials(spec, "stopped_folds")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # queued again, whole
    assert trials[1].system_attrs["fixed_params"] == trials[0].params
    trial_run = client.get_run(trials[0].user_attrs["mlflow_run_id"])
    assert trial_run.info.status == "KILLED" and trial_run.data.tags["harness.trial_state"] == "KILLED"
    fold_runs = {r.data.tags["harness.fold"]: r for r in client.search_runs(
        [trial_run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{trial_run.info.run_id}'")}
    assert fold_runs["0"].info.status == "FINISHED" and fold_runs["1"].info.status == "KILLED"
    assert {r.data.tags["harness.trial_state"] for r in fold_runs.values()} == {"KILLED"}

    _tune(spec, demo_root, tmp_path, "--trials", "2")  # the same command resumes: the stopped trial again
    _, trials = _trials(spec, "stopped_folds")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and list(trials[1].user_attrs["fold_values"]) == ["0", "1"]
