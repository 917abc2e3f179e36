"""One assembly of a run for every process: threads, seed, model, loss, loaders, the hook list and
the trainer. Rank 0 (or the only process) records; the other ranks of a `--devices` run train their
share. Both build here, so a hook that steers training cannot be on one rank and missing on another.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch

from harness.core import threads
from harness.core.config import Config
from harness.data.dataset import Source
from harness.losses import LossFn, build_loss
from harness.training import resume as resume_mod
from harness.training.device import resolve_device
from harness.training.hooks import (
    BackboneFreeze,
    CheckpointSelector,
    ConsoleProgress,
    DeadClassMonitor,
    EarlyStopping,
    MlflowEpochLogger,
)
from harness.training.loaders import loaders
from harness.training.plan import RunPlan, training_class_weights
from harness.training.rng import seed_everything
from harness.training.trainer import Hook, Trainer


def thread_choice(plan: RunPlan, resume: resume_mod.ResumePoint | None) -> threads.ThreadChoice:
    """The run's intra-op threads: the --devices parent's choice, else the count a resumed run
    started with (its checkpoint has it), else train.threads, else chosen from the free cores."""
    if plan.chosen_threads is not None:
        return plan.chosen_threads
    cfg = plan.cfg
    processes = cfg.train.devices if resolve_device(cfg.train.device).type == "cpu" else 1
    return threads.choose(cfg.train.threads, cfg.data.num_workers, processes, resume.threads if resume else None)


def without_pretrained(cfg: Config) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False, weights_file=None))


def start_process(plan: RunPlan, choice: threads.ThreadChoice, resume: resume_mod.ResumePoint | None,
                  pretrained: bool = True) -> tuple[torch.nn.Module, LossFn]:
    """Threads applied once, before anything computes (the count is part of the run's numbers), the
    seed set, the variant's model and the loss built. Weights-file and class-count errors surface
    here, before a run exists; a resumed run, and a rank that DDP gives rank 0's weights, build
    without the pretrained ones."""
    threads.apply(choice.compute, plan.cfg.data.num_workers)
    seed_everything(plan.cfg.train.seed)
    cfg = plan.cfg if pretrained and resume is None else without_pretrained(plan.cfg)
    return plan.variant.build_model(cfg), build_loss(plan.cfg.loss, training_class_weights(plan))


@dataclass
class Recording:
    """Rank 0's hooks that watch and record: none of them changes what is trained."""

    selector: CheckpointSelector
    monitor: DeadClassMonitor
    progress: ConsoleProgress
    logger: MlflowEpochLogger
    checkpoint: resume_mod.EpochCheckpoint | None = None  # None: not resumable (a tuning trial)
    extra: Sequence[Hook] = field(default_factory=tuple)  # the caller's (tuning's pruning reporter)


def hook_list(recording: Recording | None) -> list[Hook]:
    """The trainer's hooks in call order. The steering hooks are made here, once, for every rank;
    the recording ones join them where the run is recorded."""
    freeze, early_stop = BackboneFreeze(), EarlyStopping()
    steering = [freeze, early_stop]
    if recording is None:
        return steering
    r = recording
    # the checkpoint comes after every hook that changes state and before the logger, so an epoch
    # is logged once it can no longer be lost
    hooks = [freeze, r.selector, early_stop, r.monitor, r.progress, *([r.checkpoint] if r.checkpoint else []),
             r.logger, *r.extra]
    missing = [type(h).__name__ for h in steering if not any(h is k for k in hooks)]
    if missing:  # a programming error: rank 0 would train differently from the other ranks
        raise RuntimeError(f"steering hook(s) {', '.join(missing)} missing from rank 0's hook list")
    return hooks


def build_trainer(plan: RunPlan, model: torch.nn.Module, loss_fn: LossFn, source: Source,
                  recording: Recording | None, resume: resume_mod.ResumePoint | None) -> tuple[Trainer, dict]:
    """The trainer over this process's loaders, put back where `resume` left it; also the loader
    options (the TTA loaders reuse them)."""
    cfg = plan.cfg
    train_loader, val_loader, common = loaders(plan, resolve_device(cfg.train.device), source)
    trainer = Trainer(cfg, model, loss_fn, plan.variant.predict, train_loader, val_loader, hook_list(recording),
                      score=plan.scorer())
    if resume is not None:
        resume_mod.restore(trainer, resume.state)
    return trainer, common
