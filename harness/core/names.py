"""Names the config and the CLI check against before anything heavy is imported: the figures a
finished run holds for its selected epoch (best/<name>, which `harness tune` may optimise;
tests/test_competition_score.py holds them to what a real run logs) and the augmentation recipes
(harness.data.augment.RECIPES, which import albumentations and OpenCV)."""
from __future__ import annotations

import re

from harness.core.competition import CLASS_KEYS
from harness.core.errors import UsageError

# every figure harness.metrics.classification.ValidationScorer returns for an epoch (the competition
# ones for spinal runs)
VALIDATION = ("balanced_accuracy", "accuracy", "weighted_log_loss",
              *(f"{kind}/{c}" for kind in ("recall", "precision", "pred_count") for c in CLASS_KEYS),
              "competition_score_spinal", "competition/spinal_log_loss", "competition/any_severe_spinal_log_loss")
OBJECTIVES = tuple(f"best/{name}" for name in VALIDATION)  # what a tuning trial returns
SELECTED = OBJECTIVES + ("best/loss", "best/epoch")  # every best/* a run logs

RECIPE_NAMES = ("none", "v4", "v4_strong", "v10_strong", "v5", "v6", "v7", "v8", "rbc0.1", "hflip", "scale0.05")
# a variant's own recipe: 'package.module:function', function(api) -> Recipe (docs/architecture.md)
RECIPE_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_recipe(key: str, value: str) -> None:
    """A built-in recipe name, or the 'module:function' path of a variant's own recipe (imported when
    the dataset is built)."""
    if value not in RECIPE_NAMES and not RECIPE_PATH.fullmatch(value):
        raise UsageError(f"{key}={value!r} is not one of {', '.join(RECIPE_NAMES)}, nor a 'module:function' path")
