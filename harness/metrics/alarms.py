"""End-of-run health alarms: pure functions of the per-epoch history (MlflowEpochLogger.history).

Each alarm returns None (healthy) or a one-line description. Epochs are the history's positions
and are printed 1-based, as the console does. A value exactly at its threshold never fires.
"""
from __future__ import annotations

from scipy.stats import linregress

from harness.core.competition import CLASS_KEYS
from harness.core.config import AlarmConfig

BA = "val/balanced_accuracy"
MINORITY = ("moderate", "severe")
# BA values are ratios of counts, so real differences dwarf this; it only absorbs float noise such as
# 0.73 - 0.70 = 0.030000000000000027, which would otherwise fire "exactly at" a 0.03 threshold.
EPS = 1e-9

History = list[dict[str, float]]


def dead_class(history: History, minimum: int) -> str | None:
    """A class predicted fewer than `minimum` times on validation in an epoch after the first."""
    # epoch 1 is skipped: a barely trained head often predicts one class, which says nothing yet
    dead = {k: [i + 1 for i, h in enumerate(history) if i > 0 and h[f"val/pred_count/{k}"] < minimum]
            for k in CLASS_KEYS}
    parts = [f"{k} (epoch{'s' if len(e) > 1 else ''} {', '.join(map(str, e))})" for k, e in dead.items() if e]
    return f"fewer than {minimum} validation predictions: " + "; ".join(parts) if parts else None


def best_epoch(history: History) -> int:
    """Index of the best-BA epoch; the first on ties, as CheckpointSelector (strict >) keeps it."""
    return max(range(len(history)), key=lambda i: history[i][BA])  # max() keeps the first of equal keys


def majority_ceiling(history: History, normal_recall: float, minority_recall: float) -> str | None:
    """At the best-BA epoch: Normal/Mild recall above `normal_recall`, Moderate or Severe below `minority_recall`."""
    # the best-BA epoch, not the final one: the ceiling matters where the BA peak is. It can differ from
    # best/* (the selected epoch: the gated one once any epoch passed train.gate), hence the epoch in the text
    if not history:
        return None
    i = best_epoch(history)
    h = history[i]
    normal = h["val/recall/normal_mild"]
    low = [f"{k} {h[f'val/recall/{k}']:.3f}" for k in MINORITY if h[f"val/recall/{k}"] < minority_recall - EPS]
    if normal > normal_recall + EPS and low:
        return (f"at the best-BA epoch {i + 1} (BA {h[BA]:.3f}): recall normal_mild {normal:.3f} > {normal_recall:g} "
                f"while {', '.join(low)} < {minority_recall:g}")
    return None


def peak_then_decline(history: History, drop: float, fraction: float, min_epochs: int = 1) -> str | None:
    """Best BA more than `drop` above the final BA, reached at an epoch index below `fraction` of the
    epochs run; silent on runs shorter than `min_epochs` (a 2-epoch run has no 'first third')."""
    if len(history) < max(min_epochs, 1):
        return None
    n, i = len(history), best_epoch(history)
    best, final = history[i][BA], history[-1][BA]
    # n is the epochs actually run (early stopping included), not train.epochs
    if best - final > drop + EPS and i < n * fraction - EPS:
        return (f"best BA {best:.3f} at epoch {i + 1} of {n} (in the first {fraction:.0%} of the run), "
                f"final BA {final:.3f}: down {best - final:.3f} > {drop:g}")
    return None


def instability(history: History, window: int, spread: float, min_epochs: int = 1) -> str | None:
    """BA spread (max - min) over the last `window` epochs above `spread`; silent with fewer epochs
    than the window or `min_epochs`."""
    # max - min does not tell noise from trend: a run still climbing steadily at the end fires too
    if len(history) < max(window, min_epochs):
        return None
    bas = [h[BA] for h in history[-window:]]
    if max(bas) - min(bas) > spread + EPS:
        return (f"BA spread {max(bas) - min(bas):.3f} > {spread:g} over the last {window} epochs "
                f"({min(bas):.3f}-{max(bas):.3f})")
    return None


def overfitting(history: History, gap_growth: float, min_epochs: int = 3) -> str | None:
    """The val - train loss gap rising: positive least-squares slope and last gap > first gap + `gap_growth`."""
    # both conditions: the slope alone fires on noise-level drifts, the end-to-end growth alone on one bad
    # final epoch after a flat run; 3 epochs is the least that gives the slope any meaning
    if len(history) < max(min_epochs, 3):
        return None
    gaps = [h["val/loss"] - h["train/loss"] for h in history]
    slope = linregress(range(len(gaps)), gaps).slope  # NaN losses give a NaN slope: no alarm
    if slope > 0 and gaps[-1] - gaps[0] > gap_growth + EPS:
        return (f"val - train loss gap grew {gaps[0]:.3f} -> {gaps[-1]:.3f} "
                f"(+{gaps[-1] - gaps[0]:.3f} > {gap_growth:g}), slope {slope:+.4f}/epoch")
    return None


def health_alarms(history: History, cfg: AlarmConfig) -> dict[str, str]:
    """Alarm name -> description, only the alarms that fire, in a fixed order."""
    found = {
        "dead_class": dead_class(history, cfg.dead_class_min),
        "majority_ceiling": majority_ceiling(history, cfg.ceiling_normal_recall, cfg.ceiling_minority_recall),
        "peak_then_decline": peak_then_decline(history, cfg.peak_drop, cfg.peak_fraction, cfg.min_epochs),
        "instability": instability(history, cfg.instability_window, cfg.instability_spread, cfg.min_epochs),
        "overfitting": overfitting(history, cfg.overfit_gap_growth, cfg.min_epochs),
    }
    return {name: text for name, text in found.items() if text is not None}


def alarm_tags(alarms: dict[str, str]) -> dict[str, str]:
    """MLflow tags: harness.alarm.<name> = description, and harness.alarms = the names, comma-separated,
    or 'none'."""
    return {f"harness.alarm.{name}": text for name, text in alarms.items()} | {
        "harness.alarms": ",".join(alarms) or "none"}
