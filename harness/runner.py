"""`harness run`: resolve config and data, check everything, then train one fold inside an MLflow run.

`prepare` does every check that can fail on user input before an MLflow run exists, so a bad
argument never leaves a run behind; `execute` trains and records.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader, RandomSampler

from harness import __version__, distributed, plots, run_states, threads, tracking
from harness import resume as resume_mod
from harness.config import Config
from harness.data import cache, demo
from harness.data.dataset import DirectSource, SliceDataset, Source
from harness.data.preprocess import preprocess_key
from harness.data.points import points_outside
from harness.data.folds import fold_fingerprint, load_or_create
from harness.data.rsna import SampleTable, data_fingerprint, load_samples
from harness.data.samplers import progressive_oversample, weighted_sampler
from harness.data.schema import CLASS_KEYS
from harness.alarms import alarm_tags, health_alarms
from harness.attention import attention_figures
from harness.errors import DataError, UsageError
from harness.hooks import BackboneFreeze, CheckpointSelector, ConsoleProgress, DeadClassMonitor, EarlyStopping
from harness.losses import build_loss, class_weights_from_counts
from harness.metrics import Fallback, ValidationScorer, confusion
from harness.registry import Variant, get_variant
from harness.run_config import build_config
from harness.trainer import Hook, Trainer, resolve_device, seed_everything


def harness_home() -> Path:
    """Working files (demo data, folds, checkpoints in progress): $HARNESS_HOME or ./.harness."""
    return Path(os.environ.get("HARNESS_HOME", ".harness")).resolve()


def write_demo(out: Path, console: Console, studies: int = demo.DEFAULT_STUDIES, seed: int = demo.DEFAULT_SEED):
    """Generate the demo dataset at `out` with a progress bar; an occupied folder is a one-line error."""
    if studies < 1:
        raise UsageError(f"--studies must be at least 1, got {studies}")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("demo studies", total=studies)
        try:
            demo.generate_demo(out, studies=studies, seed=seed,
                               progress=lambda done, total: bar.update(task, completed=done))
        except FileExistsError:
            raise UsageError(f"{out}: folder exists and holds no complete demo dataset; remove it or choose "
                            "another") from None


def resolve_data(data_dir: str | None, console: Console) -> tuple[Path, str]:
    """--data-dir, else $RSNA_DATA_DIR, else the built-in demo dataset (generated on first use)."""
    data_dir = data_dir or os.environ.get("RSNA_DATA_DIR")
    if data_dir:
        root = Path(data_dir).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"--data-dir {data_dir}: no such folder")
        return root, "kaggle"
    root = harness_home() / "demo"
    if not demo.is_current(root):  # the harness's own folder: an older demo is replaced
        if root.exists():
            console.print(f"The built-in demo dataset at {root} is from an older version; writing it again ...")
            shutil.rmtree(root)
        else:
            console.print(f"Generating the built-in demo dataset at {root} ...")
        write_demo(root, console)
    return root, "demo"


@dataclass
class RunPlan:
    """Everything a run needs, checked."""

    cfg: Config
    variant: Variant
    source: str
    table: SampleTable
    train_rows: np.ndarray
    val_rows: np.ndarray
    folds: pd.DataFrame
    data_fp: str
    fold_fp: str
    outside: list[str]  # label points outside their image (harness.data.points)
    val_studies: frozenset = frozenset()  # the fold's studies, those without any sample included
    # set by the --devices parent only: one choice for every rank (a rank would count the others as busy)
    chosen_threads: threads.ThreadChoice | None = None

    @property
    def val_samples(self) -> pd.DataFrame:
        return self.table.samples.iloc[self.val_rows]

    @property
    def unseen_val_levels(self) -> pd.DataFrame:
        """The labelled levels of the validation studies that have no sample (study_id, level, label,
        reason): Kaggle scores them, so the competition score gives them the fallback prediction."""
        labelled = self.table.labelled
        in_val = labelled["study_id"].isin(self.val_studies)
        return labelled[in_val & (labelled["reason"] != "")].reset_index(drop=True)

    def fallback_probs(self) -> np.ndarray:
        """The stated prediction for a level the model cannot see (train.fallback_prediction)."""
        if self.cfg.train.fallback_prediction == "uniform":
            return np.full(3, 1 / 3)
        counts = np.bincount(self.table.samples["label"].iloc[self.train_rows], minlength=3).astype(np.float64)
        return counts / counts.sum()

    def scorer(self) -> ValidationScorer:
        """Every epoch's validation figures (harness.metrics.ValidationScorer)."""
        unseen = self.unseen_val_levels
        fallback = Fallback(unseen["study_id"].to_numpy(), unseen["label"].to_numpy(),
                            np.tile(self.fallback_probs(), (len(unseen), 1)))
        return ValidationScorer(self.val_samples["study_id"].to_numpy(),
                                self.cfg.data.condition == "spinal_canal_stenosis", fallback)


def prepare(variant_name: str, fold: int, data_dir: str | None, profile: str | None, config_file: str | None,
            sets: dict, console: Console) -> RunPlan:
    variant = get_variant(variant_name)
    root, source = resolve_data(data_dir, console)
    profile = profile or ("smoke" if source == "demo" else "full")
    cfg = build_config(variant, fold, profile, config_file, sets, str(root))
    table = load_samples(root, cfg.data.condition, cfg.data.other_series_points)
    data_fp = data_fingerprint(root)
    # levels sampled on another series type make another sample table, so other folds: kept apart
    key = f"{cfg.data.condition}-{data_fp}" + ("-other_series" if cfg.data.other_series_points == "use" else "")
    folds = load_or_create(table.samples, harness_home() / "folds", key, cfg.data.num_folds, cfg.data.fold_seed)
    fold_of = table.samples["study_id"].map(dict(zip(folds["study_id"], folds["fold"])))
    val_rows = np.flatnonzero(fold_of.to_numpy() == cfg.fold)
    train_rows = np.flatnonzero(fold_of.to_numpy() != cfg.fold)
    plan = RunPlan(cfg, variant, source, table, train_rows, val_rows, folds, data_fp, "", points_outside(table))
    plan.fold_fp = fold_fingerprint(plan.val_samples)
    # a study with no usable sample is in no fold of the notebooks' split, yet Kaggle scores it: it
    # joins fold study_id % num_folds, which leaves every other study's fold as it was
    unsampled = set(table.labelled["study_id"]) - set(table.samples["study_id"])
    plan.val_studies = frozenset(int(s) for s in plan.val_samples["study_id"]) | {
        int(s) for s in unsampled if s % cfg.data.num_folds == cfg.fold}
    return plan


def describe(plan: RunPlan, console: Console):
    cfg, d = plan.cfg, plan.table.dropped
    where = ("the built-in demo dataset (no --data-dir or RSNA_DATA_DIR given)" if plan.source == "demo"
             else "the Kaggle dataset")
    console.print(f"[bold]{cfg.variant}[/] fold {cfg.fold}, profile [bold]{cfg.profile}[/], data: {where} at {plan.table.root}")
    ex = {k: f" ({v})" for k, v in plan.table.examples.items()}
    console.print(f"{len(plan.table.samples)} samples of {cfg.data.condition}; dropped {d['empty_label']} empty labels"
                  f"{ex.get('empty_label', '')}, {d['no_coordinate']} without a coordinate{ex.get('no_coordinate', '')}, "
                  f"{d['missing_image']} without an image file{ex.get('missing_image', '')}", highlight=False)
    if plan.table.other_series_studies:
        studies = plan.table.other_series_studies
        fate = (f"dropped ({d['other_series']} levels; data.other_series_points=use samples them there)"
                if cfg.data.other_series_points == "drop" else "sampled on that series (data.other_series_points=use)")
        console.print(f"[yellow]{len(studies)} study(ies) have {cfg.data.condition} points on a series of another "
                      f"type[/] ({plan.table.examples['other_series']}; studies {', '.join(map(str, studies[:5]))}"
                      f"{' ...' if len(studies) > 5 else ''}): {fate}", highlight=False)
    unseen = plan.unseen_val_levels
    if len(unseen):
        why = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in unseen["reason"].value_counts().items())
        prior = "/".join(f"{p:.3f}" for p in plan.fallback_probs())
        console.print(f"{len(unseen)} labelled validation level(s) have no sample ({why}): the competition score "
                      f"gives them the fallback prediction {prior} (train.fallback_prediction="
                      f"{cfg.train.fallback_prediction}); BA and recalls cover the {len(plan.val_rows)} samples",
                      highlight=False)
    if plan.outside:
        console.print(f"[yellow]{len(plan.outside)} label point(s) outside their image[/] (first: {plan.outside[0]}); "
                      "their crops are blank or padding; `harness data check` lists them")
    counts = lambda rows: "/".join(str(c) for c in np.bincount(plan.table.samples["label"].iloc[rows], minlength=3))
    console.print(f"train {len(plan.train_rows)} ({counts(plan.train_rows)} N/M/S), "
                  f"val {len(plan.val_rows)} ({counts(plan.val_rows)} N/M/S)")
    if cfg.loss.class_weight_rule != "fixed":
        weights = ", ".join(f"{w:.3f}" for w in training_class_weights(plan))
        console.print(f"class weights ({cfg.loss.class_weight_rule} of the training counts): [{weights}]")


def data_source(plan: RunPlan, console: Console, log: Path) -> Source:
    """The preprocessing cache (built with a progress bar on first use), or on-the-fly preparation
    when data.cache is off; unreadable files then go to `log`."""
    d = plan.cfg.data
    if not d.cache:
        return DirectSource(plan.table, d, log)
    root = Path(d.cache_dir).expanduser() if d.cache_dir else harness_home() / "cache"
    # no refresh thread: the build forks its workers, and a fork should not copy a running thread
    with Progress(console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("preprocessing", total=len(plan.table.samples))
        try:
            return cache.open_or_build(plan.table, d, plan.data_fp, root, notice=console.print,
                                       progress=lambda done, total: bar.update(task, completed=done, refresh=True))
        except OSError as exc:  # a read-only or full disk: say where, and how to avoid it
            raise UsageError(f"preprocessing cache {root}: {exc.strerror or exc} (set data.cache_dir to a "
                            "writable folder, or data.cache=false)") from None


def unreadable_files(source: Source, log: Path) -> dict[str, str]:
    """path -> reason of every unreadable file the run met (blank slices in its samples)."""
    if isinstance(source, cache.PreprocessCache):
        return dict(source.unreadable)
    lines = log.read_text().splitlines() if log.is_file() else []
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def loaders(plan: RunPlan, device: torch.device, source: Source):
    """Train loader (sampler as the variant; seeded; this rank's share of each batch under
    --devices) and validation loader, plus their options. Workers live for the whole run and keep
    data.prefetch_factor batches ready; pinned memory lets the copies to the GPU overlap compute."""
    cfg, d = plan.cfg, plan.cfg.data
    world = distributed.world_size()
    # one OpenCV thread per worker, each being one of the cores the run counted on (threads.apply
    # gives forked workers theirs; the init function gives spawned ones theirs)
    workers = dict(persistent_workers=True, prefetch_factor=d.prefetch_factor,
                   worker_init_fn=threads.single_threaded_worker) if d.num_workers else {}
    common = dict(batch_size=cfg.train.batch_size // world, num_workers=d.num_workers,
                  pin_memory=device.type == "cuda", **workers)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    rows, copies = plan.train_rows, None
    if d.sampler == "progressive":  # the notebooks seeded it with 42 + fold
        rows, copies = progressive_oversample(plan.table.samples, rows, cfg.train.seed + cfg.fold)
    uint8 = device.type == "cuda"  # normalised on the GPU: 4-12x fewer bytes through the loader and PCIe
    train_ds = SliceDataset(plan.table, rows, d, True, d.augment, cfg.train.seed, source, copies, uint8)
    if d.sampler == "weighted":
        order = dict(sampler=weighted_sampler(train_ds.labels, gen))
    else:  # as shuffle=True: the loader's worker seed and the order both drawn from `gen`
        order = dict(sampler=RandomSampler(train_ds, generator=gen), generator=gen)
    if world > 1:
        order["sampler"] = distributed.ShardSampler(order["sampler"], distributed.rank(), world)
    train = DataLoader(train_ds, drop_last=cfg.train.drop_last, **order, **common)
    val_ds = SliceDataset(plan.table, plan.val_rows, d, False, "none", cfg.train.seed, source, uint8=uint8)
    val = DataLoader(val_ds, shuffle=False, **common)
    return train, val, common


def training_class_weights(plan: RunPlan) -> tuple[float, float, float]:
    """The loss's class weights: fixed, or from the training fold's counts before oversampling (v4)."""
    counts = np.bincount(plan.table.samples["label"].iloc[plan.train_rows], minlength=3)
    return class_weights_from_counts(counts, plan.cfg.loss.class_weight_rule, plan.cfg.loss.class_weights)


def run_tags(plan: RunPlan) -> dict[str, str]:
    cfg = plan.cfg
    return {"harness.variant": cfg.variant, "harness.fold": str(cfg.fold), "harness.seed": str(cfg.train.seed),
            "harness.profile": cfg.profile, "harness.data_source": plan.source,
            "harness.data_fingerprint": plan.data_fp, "harness.fold_fingerprint": plan.fold_fp,
            "harness.condition": cfg.data.condition, "harness.git_commit": tracking.git_commit(),
            "harness.version": __version__, "harness.kind": "training"}


def thread_choice(plan: RunPlan, resume: resume_mod.ResumePoint | None) -> threads.ThreadChoice:
    """The run's intra-op threads: the --devices parent's choice, else the count a resumed run
    started with (its checkpoint has it), else train.threads, else chosen from the free cores."""
    if plan.chosen_threads is not None:
        return plan.chosen_threads
    cfg = plan.cfg
    processes = cfg.train.devices if resolve_device(cfg.train.device).type == "cpu" else 1
    return threads.choose(cfg.train.threads, cfg.data.num_workers, processes, resume.threads if resume else None)


@dataclass
class Outcome:
    """What a finished run produced: its MLflow id, the selected epoch's metrics, epochs trained."""

    run_id: str
    metrics: dict[str, float]
    epochs: int


def execute(plan: RunPlan, console: Console, hooks: Sequence[Hook] = (), tags: dict[str, str] | None = None,
            resume: resume_mod.ResumePoint | None = None, resumable: bool = True) -> Outcome:
    """Train and record one run, or continue the unfinished one `resume` names. `hooks` join the
    trainer's (after the MLflow logger); `tags` join the run's (a tuning trial's parent and number).
    `resumable=False` skips the per-epoch resume checkpoint (tuning trials are never resumed)."""
    cfg = plan.cfg
    choice = thread_choice(plan, resume)
    # once, before anything computes: the count is part of the run's numbers
    threads.apply(choice.compute, cfg.data.num_workers)
    console.print(choice.line(), highlight=False)
    seed_everything(cfg.train.seed)
    # weights-file errors surface here, before a run exists; a resumed run takes its weights from its checkpoint
    model = plan.variant.build_model(cfg if resume is None else without_pretrained(cfg))
    loss_fn = build_loss(cfg.loss, training_class_weights(plan))
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
            with run_states.recorded_run(**start) as run:
                run_id = run.info.run_id
                # a resumed run goes on in its own folder: its selected-epoch checkpoints are there
                folder = resume.path.parent if resume else resume_mod.run_dir(harness_home(), run_id)
                if not resume:
                    stack.enter_context(resume_mod.RunLock(folder, run_id))
                mlflow.set_tags({"harness.checkpoint_dir": str(folder), "harness.config_hash": resume_mod.config_hash(cfg)})
                trainer, selector = _record(plan, model, loss_fn, source, log, folder, console, hooks, resume,
                                            resumable)
            resume_mod.remove(folder)  # FINISHED: the selected checkpoint is an MLflow artifact now
        except KeyboardInterrupt:
            if run_id and resumable:  # a tuning trial is never resumed: its study says how it goes on
                console.print(f"[yellow]stopped[/]: run {run_id} is KILLED; it continues from its last checkpoint "
                              f"with `harness run {cfg.variant} --fold {cfg.fold} --resume {run_id}`")
            raise
        return Outcome(run_id, dict(selector.selected.metrics), trainer.epoch + 1)


def execute_distributed(plan: RunPlan, console: Console, resume: resume_mod.ResumePoint | None = None) -> int:
    """`--devices N`: the run trained by N DistributedDataParallel processes (harness.distributed);
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
    return distributed.launch(plan, n, use_cuda, resume)


def follow(plan: RunPlan, resume: resume_mod.ResumePoint | None) -> None:
    """A --devices rank other than 0: trains its share of every batch and evaluates its share of the
    validation set in step with rank 0; records nothing. Only the hooks that steer training run here,
    on the same gathered metrics as rank 0's, so every rank takes the same decisions."""
    cfg = plan.cfg
    threads.apply(plan.chosen_threads.compute, cfg.data.num_workers)  # the parent's choice, as rank 0's
    seed_everything(cfg.train.seed)
    model = plan.variant.build_model(without_pretrained(cfg))  # DDP starts every rank from rank 0's weights
    loss_fn = build_loss(cfg.loss, training_class_weights(plan))
    with tempfile.TemporaryDirectory(prefix="harness-rank-") as tmp:
        source = data_source(plan, Console(quiet=True), Path(tmp) / "unreadable.tsv")
        train_loader, val_loader, _ = loaders(plan, resolve_device(cfg.train.device), source)
        trainer = Trainer(cfg, model, loss_fn, plan.variant.predict, train_loader, val_loader,
                          [BackboneFreeze(), EarlyStopping()], score=plan.scorer())
        if resume is not None:
            resume_mod.restore(trainer, resume.state)
        with run_states.stops_between_batches(trainer):
            trainer.fit()


def without_pretrained(cfg: Config) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False, weights_file=None))


def experiment_name(plan: RunPlan) -> str:
    return f"rsna-{plan.cfg.data.condition}" + ("-demo" if plan.source == "demo" else "")


def experiment(plan: RunPlan) -> str:
    """The run's MLflow experiment (created on first use, with the store)."""
    tracking.ensure_store()
    return tracking.experiment_id(experiment_name(plan))


def find_resume(plan: RunPlan, wanted: str, console: Console) -> resume_mod.ResumePoint | None:
    """The unfinished run `--resume [RUN_ID|FILE]` continues; checked against this plan before anything starts."""
    exp = experiment(plan)  # sets the tracking URI the client below reads
    point = resume_mod.find(MlflowClient(), exp, plan.cfg, plan.data_fp, wanted)
    if point is None:
        console.print(f"--resume: no unfinished run of {plan.cfg.variant} fold {plan.cfg.fold} with this config "
                      "has a checkpoint; starting a new run")
    else:
        console.print(f"resuming run {point.run_id} {point.where} (of {plan.cfg.train.epochs} epochs)")
    return point


def _record(plan: RunPlan, model: torch.nn.Module, loss_fn, source: Source, log: Path, folder: Path,
            console: Console, extra_hooks: Sequence[Hook], resume: resume_mod.ResumePoint | None, resumable: bool
            ) -> tuple[Trainer, CheckpointSelector]:
    """Inside the active MLflow run: parameters, inputs, training, then the summary."""
    cfg, variant = plan.cfg, plan.variant
    run = mlflow.active_run()
    console.print(f"MLflow run {run.info.run_id} ({run.info.run_name}) in {tracking.tracking_uri()}")
    if resume is None:
        _log_inputs(plan, model)
    else:  # how it stopped before is history now; the run says it was resumed
        for tag in ("harness.stop_reason", "harness.failure_reason"):
            if tag in run.data.tags:
                MlflowClient().delete_tag(run.info.run_id, tag)
        mlflow.set_tag("harness.resumed_after_epoch", str(resume.epochs_done))
    selector, monitor = CheckpointSelector(folder), DeadClassMonitor()
    recorder = tracking.MlflowEpochLogger()
    checkpoint = resume_mod.EpochCheckpoint(folder / resume_mod.LAST, resume_mod.identity(cfg, run.info.run_id, plan.data_fp))
    # the checkpoint comes after every hook that changes state and before the logger, so an epoch
    # is logged once it can no longer be lost
    hooks = [BackboneFreeze(), selector, EarlyStopping(), monitor, ConsoleProgress(console, selector, monitor),
             *([checkpoint] if resumable else []), recorder, *extra_hooks]
    train_loader, val_loader, common = loaders(plan, resolve_device(cfg.train.device), source)
    trainer = Trainer(cfg, model, loss_fn, variant.predict, train_loader, val_loader, hooks, score=plan.scorer())
    if resume is not None:
        resume_mod.restore(trainer, resume.state)
    with run_states.stops_between_batches(trainer, announce=resumable):
        trainer.fit()
    _finish(plan, trainer, selector, monitor, recorder.history, common, console)
    _report_unreadable(unreadable_files(source, log), console)
    return trainer, selector


def _log_inputs(plan: RunPlan, model: torch.nn.Module):
    """A new run's parameters, config and folds (a resumed run has them already)."""
    cfg = plan.cfg
    mlflow.log_params({k: str(v) for k, v in cfg.flat().items()}
                      | {"loss.class_weights_used": str(training_class_weights(plan)),
                         "model.parameters": str(sum(p.numel() for p in model.parameters())),
                         # set by execute before anything computed (its harness.threads* tags say why)
                         "train.threads_used": str(torch.get_num_threads())})
    mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    tracking.log_dataset_input(plan.folds, f"folds-{cfg.data.condition}-{plan.data_fp}", "folds")
    mlflow.set_tag("harness.preprocess_fingerprint", preprocess_key(cfg.data, plan.data_fp))
    mlflow.log_metrics({f"data/dropped_{k}": v for k, v in plan.table.dropped.items()}
                       | {"data/points_outside_image": len(plan.outside),
                          "data/fallback_levels": len(plan.unseen_val_levels)})
    if plan.table.other_series_studies:
        mlflow.set_tag("harness.other_series_studies", ",".join(map(str, plan.table.other_series_studies)))


def _report_unreadable(files: dict[str, str], console: Console):
    """data/unreadable_slices in MLflow and one line at the end of the run (never a crash)."""
    mlflow.log_metric("data/unreadable_slices", len(files))
    if files:
        mlflow.log_text("".join(f"{p}\t{r}\n" for p, r in sorted(files.items())), "unreadable_slices.tsv")
        first = next(iter(sorted(files.values())))
        console.print(f"[yellow]{len(files)} unreadable DICOM file(s) were read as blank slices[/] "
                      f"(first: {first}); `harness data check` lists them all")


def _finish(plan: RunPlan, trainer: Trainer, selector: CheckpointSelector, monitor: DeadClassMonitor,
            history: list[dict], common: dict, console: Console):
    """Summary metrics, TTA, predictions, plots and the checkpoint of the selected epoch. Epochs are
    numbered from 1 in everything written here, as on the console."""
    cfg, best = plan.cfg, selector.selected
    # every per-epoch val/<name> has its best/<name>: the selected epoch's figure
    mlflow.log_metrics({f"best/{k}": v for k, v in best.metrics.items()}
                       | {"best/loss": best.val_loss, "best/epoch": best.epoch + 1})
    alarms = health_alarms(history, cfg.alarms)
    mlflow.set_tags(alarm_tags(alarms))
    mlflow.set_tags({"harness.gate_met": str(selector.gate_met).lower(),
                     "harness.dead_class_epochs": ",".join(str(e + 1) for e in sorted(monitor.dead_epochs)) or "none",
                     "harness.stopped_early": str(trainer.should_stop).lower()})
    tta = _log_tta(plan, trainer, best, common)
    mlflow.log_text(selected_predictions(plan, trainer.score, best).to_csv(index=False), "val_predictions.csv")
    title = f"{cfg.variant} fold {cfg.fold} (epoch {best.epoch + 1})"
    mlflow.log_figure(plots.confusion(confusion(best.labels, best.probs), title), "confusion_matrix.png")
    mlflow.log_figure(plots.curves(history, f"{cfg.variant} fold {cfg.fold}"), "training_curves.png")
    # the selected epoch's weights are in trainer.model (CheckpointSelector.after_train loaded them)
    figures = attention_figures(trainer.model, trainer.val_loader, trainer.to_device, trainer.autocast,
                                trainer.val_loader.dataset, title, predict=trainer.predict)
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)
    mlflow.log_artifact(str(selector.path), "checkpoint")
    for name, text in alarms.items():
        console.print(f"[yellow]health alarm {name}[/]: {text}")
    summary = selected_summary(plan, trainer, selector, tta)
    mlflow.set_tag("mlflow.note.content", summary)  # the run page's description: the selected epoch first
    for paragraph in summary.split("\n\n")[:3 if tta is not None else 2]:  # figures, TTA, what the gate means
        console.print(paragraph.replace("**", ""), highlight=False)
    _print_where(plan, console)


def _print_where(plan: RunPlan, console: Console) -> None:
    """Where the run went and what to do next: the lines a newcomer needs after the first run."""
    run, cfg = mlflow.active_run(), plan.cfg
    other = "v4" if cfg.variant != "v4" else "v9"
    console.print(f"run {run.info.run_id} ({run.info.run_name}) in experiment {experiment_name(plan)}, store "
                  f"{tracking.tracking_uri()}; artifacts (checkpoint, val_predictions.csv, plots) in "
                  f"{mlflow.get_artifact_uri()}", highlight=False)
    console.print(f"next: `harness ui` to browse it (http://127.0.0.1:5000), `harness compare {other} {cfg.variant} "
                  f"--fold {cfg.fold}` once {other} has a run", highlight=False)


def _log_tta(plan: RunPlan, trainer: Trainer, best, common: dict) -> dict[str, float] | None:
    """The selected model's test-time augmentation (data.tta): mean probabilities over the recipes."""
    cfg = plan.cfg
    if cfg.data.tta == ("none",):
        return None
    probs = []
    for recipe in cfg.data.tta:
        ds = SliceDataset(plan.table, plan.val_rows, cfg.data, False, recipe, cfg.train.seed,
                          trainer.val_loader.dataset.source, uint8=trainer.val_loader.dataset.uint8)
        # rank 0 alone: under --devices the other ranks have finished
        loader = DataLoader(ds, shuffle=False, **common)
        probs.append(trainer.evaluate(trainer.model, loader, shard=False).probs)
    metrics = trainer.score(best.labels, np.mean(probs, 0))
    mlflow.log_metrics({f"tta/{k}": v for k, v in metrics.items()})
    return metrics


def selected_predictions(plan: RunPlan, scorer: ValidationScorer, best) -> pd.DataFrame:
    """val_predictions.csv: the selected epoch's probabilities (float64, written to round-trip) for
    every labelled level of the validation studies, the rows the scorer scored. `source` says who
    predicted a row: 'model', or 'fallback' with the `reason` the model had nothing to look at."""
    val, unseen = plan.val_samples, plan.unseen_val_levels
    study_ids, labels, probs = scorer.all_levels(best.labels, best.probs)
    return pd.DataFrame({
        "study_id": study_ids, "level": np.concatenate([val["level"].to_numpy(), unseen["level"].to_numpy()]),
        "label": labels, **{k: probs[:, i] for i, k in enumerate(CLASS_KEYS)},
        "prediction": probs.argmax(1),
        "source": ["model"] * len(val) + ["fallback"] * len(unseen),
        "reason": [""] * len(val) + unseen["reason"].tolist()})


def selected_summary(plan: RunPlan, trainer: Trainer, selector: CheckpointSelector, tta: dict | None) -> str:
    """The selected epoch's figures in words (Markdown): printed at the end and the run's description."""
    cfg, best = plan.cfg, selector.selected
    m = best.metrics
    gate = ("gate met" if selector.gate_met else
            f"gate {cfg.train.gate} never met, so the best-BA epoch was kept")
    lines = [f"**selected epoch {best.epoch + 1}** of {trainer.epoch + 1}: BA **{m['balanced_accuracy']:.3f}** "
             f"(recall N {m['recall/normal_mild']:.3f} M {m['recall/moderate']:.3f} S {m['recall/severe']:.3f}), "
             + (f"competition score {m['competition_score_spinal']:.4f}, " if "competition_score_spinal" in m else "")
             + gate]
    lines.append(f"The checkpoint gate (train.gate={cfg.train.gate}): an epoch is kept only when both its Moderate "
                 "and Severe recalls reach the gate and its BA beats every earlier such epoch, the notebooks' rule. "
                 + ("One or more epochs passed it." if selector.gate_met else
                    "No epoch passed it, so the best-BA epoch was kept instead (train.gate_fallback; tag "
                    "harness.gate_met=false)."))
    if tta is not None:
        lines.append(f"TTA ({' + '.join(cfg.data.tta)}): BA {tta['balanced_accuracy']:.3f}"
                     + (f", competition score {tta['competition_score_spinal']:.4f}"
                        if "competition_score_spinal" in tta else ""))
    unseen = len(plan.unseen_val_levels)
    lines.append(f"BA and recalls: the {len(plan.val_rows)} validation samples. Competition score (float64, as "
                 f"Kaggle's metric): every labelled level of the validation studies, {unseen} of them predicted by "
                 f"train.fallback_prediction={cfg.train.fallback_prediction}. The epoch was selected on this fold, "
                 "so its figures are optimistic.")
    return "\n\n".join(lines)
