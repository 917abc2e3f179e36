"""What a run writes once it has trained: its inputs when it starts (params, config, folds), and at
the end the selected epoch's figures (best/*), TTA, health alarms, val_predictions.csv, plots, the
selected checkpoint, and a description of the run in words. Epochs are numbered from 1 in
everything written here, as on the console.

The selected epoch was chosen on the fold it is scored on, so best/* is optimistic (kept as the
notebooks had it). Beside it, the last epoch trained (a fixed epoch count, chosen by no selection on
that fold) is the fair figure to compare: last/* and val_predictions_last.csv."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml
from rich.console import Console
from torch.utils.data import DataLoader

from harness.core.competition import CLASS_KEYS
from harness.core.config import Config
from harness.data.dataset import SliceDataset
from harness.data.preprocess import preprocess_key
from harness.metrics.alarms import alarm_tags, health_alarms
from harness.metrics.classification import ValidationScorer, confusion
from harness.tracking import plots, store
from harness.tracking.attention import attention_figures
from harness.tracking.writer import RunWriter
from harness.training.hooks import CheckpointSelector, DeadClassMonitor
from harness.training.plan import RunPlan, experiment_name, training_class_weights
from harness.training.trainer import EpochResult, Trainer


def record_inputs(plan: RunPlan, model: torch.nn.Module, writer: RunWriter):
    """A new run's parameters, config and folds (a resumed run has them already)."""
    cfg = plan.cfg
    writer.params({k: str(v) for k, v in cfg.flat().items()}
                      | {"loss.class_weights_used": str(training_class_weights(plan)),
                         "model.parameters": str(sum(p.numel() for p in model.parameters())),
                         # set by execute before anything computed (its harness.threads* tags say why)
                         "train.threads_used": str(torch.get_num_threads())})
    writer.text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
    writer.dataset_input(plan.folds, f"folds-{cfg.data.condition}-{plan.data_fp}", "folds")
    writer.tags({"harness.preprocess_fingerprint": preprocess_key(cfg.data, plan.data_fp)})
    writer.metrics({f"data/dropped_{k}": v for k, v in plan.table.dropped.items()}
                       | {"data/points_outside_image": len(plan.outside),
                          "data/fallback_levels": len(plan.unseen_val_levels)})
    if plan.table.other_series_studies:
        writer.tags({"harness.other_series_studies": ",".join(map(str, plan.table.other_series_studies))})


def report_unreadable(files: dict[str, str], console: Console, writer: RunWriter):
    """data/unreadable_slices in MLflow and one line at the end of the run (never a crash)."""
    writer.metrics({"data/unreadable_slices": len(files)})
    if files:
        writer.text("".join(f"{p}\t{r}\n" for p, r in sorted(files.items())), "unreadable_slices.tsv")
        first = next(iter(sorted(files.values())))
        console.print(f"[yellow]{len(files)} unreadable DICOM file(s) were read as blank slices[/] "
                      f"(first: {first}); `harness data check` lists them all")


def finish(plan: RunPlan, trainer: Trainer, selector: CheckpointSelector, monitor: DeadClassMonitor,
           history: list[dict], common: dict, console: Console, writer: RunWriter):
    """Summary metrics, TTA, predictions, plots and the checkpoint of the selected epoch. Epochs are
    numbered from 1 in everything written here, as on the console."""
    cfg, best = plan.cfg, selector.selected
    # every per-epoch val/<name> has its best/<name>: the selected epoch's figure
    writer.metrics(epoch_figures("best", best))
    last = selector.last  # None only when a run resumed from a checkpoint older than `last` trains no more epoch
    if last is not None:  # every best/<name> has its last/<name>: the last epoch's figure
        writer.metrics(epoch_figures("last", last))
    alarms = health_alarms(history, cfg.alarms)
    writer.tags(alarm_tags(alarms))
    writer.tags({"harness.gate_met": str(selector.gate_met).lower(),
                     "harness.dead_class_epochs": ",".join(str(e + 1) for e in sorted(monitor.dead_epochs)) or "none",
                     "harness.stopped_early": str(trainer.should_stop).lower()})
    tta = _log_tta(plan, trainer, best, common, writer)
    writer.text(selected_predictions(plan, trainer.score, best).to_csv(index=False), "val_predictions.csv")
    if last is not None:
        writer.text(selected_predictions(plan, trainer.score, last).to_csv(index=False), "val_predictions_last.csv")
    title = f"{cfg.variant} fold {cfg.fold} (epoch {best.epoch + 1})"
    writer.figure(plots.confusion(confusion(best.labels, best.probs), title), "confusion_matrix.png")
    writer.figure(plots.curves(history, f"{cfg.variant} fold {cfg.fold}"), "training_curves.png")
    # the selected epoch's weights are in trainer.model (CheckpointSelector.after_train loaded them)
    figures = attention_figures(trainer.model, trainer.val_loader, trainer.to_device, trainer.autocast,
                                trainer.val_loader.dataset, title, predict=trainer.predict)
    for name, fig in figures.items():
        writer.figure(fig, name)
        plt.close(fig)
    writer.file(selector.path, "checkpoint")
    for name, text in alarms.items():
        console.print(f"[yellow]health alarm {name}[/]: {text}")
    summary = selected_summary(plan, trainer, selector, tta)
    writer.tags({"mlflow.note.content": summary})  # the run page's description: the selected epoch first
    # figures, the fair figure, what the gate means, TTA
    for paragraph in summary.split("\n\n")[:4 if tta is not None else 3]:
        console.print(paragraph.replace("**", ""), highlight=False)
    _print_where(plan, console, writer)


def _print_where(plan: RunPlan, console: Console, writer: RunWriter) -> None:
    """Where the run went and what to do next: the lines a newcomer needs after the first run."""
    run, cfg = store.find_run(writer.run_id), plan.cfg
    other = "v4" if cfg.variant != "v4" else "v9"
    console.print(f"run {run.info.run_id} ({run.info.run_name}) in experiment {experiment_name(plan)}, store "
                  f"{store.tracking_uri()}; artifacts (checkpoint, val_predictions.csv, plots) in "
                  f"{run.info.artifact_uri}", highlight=False)
    console.print(f"next: `harness ui` to browse it (http://127.0.0.1:5000), `harness compare {other} {cfg.variant} "
                  f"--fold {cfg.fold}` once {other} has a run", highlight=False)


def _log_tta(plan: RunPlan, trainer: Trainer, best, common: dict, writer: RunWriter) -> dict[str, float] | None:
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
    writer.metrics({f"tta/{k}": v for k, v in metrics.items()})
    return metrics


def epoch_figures(prefix: str, r: EpochResult) -> dict[str, float]:
    """One epoch's figures as the run logs them: every per-epoch metric, its loss and its epoch (from 1)."""
    return {f"{prefix}/{k}": v for k, v in r.metrics.items()} | {f"{prefix}/loss": r.val_loss,
                                                                   f"{prefix}/epoch": r.epoch + 1}


def selected_predictions(plan: RunPlan, scorer: ValidationScorer, best: EpochResult) -> pd.DataFrame:
    """val_predictions.csv: the selected epoch's probabilities (float64, written to round-trip) for
    every labelled level of the validation studies, the rows the scorer scored. `source` says who
    predicted a row: 'model', or 'fallback' with the `reason` the model had nothing to look at.
    The last epoch's result gives val_predictions_last.csv, the same columns and rows."""
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
    if selector.last is not None:
        lines.append(fair_epoch(cfg, trainer, best, selector.last))
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


def fair_epoch(cfg: Config, trainer: Trainer, best: EpochResult, last: EpochResult) -> str:
    """The last epoch's BA beside the selected one's, in words: which is optimistic and which is fair."""
    ba = lambda r: f"{r.metrics['balanced_accuracy']:.3f}"
    text = (f"Selected epoch {best.epoch + 1}: BA {ba(best)}, optimistic (selected on this fold). Last epoch "
            f"{last.epoch + 1}: BA **{ba(last)}**, fixed epoch count, not selected on this fold: the figure to "
            "compare runs by (last/*, val_predictions_last.csv)"
            + (", here the same epoch." if last.epoch == best.epoch else "."))
    # stopped before train.epochs (harness.stopped_early; a stop on the final epoch shortens nothing)
    if trainer.should_stop and last.epoch + 1 < cfg.train.epochs:
        text += (f" The run stopped early, at epoch {last.epoch + 1} of {cfg.train.epochs} (early stopping, "
                 f"train.patience={cfg.train.patience}, or a pruned tuning trial), and that stop epoch was itself "
                 "chosen by reading this fold's BA: the last-epoch figure is fair only when early stopping does not "
                 f"trigger (train.patience >= train.epochs, here {cfg.train.epochs}, disables it; 0 does not).")
    return text
