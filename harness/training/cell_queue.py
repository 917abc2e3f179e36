"""A run matrix's cells as an Optuna queue (its workers: training.matrix_workers), so that `harness run
v9 --fold all --seeds 3 --storage postgresql://...` on several machines (or `--workers N` on one)
trains each cell once.

The queue is the Optuna study `matrix-<matrix id>` in an RDB storage with heartbeats: the URL given, or
SQLite at $HARNESS_HOME/matrices/<id>.db for local workers. The worker whose `create_study` succeeds
(the study name is unique in the database, so exactly one does) sets the matrix up: it finds or creates
the MLflow parent run, enqueues one trial per cell (fixed params fold and seed) and one for the
aggregates, and then writes the parent's id into the study; every other worker waits for that id.

A worker takes the first WAITING trial whose state it can move to RUNNING (Optuna's atomic step, as
`study.ask` takes an enqueued trial), keeps its heartbeat while the cell trains (an ordinary
`execute`, child of the parent) and sets it COMPLETE. A worker silent for GRACE_S (SIGKILL, a lost
machine) has its trial failed by the next worker that looks (`optuna.storages.fail_stale_trials`),
and `RetryHeartbeatStaleTrialCallback` enqueues the cell again: the retry resumes the cell's run from
its checkpoint where that is reachable (the same machine), else starts it again and marks the lost run
KILLED. A stopped worker (Ctrl-C, SIGTERM) queues its cell again itself. The aggregates trial is taken
only once every cell is COMPLETE, so one worker writes them. Idle workers wait while cells run
elsewhere, to take a retried one. A cell that raises fails (its worker stops, as a plain matrix does);
the same command queues it again. HARNESS_QUEUE_HEARTBEAT_S and HARNESS_QUEUE_GRACE_S shorten the
heartbeat (tests).
"""
from __future__ import annotations

import functools
import math
import os
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.core.errors import UsageError, one_line
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training.matrix import eta_text, parent_run
from harness.training.plan import RunPlan, harness_home


def _seconds(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{name}={value}: expected a whole number of seconds, at least 1")
    return int(value)


HEARTBEAT_S = _seconds("HARNESS_QUEUE_HEARTBEAT_S", 30)  # as harness tune's RDB storage
GRACE_S = _seconds("HARNESS_QUEUE_GRACE_S", 90)  # a trial silent this long is failed and queued again
SETUP_WAIT_S = 300  # how long a worker waits for the first one to set the queue up
OPEN_ATTEMPTS = 3  # workers starting together on a new database race to create its tables
STEP, SUMMARY, PARENT = "harness.cell", "aggregates", "mlflow_parent_run_id"
CELL_METRIC = "best/balanced_accuracy"  # a cell trial's value; the aggregates trial's is the parent's ba/mean
LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


def study_name(mid: str) -> str:
    return f"matrix-{mid}"


def default_url(mid: str) -> str:
    """Local workers' queue: SQLite under the harness home (git-ignored)."""
    folder = harness_home() / "matrices"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / f'{mid}.db'}"


def shown(url: str) -> str:
    """The URL without its password, for the console."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def cell_key(plan: RunPlan) -> str:
    return f"{plan.cfg.fold},{plan.cfg.train.seed}"


def step(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(STEP)


@contextmanager
def _quiet():
    """Optuna marks heartbeats and their retry callback experimental: said once in the docs, not per call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def open_storage(url: str) -> RDBStorage:
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with _quiet():
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
            if attempt == OPEN_ATTEMPTS - 1 or isinstance(exc, (ImportError, ValueError, sqlalchemy.exc.ArgumentError)):
                raise UsageError(f"--storage {shown(url)}: cannot open it ({one_line(exc)[:300]})") from None
            time.sleep(1 + attempt)


@dataclass
class Queue:
    """One matrix's queue: the storage, its study, the cells' keys in the matrix's order, the parent run."""

    storage: RDBStorage
    study: optuna.Study
    keys: list[str]
    parent: str

    @functools.cached_property
    def study_id(self) -> int:
        return self.storage.get_study_id_from_name(self.study.study_name)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)


def open_queue(url: str, mid: str, plans: list[RunPlan], exp: str, console: Console) -> Queue:
    """Create the queue and the parent run (the first worker), or join it once it is set up."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name, keys = open_storage(url), study_name(mid), [cell_key(p) for p in plans]
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        queue = Queue(storage, study, keys, _wait_for_setup(study, url))
        _continue(queue, console)
        return queue
    parent = parent_run(exp, mid, plans)  # an earlier attempt's unfinished parent, else a new one
    for plan in plans:
        study.enqueue_trial({"fold": plan.cfg.fold, "seed": plan.cfg.train.seed}, user_attrs={STEP: cell_key(plan)})
    study.enqueue_trial({}, user_attrs={STEP: SUMMARY})
    study.set_user_attr(PARENT, parent)  # last: the queue is ready
    return Queue(storage, study, keys, parent)


def _wait_for_setup(study: optuna.Study, url: str) -> str:
    deadline = time.monotonic() + SETUP_WAIT_S
    while PARENT not in (attrs := study.user_attrs):
        if time.monotonic() > deadline:
            raise UsageError(f"queue {study.study_name} in {shown(url)} was created but never set up (its first "
                             f"worker stopped?); remove it with `optuna delete-study --study-name "
                             f"{study.study_name} --storage URL` and run again")
        time.sleep(1)
    return attrs[PARENT]


def _continue(queue: Queue, console: Console) -> None:
    """A later worker, or the same command again: the parent reopened, failed steps queued again."""
    run = store.find_run(queue.parent)
    if run is None:
        raise UsageError(f"queue {queue.study.study_name}: its parent run {queue.parent} is not in this tracking "
                         f"store ({store.tracking_uri()}); every worker must share one (MLFLOW_TRACKING_URI)")
    if run.info.status not in ("RUNNING", "FINISHED"):
        writer = RunWriter(queue.parent)
        writer.delete_tags(("harness.stop_reason",))
        writer.reopen()
    trials = queue.trials()
    for key in [*queue.keys, SUMMARY]:
        mine = [t for t in trials if step(t) == key]
        if not any(t.state in LIVE for t in mine):  # it failed: once more (a twin queued at once is dropped)
            params = mine[-1].system_attrs.get("fixed_params", {}) if mine else {}
            queue.study.enqueue_trial(params, user_attrs={STEP: key})
            console.print(f"queued again: {where(key)}" + (f" (it failed: {mine[-1].user_attrs.get('fail_reason')})"
                                                              if mine else ""), highlight=False)


def where(key: str) -> str:
    if key == SUMMARY:
        return "the aggregates"
    fold, seed = key.split(",")
    return f"fold {fold} seed {seed}"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _cells_left(queue: Queue, trials: list[FrozenTrial]) -> bool:
    """Some cell is not COMPLETE yet (so the aggregates trial must wait)."""
    complete = {step(t) for t in trials if t.state == TrialState.COMPLETE}
    return any(key not in complete for key in queue.keys)


def claim(queue: Queue) -> FrozenTrial | None:
    """The first WAITING trial this worker moves to RUNNING (the aggregates only once every cell is
    COMPLETE), with its first heartbeat; None when there is none to take."""
    trials = queue.trials()
    cells_left = _cells_left(queue, trials)
    for t in trials:
        if t.state != TrialState.WAITING or (step(t) == SUMMARY and cells_left):
            continue
        try:
            if not queue.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                continue  # another worker took it first
        except UpdateFinishedTrialError:
            continue
        queue.storage.record_heartbeat(t._trial_id)
        queue.storage.set_trial_user_attr(t._trial_id, "harness.worker", worker_name())
        other = twin(queue, t)
        if other is not None:
            queue.storage.set_trial_user_attr(t._trial_id, "harness.duplicate_of", other.number)
            queue.storage.set_trial_state_values(t._trial_id, state=TrialState.PRUNED)
            continue
        return queue.storage.get_trial(t._trial_id)
    return None


def twin(queue: Queue, mine: FrozenTrial) -> FrozenTrial | None:
    """Another trial of the same step that is COMPLETE, or RUNNING with a lower number: this one is then
    a duplicate (two workers queued one failed step again at the same moment), and the lower one goes on."""
    for t in queue.trials():
        if t.number != mine.number and step(t) == step(mine) and (
                t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number < mine.number)):
            return t
    return None


def fail_stale(queue: Queue) -> None:
    """A lost worker's step (no heartbeat for GRACE_S): FAIL, then queued again by the retry callback."""
    with _quiet():
        fail_stale_trials(queue.study)


def pending(queue: Queue) -> tuple[bool, int]:
    """From one look at the queue: is a step there to take now, and how many run."""
    trials = queue.trials()
    cells_left = _cells_left(queue, trials)
    takeable = any(t.state == TrialState.WAITING and not (step(t) == SUMMARY and cells_left) for t in trials)
    return takeable, sum(t.state == TrialState.RUNNING for t in trials)


@contextmanager
def heartbeat(storage: RDBStorage, trial_id: int):
    """Beat every HEARTBEAT_S while inside, as `study.optimize` does for its trials."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # a missed beat; the next one may get through
                pass

    thread = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_S + 5)


def progress(queue: Queue, mine: FrozenTrial) -> str:
    """'2/6 cells done, 1 running elsewhere; about 4 min left' from the queue's own records."""
    cells = [t for t in queue.trials() if step(t) in queue.keys]
    done = len({step(t) for t in cells if t.state == TrialState.COMPLETE})
    running = [t for t in cells if t.state == TrialState.RUNNING]
    took = [(t.datetime_complete - t.datetime_start).total_seconds() for t in cells
            if t.state == TrialState.COMPLETE and t.user_attrs.get("harness.trained") and t.datetime_start]
    remaining = len(queue.keys) - done
    eta = sum(took) / len(took) * remaining / max(1, len(running)) if took and remaining else None
    elsewhere = sum(t.number != mine.number for t in running)
    return (f"{done}/{len(queue.keys)} cells done" + (f", {elsewhere} running elsewhere" if elsewhere else "")
            + eta_text(eta))


def complete(queue: Queue, mine: FrozenTrial, run_id: str, metric: str, console: Console,
              trained: bool = False) -> None:
    """COMPLETE, its value the run's `metric` (a cell's BA, the matrix's mean BA; -inf where it has none)."""
    value = store.find_run(run_id).data.metrics.get(metric)
    try:
        queue.storage.set_trial_user_attr(mine._trial_id, "mlflow_run_id", run_id)
        if trained:
            queue.storage.set_trial_user_attr(mine._trial_id, "harness.trained", True)
        value = value if value is not None and math.isfinite(value) else -math.inf
        queue.storage.set_trial_state_values(mine._trial_id, TrialState.COMPLETE, values=[value])
    except UpdateFinishedTrialError:  # this worker's heartbeat lapsed, and the step was queued again
        console.print(f"[yellow]{where(step(mine))}: this worker was taken for lost (no heartbeat for {GRACE_S} s) "
                      f"and the step was queued again; run {run_id} stands as well[/]", highlight=False)


def fail(queue: Queue, mine: FrozenTrial, reason: str, again: bool) -> None:
    """The trial FAILED with its reason; `again`: queued once more (Optuna's retry callback)."""
    try:
        queue.storage.set_trial_user_attr(mine._trial_id, "fail_reason", reason[:500])
        queue.storage.set_trial_state_values(mine._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return  # already failed as stale, and queued again by whoever did
    if again:
        with _quiet():
            RetryHeartbeatStaleTrialCallback()(queue.study, queue.storage.get_trial(mine._trial_id))


def report(queue: Queue, mid: str, console: Console) -> int:
    """What the queue holds now, in one line: 0 when the aggregates are written, else 1."""
    trials = queue.trials()
    complete = {step(t) for t in trials if t.state == TrialState.COMPLETE}
    done = sum(key in complete for key in queue.keys)
    if SUMMARY in complete:
        console.print(f"matrix {mid}: {done}/{len(queue.keys)} cells FINISHED; parent run {queue.parent} holds "
                      "the aggregates", highlight=False)
        return 0
    left = []
    for key in [k for k in [*queue.keys, SUMMARY] if k not in complete]:
        failed = [t for t in trials if step(t) == key and t.state == TrialState.FAIL]
        reason = failed[-1].user_attrs.get("fail_reason") if failed else None
        left.append(where(key) + (f" ({reason})" if reason else ""))
    console.print(f"[yellow]matrix {mid}: {done}/{len(queue.keys)} cells FINISHED; not done: {'; '.join(left)}; "
                  "the same command continues the matrix[/]", highlight=False)
    return 1
