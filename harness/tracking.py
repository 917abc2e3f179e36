"""Everything that talks to MLflow: the store, experiments, run tags, per-epoch metrics, artifacts.

Store: MLFLOW_TRACKING_URI when set, else SQLite at mlruns/mlflow.db with artifacts in
mlruns/artifacts/ under the working directory (MLflow 3 refuses a plain ./mlruns file store).
"""
from __future__ import annotations

import logging
import os
import subprocess
import warnings
from contextlib import nullcontext
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.errors import UsageError, first_line
from harness.trainer import Hook, Trainer

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


def experiment_id(name: str) -> str:
    """Get or create an experiment; local stores keep its artifacts under mlruns/artifacts/<name>."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (artifact_root() / name).as_uri() if tracking_uri() == default_uri() else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it between our two calls
        return client.get_experiment_by_name(name).experiment_id


def log_dataset_input(df, name: str, context: str) -> None:
    """mlflow.log_input of a table. Two processes logging the same new dataset at once race on its
    row (SQLite: UNIQUE constraint failed, the losing transaction rolled back whole); logging again
    then finds the row and links it."""
    dataset = mlflow.data.from_pandas(df, name=name)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # MLflow's schema hint about integer columns is noise here
                warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
                mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            lost_race = "UNIQUE constraint" in str(exc) or "duplicate key" in str(exc)  # SQLite / PostgreSQL
            if not lost_race or attempt == 2:
                raise


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def epoch_metrics(t: Trainer) -> dict[str, float]:
    """The per-epoch metrics (step = the epoch number, counted from 1 as everything a user reads)."""
    r = t.result
    out = {"train/loss": r.train_loss, "val/loss": r.val_loss, "time/epoch_s": r.seconds,
           "throughput/train_samples_per_s": r.samples_per_s}
    out.update({f"val/{k}": v for k, v in r.metrics.items() if k.split("/")[0] != "precision" and k != "accuracy"})
    out.update({f"lr/{name}": lr for name, lr in r.lrs.items()})
    return out


class MlflowEpochLogger(Hook):
    """Logs every epoch's metrics to the active MLflow run and keeps them (`history`) for the plots.

    The metrics are computed after validation and logged at the end of the epoch, after the resume
    checkpoint is written (it holds `history`): a resumed run then logs each epoch exactly once.
    A row's "epoch" is the epoch number, from 1, and is the MLflow step.
    """

    def __init__(self):
        self.history: list[dict[str, float]] = []

    def after_validation(self, t: Trainer):
        self.history.append({"epoch": t.epoch + 1, **epoch_metrics(t)})

    def after_epoch(self, t: Trainer):
        self._log(self.history[-1])

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict):
        """The history up to the checkpoint; epochs the stopped process never logged are logged now."""
        self.history = list(state["history"])
        run_id = mlflow.active_run().info.run_id
        logged = {m.step for m in MlflowClient().get_metric_history(run_id, "val/loss")}
        for row in self.history:
            if row["epoch"] not in logged:
                self._log(row)

    @staticmethod
    def _log(row: dict):
        mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
