"""v7 (le3ba_v7.ipynb, docs/variants.md §7): 2.5D: the 7 grey slices as the 7 channels of one image, a new
7-channel stem on EffNetV2-S, FiLM on the pooled features, a CE head and an ordinal head (prediction
0.6 softmax + 0.4 ordinal); focal + 0.5 ordinal BCE; weighted sampler; mixup; 2-epoch backbone
freeze; 224 px without ImageNet normalisation."""
from harness.core.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from harness.core.registry import register_variant

LR_HEAD = 2e-4


def build_model(cfg: Config):
    """Spine25DModel (docs/variants.md §7.4): S-channel stem on EfficientNet-V2-S, FiLM on the pooled
    vector, CE + ordinal heads."""
    from harness.models.backbone import create_backbone
    from harness.models.blocks import FiLM, MLPHead
    from harness.models.slice_model import NUM_LEVELS, classifier_head
    from harness.models.stack_model import SliceStackModel, slice_stem

    m = cfg.model
    backbone = create_backbone(m)  # 3-channel, so pretrained weights load as published
    backbone.conv_stem = slice_stem(backbone.conv_stem, cfg.data.num_slices, m.stem_side_scale)
    width = backbone.num_features
    return SliceStackModel(backbone, FiLM(NUM_LEVELS, width), classifier_head(m, width),
                           MLPHead(width, m.ordinal_hidden, 2, m.head_dropout))


@register_variant("v7", "2.5D: 7 slices as channels, 7-ch stem + EffNetV2-S, FiLM, CE + ordinal heads; focal + "
                  "0.5 ordinal; 2-epoch freeze", build_model=build_model,
                  predict="harness.models.predictions:ce_ordinal_mix", outputs=("logits", "ordinal"))
def v7() -> Config:
    return Config(
        variant="v7",
        data=DataConfig(intensity="dicom_window", clahe_clip=2.0, crop_radius=112, crop_jitter=14, img_size=224,
                        channels="stack", normalize="none", augment="v7", augment_per_slice=False,
                        sampler="weighted", tta=("none", "rbc0.1", "scale0.05"), num_workers=2),
        model=ModelConfig(backbone="tf_efficientnetv2_s", pretrained=True, drop_path_rate=0.2, head_hidden=256,
                          dropout=0.3, head_dropout=0.15, ordinal_hidden=128, stem_side_scale=0.1, head_bias=None),
        loss=LossConfig(name="focal_ordinal", class_weight_rule="fixed", class_weights=(1.0, 1.0, 1.0), gamma=2.0,
                        label_smoothing=0.0, ordinal_weight=0.5, aux_weight=0.0),
        train=TrainConfig(epochs=30, batch_size=16, drop_last=True, lr_head=LR_HEAD, lr_backbone=2e-5,
                          wd_head=0.03, wd_backbone=0.03, warmup_epochs=3, lr_floor=1e-6 / LR_HEAD, grad_clip=1.0,
                          freeze_epochs=2, swa_start_epoch=20, swa_lr=5e-6, swa_use_for_eval=False,
                          mixup_prob=0.5, mixup_alpha=0.2, patience=12, min_delta=0.003, gate=0.15),
    )
