"""How an MLflow run ends says how training ended: FINISHED only when it completed.

Ctrl-C (SIGINT) and SIGTERM mark the run KILLED. During training they stop it after the batch in
progress, once the resume checkpoint of that point is written (a second signal stops at once);
elsewhere (preprocessing, the final summary) they stop it at once; an exception marks it FAILED with the reason as the
`harness.failure_reason` tag and the traceback as the artifact `failure/traceback.txt`.
A SIGKILL cannot be caught: that run stays RUNNING in MLflow, and `--resume` finds it.

The run's name says how it ended (harness.tracking.ended_run_name), so that the UI's runs table tells a
killed run from its finished rerun at a glance; a resumed run gets its plain name back while it trains.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import mlflow
from mlflow.tracking import MlflowClient

from harness import distributed, tracking
from harness.errors import one_line


REPEAT_WINDOW_S = 1.0


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM, as SIGINT raises KeyboardInterrupt (exit 128 + 15)."""

    exit_code = 143


def _exception_for(signum: int) -> BaseException:
    return Stopped() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_for(signum, frame):
    raise _exception_for(signum)


@contextmanager
def stop_signals_to(handler):
    """SIGINT and SIGTERM go to `handler` while inside (main thread only: Python delivers signals
    there, and signal.signal refuses elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stops_between_batches(trainer, announce: bool = True):
    """While training, the first SIGINT or SIGTERM asks the trainer to stop after the batch in
    progress, so it saves exactly where it is; a second one raises at once (the last checkpoint stays).
    `announce=False` keeps the first stop silent (a tuning trial: its study says how it ended)."""
    first: list[float] = []

    def handler(signum, frame):
        if trainer.stop_request is not None:
            # under --devices a rank may get one signal twice (from the terminal's process group, and
            # forwarded by the launcher): only a second signal a moment later means "at once"
            if distributed.world_size() == 1 or time.monotonic() - first[0] > REPEAT_WINDOW_S:
                raise _exception_for(signum)
            return
        first.append(time.monotonic())
        trainer.request_stop(_exception_for(signum))
        if announce and distributed.is_main():  # under --devices every rank gets the signal; one says so
            sys.stderr.write("stopping after the current batch to save a checkpoint (signal again to stop at once)\n")

    return stop_signals_to(handler)


def stop_signals_raise():
    """While inside, SIGTERM raises Stopped and SIGINT KeyboardInterrupt, also when the process was
    started with SIGINT ignored (a background job of a script)."""
    return stop_signals_to(_raise_for)


def stop_signals_ignored():
    """SIGINT and SIGTERM held off while a run's end is being written."""
    return stop_signals_to(signal.SIG_IGN)


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
                mlflow.set_tag("mlflow.runName", tracking.ended_run_name(run.info.run_id, "FINISHED"))
            except Exception:  # the name is a convenience: the run still ends FINISHED below
                pass
            mlflow.end_run("FINISHED")


def _prepare(start_kwargs: dict) -> None:
    """Where a new child run goes; a continued run's plain name back (set before start_run, which
    reads the run: the run object it returns, and its console line, carry the new name)."""
    client = MlflowClient()
    if "run_id" in start_kwargs:
        run = client.get_run(start_kwargs["run_id"])
        base = tracking.base_run_name(run.info.run_name or "")
        if base != run.info.run_name:
            client.set_tag(run.info.run_id, "mlflow.runName", base)
        return
    parent = (start_kwargs.get("tags") or {}).get("mlflow.parentRunId")
    if parent:
        start_kwargs["experiment_id"] = client.get_run(parent).info.experiment_id


def _end(status: str, tags: dict[str, str], trace: str | None = None) -> None:
    """Record how the run ended; a second signal or a store error here must not hide the first."""
    with stop_signals_ignored():
        try:
            try:
                tags = tags | {"mlflow.runName": tracking.ended_run_name(mlflow.active_run().info.run_id, status)}
            except Exception:  # the name is a convenience: the reason tags below matter more
                pass
            mlflow.set_tags(tags)
            if trace:
                mlflow.log_text(trace, "failure/traceback.txt")
        except Exception:  # the reason is lost, the status below still matters more
            pass
        finally:
            mlflow.end_run(status)

