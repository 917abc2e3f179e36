"""Profiles: overrides applied on top of a variant's defaults.

`full` is the variant as its notebook ran. `smoke` shrinks any variant to minutes on a CPU without
changing its structure: the tiny timm test backbone with random weights, 64-px inputs with the crop
window scaled by the same factor (so a variant's field of view relative to its input is
kept), and a schedule compressed to fewer epochs with warmup, freeze and SWA at the same fractions.
Two rules exist because smoke starts from random weights and trains for minutes, not hours
(measured on the demo, v9 fold 0, README "Smoke profile"):
- every group learns at SMOKE_LR: the notebooks' 1e-4 / 1e-5 are fine-tuning rates for a pretrained
  backbone, and a random one barely moves at them in 8 epochs;
- no training augmentation (nor the strong recipe of oversampled copies) or crop jitter: they
  regularise long runs, and in an 8-epoch run on a random backbone they stop it learning at all.
  `--set data.augment=...` puts a recipe back. Samplers, mixup and freezes stay: they are structure.
Loading runs in the main process: samples come from the preprocessing cache, and at 64 px worker
processes would cost more to start than they save.
"""
from __future__ import annotations

from typing import Any, Callable

from harness.core.config import Config

SMOKE_IMG = 64
SMOKE_EPOCHS = 8
SMOKE_LR = 1e-3


def smoke(cfg: Config) -> dict[str, Any]:
    d, t = cfg.data, cfg.train
    scale = SMOKE_IMG / d.img_size
    frac = SMOKE_EPOCHS / t.epochs
    out = {
        "model.backbone": "test_efficientnet", "model.pretrained": False, "model.weights_file": None,
        "data.img_size": SMOKE_IMG,
        "data.crop_radius": max(1, round(d.crop_radius * scale)),
        "data.crop_jitter": 0,
        "data.augment": "none",
        "data.strong_augment": "none",
        "data.num_workers": 0,
        "train.epochs": SMOKE_EPOCHS,
        "train.lr_head": SMOKE_LR,
        "train.lr_backbone": SMOKE_LR,
        "train.warmup_epochs": round(t.warmup_epochs * frac, 2),
        "train.patience": max(2, round(t.patience * frac)),
        "train.device": "cpu",
    }
    if t.swa_start_epoch is not None:
        out["train.swa_start_epoch"] = round(t.swa_start_epoch * frac)
    if t.freeze_epochs:  # a freeze stays a freeze, at the same fraction of the run
        out["train.freeze_epochs"] = max(1, round(t.freeze_epochs * frac))
    return out


def full(cfg: Config) -> dict[str, Any]:
    return {}


PROFILES: dict[str, Callable[[Config], dict[str, Any]]] = {"smoke": smoke, "full": full}
