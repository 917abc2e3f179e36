"""The resolved config of one run, and the checks that need no data: variant defaults, then the
profile, then --config FILE, then --set. Light to import (no torch, MLflow or albumentations), so
every command checks its arguments in a fraction of a second, before the heavy imports."""
from __future__ import annotations

import os
from pathlib import Path

from harness.core.config import Config
from harness.core.errors import UsageError
from harness.core.overrides import apply_overrides, load_yaml
from harness.core.profiles import PROFILES
from harness.core.registry import Variant


def default_profile(data_dir: str | None) -> str:
    """smoke on the built-in demo (no --data-dir and no $RSNA_DATA_DIR), full on real data."""
    return "full" if (data_dir or os.environ.get("RSNA_DATA_DIR")) else "smoke"


def build_config(variant: Variant, fold: int, profile: str, config_file: str | None,
                 sets: dict, data_dir: str | None) -> Config:
    """Variant defaults, then the profile, then --config FILE, then --set, each layer checked."""
    if profile not in PROFILES:
        raise UsageError(f"--profile {profile!r} is not one of {', '.join(PROFILES)}")
    cfg = variant.defaults()
    cfg = apply_overrides(cfg, {"fold": fold, "profile": profile, "data_dir": data_dir}, "arguments")
    cfg = apply_overrides(cfg, PROFILES[profile](cfg), f"profile {profile}")
    if config_file:
        cfg = apply_overrides(cfg, load_yaml(config_file), f"--config {config_file}")
    cfg = apply_overrides(cfg, sets, "--set")
    check_weights(cfg)
    return cfg


def check_weights(cfg: Config) -> None:
    """A weights file that is named must exist and be used, whatever the profile: one line before
    any run exists, instead of a silent start from random weights."""
    m = cfg.model
    if m.weights_file is not None:
        path = Path(m.weights_file).expanduser()
        if not path.is_file():
            raise UsageError(f"model.weights_file: no such file: {m.weights_file}")
        if not m.pretrained:
            raise UsageError(f"model.weights_file={m.weights_file} is set but model.pretrained is false (the "
                             f"{cfg.profile} profile trains from random weights); add --set model.pretrained=true "
                             "to load it, or drop the file")
    # pretrained without a file is refused when the model is built, still before any run exists: after
    # the data checks, so that a wrong --data-dir is the first thing a user hears
