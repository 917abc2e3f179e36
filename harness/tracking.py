"""Everything that talks to MLflow: the store, experiments, run tags, per-epoch metrics, artifacts.

Store: MLFLOW_TRACKING_URI when set, else SQLite at mlruns/mlflow.db with artifacts in
mlruns/artifacts/ under the working directory (MLflow 3 refuses a plain ./mlruns file store).
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.errors import UsageError
from harness.trainer import Hook, Trainer

STORE_DIR = Path("mlruns")
CLASS_METRICS = ("recall", "precision", "pred_count")


def default_uri() -> str:
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def artifact_root() -> Path:
    return (STORE_DIR / "artifacts").resolve()


def ensure_store() -> str:
    """Point MLflow at the store and create/migrate its database once, before any run writes to it."""
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri()
    if uri == default_uri():
        try:
            artifact_root().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{STORE_DIR.resolve()}: cannot create the tracking folder ({exc.strerror})") from None
    mlflow.set_tracking_uri(uri)
    MlflowClient().search_experiments(max_results=1)  # creates the SQLite schema on first use
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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def epoch_metrics(t: Trainer) -> dict[str, float]:
    """The per-epoch metric names of DESIGN.md "Tracking" (step = epoch)."""
    r = t.result
    out = {"train/loss": r.train_loss, "val/loss": r.val_loss, "time/epoch_s": r.seconds,
           "throughput/train_samples_per_s": r.samples_per_s}
    out.update({f"val/{k}": v for k, v in r.metrics.items() if k.split("/")[0] != "precision" and k != "accuracy"})
    out.update({f"lr/{name}": lr for name, lr in r.lrs.items()})
    return out


class MlflowEpochLogger(Hook):
    """Logs every epoch's metrics to the active MLflow run and keeps them (`history`) for the plots."""

    def __init__(self, extra=None):
        self.extra = extra  # callable(trainer) -> dict of further per-epoch metrics
        self.history: list[dict[str, float]] = []

    def after_validation(self, t: Trainer):
        metrics = epoch_metrics(t)
        if self.extra:
            metrics.update(self.extra(t))
        mlflow.log_metrics(metrics, step=t.epoch)
        self.history.append({"epoch": t.epoch, **metrics})
