"""`harness compare` over run matrices, on real MLflow stores: cells drawn from the calibration model
(harness.compare.simulation, known truth) logged as finished runs, one per (variant, fold, seed); the
version level must call an A/A pair indistinguishable and a planted 15-point harm worse beyond noise, and
its words must follow what was measured."""
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import harness_cli
from mlflow import MlflowClient

from harness.compare.simulation import simulate
from harness.compare.version_cells import DEMO_FOLD_COUNTS
from harness.core.competition import CLASS_KEYS

LEVELS = np.array(["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"])


def _frame(fold: int, labels: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    probs = np.full((len(labels), 3), 0.1)
    probs[np.arange(len(labels)), preds] = 0.8
    idx = np.arange(len(labels))
    return pd.DataFrame({"study_id": 10_000 * (fold + 1) + idx // 5, "level": LEVELS[idx % 5], "label": labels,
                         **{k: probs[:, i] for i, k in enumerate(CLASS_KEYS)}, "prediction": preds,
                         "source": "model", "reason": ""})


def _log_cell(variant: str, fold: int, seed, labels, preds, last_preds=None) -> str:
    """A finished training run as `harness run` leaves it: tags, per-epoch BA, best/*, the predictions."""
    exp = mlflow.set_experiment("rsna-spinal_canal_stenosis")
    tags = {"harness.variant": variant, "harness.fold": str(fold), "harness.seed": str(seed),
            "harness.kind": "training", "harness.fold_fingerprint": f"fold-{fold}",
            "harness.data_fingerprint": "data-a", "harness.condition": "spinal_canal_stenosis"}
    preds_frame = _frame(fold, labels, preds)
    with mlflow.start_run(experiment_id=exp.experiment_id, tags=tags) as run:
        mlflow.log_metrics({"val/balanced_accuracy": 0.5, "train/loss": 1.0, "val/loss": 1.0,
                            **{f"val/recall/{k}": 0.5 for k in CLASS_KEYS}}, step=1)
        mlflow.log_metrics({"best/balanced_accuracy": 0.5, "best/epoch": 1})
        mlflow.log_text(preds_frame.to_csv(index=False), "val_predictions.csv")
        if last_preds is not None:
            mlflow.log_text(_frame(fold, labels, last_preds).to_csv(index=False), "val_predictions_last.csv")
        return run.info.run_id


def _log_matrix(difference: float, n_folds: int = 3, n_seeds: int = 3, seed: int = 0, last: bool = True):
    """v4 and v9 cells from the calibration model (demo fold counts x 4): v9's expected BA is v4's + difference."""
    cells_a, cells_b = simulate(np.random.default_rng(seed), class_counts=tuple(4 * c for c in DEMO_FOLD_COUNTS),
                                n_folds=n_folds, n_seeds=n_seeds, difference=difference)
    for variant, cells in (("v4", cells_a), ("v9", cells_b)):
        for (fold, s), (labels, preds) in cells.items():
            _log_cell(variant, fold, s, labels, preds, preds if last else None)


def _compare(store, *args):
    res = harness_cli("compare", *args, "--json", cwd=store)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_aa_matrix_is_indistinguishable_at_version_level(store):
    _log_matrix(difference=0.0)
    report = _compare(store, "v4", "v9", "--fold", "all")
    level = report["version_level"]
    row, = level["rows"]
    assert row["level"] == "version" and row["n_cells"] == 9 and row["n_folds"] == 3
    assert row["method"] == level["method"] == "hierarchical_bootstrap"
    assert row["low"] <= 0 <= row["high"] and row["p_holm"] > 0.05
    assert row["verdict"].startswith("v4 and v9 are indistinguishable at this budget (3 folds x 3 seeds): MDD ")
    assert level["epoch"] == "last" and "not selected on the scored fold" in level["epoch_note"]
    budget = level["budget"]["v4"]
    assert budget["n_cells"] == 9 and budget["seed_sd"] > 0 and budget["sample_se"] > 0
    # the model level stays, labelled as a statement about the trained models
    model, = report["against_baseline"]
    assert model["level"] == "model" and model["paired_runs"] == 9
    assert "these trained models (9 runs each)" in model["verdict"] and "better" not in model["verdict"]
    assert report["folds"] == [0, 1, 2] and report["fold"] is None


def test_planted_harm_is_worse_beyond_noise_and_printed(store):
    _log_matrix(difference=-0.15, last=False)
    report = _compare(store, "v4", "v9", "--fold", "0,1,2")
    row, = report["version_level"]["rows"]
    assert row["high"] < 0 and row["p_holm"] < 0.05
    assert row["difference"] == pytest.approx(row["ba_b"] - row["ba_a"])
    assert row["verdict"] == "v9 scores lower than v4 beyond seed, fold and sample noise (3 folds x 3 seeds)"
    # no val_predictions_last.csv: the selected epoch is used, and said to be optimistic
    assert report["version_level"]["epoch"] == "selected" and "optimistic" in report["version_level"]["epoch_note"]
    res = harness_cli("compare", "v4", "v9", "--fold", "all", "--output", "out", cwd=store)
    assert res.returncode == 0, res.stderr
    assert "version level: the recipes vs the baseline" in res.stdout
    assert "model level:" in res.stdout and row["verdict"] in res.stdout
    table = pd.read_csv(store / "out" / "version_level.csv")
    assert table.loc[0, "n_cells"] == 9 and table.loc[0, "ba_difference_high"] < 0
    assert {"baseline_seed_sd", "variant_fold_sd", "variant_sample_se"} <= set(table.columns)


def test_one_fold_one_seed_speaks_of_trained_models_only(store):
    _log_matrix(difference=-0.15, n_folds=1, n_seeds=1)
    report = _compare(store, "v4", "v9")
    assert "version_level" not in report
    verdict = report["against_baseline"][0]["verdict"]
    assert verdict.startswith("v9 vs v4: these two trained models")
    assert verdict.endswith("training variance not measured (run --seeds 3)")


def test_cells_pair_by_fold_and_seed_only(store):
    """v9 lacks seed 2 on every fold: the paired cells are the 6 both have; v4's third seed still counts
    for its own variance budget."""
    cells_a, cells_b = simulate(np.random.default_rng(1), class_counts=DEMO_FOLD_COUNTS, n_folds=2, n_seeds=3)
    for variant, cells in (("v4", cells_a), ("v9", cells_b)):
        for (fold, s), (labels, preds) in cells.items():
            if variant == "v9" and s == 2:
                continue
            _log_cell(variant, fold, s, labels, preds, preds)
    report = _compare(store, "v4", "v9", "--fold", "0,1")
    row, = report["version_level"]["rows"]
    assert row["n_cells"] == 4 and sorted(map(tuple, row["cells"])) == [(0, "0"), (0, "1"), (1, "0"), (1, "1")]
    assert report["version_level"]["budget"]["v4"]["n_cells"] == 6


def test_plan_before_anything_trains(workdir, demo_root):
    res = harness_cli("compare", "v4", "v9", "--fold", "all", "--seeds", "3", "--plan", "--data-dir", str(demo_root),
                      cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert "plan for 5 fold(s) x 3 seed(s) per variant" in res.stdout
    assert "minimum detectable BA difference" in res.stdout and "an assumed training SD" in res.stdout
    assert "comparison run" not in res.stdout  # a plan: nothing compared, nothing trained
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_bad_fold_list_is_one_line(workdir):
    res = harness_cli("compare", "v4", "v9", "--fold", "0,9", cwd=workdir)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--fold 0,9" in res.stderr


# The known-answer check on real demo matrices (an A/A twin indistinguishable, a planted flat window lower) is
# tests/test_ablation_run.py: `harness compare` on the arms of the known-answer ablation.
