"""Profiles: overrides applied on top of a variant's defaults.

`full` is the variant as its notebook ran. `smoke` shrinks any variant to minutes on a CPU without
changing its structure: the tiny timm test backbone with random weights, 64-px inputs with the crop
window and jitter scaled by the same factor (so a variant's field of view relative to its input is
kept), and a schedule compressed to fewer epochs with warmup and SWA at the same fractions.
The backbone learns at the head's rate: its lower rate protects pretrained weights, and a random
backbone has none. Loading runs in the main process, whose slice cache then lives across epochs.
"""
from __future__ import annotations

from typing import Any, Callable

from harness.config import Config

SMOKE_IMG = 64
SMOKE_EPOCHS = 8


def smoke(cfg: Config) -> dict[str, Any]:
    d, t = cfg.data, cfg.train
    scale = SMOKE_IMG / d.img_size
    frac = SMOKE_EPOCHS / t.epochs
    out = {
        "model.backbone": "test_efficientnet", "model.pretrained": False, "model.weights_file": None,
        "data.img_size": SMOKE_IMG,
        "data.crop_radius": max(1, round(d.crop_radius * scale)),
        "data.crop_jitter": round(d.crop_jitter * scale),
        "data.num_workers": 0,
        "train.epochs": SMOKE_EPOCHS,
        "train.lr_backbone": t.lr_head,
        "train.warmup_epochs": round(t.warmup_epochs * frac, 2),
        "train.patience": max(2, round(t.patience * frac)),
        "train.device": "cpu",
    }
    if t.swa_start_epoch is not None:
        out["train.swa_start_epoch"] = round(t.swa_start_epoch * frac)
    return out


def full(cfg: Config) -> dict[str, Any]:
    return {}


PROFILES: dict[str, Callable[[Config], dict[str, Any]]] = {"smoke": smoke, "full": full}
