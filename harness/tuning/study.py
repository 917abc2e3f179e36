"""`harness tune`: an Optuna study over config keys, every trial a `harness run` on the shared trainer
(one per fold of the spec, harness.tuning.objective) and a child MLflow run of the study's parent run
(README "Tuning (Optuna)").

Storage is a journal file beside the spec (several local worker processes) or any SQLAlchemy URL
(PostgreSQL for many machines). Re-running the same command resumes up to the requested number of
trials: trials a killed worker left RUNNING are marked failed first (journal; RDB storage does it by
heartbeat), then the remaining trials are shared out between the workers, so none is run twice.
"""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.console import Console

from harness.core.errors import UsageError
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training.execute import experiment
from harness.training.plan import prepare
from harness.tuning.objective import TuneArgs, base_config, make_objective, trial_sets
from harness.tuning.space import StudySpec, build_pruner, build_sampler, reproduce_command
from harness.tuning.spec import check_spec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_S = 30  # RDB storage: a trial silent for GRACE_S is failed by the next worker that looks
GRACE_S = 90


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


def folds_text(trial: optuna.trial.FrozenTrial, spec: StudySpec) -> str:
    """A several-fold trial's folds: ' (folds 0: 0.6012, 1: 0.5873; not trained: 2; mean 0.5943)'."""
    values = trial.user_attrs.get("fold_values")
    if not values or len(spec.folds) < 2:
        return ""
    done = ", ".join(f"{f}: {v:.4f}" for f, v in values.items())
    rest = [str(f) for f in spec.folds if str(f) not in values]
    rest = f"; not trained: {', '.join(rest)}" if rest else ""
    return f" (folds {done}{rest}; mean {trial.user_attrs['fold_mean']:.4f})"


def progress_line(console: Console, spec: StudySpec):
    """After each trial: its state and value (and its folds'), and the study's totals and best so far."""
    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial):
        trials = study.get_trials(deepcopy=False)
        count = lambda s: sum(t.state == s for t in trials)
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        value = f" {trial.value:.4f}" if trial.value is not None else ""
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else ""
        console.print(f"trial {trial.number} {trial.state.name}{value}{reason}{folds_text(trial, spec)} | "
                      f"done {count(TrialState.COMPLETE)}, "
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
    folds = ({"harness.fold": str(spec.fold)} if len(spec.folds) == 1 else
             {"harness.folds": ",".join(map(str, spec.folds))})
    run_id = store.create_run(experiment_id, f"study-{spec.name}",
                              {"harness.kind": "study", "harness.study": spec.name, "harness.variant": spec.variant}
                              | folds)
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
                           callbacks=[progress_line(console, spec)], gc_after_trial=True)
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
    base, profile = base_config(spec, args, console)
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
    on = f" on folds {', '.join(map(str, spec.folds))}" if len(spec.folds) > 1 else ""
    console.print(f"study [bold]{spec.name}[/]{on} in {where}: {done} trial(s) finished, {remaining} to run "
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
    summary = {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
    if len(spec.folds) > 1:  # the mean's parts: each fold's value and training run
        summary |= {"folds": list(spec.folds), "fold_values": best.user_attrs.get("fold_values", {}),
                    "fold_run_ids": best.user_attrs.get("fold_run_ids", {})}
        parent.metrics({f"best/fold{f}/{spec.metric.removeprefix('best/')}": v
                        for f, v in summary["fold_values"].items()})
    parent.dict(summary, "best.json")
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
    console.print(f"best trial {best.number}: {spec.metric} {best.value:.4f}{folds_text(best, spec)} "
                  f"with {best.params}")
    if importances:
        console.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
    console.print(f"reproduce it: {command}", markup=False)  # `data.tta=[none]` is no markup tag


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



