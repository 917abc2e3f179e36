"""v6 (le3ba_v6.ipynb, docs/variants.md §6): v5's trunk with a CORAL ordinal head and a CE head (loss CORAL
+ 0.6 CE, prediction from the CORAL probabilities), frame dropout, stronger augmentation with
CoarseDropout, lower learning rates, a backbone freeze that is a no-op (0 epochs), SWA computed and
never used."""
import dataclasses

from harness.core.config import Config
from harness.core.registry import register_variant
from variants.v5 import FILM_GRU_NAMES, film_gru_trunk, v5_config

LR_HEAD = 1e-4


def build_model(cfg: Config):
    """SpineModelV6 (docs/variants.md §6.4): the v5 trunk with a CORAL ordinal head and a CE head on one
    hidden layer."""
    from harness.models.blocks import CoralCEHeads
    from harness.models.slice_model import SliceSequenceModel

    m = cfg.model
    trunk, width = film_gru_trunk(m)
    head = CoralCEHeads(width, m.head_hidden, m.dropout, m.head_dropout, m.ordinal_bias, bias=m.head_bias)
    return SliceSequenceModel(**trunk, head=head, names=FILM_GRU_NAMES | {"head": "heads"})


@register_variant("v6", "v5 trunk + CORAL head (+0.6 CE); frame dropout 0.15; CoarseDropout aug; weighted "
                  "sampler; mixup", build_model=build_model,
                  predict="harness.models.predictions:coral_probs", outputs=("logits", "ordinal"))
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
