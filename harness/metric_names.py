"""The names of the figures a finished run holds for its selected epoch (best/<name>), which
`harness tune` may optimise. Plain names, no torch or sklearn, so a study spec is checked before
anything heavy is imported; tests/test_competition_score.py holds them to what a real run logs."""
from __future__ import annotations

CLASS_KEYS = ("normal_mild", "moderate", "severe")
# every figure harness.metrics.ValidationScorer returns for an epoch (the competition ones for spinal runs)
VALIDATION = ("balanced_accuracy", "accuracy", "weighted_log_loss",
              *(f"{kind}/{c}" for kind in ("recall", "precision", "pred_count") for c in CLASS_KEYS),
              "competition_score_spinal", "competition/spinal_log_loss", "competition/any_severe_spinal_log_loss")
OBJECTIVES = tuple(f"best/{name}" for name in VALIDATION)  # what a tuning trial returns
SELECTED = OBJECTIVES + ("best/loss", "best/epoch")  # every best/* a run logs
