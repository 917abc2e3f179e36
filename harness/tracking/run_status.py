"""How an MLflow run ends says how training ended: FINISHED only when it completed.

Ctrl-C (SIGINT) and SIGTERM mark the run KILLED. During training they stop it after the batch in
progress, once the resume checkpoint of that point is written (a second signal stops at once);
elsewhere (preprocessing, the final summary) they stop it at once; an exception marks it FAILED with the reason as the
`harness.failure_reason` tag and the traceback as the artifact `failure/traceback.txt`.
A SIGKILL cannot be caught: that run stays RUNNING in MLflow, and `--resume` finds it.

The run's name says how it ended (harness.tracking.store.ended_run_name), so that the UI's runs table tells a
killed run from its finished rerun at a glance; a resumed run gets its plain name back while it trains.
"""
from __future__ import annotations

import traceback
from contextlib import contextmanager

import mlflow

from harness.core.errors import one_line
from harness.core.signals import Stopped, stop_signals_ignored, stop_signals_raise
from harness.tracking import store
from harness.tracking.writer import RunWriter


@contextmanager
def recorded_run(**start_kwargs):
    """mlflow.start_run(**start_kwargs) whose end status follows the rules above.

    A new run with an `mlflow.parentRunId` tag (a tuning trial) starts in its parent's experiment: the
    UI nests child runs under their parent only within one experiment."""
    with stop_signals_raise():
        _prepare(start_kwargs)
        run = mlflow.start_run(**start_kwargs)
        try:
            yield run
        except KeyboardInterrupt as exc:
            _end("KILLED", {"harness.stop_reason": "SIGTERM" if isinstance(exc, Stopped) else "SIGINT"})
            raise
        except BaseException as exc:
            _end("FAILED", {"harness.failure_reason": one_line(exc)[:500]}, traceback.format_exc())
            raise
        with stop_signals_ignored():
            try:
                RunWriter(run.info.run_id).tags({"mlflow.runName": store.ended_run_name(run.info.run_id, "FINISHED")})
            except Exception:  # the name is a convenience: the run still ends FINISHED below
                pass
            mlflow.end_run("FINISHED")


def _prepare(start_kwargs: dict) -> None:
    """Where a new child run goes; a continued run's plain name back (set before start_run, which
    reads the run: the run object it returns, and its console line, carry the new name)."""
    if "run_id" in start_kwargs:
        run = store.find_run(start_kwargs["run_id"])
        base = store.base_run_name(run.info.run_name or "")
        if base != run.info.run_name:
            RunWriter(run.info.run_id).tags({"mlflow.runName": base})
        return
    parent = (start_kwargs.get("tags") or {}).get("mlflow.parentRunId")
    if parent:
        start_kwargs["experiment_id"] = store.find_run(parent).info.experiment_id


def _end(status: str, tags: dict[str, str], trace: str | None = None) -> None:
    """Record how the run ended; a second signal or a store error here must not hide the first."""
    with stop_signals_ignored():
        try:
            writer = RunWriter()
            try:
                tags = tags | {"mlflow.runName": store.ended_run_name(writer.run_id, status)}
            except Exception:  # the name is a convenience: the reason tags below matter more
                pass
            writer.tags(tags)
            if trace:
                writer.text(trace, "failure/traceback.txt")
        except Exception:  # the reason is lost, the status below still matters more
            pass
        finally:
            mlflow.end_run(status)

