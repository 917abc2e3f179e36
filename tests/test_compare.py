"""`harness compare` on real MLflow stores: runs with constructed prediction files where the answer
is known, the refusal of runs on different samples, and end to end on real smoke runs."""
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import harness_cli
from mlflow import MlflowClient

from harness.core.competition import CLASS_KEYS

COUNTS = (600, 60, 90)  # Normal/Mild, Moderate, Severe: a fold's proportions, scaled down


def _labels() -> np.ndarray:
    return np.repeat([0, 1, 2], COUNTS)


def _predictions(right_severe: int, flip_one: bool = False) -> pd.DataFrame:
    """Normal 540/600 right, Moderate 30/60, Severe `right_severe`/90; wrong answers are Normal."""
    y = _labels()
    pred = y.copy()
    pred[:60] = 1  # 60 Normal called Moderate
    pred[600:630] = 0
    pred[660 + right_severe:] = 0
    if flip_one:
        pred[0] = 0  # one more Normal right
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    return pd.DataFrame({"study_id": np.arange(len(y)) // 5 + 1000, "level": np.array(["l1_l2", "l2_l3", "l3_l4",
                                                                                       "l4_l5",
                                                                                       "l5_s1"])[np.arange(len(y)) % 5],
                         "label": y, **{k: probs[:, i] for i, k in enumerate(CLASS_KEYS)}, "prediction": pred})


def _log_run(variant: str, preds: pd.DataFrame, fold_fp: str = "fold-a", seed: int = 42, epochs: int = 4):
    """A finished run as `harness run` leaves it: tags, per-epoch BA, best/* and the predictions file."""
    exp = mlflow.set_experiment("rsna-spinal_canal_stenosis")
    tags = {"harness.variant": variant, "harness.fold": "0", "harness.seed": str(seed), "harness.kind": "training",
            "harness.fold_fingerprint": fold_fp, "harness.data_fingerprint": "data-a",
            "harness.condition": "spinal_canal_stenosis"}
    with mlflow.start_run(experiment_id=exp.experiment_id, tags=tags) as run:
        recalls = [((preds.prediction == c) & (preds.label == c)).sum() / (preds.label == c).sum() for c in range(3)]
        for e in range(epochs):
            mlflow.log_metrics({"val/balanced_accuracy": float(np.mean(recalls)) - 0.01 * (epochs - 1 - e),
                                "train/loss": 1.0 - 0.1 * e, "val/loss": 1.0 - 0.05 * e,
                                **{f"val/recall/{k}": float(r) for k, r in zip(CLASS_KEYS, recalls)}}, step=e + 1)
        mlflow.log_metrics({"best/balanced_accuracy": float(np.mean(recalls)), "best/epoch": epochs})
        mlflow.log_param("model.parameters", "1234")
        mlflow.log_text(preds.to_csv(index=False), "val_predictions.csv")
        return run.info.run_id


def _compare(store, *args):
    res = harness_cli("compare", *args, "--json", cwd=store)
    return res, (json.loads(res.stdout) if res.returncode == 0 else None)


def test_twenty_more_severe_is_better_one_sample_is_noise(store):
    _log_run("v4", _predictions(40))
    _log_run("v9", _predictions(60))  # right on 20 more of the 90 Severe
    _log_run("v8", _predictions(40, flip_one=True))  # one sample apart from v4
    res, report = _compare(store, "v4", "v9", "v8")
    assert res.returncode == 0, res.stderr
    rows = {r["variant"]: r for r in report["against_baseline"]}
    assert rows["v9"]["difference"] == pytest.approx(20 / 90 / 3)
    assert rows["v9"]["low"] > 0 and rows["v9"]["p_holm"] < 0.01
    assert rows["v9"]["verdict"].startswith("v9 vs v4: these two trained models differ beyond sample noise (v9 higher")
    assert rows["v8"]["low"] <= 0 <= rows["v8"]["high"] and rows["v8"]["p_holm"] > 0.5
    assert "do not differ beyond sample noise" in rows["v8"]["verdict"]
    assert "version_level" not in report  # one run per variant: two trained models, no version-level claim
    summary = {s["variant"]: s for s in report["variants"]}
    assert summary["v9"]["recall"]["severe"]["estimate"] == pytest.approx(60 / 90)
    assert summary["v4"]["parameters"] == 1234 and report["class_counts"] == list(COUNTS)
    # the comparison itself is a run of kind 'comparison' holding the table
    client = MlflowClient(mlflow.get_tracking_uri())
    run = client.get_run(report["comparison_run"])
    assert run.data.tags["harness.kind"] == "comparison"
    assert "comparison.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_run_against_itself_is_zero_with_p_one(store):
    preds = _predictions(50)
    a = _log_run("v4", preds)
    b = _log_run("v9", preds)
    res, report = _compare(store, "--runs", a, b)
    assert res.returncode == 0, res.stderr
    (row,) = report["against_baseline"]
    assert row["difference"] == 0 and row["low"] == 0 == row["high"] and row["p_value"] == pytest.approx(1)


def test_runs_on_different_validation_samples_are_refused(store):
    _log_run("v4", _predictions(40), fold_fp="fold-a")
    _log_run("v9", _predictions(60), fold_fp="fold-b")
    res, _ = _compare(store, "v4", "v9")
    assert res.returncode == 1 and "validated on different samples" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_a_missing_variant_is_a_one_line_error(store):
    _log_run("v4", _predictions(40))
    res, _ = _compare(store, "v4", "v9")
    assert res.returncode == 2 and "no finished run of v9" in res.stderr and "--run-missing" in res.stderr


@pytest.mark.slow
def test_end_to_end_on_smoke_runs(demo_root, tmp_path):
    """Two real smoke runs, a third trained by --run-missing, then the comparison read from --json."""
    for name in ("v9", "v7"):
        res = harness_cli("run", name, "--data-dir", str(demo_root), "--profile", "smoke", "--set", "train.epochs=2",
                          cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
    res = harness_cli("compare", "v9", "v8", "v7", "--run-missing", "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", "train.epochs=2", "--json", "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert [s["variant"] for s in report["variants"]] == ["v9", "v8", "v7"] and report["baseline"] == "v9"
    assert {r["variant"] for r in report["against_baseline"]} == {"v8", "v7"}
    for s in report["variants"]:
        ba = s["balanced_accuracy"]
        assert ba["low"] <= ba["estimate"] <= ba["high"] and s["parameters"] > 0
    assert "training v8" in res.stderr  # --run-missing said what it trained
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"comparison.csv", "comparison.md", "comparison.json", "ba_curves.png", "recall_intervals.png",
            "confusion_matrices.png"} <= written
