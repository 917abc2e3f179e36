"""v10 (le3ba_v10.ipynb, docs/variants.md §10): v4 re-implemented with its syntax fixed, focal alpha fixed
at [1, 2, 4], gradient clipping 1.0, an LR floor, the dead-class warning, and a strong augmentation
whose ElasticTransform has no alpha_affine."""
import dataclasses

from harness.core.config import Config
from harness.core.registry import register_variant
from variants.v4 import build_model as build_v4_model  # SpineModelV10 (docs/variants.md §10.4) is v4's model unchanged
from variants.v4 import v4_config


@register_variant("v10", "v4's model and data + focal alpha [1,2,4], grad clip 1.0, LR floor 1e-6, dead-class "
                  "warning", build_model=build_v4_model, outputs=("logits", "binary", "severity"))
def v10() -> Config:
    cfg = v4_config("v10")
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, strong_augment="v10_strong"),
        loss=dataclasses.replace(cfg.loss, class_weight_rule="fixed", class_weights=(1.0, 2.0, 4.0)),
        train=dataclasses.replace(cfg.train, lr_floor=1e-6, grad_clip=1.0),
    )
