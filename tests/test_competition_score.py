"""End to end: a run on a dataset with a level without a coordinate and a study whose spinal points
lie on its Sagittal T1 series. Every labelled level of the validation studies is scored, as Kaggle
would, and the run's, compare's and the reference metric's figures agree."""
import json
import os

import kaggle_metric
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import editable_copy, harness_cli
from mlflow import MlflowClient
from rich.console import Console

from harness.compare import runs as compare
from harness.core import competition
from harness.data.demo import MARKER
from harness.data.rsna import load_samples

pytestmark = pytest.mark.slow  # every test reads the one harness run of the module fixture

EPOCHS = 2
SPINAL = "spinal_canal_stenosis"


def _plan(root, fold: int, folds: int, home):
    from harness.training.plan import prepare

    os.environ["HARNESS_HOME"] = str(home)
    try:
        return prepare("v9", fold, str(root), "smoke", None, {"data.num_folds": folds}, Console(quiet=True))
    finally:
        del os.environ["HARNESS_HOME"]


def _copy_with_both_kinds(demo_root, tmp):
    """A copy in which a second study has no spinal coordinate at all and shares the other-series
    study's fold: a study without any sample joins fold study_id % num_folds."""
    t1_study = json.loads((demo_root / MARKER).read_text())["spinal_on_t1_study"]
    coords = pd.read_csv(demo_root / competition.COORDS_CSV)
    spinal = coords["condition"] == "Spinal Canal Stenosis"
    for folds in (5, 4, 3, 2):
        for study in sorted(set(coords.loc[spinal, "study_id"]) - {t1_study}):
            if study % folds == t1_study % folds:
                root = editable_copy(demo_root, tmp / "data")
                coords[~(spinal & (coords["study_id"] == study))].to_csv(root / competition.COORDS_CSV, index=False)
                return root, t1_study % folds, folds, t1_study, study
    pytest.fail("no study shares a fold with the other-series study")


@pytest.fixture(scope="module")
def scored_run(demo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scored")
    root, fold, folds, t1_study, uncoordinated = _copy_with_both_kinds(demo_root, tmp)
    cwd = tmp / "work"
    cwd.mkdir()
    res = harness_cli("run", "v9", "--fold", str(fold), "--data-dir", str(root), "--profile", "smoke",
                      "--set", f"train.epochs={EPOCHS}", "--set", f"data.num_folds={folds}", cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    client = MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name(f"rsna-{SPINAL}").experiment_id])[0]
    preds = pd.read_csv(client.download_artifacts(run.info.run_id, "val_predictions.csv"), keep_default_na=False)
    return dict(root=root, fold=fold, folds=folds, t1_study=t1_study, uncoordinated=uncoordinated, client=client,
                run=run, preds=preds, out=res.stdout, plan=_plan(root, fold, folds, cwd / ".harness"))


def test_every_labelled_level_of_the_validation_studies_is_in_the_predictions(scored_run):
    preds, plan, root = scored_run["preds"], scored_run["plan"], scored_run["root"]
    model = preds[preds["source"] == "model"]
    # the validation studies: those the model saw, and the two without a sample (fold study_id % num_folds)
    t1, none = scored_run["t1_study"], scored_run["uncoordinated"]
    studies = set(model["study_id"]) | {t1, none}
    train = pd.read_csv(root / competition.TRAIN_CSV).set_index("study_id")
    expected = {(s, lvl): competition.SEVERITIES.index(train.loc[s, f"{SPINAL}_{lvl}"]) for s in studies
                for lvl in competition.LEVELS if isinstance(train.loc[s, f"{SPINAL}_{lvl}"], str)}
    got = dict(zip(zip(preds["study_id"], preds["level"]), preds["label"]))
    assert len(preds) == len(got) and got == expected  # each labelled level once, with its label
    fallback = preds[preds["source"] == "fallback"]
    reasons = {(s, lvl): r for s, lvl, r in zip(fallback["study_id"], fallback["level"], fallback["reason"])}
    assert reasons == ({(t1, lvl): "other_series" for (s, lvl) in expected if s == t1}
                       | {(none, lvl): "no_coordinate" for (s, lvl) in expected if s == none})
    # the stated fallback: the training fold's class frequencies
    train_labels = plan.table.samples["label"].iloc[plan.train_rows]
    prior = np.bincount(train_labels, minlength=3) / len(train_labels)
    assert np.allclose(fallback[list(competition.CLASS_KEYS)].to_numpy(), prior, atol=0, rtol=1e-15)
    assert len(model) == len(plan.val_rows) and set(model["reason"]) == {""}
    m = scored_run["run"].data.metrics
    assert m["data/fallback_levels"] == len(fallback) and m["data/dropped_other_series"] == 5
    assert "points on a series of another type" in scored_run["out"]
    assert f"{len(fallback)} labelled validation level(s) have no sample" in scored_run["out"]


def test_the_runs_compares_and_the_references_scores_agree(scored_run):
    preds, run, client = scored_run["preds"], scored_run["run"], scored_run["client"]
    mlflow.set_tracking_uri(client.tracking_uri)  # where compare reads runs from
    probs = preds[list(competition.CLASS_KEYS)].to_numpy(np.float64)
    reference = kaggle_metric.spinal_score(preds["study_id"], preds["level"], preds["label"], probs)
    m = run.data.metrics
    assert m["best/competition_score_spinal"] == pytest.approx(reference, abs=1e-9)
    try:
        record = compare.load_run(run)
    finally:
        mlflow.set_tracking_uri(None)
    assert record.competition_score_spinal() == pytest.approx(reference, abs=1e-9)
    # BA stays on the model's samples
    model = preds[preds["source"] == "model"]
    assert len(record.predictions) == len(model)
    recalls = [((model["prediction"] == k) & (model["label"] == k)).sum() / (model["label"] == k).sum()
               for k in range(3) if (model["label"] == k).any()]
    assert m["best/balanced_accuracy"] == pytest.approx(sum(recalls) / 3, abs=1e-12)


def test_every_validation_metric_has_its_selected_epoch_twin_and_epochs_count_from_one(scored_run):
    run, client = scored_run["run"], scored_run["client"]
    m = run.data.metrics
    best = int(m["best/epoch"])
    assert 1 <= best <= EPOCHS
    for name in (k for k in m if k.startswith("val/")):
        history = client.get_metric_history(run.info.run_id, name)
        assert [h.step for h in history] == list(range(1, EPOCHS + 1)), name
        twin = "best/" + name.removeprefix("val/")
        assert twin in m, twin
        assert m[twin] == pytest.approx(next(h.value for h in history if h.step == best), abs=1e-12), name
    # the names `harness tune` accepts as an objective are exactly what a run logs for its selected epoch
    from harness.core.names import SELECTED
    assert {k for k in m if k.startswith("best/")} == set(SELECTED)
    dead = run.data.tags["harness.dead_class_epochs"]
    assert dead == "none" or all(1 <= int(e) <= EPOCHS for e in dead.split(","))
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**selected epoch {best}** of {EPOCHS}") and "competition score" in note
    out = scored_run["out"]
    assert f"selected epoch {best} of {EPOCHS}" in out and "The checkpoint gate (train.gate=" in out
    # where the run went and what to do next
    assert f"run {run.info.run_id} (" in out and "artifacts (checkpoint, val_predictions.csv, plots) in" in out
    assert "next: `harness ui`" in out and "`harness compare v4 v9 --fold" in out


def test_attention_figures_are_logged(scored_run):
    run, client = scored_run["run"], scored_run["client"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"attention_by_class.png", "attention_examples.png"} <= names


def test_other_series_points_can_be_used(scored_run):
    root, t1 = scored_run["root"], scored_run["t1_study"]
    series = pd.read_csv(root / competition.SERIES_CSV)
    t1_series = set(series[(series["study_id"] == t1) & (series["series_description"] == "Sagittal T1")]["series_id"])
    dropped = load_samples(root, SPINAL)
    used = load_samples(root, SPINAL, other_series_points="use")
    on_t1 = used.samples[used.samples["study_id"] == t1]
    assert t1 not in set(dropped.samples["study_id"]) and len(on_t1) == dropped.dropped["other_series"] > 0
    assert set(on_t1["series_id"]) <= t1_series
    assert used.dropped["other_series"] == 0 and set(used.labelled["reason"]) <= {"", "no_coordinate", "missing_image"}
    assert all(used.image_path(r.study_id, r.series_id, r.instance_number).is_file() for r in on_t1.itertuples())
