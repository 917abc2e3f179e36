"""The MLflow store and its experiments: where runs go, how the UI shows them, and run names that say
how a run ended (writing to a run is harness.tracking.writer; reading runs back, harness.tracking.reader).

Store: MLFLOW_TRACKING_URI when set, else SQLite at mlruns/mlflow.db with artifacts in
mlruns/artifacts/ under the working directory (MLflow 3 refuses a plain ./mlruns file store).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.core.errors import UsageError, first_line

STORE_DIR = Path("mlruns")
CLASS_METRICS = ("recall", "precision", "pred_count")


SQLITE_BUSY_TIMEOUT_S = 60  # writers queue for the lock instead of failing with "database is locked"


def default_uri() -> str:
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        uri += ("&" if "?" in uri else "?") + f"timeout={SQLITE_BUSY_TIMEOUT_S}"
    return uri


def artifact_root() -> Path:
    return (STORE_DIR / "artifacts").resolve()


def ensure_store() -> str:
    """Point MLflow at the store and create/migrate its database once, before any run writes to it.

    Several processes may start at once (two `harness run`s, tuning workers): for SQLite, a file lock
    beside the database lets the first create the schema while the others wait for it.
    """
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri()
    if uri == default_uri():
        try:
            artifact_root().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{STORE_DIR.resolve()}: cannot create the tracking folder ({exc.strerror})") from None
    mlflow.set_tracking_uri(uri)
    db = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else None
    try:
        with FileLock(f"{db}.lock") if db else nullcontext():
            MlflowClient().search_experiments(max_results=1)  # creates the SQLite schema on first use
    except (OSError, MlflowException) as exc:
        raise UsageError(f"tracking store {uri}: cannot open it ({first_line(exc)[:300]})") from None
    return uri


# How MLflow 3's UI shows an experiment. It records an experiment's kind in the tag mlflow.experimentKind:
# custom_model_development is its "Machine learning" kind (the value its own kind selector writes;
# genai_development is GenAI), which opens on the runs table rather than on traces. (MLflow 3.17's UI
# decides by its GenAI / Model training switch, remembered per browser; docs/ui.md says so.)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# the UI's charts view starts with this metric's chart
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC = "best/balanced_accuracy"
# The UI's runs table shows no metric by default (its default columns are fixed in its code; a user's
# choice lives in that browser only). Its saved views ("Views" above the table) are experiment tags
# mlflow.sharedViewState.<id> holding {name, createdAt, updatedAt, state: JSON of the view}: the harness
# adds one with the figures that tell runs apart. A UI that reads the tag differently skips the view.
RUNS_VIEW_ID = "harness-ba"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_ID}"
RUNS_VIEW_NAME = "BA (harness)"
RUNS_VIEW_COLUMNS = ("metrics.`best/balanced_accuracy`", "metrics.`best/competition_score_spinal`",
                     "metrics.`best/epoch`", "tags.`harness.variant`", "tags.`harness.seed`")

# comparison and study runs live beside the training runs, in experiments named after them, so that a
# training experiment's runs table holds training runs only
COMPARISONS, STUDIES = "comparisons", "studies"
KIND_SEPARATOR = "/"


def experiment_id(name: str) -> str:
    """Get or create an experiment; local stores keep its artifacts under mlruns/artifacts/<name>.

    A new experiment, or one made before the harness marked its experiments (no kind tag), gets the
    tags above; after that its tags are the user's: a kind or a view changed in the UI stays."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (artifact_root() / name).as_uri() if tracking_uri() == default_uri() else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=_experiment_tags(name))
        except MlflowException:  # another process created it between our two calls
            exp = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        for key, value in _experiment_tags(name).items():
            if key not in exp.tags:
                client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _experiment_tags(name: str) -> dict[str, str]:
    tags = {EXPERIMENT_KIND_TAG: TRAINING_KIND}
    if not name.endswith(KIND_SEPARATOR + COMPARISONS):  # comparison runs log per-variant figures, no best/*
        now_ms = int(time.time() * 1000)
        view = {"selectedColumns": list(RUNS_VIEW_COLUMNS), "orderByKey": RUNS_VIEW_COLUMNS[0], "orderByAsc": False}
        tags |= {PRIMARY_METRIC_TAG: PRIMARY_METRIC,
                 RUNS_VIEW_TAG: json.dumps({"name": RUNS_VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms,
                                            "state": json.dumps(view)})}
    return tags


def ui_link(base_url: str, experiment_id_: str) -> str:
    """The UI's page of an experiment's runs, in its model-training mode (a first visit is in GenAI mode
    otherwise), with the harness's view of the table where the experiment has it."""
    exp = MlflowClient().get_experiment(experiment_id_)
    view = f"&viewStateShareKey={RUNS_VIEW_ID}" if RUNS_VIEW_TAG in exp.tags else ""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id_}/runs?workflowType=machine_learning{view}"


def ui_links(base_url: str) -> list[tuple[str, str]]:
    """(name, ui_link) of every experiment the harness marked, by name (training, then its comparisons
    and studies)."""
    found = MlflowClient().search_experiments(filter_string=f"tags.`{EXPERIMENT_KIND_TAG}` = '{TRAINING_KIND}'")
    return [(e.name, ui_link(base_url, e.experiment_id)) for e in sorted(found, key=lambda e: e.name)]


def related_experiment(experiment_id_of_run: str, kind: str) -> str:
    """The experiment of `kind` (COMPARISONS, STUDIES) beside a training experiment, e.g.
    `rsna-spinal_canal_stenosis-demo/comparisons`. `experiment_id_of_run` may also be such an experiment
    (a comparison of tuning trials): the name is always built from the training experiment's."""
    name = MlflowClient().get_experiment(experiment_id_of_run).name
    for suffix in (COMPARISONS, STUDIES):
        name = name.removesuffix(KIND_SEPARATOR + suffix)
    return experiment_id(f"{name}{KIND_SEPARATOR}{kind}")


def comparison_experiment(experiment_id_of_run: str) -> str:
    return related_experiment(experiment_id_of_run, COMPARISONS)


def study_experiment(experiment_id_of_run: str) -> str:
    return related_experiment(experiment_id_of_run, STUDIES)


# A run's name says how it ended, so that the runs table tells runs apart without any column:
# `v9-fold0-seed42 · BA 0.756`, `v9-fold0-seed42 · killed after epoch 2`, `v9-fold0-seed42 · failed`.
NAME_SEPARATOR = " · "
ENDED_METRIC = "best/balanced_accuracy"
EPOCH_METRIC = "val/loss"  # logged once per finished epoch, step = the epoch number


def base_run_name(name: str) -> str:
    """The name the run started with, without what ended_run_name added."""
    return name.split(NAME_SEPARATOR)[0]


def ended_run_name(run_id: str, status: str) -> str:
    """The run's name for its end status (FINISHED, KILLED, FAILED), from what the run logged."""
    client = MlflowClient()
    run = client.get_run(run_id)
    base = base_run_name(run.info.run_name or "")
    if status == "FINISHED":
        ba = run.data.metrics.get(ENDED_METRIC)
        return base if ba is None else f"{base}{NAME_SEPARATOR}BA {ba:.3f}"
    if status == "KILLED":
        epochs = max((m.step for m in client.get_metric_history(run_id, EPOCH_METRIC)), default=0)
        # as resume says where a run goes on: the last epoch that was logged, or the first one unfinished
        return f"{base}{NAME_SEPARATOR}" + (f"killed after epoch {epochs}" if epochs else "killed in epoch 1")
    return f"{base}{NAME_SEPARATOR}{status.lower()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_run(run_id: str):
    """The run with this id, or None when the store has none."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        return None


def metric_steps(run_id: str, key: str) -> set[int]:
    """The steps at which a run logged `key` (the epochs it logged, for EPOCH_METRIC)."""
    return {m.step for m in MlflowClient().get_metric_history(run_id, key)}


def search_runs(experiment_ids: list[str], filter_string: str) -> list:
    """The runs of these experiments that match the filter, newest first."""
    if not experiment_ids:
        return []
    return MlflowClient().search_runs(experiment_ids, filter_string, order_by=["attributes.start_time DESC"])


def create_run(experiment_id: str, name: str, tags: dict[str, str]) -> str:
    """A run that is not the process's active run (a study's parent); its writer ends it."""
    return MlflowClient().create_run(experiment_id, run_name=name, tags=tags).info.run_id
