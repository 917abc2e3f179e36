"""Reading finished runs back from the MLflow store: the runs of a variant and fold, a run's
artifacts and metric histories (what `harness compare` needs; writing is harness.tracking.writer)."""
from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from harness.tracking.store import find_run, tracking_uri

__all__ = ["finished_runs", "artifact", "csv_artifact", "metric_history", "find_run", "tracking_uri"]


def finished_runs(variant: str, fold: int) -> list:
    """The FINISHED training runs of a variant and fold in every experiment, newest first."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    query = (f"tags.`harness.variant` = '{variant}' and tags.`harness.fold` = '{fold}' "
             "and attributes.status = 'FINISHED'")
    runs = client.search_runs(experiments, query, order_by=["attributes.start_time DESC"]) if experiments else []
    # a study's or a matrix's parent run carries the variant (and a study's the fold) too, but no
    # predictions (a tag filter with != would also drop the runs that have no harness.kind tag at all)
    return [r for r in runs if r.data.tags.get("harness.kind") not in ("study", "matrix")]


def artifact(run_id: str, path: str) -> Path:
    """A local copy of one of the run's artifacts (raises when it has none of that name)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact is noise
    return Path(MlflowClient().download_artifacts(run_id, path))


def csv_artifact(run_id: str, path: str):
    """One of the run's CSV artifacts as a DataFrame (empty cells stay ""), or None where it has none."""
    import pandas as pd

    try:
        local = artifact(run_id, path)
    except Exception:  # noqa: BLE001 - MLflow's error for a missing artifact differs by store; any means none
        return None
    return pd.read_csv(local, keep_default_na=False)


def metric_history(run_id: str, key: str) -> dict[int, float]:
    """step -> value of one of the run's metrics."""
    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}
