"""What one `harness run` will train, checked before anything starts: the config, the data (the
Kaggle folder or the built-in demo), the folds, and the fold's train and validation rows.

`prepare` does every check that can fail on user input before an MLflow run exists, so a bad
argument never leaves a run behind; `describe` says on the console what the plan holds.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from harness.core import threads
from harness.core.config import Config
from harness.core.errors import DataError, UsageError
from harness.core.registry import Variant, get_variant
from harness.core.run_config import build_config
from harness.data import demo
from harness.data.folds import fold_fingerprint, load_or_create
from harness.data.points import points_outside
from harness.data.rsna import SampleTable, data_fingerprint, load_samples
from harness.losses import class_weights_from_counts
from harness.metrics.classification import Fallback, ValidationScorer


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
        """Every epoch's validation figures (harness.metrics.classification.ValidationScorer)."""
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
    console.print(f"[bold]{cfg.variant}[/] fold {cfg.fold}, profile [bold]{cfg.profile}[/], data: {where} at "
                  f"{plan.table.root}")
    ex = {k: f" ({v})" for k, v in plan.table.examples.items()}
    console.print(f"{len(plan.table.samples)} samples of {cfg.data.condition}; dropped {d['empty_label']} empty labels"
                  f"{ex.get('empty_label', '')}, {d['no_coordinate']} without a coordinate"
                  f"{ex.get('no_coordinate', '')}, "
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


def training_class_weights(plan: RunPlan) -> tuple[float, float, float]:
    """The loss's class weights: fixed, or from the training fold's counts before oversampling (v4)."""
    counts = np.bincount(plan.table.samples["label"].iloc[plan.train_rows], minlength=3)
    return class_weights_from_counts(counts, plan.cfg.loss.class_weight_rule, plan.cfg.loss.class_weights)





def experiment_name(plan: RunPlan) -> str:
    """The run's MLflow experiment: one per condition, the demo's apart."""
    return f"rsna-{plan.cfg.data.condition}" + ("-demo" if plan.source == "demo" else "")
