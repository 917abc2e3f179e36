"""`harness tune`: an Optuna study over config keys, every trial a `harness run` on the shared trainer
and a child MLflow run of the study's parent run (README "Tuning (Optuna)").

Storage is a journal file beside the spec (several local worker processes) or any SQLAlchemy URL
(PostgreSQL for many machines). Re-running the same command resumes up to the requested number of
trials: trials a killed worker left RUNNING are marked failed first (journal; RDB storage does it by
heartbeat), then the remaining trials are shared out between the workers, so none is run twice.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.console import Console

from harness.core.errors import UsageError, one_line
from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training.execute import execute, experiment
from harness.training.plan import prepare, resolve_data
from harness.training.trainer import Hook, Trainer
from harness.tuning.space import StudySpec, build_pruner, build_sampler, reproduce_command, suggest, to_overrides
from harness.tuning.spec import check_spec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_S = 30  # RDB storage: a trial silent for GRACE_S is failed by the next worker that looks
GRACE_S = 90


@dataclass
class TuneArgs:
    """What the command line adds to the spec."""

    trials: int
    storage: str | None = None
    workers: int = 1
    data_dir: str | None = None
    profile: str | None = None
    sets: dict = field(default_factory=dict)
    raw_sets: list[str] = field(default_factory=list)  # as typed, passed on to worker processes


def spec_path(spec: StudySpec) -> Path:
    return Path(spec.source)


def journal_path(spec: StudySpec) -> Path:
    """The default storage: `<spec>.journal` beside the spec (git-ignored)."""
    return spec_path(spec).with_suffix(".journal")


def open_storage(spec: StudySpec, url: str | None):
    """The journal file beside the spec, or an RDB URL with heartbeats (stale trials are failed)."""
    if url:
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    return JournalStorage(JournalFileBackend(str(journal_path(spec))))


def open_study(spec: StudySpec, storage, worker: int = 0) -> optuna.Study:
    """Create or load the study. Worker k seeds its sampler with seed + k: workers sharing one seed
    would propose the same parameters."""
    if worker and "seed" in spec.sampler_kwargs:
        seed = spec.sampler_kwargs["seed"] + worker
        spec = dataclasses.replace(spec, sampler_kwargs={**spec.sampler_kwargs, "seed": seed})
    return optuna.create_study(study_name=spec.name, storage=storage, sampler=build_sampler(spec),
                               pruner=build_pruner(spec), direction=spec.direction, load_if_exists=True)


class PruningReporter(Hook):
    """Reports each epoch's validation BA to the trial; asks the trainer to stop when Optuna prunes."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.pruned = trial, False

    def after_validation(self, t: Trainer):
        self.trial.report(t.result.metrics["balanced_accuracy"], t.epoch + 1)  # step = epoch number
        if self.trial.should_prune():
            self.pruned, t.should_stop = True, True


def _base_config(spec: StudySpec, args: TuneArgs, console: Console):
    root, source = resolve_data(args.data_dir, console)
    profile = args.profile or ("smoke" if source == "demo" else "full")
    sets = dict(spec.fixed) | args.sets
    return build_config(get_variant(spec.variant), spec.fold, profile, None, sets, str(root)), profile


def trial_sets(spec: StudySpec, args: TuneArgs, params: dict, base) -> dict:
    """The --set overrides of one trial: the spec's fixed keys, the command's --set, the trial's values."""
    return dict(spec.fixed) | args.sets | to_overrides(params, base)


def make_objective(spec: StudySpec, args: TuneArgs, parent_id: str, console: Console):
    base, profile = _base_config(spec, args, console)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec)
        console.print(f"[bold]trial {trial.number}[/] {params}")
        reporter = PruningReporter(trial)
        tags = {"mlflow.parentRunId": parent_id, "harness.kind": "trial", "harness.study": spec.name,
                "harness.trial": str(trial.number)}
        try:
            plan = prepare(spec.variant, spec.fold, args.data_dir, profile, None, trial_sets(spec, args, params, base),
                           console)
            # trials restart, never resume
            outcome = execute(plan, console, hooks=[reporter], tags=tags, resumable=False)
        except Exception as exc:  # recorded as a failed trial with its reason; the study goes on
            trial.set_user_attr("fail_reason", one_line(exc))
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run is KILLED; the trial runs again on resume
            trial.set_user_attr("fail_reason", "stopped by a signal; queued to run again")
            objective.stopped.append(params)
            _tag_killed_trial_run(parent_id, spec.name, trial.number)
            raise
        trial.set_user_attr("mlflow_run_id", outcome.run_id)
        trial.set_user_attr("epochs", outcome.epochs)
        state = "PRUNED" if reporter.pruned else "COMPLETE"
        RunWriter(outcome.run_id).tags({"harness.trial_state": state})
        if reporter.pruned:
            raise optuna.TrialPruned(f"pruned after epoch {outcome.epochs}")
        value = outcome.metrics.get(spec.metric.removeprefix("best/"), math.nan)
        return value

    objective.stopped = []  # parameters of the trials a stop ended, to enqueue again
    return objective


def _tag_killed_trial_run(parent_id: str, study: str, number: int) -> None:
    experiment = store.find_run(parent_id).info.experiment_id
    query = f"tags.`harness.study` = '{study}' and tags.`harness.trial` = '{number}'"
    for run in store.search_runs([experiment], query):
        RunWriter(run.info.run_id).tags({"harness.trial_state": "KILLED"})


def progress_line(console: Console):
    """After each trial: its state and value, and the study's totals and best so far."""
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial):
        trials = study.get_trials(deepcopy=False)
        count = lambda s: sum(t.state == s for t in trials)
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        value = f" {trial.value:.4f}" if trial.value is not None else ""
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else ""
        console.print(f"trial {trial.number} {trial.state.name}{value}{reason} | done {count(TrialState.COMPLETE)}, "
                      f"pruned {count(TrialState.PRUNED)}, failed {count(TrialState.FAIL)} | {best}")
    return callback


def fail_stale_trials(study: optuna.Study, console: Console) -> int:
    """Journal storage has no heartbeat: trials a killed worker left RUNNING are failed on resume
    (before any worker of this command starts, so none of them is live)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker stopped before the trial finished")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if stale:
        console.print(f"marked {len(stale)} trial(s) left running by a stopped worker as failed: "
                      f"{', '.join(str(t.number) for t in stale)}")
    return len(stale)


def parent_run(spec: StudySpec, study: optuna.Study, experiment_id: str) -> str:
    """The study's MLflow parent run, created once and remembered in the study's user attributes."""
    if "mlflow_parent_run_id" in study.user_attrs:
        return study.user_attrs["mlflow_parent_run_id"]
    run_id = store.create_run(experiment_id, f"study-{spec.name}",
                              {"harness.kind": "study", "harness.study": spec.name,
                               "harness.variant": spec.variant, "harness.fold": str(spec.fold)})
    RunWriter(run_id).text(spec_path(spec).read_text(), "study.yaml")
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def run_worker(spec: StudySpec, args: TuneArgs, n_trials: int, console: Console, worker: int = 0):
    """One worker process: `n_trials` trials of the study. A Ctrl-C or SIGTERM stops it: the trial in
    progress (its run KILLED by harness.tracking.run_status) is queued to run again when the study resumes."""
    store.ensure_store()
    study = open_study(spec, open_storage(spec, args.storage), worker)
    objective = make_objective(spec, args, study.user_attrs["mlflow_parent_run_id"], console)
    try:
        with _quiet_interrupts():
            study.optimize(objective, n_trials=n_trials, timeout=spec.timeout, catch=(Exception,),
                           callbacks=[progress_line(console)], gc_after_trial=True)
    except KeyboardInterrupt:
        for params in objective.stopped:
            study.enqueue_trial(params, skip_if_exists=False)
        raise


class _DropInterruptTracebacks(logging.Filter):
    """Optuna logs a stopped trial as failed, with the KeyboardInterrupt's traceback and then its value:
    both dropped, since the harness says what stopped in one line."""

    def __init__(self):
        super().__init__()
        self.after_interrupt = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.after_interrupt = True
            return False
        if self.after_interrupt and "failed with value" in record.getMessage():
            self.after_interrupt = False
            return False
        return True


@contextmanager
def _quiet_interrupts():
    optuna_logger, quiet = logging.getLogger("optuna"), _DropInterruptTracebacks()
    for handler in optuna_logger.handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in optuna_logger.handlers:
            handler.removeFilter(quiet)


def stop_study(spec: StudySpec, parent_id: str, exc: KeyboardInterrupt) -> KeyboardInterrupt:
    """Mark the study's parent run KILLED and say, in one line, what stopped and how it goes on."""
    parent = RunWriter(parent_id)
    parent.tags({"harness.stop_reason": "SIGTERM" if getattr(exc, "exit_code", 130) == 143 else "Ctrl-C"})
    parent.end("KILLED")
    exc.message = (f"stopped: study {spec.name}'s parent run {parent_id} and the trial in progress are KILLED; "
                   f"`harness tune {spec_path(spec)}` resumes the study (the stopped trial runs again first)")
    return exc


def shares(remaining: int, workers: int) -> list[int]:
    """Split the remaining trials between the workers, none empty."""
    return [n for n in (remaining // workers + (k < remaining % workers) for k in range(workers)) if n]


def tune(spec: StudySpec, args: TuneArgs, console: Console) -> optuna.Study:
    """Set the study up (or resume it), run the workers, then summarise on the parent run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store.ensure_store()
    base, profile = _base_config(spec, args, console)
    defaults = check_spec(spec, base)  # the spec against this profile's config; trial 0's parameters
    plan = prepare(spec.variant, spec.fold, args.data_dir, profile, None, trial_sets(spec, args, defaults, base),
                   console)  # every user mistake surfaces here, once, before any trial
    if plan.cfg.train.devices > 1:
        raise UsageError("harness tune trains each trial in one process (train.devices=1); run trials side by "
                         "side with --workers, one per GPU")
    study = open_study(spec, open_storage(spec, args.storage))
    if args.storage is None:
        fail_stale_trials(study, console)
    if not study.trials:  # trial 0 is the variant's defaults
        study.enqueue_trial(defaults, user_attrs={"harness.defaults": True})
    parent_id = parent_run(spec, study, store.study_experiment(experiment(plan)))  # its trials follow it there
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, args.trials - done)
    where = args.storage or journal_path(spec)
    console.print(f"study [bold]{spec.name}[/] in {where}: {done} trial(s) finished, {remaining} to run "
                  f"on {min(args.workers, max(remaining, 1))} worker(s); parent MLflow run {parent_id}")
    parts = shares(remaining, args.workers)
    try:
        if len(parts) == 1:
            run_worker(spec, args, parts[0], console)
        elif parts:
            procs = [subprocess.Popen(worker_command(spec, args, n, k)) for k, n in enumerate(parts)]
            try:
                codes = [p.wait() for p in procs]
            except KeyboardInterrupt:  # the workers got the same Ctrl-C (one process group): let them record it
                for p in procs:
                    p.wait()
                raise
            if any(codes):
                console.print(f"[yellow]worker exit codes {codes}[/]")
    except KeyboardInterrupt as exc:
        raise stop_study(spec, parent_id, exc) from None
    study = open_study(spec, open_storage(spec, args.storage))
    summarise(spec, study, parent_id, profile, args.data_dir, args.sets, console)
    return study


def worker_command(spec: StudySpec, args: TuneArgs, n_trials: int, worker: int) -> list[str]:
    """The same `harness tune` in worker mode: no setup, just `n_trials` trials."""
    cmd = [sys.executable, "-m", "harness", "tune", str(spec_path(spec)), "--worker-trials", str(n_trials),
           "--worker-index", str(worker), "--trials", str(args.trials)]
    for flag, value in (("--storage", args.storage), ("--data-dir", args.data_dir), ("--profile", args.profile)):
        if value:
            cmd += [flag, value]
    for item in args.raw_sets:
        cmd += ["--set", item]
    return cmd


def summarise(spec: StudySpec, study: optuna.Study, parent_id: str, profile: str, data_dir: str | None,
              sets: dict, console: Console):
    """Best value and parameters, importances, plots and the command that reproduces the best trial."""
    parent = RunWriter(parent_id)
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in FINISHED}
    parent.metrics({f"trials/{name}": n for name, n in counts.items()})
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        parent.end()
        console.print("[yellow]no trial completed: nothing to summarise[/]")
        return
    best = study.best_trial
    command = reproduce_command(spec, best.params, profile, data_dir, sets)
    parent.metrics({f"best/{spec.metric.removeprefix('best/')}": best.value})
    parent.tags({"harness.best_trial": str(best.number), "harness.reproduce": command})
    parent.dict({"best_trial": best.number, "best_value": best.value, "best_params": best.params}, "best.json")
    importances = {}
    if len(complete) > 1 and study.trials[0].params:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial scored the same
            importances = {}
    if importances:
        parent.dict(importances, "param_importances.json")
    _log_plots(parent, study, bool(importances))
    parent.end()
    console.print(f"best trial {best.number}: {spec.metric} {best.value:.4f} with {best.params}")
    if importances:
        console.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    console.print(f"reproduce it: {command}")


def _log_plots(parent: RunWriter, study: optuna.Study, with_importance: bool):
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():  # optuna marks its matplotlib backend experimental
        warnings.simplefilter("ignore")
        ax = optuna_plots.plot_optimization_history(study)
        parent.figure(ax.figure, "optimization_history.png")
        plt.close(ax.figure)
        if with_importance:
            ax = optuna_plots.plot_param_importances(study)
            parent.figure(ax.figure, "param_importances.png")
            plt.close(ax.figure)


def worker_main(spec: StudySpec, args: TuneArgs, n_trials: int, worker: int, console: Console):
    """Entry of `--worker-trials`: the parent process set everything up (and says how a stop ended)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        run_worker(spec, args, n_trials, console, worker)
    except KeyboardInterrupt as exc:
        exc.message = ""  # the parent's line is the one the user reads
        raise



