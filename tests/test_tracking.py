"""What the MLflow UI shows of the harness's store, read back from a real SQLite store and, over its REST
API, from a real `harness ui` server: experiments of the model-training kind (not GenAI), comparison and
study runs in experiments of their own, and run names that say how each run ended."""
import json
import urllib.parse
import urllib.request

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import harness_cli, harness_ui
from mlflow import MlflowClient

from harness.core.competition import CLASS_KEYS
from harness.tracking import run_status
from harness.tracking import store as tracking
from harness.tracking.reader import finished_runs
from harness.tuning import study as tuning
from harness.tuning.spec import load_spec

TRAINING = "rsna-spinal_canal_stenosis-demo"
KIND = "mlflow.experimentKind"


@pytest.fixture
def store(workdir):
    tracking.ensure_store()  # the default store: mlruns/mlflow.db in the working folder
    yield workdir
    mlflow.set_tracking_uri(None)


def _start(exp: str, name: str = "v9-fold0-seed42", **tags):
    return run_status.recorded_run(experiment_id=exp, run_name=name,
                                   tags={"harness.kind": "training", "harness.variant": "v9",
                                         "harness.fold": "0"} | tags)


def _epochs(n: int):
    for e in range(1, n + 1):
        mlflow.log_metrics({"val/loss": 1.0 / e, "val/balanced_accuracy": 0.5}, step=e)


def test_experiments_are_model_training_and_comparisons_and_studies_have_their_own(store):
    client = MlflowClient()
    exp = tracking.experiment_id(TRAINING)
    assert client.get_experiment(exp).tags[KIND] == "custom_model_development"
    assert tracking.experiment_id(TRAINING) == exp
    cmp, study = tracking.comparison_experiment(exp), tracking.study_experiment(exp)
    assert client.get_experiment(cmp).name == f"{TRAINING}/comparisons"
    assert client.get_experiment(study).name == f"{TRAINING}/studies"
    assert len({exp, cmp, study}) == 3
    assert tracking.comparison_experiment(study) == cmp  # a comparison of tuning trials: beside the training runs
    assert all(client.get_experiment(e).tags[KIND] == "custom_model_development" for e in (cmp, study))
    # the runs table's saved view of the harness's figures, where runs log best/*
    for e, has_view in ((exp, True), (study, True), (cmp, False)):
        assert (tracking.RUNS_VIEW_TAG in client.get_experiment(e).tags) == has_view
    view = json.loads(client.get_experiment(exp).tags[tracking.RUNS_VIEW_TAG])
    assert view["name"] == "BA (harness)" and isinstance(view["createdAt"], int)
    assert json.loads(view["state"])["selectedColumns"][0] == "metrics.`best/balanced_accuracy`"
    # an experiment made before the harness marked its experiments gets the marks; after that, what a
    # user changed in the UI (a kind, a deleted view) stays
    old = client.create_experiment("rsna-old")
    assert client.get_experiment(tracking.experiment_id("rsna-old")).tags[KIND] == "custom_model_development"
    client.set_experiment_tag(old, KIND, "genai_development")
    client.delete_experiment_tag(old, tracking.RUNS_VIEW_TAG)
    tracking.experiment_id("rsna-old")
    assert client.get_experiment(old).tags[KIND] == "genai_development"
    assert tracking.RUNS_VIEW_TAG not in client.get_experiment(old).tags
    # the UI's links: model-training mode, the harness's view where there is one
    links = dict(tracking.ui_links("http://127.0.0.1:5000/"))
    assert links[TRAINING] == (f"http://127.0.0.1:5000/#/experiments/{exp}/runs?workflowType=machine_learning"
                               "&viewStateShareKey=harness-ba")
    assert links[f"{TRAINING}/comparisons"].endswith(f"/{cmp}/runs?workflowType=machine_learning")
    assert "rsna-old" not in links and "Default" not in links


def test_a_run_name_says_how_it_ended_and_a_resumed_run_gets_its_plain_name_back(store):
    client = MlflowClient()
    exp = tracking.experiment_id(TRAINING)
    with _start(exp) as run:
        _epochs(3)
        mlflow.log_metric("best/balanced_accuracy", 0.75612)
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.info.run_name == "v9-fold0-seed42 · BA 0.756"

    with pytest.raises(KeyboardInterrupt):
        with _start(exp) as run:
            _epochs(2)
            raise KeyboardInterrupt  # Ctrl-C in epoch 3
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["harness.stop_reason"] == "SIGINT"
    assert killed.info.run_name == "v9-fold0-seed42 · killed after epoch 2" != finished.info.run_name

    with pytest.raises(KeyboardInterrupt):
        with _start(exp, name="v4-fold0-seed42"):
            raise KeyboardInterrupt  # before any epoch was logged
    assert client.search_runs([exp], "attributes.status = 'KILLED'", order_by=["attributes.start_time DESC"])[0] \
        .info.run_name == "v4-fold0-seed42 · killed in epoch 1"

    with pytest.raises(RuntimeError):
        with _start(exp) as run:
            raise RuntimeError("boom")
    failed = client.get_run(run.info.run_id)
    assert failed.info.status == "FAILED" and failed.info.run_name == "v9-fold0-seed42 · failed"

    # resumed, as `harness run --resume` reopens a run: plain while it trains, its BA once it finishes
    with run_status.recorded_run(run_id=killed.info.run_id) as run:
        assert run.info.run_name == "v9-fold0-seed42"
        assert client.get_run(run.info.run_id).info.run_name == "v9-fold0-seed42"
        _epochs(3)
        mlflow.log_metric("best/balanced_accuracy", 0.7)
    assert client.get_run(killed.info.run_id).info.run_name == "v9-fold0-seed42 · BA 0.700"

    with _start(exp, name="v9-fold1-seed42"):  # a run that logged no BA keeps its name
        pass
    assert client.search_runs([exp], order_by=["attributes.start_time DESC"])[0].info.run_name == "v9-fold1-seed42"


def test_a_trial_run_goes_under_its_study_parent_and_stays_findable_by_compare(store, tmp_path):
    client = MlflowClient()
    exp = tracking.experiment_id(TRAINING)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("name: s\nvariant: v9\nfold: 0\nspace:\n"
                         "  loss.class_weights[1]: {type: float, low: 1.0, high: 8.0}\n")
    study = optuna.create_study()
    parent = tuning.parent_run(load_spec(spec_file), study, tracking.study_experiment(exp))
    assert client.get_experiment(client.get_run(parent).info.experiment_id).name == f"{TRAINING}/studies"
    # as harness.tuning.study starts a trial: training.execute's experiment (the training one) and the parent's id
    with _start(exp, **{"mlflow.parentRunId": parent, "harness.kind": "trial"}) as run:
        mlflow.log_metric("best/balanced_accuracy", 0.6)
    trial = client.get_run(run.info.run_id)
    assert trial.info.experiment_id == client.get_run(parent).info.experiment_id
    assert trial.data.tags["mlflow.parentRunId"] == parent and trial.info.run_name == "v9-fold0-seed42 · BA 0.600"
    assert run.info.run_id in {r.info.run_id for r in finished_runs("v9", 0)}  # as before: by tags, everywhere
    assert not client.search_runs([exp])  # the training runs table holds none of them


def _predictions(right_severe: int) -> pd.DataFrame:
    y = np.repeat([0, 1, 2], (60, 20, 30))
    pred = y.copy()
    pred[80 + right_severe:] = 0
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    levels = np.array(["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"])
    return pd.DataFrame({"study_id": np.arange(len(y)) // 5 + 1000, "level": levels[np.arange(len(y)) % 5], "label": y,
                         **{k: probs[:, i] for i, k in enumerate(CLASS_KEYS)}, "prediction": pred})


def _training_run(exp: str, variant: str, preds: pd.DataFrame) -> str:
    """A finished run with what `harness compare` reads (as `harness run` leaves it)."""
    tags = {"harness.variant": variant, "harness.seed": "42", "harness.fold_fingerprint": "f",
            "harness.data_fingerprint": "d", "harness.condition": "spinal_canal_stenosis"}
    with _start(exp, name=f"{variant}-fold0-seed42", **tags) as run:
        recalls = [float(((preds.prediction == c) & (preds.label == c)).sum() / (preds.label == c).sum())
                   for c in range(3)]
        for e in (1, 2):
            mlflow.log_metrics({"val/balanced_accuracy": float(np.mean(recalls)), "train/loss": 1.0, "val/loss": 1.0,
                                **{f"val/recall/{k}": r for k, r in zip(CLASS_KEYS, recalls)}}, step=e)
        mlflow.log_metrics({"best/balanced_accuracy": float(np.mean(recalls)), "best/epoch": 2})
        mlflow.log_text(preds.to_csv(index=False), "val_predictions.csv")
    return run.info.run_id


def _get(port: int, path: str, **query) -> dict:
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


@pytest.mark.slow
def test_the_ui_server_sees_model_training_experiments_and_named_runs(store, tmp_path):
    """Over the REST API of a real `harness ui`: the kind tag of the training, comparison and study
    experiments, and a training runs table of training runs whose names carry their BA."""
    exp = tracking.experiment_id(TRAINING)
    _training_run(exp, "v4", _predictions(10))
    _training_run(exp, "v9", _predictions(20))
    res = harness_cli("compare", "v4", "v9", "--json", cwd=store)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    comparison = json.loads(res.stdout)["comparison_run"]
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("name: s\nvariant: v9\nfold: 0\nspace:\n"
                         "  loss.class_weights[1]: {type: float, low: 1.0, high: 8.0}\n")
    tuning.parent_run(load_spec(spec_file), optuna.create_study(), tracking.study_experiment(exp))

    with harness_ui(store) as port:
        ids = {}
        for name in (TRAINING, f"{TRAINING}/comparisons", f"{TRAINING}/studies"):
            got = _get(port, "experiments/get-by-name", experiment_name=name)["experiment"]
            tags = {t["key"]: t["value"] for t in got["tags"]}
            assert tags[KIND] == "custom_model_development", name
            assert (tracking.RUNS_VIEW_TAG in tags) == (not name.endswith("/comparisons")), name
            ids[name] = got["experiment_id"]
        listed = _post(port, "runs/search", {"experiment_ids": [ids[TRAINING]]})["runs"]
        names = sorted(r["info"]["run_name"] for r in listed)
        assert names == ["v4-fold0-seed42 · BA 0.778", "v9-fold0-seed42 · BA 0.889"]
        assert _get(port, "runs/get",
                    run_id=comparison)["run"]["info"]["experiment_id"] == ids[f"{TRAINING}/comparisons"]
