"""v8 (le3ba_v8.ipynb, docs/variants.md §8): "three windows" (collapsed to grey before CLAHE, the defect of
§8.8) per slice -> EffNetV2-S -> learned global slice weights -> concat level embedding 256 -> MLP with
a prior bias; weighted CE [1, 2, 4]; plain shuffle; 2-epoch backbone freeze; SWA computed, unused."""
from harness.core.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from harness.core.registry import register_variant


def build_model(cfg: Config):
    """SpineModelV8 (docs/variants.md §8.4): no projection or RNN; learned global slice weights, level
    concat, MLP head."""
    from harness.models.backbone import create_backbone
    from harness.models.blocks import LevelConcat, SliceAggregator
    from harness.models.slice_model import NUM_LEVELS, SliceSequenceModel, classifier_head

    m = cfg.model
    backbone = create_backbone(m)
    return SliceSequenceModel(
        backbone=backbone, proj=None, sequence=None,
        pool=SliceAggregator(cfg.data.num_slices),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=classifier_head(m, backbone.num_features + m.level_dim),
        names=dict(pool="aggregator", level="level_embed", head="classifier"),
    )


@register_variant("v8", "learned global slice weights + level concat 256, prior bias; 3-window input "
                  "(collapsed); weighted CE [1,2,4]; 2-epoch freeze", build_model=build_model)
def v8() -> Config:
    return Config(
        variant="v8",
        data=DataConfig(intensity="multiwindow", multiwindow_collapse=True, clahe_clip=2.0, crop_radius=192,
                        crop_jitter=16, img_size=256, normalize="imagenet", augment="v8", sampler="shuffle",
                        tta=("none", "rbc0.1"), num_workers=2),
        model=ModelConfig(backbone="tf_efficientnetv2_s", pretrained=True, drop_path_rate=0.2, level_dim=256,
                          head_hidden=512, dropout=0.35, head_dropout=0.175, head_bias=(2.0, -2.5, -3.0)),
        loss=LossConfig(name="weighted_ce", class_weight_rule="fixed", class_weights=(1.0, 2.0, 4.0)),
        train=TrainConfig(epochs=25, batch_size=12, drop_last=True, lr_head=1e-4, lr_backbone=1e-5,
                          wd_head=0.03, wd_backbone=0.03, warmup_epochs=2, lr_floor=1e-6, grad_clip=1.0,
                          freeze_epochs=2, swa_start_epoch=18, swa_lr=5e-6, swa_use_for_eval=False,
                          patience=12, min_delta=0.002, gate=0.20),
    )
