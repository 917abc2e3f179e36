"""`harness run` once the plan is checked: one fold trained inside an MLflow run, by one process or by
the N processes of `--devices N`, new or resumed.

`execute` is the run (rank 0 under --devices), `follow` every other rank; both assemble the same
trainer (harness.training.assembly). `execute_distributed` prepares once in the parent and starts
the ranks (harness.training.launch).
"""
from __future__ import annotations

import dataclasses
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from rich.console import Console

from harness import __version__
from harness.core.errors import UsageError
from harness.core.signals import stops_between_batches
from harness.tracking import store
from harness.tracking.run_status import recorded_run
from harness.tracking.writer import RunWriter
from harness.training import launch, summary
from harness.training import resume as resume_mod
from harness.training.assembly import Recording, build_trainer, start_process, thread_choice, without_pretrained
from harness.training.device import resolve_device
from harness.training.hooks import CheckpointSelector, ConsoleProgress, DeadClassMonitor, MlflowEpochLogger
from harness.training.loaders import data_source, unreadable_files
from harness.training.plan import RunPlan, experiment_name, harness_home
from harness.training.trainer import Hook, Trainer


@dataclass
class Outcome:
    """What a finished run produced: its MLflow id, the selected epoch's metrics, epochs trained."""

    run_id: str
    metrics: dict[str, float]
    epochs: int


def run_tags(plan: RunPlan) -> dict[str, str]:
    cfg = plan.cfg
    return {"harness.variant": cfg.variant, "harness.fold": str(cfg.fold), "harness.seed": str(cfg.train.seed),
            "harness.profile": cfg.profile, "harness.data_source": plan.source,
            "harness.data_fingerprint": plan.data_fp, "harness.fold_fingerprint": plan.fold_fp,
            "harness.condition": cfg.data.condition, "harness.git_commit": store.git_commit(),
            "harness.version": __version__, "harness.kind": "training", **mix_tags(plan.variant)}


def mix_tags(variant) -> dict[str, str]:
    """A mix's parts (harness.core.mixing): its base, the variant it took factors from, and those factors."""
    if not variant.parts:
        return {}
    parts = variant.parts
    return {"harness.base": parts["base"], "harness.donor": parts["donor"],
            "harness.factors": ",".join(parts["factors"])}


def experiment(plan: RunPlan) -> str:
    """The run's MLflow experiment (created on first use, with the store)."""
    store.ensure_store()
    return store.experiment_id(experiment_name(plan))


def find_resume(plan: RunPlan, wanted: str, console: Console) -> resume_mod.ResumePoint | None:
    """The unfinished run `--resume [RUN_ID|FILE]` continues; checked against this plan before anything starts."""
    exp = experiment(plan)  # sets the tracking URI the store's client reads
    point = resume_mod.find(exp, plan.cfg, plan.data_fp, wanted)
    if point is None:
        console.print(f"--resume: no unfinished run of {plan.cfg.variant} fold {plan.cfg.fold} with this config "
                      "has a checkpoint; starting a new run")
    else:
        console.print(f"resuming run {point.run_id} {point.where} (of {plan.cfg.train.epochs} epochs)")
    return point


def execute(plan: RunPlan, console: Console, hooks: Sequence[Hook] = (), tags: dict[str, str] | None = None,
            resume: resume_mod.ResumePoint | None = None, resumable: bool = True) -> Outcome:
    """Train and record one run, or continue the unfinished one `resume` names. `hooks` join the
    trainer's (after the MLflow logger); `tags` join the run's (a tuning trial's parent and number).
    `resumable=False` skips the per-epoch resume checkpoint (tuning trials are never resumed)."""
    cfg = plan.cfg
    choice = thread_choice(plan, resume)
    model, loss_fn = start_process(plan, choice, resume)
    console.print(choice.line(), highlight=False)
    exp = experiment(plan)
    run_name = f"{cfg.variant}-fold{cfg.fold}-seed{cfg.train.seed}"
    with tempfile.TemporaryDirectory(prefix="harness-run-") as tmp, ExitStack() as stack:
        if resume:  # locked before the run is reopened: a run still training elsewhere is left alone
            stack.enter_context(resume_mod.RunLock(resume.path.parent, resume.run_id))
        log = Path(tmp) / "unreadable.tsv"
        source = data_source(plan, console, log)  # before the run: a build that fails leaves no run
        start = (dict(run_id=resume.run_id) if resume else
                 dict(experiment_id=exp, run_name=run_name, tags=run_tags(plan) | choice.tags() | (tags or {})))
        run_id = resume.run_id if resume else None
        try:
            with recorded_run(**start) as run:
                run_id = run.info.run_id
                # a resumed run goes on in its own folder: its selected-epoch checkpoints are there
                folder = resume.path.parent if resume else resume_mod.run_dir(harness_home(), run_id)
                if not resume:
                    stack.enter_context(resume_mod.RunLock(folder, run_id))
                writer = RunWriter(run_id)
                writer.tags({"harness.checkpoint_dir": str(folder), "harness.config_hash": resume_mod.config_hash(cfg)})
                trainer, selector = train_in_run(plan, model, loss_fn, source, log, folder, console, writer, hooks,
                                                 resume, resumable)
            resume_mod.remove(folder)  # FINISHED: the selected checkpoint is an MLflow artifact now
        except KeyboardInterrupt:
            if run_id and resumable:  # a tuning trial is never resumed: its study says how it goes on
                console.print(f"[yellow]stopped[/]: run {run_id} is KILLED; it continues from its last checkpoint "
                              f"with `harness run {cfg.variant} --fold {cfg.fold} --resume {run_id}`")
            raise
        return Outcome(run_id, dict(selector.selected.metrics), trainer.epoch + 1)


def train_in_run(plan: RunPlan, model: torch.nn.Module, loss_fn, source, log: Path, folder: Path, console: Console,
                 writer: RunWriter, extra_hooks: Sequence[Hook], resume: resume_mod.ResumePoint | None,
                 resumable: bool) -> tuple[Trainer, CheckpointSelector]:
    """Inside the open MLflow run: its inputs, the training itself, then the run's summary."""
    cfg = plan.cfg
    run = store.find_run(writer.run_id)
    console.print(f"MLflow run {run.info.run_id} ({run.info.run_name}) in {store.tracking_uri()}")
    if resume is None:
        summary.record_inputs(plan, model, writer)
    else:  # how it stopped before is history now; the run says it was resumed
        writer.delete_tags(("harness.stop_reason", "harness.failure_reason"))
        writer.tags({"harness.resumed_after_epoch": str(resume.epochs_done)})
    selector, monitor = CheckpointSelector(folder), DeadClassMonitor()
    identity = resume_mod.identity(cfg, writer.run_id, plan.data_fp)
    checkpoint = resume_mod.EpochCheckpoint(folder / resume_mod.LAST, identity)
    recording = Recording(selector, monitor, ConsoleProgress(console, selector, monitor), MlflowEpochLogger(writer),
                          checkpoint if resumable else None, tuple(extra_hooks))
    trainer, common = build_trainer(plan, model, loss_fn, source, recording, resume)
    with stops_between_batches(trainer, announce=resumable):
        trainer.fit()
    summary.finish(plan, trainer, selector, monitor, recording.logger.history, common, console, writer)
    summary.report_unreadable(unreadable_files(source, log), console, writer)
    return trainer, selector


def execute_distributed(plan: RunPlan, console: Console, resume: resume_mod.ResumePoint | None = None) -> int:
    """`--devices N`: the run trained by N DistributedDataParallel processes (harness.training.launch);
    returns the exit code. The store and the preprocessing cache are made here, once, first."""
    cfg, n = plan.cfg, plan.cfg.train.devices
    device = resolve_device(cfg.train.device)
    use_cuda = device.type == "cuda"
    if use_cuda and device.index is not None:
        raise UsageError(f"train.device={cfg.train.device} names one GPU; --devices {n} uses cuda:0..{n - 1} "
                         "(choose them with CUDA_VISIBLE_DEVICES)")
    if use_cuda and n > torch.cuda.device_count():
        raise UsageError(f"--devices {n}: only {torch.cuda.device_count()} GPU(s) visible")
    # built once here so that weights-file mistakes are one line before any process starts
    plan.variant.build_model(cfg if resume is None else without_pretrained(cfg))
    experiment(plan)
    with tempfile.TemporaryDirectory(prefix="harness-run-") as tmp:
        data_source(plan, console, Path(tmp) / "unreadable.tsv")
    console.print(f"DistributedDataParallel over {n} {'GPUs (NCCL)' if use_cuda else 'CPU processes (gloo)'}: "
                  f"{cfg.train.batch_size // n} of every {cfg.train.batch_size} samples per process")
    # chosen here, once, after the cache build: a rank choosing for itself would count the others as busy
    plan = dataclasses.replace(plan, chosen_threads=thread_choice(plan, resume))
    resume_at = (resume.run_id, resume.path) if resume else None
    return launch.launch(run_rank, (plan, resume_at), n, use_cuda)


def run_rank(rank: int, plan: RunPlan, resume_at: tuple[str, Path] | None) -> None:
    """One process of a --devices run: rank 0 is the MLflow run, the others follow it. Each loads the
    resume checkpoint itself rather than receive it pickled."""
    resume = None
    if resume_at:
        run_id, path = resume_at
        resume = resume_mod.ResumePoint(run_id, path, resume_mod.load_checkpoint(path))
    if rank == 0:
        execute(plan, Console(highlight=False, soft_wrap=True), resume=resume)
    else:
        follow(plan, resume)


def follow(plan: RunPlan, resume: resume_mod.ResumePoint | None) -> None:
    """A --devices rank other than 0: trains its share of every batch and evaluates its share of the
    validation set in step with rank 0; records nothing. Only the hooks that steer training run here,
    on the same gathered metrics as rank 0's, so every rank takes the same decisions."""
    # DDP starts every rank from rank 0's weights
    model, loss_fn = start_process(plan, plan.chosen_threads, resume, pretrained=False)
    with tempfile.TemporaryDirectory(prefix="harness-rank-") as tmp:
        source = data_source(plan, Console(quiet=True), Path(tmp) / "unreadable.tsv")
        trainer, _ = build_trainer(plan, model, loss_fn, source, None, resume)
        with stops_between_batches(trainer):
            trainer.fit()
