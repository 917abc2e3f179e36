"""The trainer's run-level rules as hooks: checkpoint selection, early stopping, dead-class monitor,
the console progress display, and the per-epoch metrics written to MLflow."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from harness.core.errors import HarnessError
from harness.metrics.classification import dead_classes
from harness.tracking import store
from harness.tracking.writer import RunWriter
from harness.training.optim import backbone_groups
from harness.training.trainer import EpochResult, Hook, Trainer


class CheckpointSelector(Hook):
    """The notebooks' rule: keep an epoch when BA > best and min(recall M, recall S) >= gate.

    The notebooks had no fallback (docs/variants.md §12.12: the final torch.load failed when no epoch
    passed the gate). With `gate_fallback` the best-BA epoch is kept instead and the run is tagged;
    without it the run fails with a clear message, as the notebook did.

    It also keeps the last epoch validated (`last`): the model of a fixed epoch count, which no
    selection on the validation fold chose, so its figures (last/*) are the fair ones to compare.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.gated: EpochResult | None = None
        self.best_ba: EpochResult | None = None
        self.selected: EpochResult | None = None
        self.last: EpochResult | None = None  # the latest epoch validated: after training, the last one
        self.saved_now = False

    @property
    def gate_met(self) -> bool:
        return self.gated is not None

    def after_validation(self, t: Trainer):
        r, tc = t.result, t.cfg.train
        self.last = r
        m = r.metrics
        ba = m["balanced_accuracy"]
        passes = min(m["recall/moderate"], m["recall/severe"]) >= tc.gate
        self.saved_now = passes and (self.gated is None or ba > self.gated.metrics["balanced_accuracy"])
        if self.saved_now:
            self.gated = r
            self._save(t, "gated")
        if self.best_ba is None or ba > self.best_ba.metrics["balanced_accuracy"]:
            self.best_ba = r
            if self.gated is None:  # only needed while no epoch has passed the gate
                self._save(t, "best_ba")

    def after_train(self, t: Trainer):
        if self.gated is None and not t.cfg.train.gate_fallback:
            raise HarnessError(f"no epoch reached min(recall moderate, recall severe) >= {t.cfg.train.gate}; "
                               "no checkpoint (set train.gate_fallback=true to keep the best-BA epoch)")
        self.selected = self.gated or self.best_ba
        t.model.load_state_dict(torch.load(self.path, map_location=t.device, weights_only=True)["model"])

    @property
    def path(self) -> Path:
        return self.out_dir / ("gated.pt" if self.gated is not None else "best_ba.pt")

    def _save(self, t: Trainer, name: str):
        state = {k: v.detach().cpu() for k, v in t.eval_model().state_dict().items()}
        save_atomic({"model": state, "config": t.cfg.to_dict(), "epoch": t.epoch,
                     "metrics": copy.deepcopy(t.result.metrics)}, self.out_dir / f"{name}.pt")

    def state_dict(self) -> dict:
        return {name: r.to_state() if r is not None else None
                for name, r in (("gated", self.gated), ("best_ba", self.best_ba), ("last", self.last))}

    def load_state_dict(self, state: dict):
        """A checkpoint written before `last` was kept has no "last": it stays None until the next epoch."""
        self.gated, self.best_ba, self.last = (EpochResult.from_state(state[k]) if state.get(k) is not None else None
                                               for k in ("gated", "best_ba", "last"))


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill mid-write leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class BackboneFreeze(Hook):
    """v7/v8's schedule: the backbone groups are frozen for train.freeze_epochs epochs, then trained.

    Frozen means requires_grad=False only: the model stays in train mode, so BatchNorm statistics
    keep updating and stochastic depth stays active, as in the notebooks.
    """

    def before_epoch(self, t: Trainer):
        groups = t.model.param_groups()
        trainable = t.epoch >= t.cfg.train.freeze_epochs
        for name in backbone_groups(t.model):
            for p in groups.get(name, []):
                p.requires_grad_(trainable)


class EarlyStopping(Hook):
    """Stop after `patience` epochs without BA > best + min_delta (ignores the gate, as the notebooks)."""

    def __init__(self):
        self.best, self.bad_epochs = None, 0

    def after_validation(self, t: Trainer):
        ba = t.result.metrics["balanced_accuracy"]
        if self.best is None or ba > self.best + t.cfg.train.min_delta:
            self.best, self.bad_epochs = ba, 0
        else:
            self.bad_epochs += 1
            t.should_stop = self.bad_epochs >= t.cfg.train.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict):
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class DeadClassMonitor(Hook):
    """Flag each epoch where a class gets fewer than alarms.dead_class_min validation predictions (the
    console warning v8-v10 printed; the harness shows it for every variant)."""

    def __init__(self):
        self.dead_epochs: dict[int, list[str]] = {}

    def after_validation(self, t: Trainer):
        counts = np.bincount(t.result.probs.argmax(1), minlength=3)
        dead = dead_classes(counts, t.cfg.alarms.dead_class_min)
        if dead:
            self.dead_epochs[t.epoch] = dead

    def state_dict(self) -> dict:
        return {"dead_epochs": dict(self.dead_epochs)}

    def load_state_dict(self, state: dict):
        self.dead_epochs = dict(state["dead_epochs"])


class ConsoleProgress(Hook):
    """A progress bar over each epoch's batches and one summary line per epoch."""

    def __init__(self, console: Console, selector: CheckpointSelector, monitor: DeadClassMonitor):
        self.console, self.selector, self.monitor = console, selector, monitor
        self.progress: Progress | None = None

    def before_epoch(self, t: Trainer):
        self.progress = Progress(TextColumn(f"epoch {t.epoch + 1}/{t.cfg.train.epochs}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(), console=self.console, transient=True,
                                 disable=not (self.console.is_terminal or self.console.is_jupyter))
        self.progress.start()
        done = t.partial["batches"] if t.partial else 0  # a run resumed mid-epoch starts part way
        self.task = self.progress.add_task("train", total=len(t.train_loader), completed=done)

    def after_step(self, t: Trainer):
        self.progress.advance(self.task)

    def on_stop(self, t: Trainer):  # leave the terminal clean for the stop message
        if self.progress is not None:
            self.progress.stop()

    def after_validation(self, t: Trainer):
        self.progress.stop()
        r, m = t.result, t.result.metrics
        flags = []
        if self.selector.saved_now:
            flags.append("[green]saved[/]")
        if t.epoch in self.monitor.dead_epochs:
            flags.append(f"[yellow]dead class: {', '.join(self.monitor.dead_epochs[t.epoch])}[/]")
        if t.in_swa():
            flags.append("[SWA]")
        self.console.print(
            f"epoch {t.epoch + 1:>2}/{t.cfg.train.epochs}  train_loss {r.train_loss:.4f}  val_loss {r.val_loss:.4f}  "
            f"BA [bold]{m['balanced_accuracy']:.3f}[/]  recall N {m['recall/normal_mild']:.3f} "
            f"M {m['recall/moderate']:.3f} S {m['recall/severe']:.3f}  {r.seconds:.1f}s  " + " ".join(flags),
            highlight=False)


def epoch_metrics(t: Trainer) -> dict[str, float]:
    """The per-epoch metrics (step = the epoch number, counted from 1 as everything a user reads)."""
    r = t.result
    out = {"train/loss": r.train_loss, "val/loss": r.val_loss, "time/epoch_s": r.seconds,
           "throughput/train_samples_per_s": r.samples_per_s}
    out.update({f"val/{k}": v for k, v in r.metrics.items() if k.split("/")[0] != "precision" and k != "accuracy"})
    out.update({f"lr/{name}": lr for name, lr in r.lrs.items()})
    return out


class MlflowEpochLogger(Hook):
    """Logs every epoch's metrics to the run and keeps them (`history`) for the plots.

    The metrics are computed after validation and logged at the end of the epoch, after the resume
    checkpoint is written (it holds `history`): a resumed run then logs each epoch exactly once.
    A row's "epoch" is the epoch number, from 1, and is the MLflow step.
    """

    def __init__(self, writer: RunWriter):
        self.writer = writer
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
        logged = store.metric_steps(self.writer.run_id, store.EPOCH_METRIC)
        for row in self.history:
            if row["epoch"] not in logged:
                self._log(row)

    def _log(self, row: dict):
        self.writer.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
