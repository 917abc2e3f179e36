"""The one way the harness writes to an MLflow run: its params, tags, metrics and artifacts.

A `RunWriter` is bound to one run id (by default the active run's), so the same adapter serves a
training run, a tuning study's parent run and a comparison run. Reading runs back is in
harness.tracking.reader; the store and experiments are in harness.tracking.store.
"""
from __future__ import annotations

import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

_NOT_IN_METRIC_NAMES = re.compile(r"[^\w\-. :/]")


def metric_key(name: str) -> str:
    """A name MLflow takes as a metric key: a mix's '+' and ',' (v4+v9:loss,sampling) become '_'."""
    return _NOT_IN_METRIC_NAMES.sub("_", name)


class RunWriter:
    """Everything written to one run goes through here."""

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or mlflow.active_run().info.run_id
        self.client = MlflowClient()

    def params(self, values: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()])

    def tags(self, values: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def delete_tags(self, names: Iterable[str]) -> None:
        """Remove the tags that are set among `names` (a resumed run's old stop reason)."""
        present = self.client.get_run(self.run_id).data.tags
        for name in names:
            if name in present:
                self.client.delete_tag(self.run_id, name)

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(metric_key(k), float(v), now, step or 0)
                                                    for k, v in values.items()])

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def dict(self, value: Mapping, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(value), artifact_file)

    def figure(self, fig, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, fig, artifact_file)

    def file(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def folder(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), folder)

    @contextmanager
    def ended_on_error(self, stop_message: str):
        """Inside: a stop (Ctrl-C, SIGTERM) ends the run KILLED and its exception says `stop_message` (how to go
        on); any other error ends it FAILED. Both propagate."""
        try:
            yield
        except KeyboardInterrupt as exc:
            self.end_stopped(exc)
            exc.message = stop_message
            raise
        except BaseException:
            self.end("FAILED")
            raise

    def end_stopped(self, exc: BaseException) -> None:
        """End a run that a stop (Ctrl-C, or SIGTERM: exit code 143) interrupted: KILLED, with the reason."""
        self.tags({"harness.stop_reason": "SIGTERM" if getattr(exc, "exit_code", 130) == 143 else "SIGINT"})
        self.end("KILLED")

    def reopen(self) -> None:
        """Mark a run this writer ends itself RUNNING again (a matrix's parent, continued)."""
        self.client.update_run(self.run_id, status="RUNNING")

    def end(self, status: str = "FINISHED") -> None:
        """End a run this writer does not hold open as the active run (a study's parent run)."""
        self.client.set_terminated(self.run_id, status)

    def dataset_input(self, df, name: str, context: str) -> None:
        """A table as the active run's input dataset. Two processes logging the same new dataset at once
        race on its row (SQLite: UNIQUE constraint failed, the losing transaction rolled back whole);
        logging again then finds the row and links it."""
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
