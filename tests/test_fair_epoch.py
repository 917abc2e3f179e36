"""The fair figure beside the notebooks' optimistic one (issue 17, "selection bias"): a run also logs
its last epoch (last/*, val_predictions_last.csv), which no selection on the validation fold chose;
a resume carries it, and a matrix's parent pools it (ba_last/*, oof_last/*)."""
import io
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import harness_cli
from mlflow import MlflowClient
from rich.console import Console
from test_resume import _client
from test_resume import _fit as resume_fit

from harness.core.competition import CLASS_KEYS
from harness.metrics.classification import classification_metrics
from harness.training import matrix_summary, resume
from harness.training.hooks import CheckpointSelector
from harness.training.plan import prepare

FOLD = 3  # the small demo's fold with Moderate and Severe in validation
EPOCHS = 4
# a gate no epoch meets: the best-BA epoch is kept, the first on ties, so here not the last one
RUN = ["--profile", "smoke", "--set", f"train.epochs={EPOCHS}", "--set", "train.gate=1.0",
       "--set", "train.gate_fallback=true", "--set", f"train.patience={EPOCHS}", "--set", "train.threads=1"]
MATRIX = ["run", "v9", "--fold", "0,1", "--seed", "42", "--profile", "smoke", "--set", "train.epochs=2",
          "--set", "train.threads=2"]
FAIR = "fixed epoch count, not selected on this fold"


def _runs(cwd: Path):
    client = _client(cwd)
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    return client, client.search_runs([exp.experiment_id])


def _csv(client: MlflowClient, run_id: str, name: str, dst: Path) -> pd.DataFrame:
    dst.mkdir(parents=True, exist_ok=True)
    return pd.read_csv(client.download_artifacts(run_id, name, str(dst)), keep_default_na=False)


def _ba(preds: pd.DataFrame) -> float:
    model = preds[preds["source"] == "model"]
    return classification_metrics(model["label"].to_numpy(), model[list(CLASS_KEYS)].to_numpy(np.float64))[
        "balanced_accuracy"]


@pytest.fixture(scope="module")
def fair_run(demo_root, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("fair")
    res = harness_cli("run", "v9", "--fold", str(FOLD), "--data-dir", str(demo_root), *RUN, cwd=cwd)
    assert res.returncode == 0, res.stdout + res.stderr
    client, (run,) = _runs(cwd)
    return cwd, client, run, res.stdout


@pytest.mark.slow
def test_last_figures_are_the_final_epochs_val_figures(fair_run):
    cwd, client, run, out = fair_run
    m = run.data.metrics
    assert m["last/epoch"] == EPOCHS and run.data.tags["harness.stopped_early"] == "false"
    vals = [k for k in m if k.startswith("val/")]
    assert vals
    for key in vals:  # every per-epoch val/<name> has its last/<name>: the final step's value
        history = sorted((x.step, x.value) for x in client.get_metric_history(run.info.run_id, key))
        assert history[-1] == (EPOCHS, m["last/" + key.removeprefix("val/")]), key
    # every best/<name> has its last/<name>; best/* itself is untouched by them
    assert {k.removeprefix("best/") for k in m if k.startswith("best/")} == \
           {k.removeprefix("last/") for k in m if k.startswith("last/")}
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"**selected epoch {int(m['best/epoch'])}** of {EPOCHS}")
    assert f"Last epoch {EPOCHS}: BA **{m['last/balanced_accuracy']:.3f}**, {FAIR}" in note
    assert "optimistic (selected on this fold)" in note and "stopped early" not in note
    assert FAIR in out  # printed too


@pytest.mark.slow
def test_val_predictions_last_is_the_last_epoch_with_the_same_rows(fair_run, tmp_path):
    cwd, client, run, _ = fair_run
    m = run.data.metrics
    assert m["best/epoch"] != m["last/epoch"], "the setup must select an epoch other than the last"
    selected = _csv(client, run.info.run_id, "val_predictions.csv", tmp_path / "a")
    last = _csv(client, run.info.run_id, "val_predictions_last.csv", tmp_path / "b")
    assert list(last.columns) == list(selected.columns) and len(last) == len(selected)
    key = ["study_id", "level", "label", "source", "reason"]
    pd.testing.assert_frame_equal(last[key], selected[key])  # the same rows, in the same order
    assert not np.array_equal(last[list(CLASS_KEYS)].to_numpy(), selected[list(CLASS_KEYS)].to_numpy())
    assert _ba(last) == pytest.approx(m["last/balanced_accuracy"], abs=1e-12)
    assert _ba(selected) == pytest.approx(m["best/balanced_accuracy"], abs=1e-12)


@pytest.mark.slow
def test_an_early_stop_is_named_in_the_description(demo_root, tmp_path):
    # min_delta 1.0: no epoch after the first counts as a gain, so patience 1 stops after epoch 2
    res = harness_cli("run", "v9", "--fold", str(FOLD), "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", "train.epochs=3", "--set", "train.patience=1", "--set", "train.min_delta=1.0",
                      "--set", "train.threads=1", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    _, (run,) = _runs(tmp_path)
    assert run.data.tags["harness.stopped_early"] == "true" and run.data.metrics["last/epoch"] == 2
    note = run.data.tags["mlflow.note.content"]
    assert "stopped early, at epoch 2 of 3" in note and "chosen by reading this fold's BA" in note
    assert "train.patience >= train.epochs, here 3, disables it" in note


# ---------------------------------------------------------------- resume carries the last result
def _fit(plan, ckpt: Path, stop_at=None, state=None) -> CheckpointSelector:
    """test_resume's in-process training, scored as a run is; its selector."""
    return resume_fit(plan, ckpt, stop_at, state, scored=True)[1]


def _same(a, b):
    assert (a.epoch, a.metrics, a.val_loss) == (b.epoch, b.metrics, b.val_loss)
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_a_resume_carries_the_last_epochs_result(demo_root, workdir):
    sets = {"train.epochs": 3, "train.batch_size": 4, "train.patience": 3, "train.threads": 1}
    plan = prepare("v9", FOLD, str(demo_root), "smoke", None, sets, Console(file=io.StringIO()))
    straight = _fit(plan, workdir / "a" / "last.pt")
    assert straight.last.epoch == 2

    stopped = _fit(plan, workdir / "b" / "last.pt", stop_at=(2, 3))  # mid-way through the last epoch
    state = resume.load_checkpoint(workdir / "b" / "last.pt")
    assert state["hooks"]["CheckpointSelector"]["last"]["epoch"] == 1 == stopped.last.epoch
    resumed = _fit(plan, workdir / "b" / "last.pt", state=state)
    _same(resumed.last, straight.last)

    # a checkpoint after the final epoch (a crash in the summary): no epoch left, the result comes from it
    done = resume.load_checkpoint(workdir / "a" / "last.pt")
    assert done["trainer"]["next_epoch"] == 3
    _same(_fit(plan, workdir / "a" / "last.pt", state=done).last, straight.last)

    # a checkpoint written before `last` was kept still loads: it comes back with the next epoch
    old = resume.load_checkpoint(workdir / "b" / "last.pt")
    del old["hooks"]["CheckpointSelector"]["last"]
    selector = CheckpointSelector(workdir / "c")
    selector.load_state_dict(old["hooks"]["CheckpointSelector"])
    assert selector.last is None and selector.best_ba is not None


# ---------------------------------------------------------------- the matrix's parent
class _Writer:
    """What summarise writes, kept in memory."""

    def __init__(self):
        self.values, self.texts, self.tag_values = {}, {}, {}

    def metrics(self, values):
        self.values |= values

    def text(self, text, name):
        self.texts[name] = text

    def figure(self, fig, name):
        pass

    def tags(self, values):
        self.tag_values |= values


@pytest.mark.slow
def test_a_matrix_parent_has_the_fair_figures_and_skips_them_for_older_cells(demo_root, tmp_path, monkeypatch):
    res = harness_cli(*MATRIX, "--data-dir", str(demo_root), cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "fair figures, each cell's last epoch" in res.stdout
    client, runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("harness.kind") == "matrix"]
    cells = sorted((r for r in runs if r.data.tags.get("harness.kind") == "training"),
                   key=lambda r: int(r.data.tags["harness.fold"]))
    m = parent.data.metrics
    assert {"ba/mean", "ba/sd", "oof/balanced_accuracy", "oof/competition_score_spinal", "ba_last/mean",
            "ba_last/sd", "oof_last/balanced_accuracy", "oof_last/competition_score_spinal",
            "oof_last/seed42/balanced_accuracy"} <= set(m)
    assert m["ba_last/mean"] == pytest.approx(np.mean([r.data.metrics["last/balanced_accuracy"] for r in cells]))
    table = _csv(client, parent.info.run_id, "cells.csv", tmp_path / "c")
    assert list(table["last_balanced_accuracy"]) == [r.data.metrics["last/balanced_accuracy"] for r in cells]
    assert {f"last_recall/{c}" for c in CLASS_KEYS} <= set(table.columns)
    oof_last = _csv(client, parent.info.run_id, "oof_predictions_last.csv", tmp_path / "d")
    assert set(oof_last["fold"]) == {0, 1} and oof_last.groupby(["study_id", "level"]).size().max() == 1
    assert _ba(oof_last) == pytest.approx(m["oof_last/balanced_accuracy"], abs=1e-12)
    oof = _csv(client, parent.info.run_id, "oof_predictions.csv", tmp_path / "e")
    assert _ba(oof) == pytest.approx(m["oof/balanced_accuracy"], abs=1e-12)
    assert "not selected on the scored folds" in parent.data.tags["mlflow.note.content"]

    # a cell trained before runs kept their last epoch: no val_predictions_last.csv, no last/* metric
    artifacts = Path(cells[1].info.artifact_uri.removeprefix("file://"))
    (artifacts / "val_predictions_last.csv").unlink()
    shutil.rmtree(tmp_path / "d")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    plans = [SimpleNamespace(cfg=SimpleNamespace(fold=int(r.data.tags["harness.fold"]), variant="v9",
                                                 train=SimpleNamespace(seed=42),
                                                 data=SimpleNamespace(condition="spinal_canal_stenosis")))
             for r in cells]
    writer = _Writer()
    lines = matrix_summary.summarise(plans, [r.info.run_id for r in cells], writer)
    assert any(line.startswith("fair figures (last epoch) left out: 1 of 2 cell(s) have no val_predictions_last.csv")
               for line in lines), lines
    assert not any(k.startswith(("ba_last/", "oof_last/")) for k in writer.values)
    assert "oof_predictions_last.csv" not in writer.texts
    assert {k: v for k, v in writer.values.items()} == {k: v for k, v in m.items()
                                                        if not k.startswith(("ba_last/", "oof_last/"))}
