"""`harness run`: resolve config and data, check everything, then train one fold inside an MLflow run.

`prepare` does every check that can fail on user input before an MLflow run exists, so a bad
argument never leaves a run behind; `execute` trains and records.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader

from harness import __version__, plots, tracking
from harness.config import Config, apply_overrides, load_yaml
from harness.data import demo
from harness.data.dataset import SliceDataset
from harness.data.folds import fold_fingerprint, load_or_create
from harness.data.rsna import SampleTable, data_fingerprint, load_samples
from harness.data.schema import CLASS_KEYS
from harness.errors import DataError, UsageError
from harness.hooks import CheckpointSelector, ConsoleProgress, DeadClassMonitor, EarlyStopping
from harness.losses import build_loss
from harness.metrics import classification_metrics, competition_score_spinal, confusion
from harness.profiles import PROFILES
from harness.registry import Variant, get_variant
from harness.trainer import Trainer, resolve_device, seed_everything


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
            raise DataError(f"{out}: folder exists and holds no complete demo dataset; remove it or choose "
                            "another") from None


def resolve_data(data_dir: str | None, console: Console) -> tuple[Path, str]:
    """--data-dir, else $RSNA_DATA_DIR, else the built-in demo dataset (generated on first use)."""
    data_dir = data_dir or os.environ.get("RSNA_DATA_DIR")
    if data_dir:
        root = Path(data_dir).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"--data-dir {data_dir}: no such folder")
        return root, "kaggle"
    root = harness_home() / "demo"
    if not (root / demo.MARKER).is_file():
        console.print(f"Generating the built-in demo dataset at {root} ...")
        write_demo(root, console)
    return root, "demo"


def build_config(variant: Variant, fold: int, profile: str, config_file: str | None,
                 sets: dict, data_dir: str | None) -> Config:
    """Variant defaults, then the profile, then --config FILE, then --set (DESIGN.md "Config")."""
    if profile not in PROFILES:
        raise UsageError(f"--profile {profile!r} is not one of {', '.join(PROFILES)}")
    cfg = variant.defaults()
    cfg = apply_overrides(cfg, {"fold": fold, "profile": profile, "data_dir": data_dir}, "arguments")
    cfg = apply_overrides(cfg, PROFILES[profile](cfg), f"profile {profile}")
    if config_file:
        cfg = apply_overrides(cfg, load_yaml(config_file), f"--config {config_file}")
    return apply_overrides(cfg, sets, "--set")


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

    @property
    def val_samples(self) -> pd.DataFrame:
        return self.table.samples.iloc[self.val_rows]


def prepare(variant_name: str, fold: int, data_dir: str | None, profile: str | None, config_file: str | None,
            sets: dict, console: Console) -> RunPlan:
    variant = get_variant(variant_name)
    root, source = resolve_data(data_dir, console)
    profile = profile or ("smoke" if source == "demo" else "full")
    cfg = build_config(variant, fold, profile, config_file, sets, str(root))
    table = load_samples(root, cfg.data.condition)
    data_fp = data_fingerprint(root)
    folds = load_or_create(table.samples, harness_home() / "folds", f"{cfg.data.condition}-{data_fp}",
                           cfg.data.num_folds, cfg.data.fold_seed)
    fold_of = table.samples["study_id"].map(dict(zip(folds["study_id"], folds["fold"])))
    val_rows = np.flatnonzero(fold_of.to_numpy() == cfg.fold)
    train_rows = np.flatnonzero(fold_of.to_numpy() != cfg.fold)
    plan = RunPlan(cfg, variant, source, table, train_rows, val_rows, folds, data_fp, "")
    plan.fold_fp = fold_fingerprint(plan.val_samples)
    return plan


def describe(plan: RunPlan, console: Console):
    cfg, d = plan.cfg, plan.table.dropped
    where = ("the built-in demo dataset (no --data-dir or RSNA_DATA_DIR given)" if plan.source == "demo"
             else "the Kaggle dataset")
    console.print(f"[bold]{cfg.variant}[/] fold {cfg.fold}, profile [bold]{cfg.profile}[/], data: {where} at {plan.table.root}")
    console.print(f"{len(plan.table.samples)} samples of {cfg.data.condition}; dropped {d['empty_label']} empty labels, "
                  f"{d['no_coordinate']} without a coordinate, {d['missing_image']} without an image file")
    counts = lambda rows: "/".join(str(c) for c in np.bincount(plan.table.samples["label"].iloc[rows], minlength=3))
    console.print(f"train {len(plan.train_rows)} ({counts(plan.train_rows)} N/M/S), "
                  f"val {len(plan.val_rows)} ({counts(plan.val_rows)} N/M/S)")


def loaders(plan: RunPlan, device: torch.device):
    """Train loader (shuffled, seeded, drop_last as the variant) and validation loader, plus their options."""
    cfg = plan.cfg
    workers = cfg.data.num_workers
    common = dict(batch_size=cfg.train.batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    train_ds = SliceDataset(plan.table, plan.train_rows, cfg.data, True, cfg.data.augment, cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    train = DataLoader(train_ds, shuffle=True, drop_last=cfg.train.drop_last, generator=gen, **common)
    val = DataLoader(SliceDataset(plan.table, plan.val_rows, cfg.data, False, "none", cfg.train.seed),
                     shuffle=False, **common)
    return train, val, common


def run_tags(plan: RunPlan) -> dict[str, str]:
    cfg = plan.cfg
    return {"harness.variant": cfg.variant, "harness.fold": str(cfg.fold), "harness.seed": str(cfg.train.seed),
            "harness.profile": cfg.profile, "harness.data_source": plan.source,
            "harness.data_fingerprint": plan.data_fp, "harness.fold_fingerprint": plan.fold_fp,
            "harness.condition": cfg.data.condition, "harness.git_commit": tracking.git_commit(),
            "harness.version": __version__}


def execute(plan: RunPlan, console: Console) -> str:
    """Train and record one run; returns the MLflow run id."""
    cfg, variant = plan.cfg, plan.variant
    seed_everything(cfg.train.seed)
    model = variant.build_model(cfg)  # weights-file errors surface here, before a run exists
    loss_fn = build_loss(cfg.loss)
    tracking.ensure_store()
    exp = tracking.experiment_id(f"rsna-{cfg.data.condition}" + ("-demo" if plan.source == "demo" else ""))
    val = plan.val_samples
    spinal = cfg.data.condition == "spinal_canal_stenosis"

    def extra(t):
        return {"val/competition_score_spinal": competition_score_spinal(
            val["study_id"].to_numpy(), t.result.labels, t.result.probs)} if spinal else {}

    run_name = f"{cfg.variant}-fold{cfg.fold}-seed{cfg.train.seed}"
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=run_tags(plan)) as run, \
            tempfile.TemporaryDirectory(prefix="harness-run-") as workdir:
        console.print(f"MLflow run {run.info.run_id} ({run_name}) in {tracking.tracking_uri()}")
        mlflow.log_params({k: str(v) for k, v in cfg.flat().items()})
        mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        with warnings.catch_warnings():  # MLflow's schema hint about integer columns is noise here
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
            mlflow.log_input(mlflow.data.from_pandas(plan.folds, name=f"folds-{cfg.data.condition}-{plan.data_fp}"),
                             context="folds")
        selector, monitor = CheckpointSelector(Path(workdir)), DeadClassMonitor()
        recorder = tracking.MlflowEpochLogger(extra)
        hooks = [selector, EarlyStopping(), monitor, ConsoleProgress(console, selector, monitor), recorder]
        train_loader, val_loader, common = loaders(plan, resolve_device(cfg.train.device))
        trainer = Trainer(cfg, model, loss_fn, variant.predict, train_loader, val_loader, hooks)
        trainer.fit()
        _finish(plan, trainer, selector, monitor, recorder.history, common, console)
        return run.info.run_id


def _finish(plan: RunPlan, trainer: Trainer, selector: CheckpointSelector, monitor: DeadClassMonitor,
            history: list[dict], common: dict, console: Console):
    """Summary metrics, TTA, predictions, plots and the checkpoint of the selected epoch."""
    cfg, best = plan.cfg, selector.selected
    val = plan.val_samples
    mlflow.log_metrics({f"best/{k}": v for k, v in best.metrics.items()} | {"best/epoch": best.epoch})
    mlflow.set_tags({"harness.gate_met": str(selector.gate_met).lower(),
                     "harness.dead_class_epochs": ",".join(str(e) for e in sorted(monitor.dead_epochs)) or "none",
                     "harness.stopped_early": str(trainer.should_stop).lower()})
    if cfg.data.tta != ("none",):
        probs = []
        for recipe in cfg.data.tta:
            ds = SliceDataset(plan.table, plan.val_rows, cfg.data, False, recipe, cfg.train.seed)
            probs.append(trainer.evaluate(trainer.model, DataLoader(ds, shuffle=False, **common)).probs)
        mlflow.log_metrics({f"tta/{k}": v for k, v in classification_metrics(best.labels, np.mean(probs, 0)).items()})
    preds = pd.DataFrame({"study_id": val["study_id"].to_numpy(), "level": val["level"].to_numpy(),
                          "label": best.labels, **{k: best.probs[:, i] for i, k in enumerate(CLASS_KEYS)},
                          "prediction": best.probs.argmax(1)})
    mlflow.log_text(preds.to_csv(index=False), "val_predictions.csv")
    title = f"{cfg.variant} fold {cfg.fold} (epoch {best.epoch + 1})"
    mlflow.log_figure(plots.confusion(confusion(best.labels, best.probs), title), "confusion_matrix.png")
    mlflow.log_figure(plots.curves(history, f"{cfg.variant} fold {cfg.fold}"), "training_curves.png")
    mlflow.log_artifact(str(selector.path), "checkpoint")
    m = best.metrics
    gate = "gate met" if selector.gate_met else f"[yellow]gate {cfg.train.gate} never met: best-BA epoch kept[/]"
    console.print(f"selected epoch {best.epoch + 1}: BA [bold]{m['balanced_accuracy']:.3f}[/] (recall N "
                  f"{m['recall/normal_mild']:.3f} M {m['recall/moderate']:.3f} S {m['recall/severe']:.3f}), {gate}")
