"""The health alarms' thresholds: the `alarms.*` section of the config (harness.core.config holds the
other sections; harness.metrics.alarms computes the alarms)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.core.errors import UsageError


@dataclass(frozen=True)
class AlarmConfig:
    """Thresholds of the end-of-run health alarms (harness.metrics.alarms), computed from the epoch history."""

    min_epochs: int = 5
    """The alarms that read a trend (peak_then_decline, instability, overfitting) stay silent on a run
    of fewer epochs: two or three points are no trend."""
    dead_class_min: int = 3
    """dead_class: fires when a class gets fewer validation predictions than this in an epoch after the first."""
    ceiling_normal_recall: float = 0.90
    """majority_ceiling: Normal/Mild recall above this at the best-BA epoch..."""
    ceiling_minority_recall: float = 0.50
    """...while Moderate or Severe recall is below this."""
    peak_drop: float = 0.03
    """peak_then_decline: best BA more than this above the final BA..."""
    peak_fraction: float = 1 / 3
    """...and reached within the first this-fraction of the epochs run (the epochs before the best one
    number fewer than fraction x epochs run)."""
    instability_window: int = 5
    """instability: the last this-many epochs are compared (no alarm with fewer epochs)."""
    instability_spread: float = 0.03
    """instability: fires when max - min BA over the window exceeds this."""
    overfit_gap_growth: float = 0.1
    """overfitting: fires when the val - train loss gap rises (positive slope) and its last value
    exceeds its first by more than this, in loss units (nats; 3+ epochs needed)."""

    def __post_init__(self):
        if self.min_epochs < 1:
            raise UsageError(f"alarms.min_epochs must be at least 1, got {self.min_epochs}")
        if self.dead_class_min < 0:
            raise UsageError(f"alarms.dead_class_min must be >= 0, got {self.dead_class_min}")
        for key in ("ceiling_normal_recall", "ceiling_minority_recall"):
            if not 0 <= getattr(self, key) <= 1:
                raise UsageError(f"alarms.{key} must be within [0, 1], got {getattr(self, key)}")
        if not 0 < self.peak_fraction <= 1:
            raise UsageError(f"alarms.peak_fraction must be within (0, 1], got {self.peak_fraction}")
        if self.instability_window < 2:
            raise UsageError(f"alarms.instability_window must be at least 2, got {self.instability_window}")
        for key in ("peak_drop", "instability_spread", "overfit_gap_growth"):
            if getattr(self, key) < 0:
                raise UsageError(f"alarms.{key} must be >= 0, got {getattr(self, key)}")
