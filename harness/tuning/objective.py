"""The objective of `harness tune`: one trial trains the spec's fold, or its folds one after another,
each fold an ordinary `execute` run, and returns the objective metric (the mean over the folds).

One fold (the spec's `fold`, or `folds: [N]`): exactly as before several folds existed. The trial's
MLflow run is the training run, a child of the study's parent run, and each epoch's validation BA is
reported to Optuna (step = the epoch number), so a pruned trial stops training mid-run.

Several folds (`folds: [0, 1, 2]`, `folds: all`): the trial gets its own MLflow run (harness.kind=trial,
a child of the study's parent) and every fold's training run is a child of it (harness.kind=trial_fold,
harness.fold its fold). After fold k (0-based, in spec order) the cumulative mean of the objective
metric over the folds trained so far is reported with `trial.report(mean, step=k)`, and the trial is
pruned there if the pruner says so, before the next fold trains; after the last fold nothing is pruned
(the trial's value is known by then). Epochs are not reported: one step axis with one meaning keeps
the pruners comparing like with like (median and percentile compare trials at the same step, hyperband
counts steps as resource), which an epoch of fold 0 and a mean over folds are not, and a space over
train.epochs would land epoch s and fold k on the same step. This is the Optuna maintainers' advice
for cross-validation (report the cumulative score after each split: optuna/optuna#5112, #4373). Its
cost: a bad trial trains its whole first fold before it can be pruned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean

import optuna
from rich.console import Console
from rich.markup import escape

from harness.core.errors import one_line
from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training.execute import execute
from harness.training.plan import prepare, resolve_data
from harness.training.trainer import Hook, Trainer
from harness.tuning.space import StudySpec, suggest, to_overrides


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


class PruningReporter(Hook):
    """Reports each epoch's validation BA to the trial; asks the trainer to stop when Optuna prunes."""

    def __init__(self, trial: optuna.Trial):
        self.trial, self.pruned = trial, False

    def after_validation(self, t: Trainer):
        self.trial.report(t.result.metrics["balanced_accuracy"], t.epoch + 1)  # step = epoch number
        if self.trial.should_prune():
            self.pruned, t.should_stop = True, True


def base_config(spec: StudySpec, args: TuneArgs, console: Console):
    root, source = resolve_data(args.data_dir, console)
    profile = args.profile or ("smoke" if source == "demo" else "full")
    sets = dict(spec.fixed) | args.sets
    return build_config(get_variant(spec.variant), spec.fold, profile, None, sets, str(root)), profile


def trial_sets(spec: StudySpec, args: TuneArgs, params: dict, base) -> dict:
    """The --set overrides of one trial: the spec's fixed keys, the command's --set, the trial's values."""
    return dict(spec.fixed) | args.sets | to_overrides(params, base)


def make_objective(spec: StudySpec, args: TuneArgs, parent_id: str, console: Console):
    base, profile = base_config(spec, args, console)
    several = len(spec.folds) > 1

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, spec)
        on = f" on folds {', '.join(map(str, spec.folds))}" if several else ""
        console.print(f"[bold]trial {trial.number}[/]{on} {escape(str(params))}")
        sets = trial_sets(spec, args, params, base)
        try:
            if several:
                return _several_folds(spec, args, profile, sets, trial, parent_id, console)
            return _one_fold(spec, args, profile, sets, trial, parent_id, console)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # recorded as a failed trial with its reason; the study goes on
            trial.set_user_attr("fail_reason", one_line(exc))
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run is KILLED; the trial runs again on resume
            trial.set_user_attr("fail_reason", "stopped by a signal; queued to run again")
            objective.stopped.append(params)
            _tag_killed_trial_run(parent_id, spec.name, trial.number)
            raise

    objective.stopped = []  # parameters of the trials a stop ended, to enqueue again
    return objective


def _trial_tags(spec: StudySpec, parent_id: str, number: int, kind: str = "trial") -> dict[str, str]:
    return {"mlflow.parentRunId": parent_id, "harness.kind": kind, "harness.study": spec.name,
            "harness.trial": str(number)}


def _one_fold(spec: StudySpec, args: TuneArgs, profile: str, sets: dict, trial: optuna.Trial, parent_id: str,
              console: Console) -> float:
    """The trial's run is the training run; its epochs are the pruning steps."""
    reporter = PruningReporter(trial)
    plan = prepare(spec.variant, spec.fold, args.data_dir, profile, None, sets, console)
    # trials restart, never resume
    outcome = execute(plan, console, hooks=[reporter], tags=_trial_tags(spec, parent_id, trial.number),
                      resumable=False)
    trial.set_user_attr("mlflow_run_id", outcome.run_id)
    trial.set_user_attr("epochs", outcome.epochs)
    state = "PRUNED" if reporter.pruned else "COMPLETE"
    RunWriter(outcome.run_id).tags({"harness.trial_state": state})
    if reporter.pruned:
        raise optuna.TrialPruned(f"pruned after epoch {outcome.epochs}")
    return outcome.metrics.get(spec.metric.removeprefix("best/"), math.nan)


def _several_folds(spec: StudySpec, args: TuneArgs, profile: str, sets: dict, trial: optuna.Trial, parent_id: str,
                   console: Console) -> float:
    """The folds one after another under the trial's own run; the folds are the pruning steps."""
    name, folds = spec.metric.removeprefix("best/"), spec.folds
    tags = _trial_tags(spec, parent_id, trial.number) | {"harness.variant": spec.variant,
                                                         "harness.folds": ",".join(map(str, folds))}
    run_id = store.create_run(store.find_run(parent_id).info.experiment_id, f"{spec.name}-trial{trial.number}", tags)
    trial.set_user_attr("mlflow_run_id", run_id)
    writer, values, run_ids = RunWriter(run_id), {}, {}
    try:
        for k, fold in enumerate(folds):
            plan = prepare(spec.variant, fold, args.data_dir, profile, None, sets, console)
            outcome = execute(plan, console, tags=_trial_tags(spec, run_id, trial.number, "trial_fold"),
                              resumable=False)
            values[fold], run_ids[fold] = outcome.metrics.get(name, math.nan), outcome.run_id
            mean = fmean(values.values())
            # user attributes are JSON: fold keys as strings
            trial.set_user_attr("fold_values", {str(f): v for f, v in values.items()})
            trial.set_user_attr("fold_run_ids", {str(f): r for f, r in run_ids.items()})
            trial.set_user_attr("fold_mean", mean)
            writer.metrics({f"fold{fold}/{name}": values[fold]})
            writer.metrics({f"folds_mean/{name}": mean}, step=k)
            trial.report(mean, step=k)
            console.print(f"trial {trial.number} fold {fold} ({k + 1}/{len(folds)}): {name} {values[fold]:.4f}, "
                          f"mean so far {mean:.4f}")
            if k < len(folds) - 1 and trial.should_prune():
                _end_trial_run(writer, run_ids, "PRUNED")
                raise optuna.TrialPruned(f"pruned after fold {fold} ({k + 1} of {len(folds)} folds)")
    except optuna.TrialPruned:
        raise
    except Exception:  # a stop (KeyboardInterrupt) is the objective's: _tag_killed_trial_run ends the run
        writer.end("FAILED")
        raise
    writer.metrics({f"best/{name}": mean})  # the trial's value, as a one-fold trial's run holds it
    _end_trial_run(writer, run_ids, "COMPLETE")
    return mean


def _end_trial_run(writer: RunWriter, fold_run_ids: dict, state: str) -> None:
    for run_id in fold_run_ids.values():
        RunWriter(run_id).tags({"harness.trial_state": state})
    writer.tags({"harness.trial_state": state})
    writer.end()


def _tag_killed_trial_run(parent_id: str, study: str, number: int) -> None:
    """Every run of the stopped trial (its fold runs and, with several folds, its own run) is tagged
    KILLED; the trial's own run, which no `recorded_run` holds, is ended KILLED here."""
    experiment = store.find_run(parent_id).info.experiment_id
    query = f"tags.`harness.study` = '{study}' and tags.`harness.trial` = '{number}'"
    for run in store.search_runs([experiment], query):
        RunWriter(run.info.run_id).tags({"harness.trial_state": "KILLED"})
        if "harness.folds" in run.data.tags and run.info.status == "RUNNING":
            RunWriter(run.info.run_id).end("KILLED")
