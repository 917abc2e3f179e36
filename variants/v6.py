"""v6 (le3ba_v6.ipynb, VARIANTS.md §6): v5's trunk with a CORAL ordinal head and a CE head (loss CORAL
+ 0.6 CE, prediction from the CORAL probabilities), frame dropout, stronger augmentation with
CoarseDropout, lower learning rates, a backbone freeze that is a no-op (0 epochs), SWA computed and
never used."""
import dataclasses

from harness.config import Config
from harness.registry import register_variant
from variants.v5 import v5_config

LR_HEAD = 1e-4


@register_variant("v6", "v5 trunk + CORAL head (+0.6 CE); frame dropout 0.15; CoarseDropout aug; weighted "
                  "sampler; mixup", build_model="harness.models.slice_model:build_v6",
                  predict="harness.predictions:coral_probs")
def v6() -> Config:
    cfg = v5_config("v6")
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, crop_jitter=16, frame_dropout=0.15, augment="v6",
                                 tta=("none", "rbc0.1", "scale0.05")),
        model=dataclasses.replace(cfg.model, ordinal_bias=(-2.0, -2.95)),
        loss=dataclasses.replace(cfg.loss, name="coral_ce", ce_weight=0.6, label_smoothing=0.0),
        train=dataclasses.replace(cfg.train, lr_head=LR_HEAD, lr_backbone=1e-5, wd_head=0.03, wd_backbone=0.03,
                                  warmup_epochs=3, lr_floor=1e-6 / LR_HEAD, freeze_epochs=0, swa_lr=5e-6,
                                  swa_use_for_eval=False, mixup_alpha=0.2, patience=15, gate=0.10),
    )
