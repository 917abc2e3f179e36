"""v9 (le3ba_v9.ipynb, docs/variants.md §9): EffNetV2-S per slice -> Linear 512 -> BiGRU 2x512 ->
tanh attention pooling -> concat level embedding 256 -> MLP with prior bias; weighted CE [1, 4, 6]."""
from harness.core.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from harness.core.registry import register_variant


def build_model(cfg: Config):
    """SpineModelV9 (docs/variants.md §9.4): plain Linear proj, BiGRU, attention-MIL pool, level concat,
    MLP head with prior bias."""
    from harness.models.blocks import AttentionPool, LevelConcat
    from harness.models.slice_model import NUM_LEVELS, SliceSequenceModel, classifier_head, recurrent_trunk

    m = cfg.model
    trunk, width = recurrent_trunk(m, "gru", mlp_proj=False)
    return SliceSequenceModel(
        **trunk,
        pool=AttentionPool(width, m.attn_hidden),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=classifier_head(m, width + m.level_dim),
        names=dict(proj="feature_proj", sequence="gru", pool="attention", level="level_embed", head="classifier"),
    )


@register_variant("v9", "BiGRU 2x512 + attention MIL + level concat, fixed 50/350 window, weighted CE [1,4,6]",
                  build_model=build_model)
def v9() -> Config:
    return Config(
        variant="v9",
        data=DataConfig(intensity="fixed_window", window_center=50.0, window_width=350.0, clahe_clip=2.0,
                        crop_radius=256, crop_jitter=16, img_size=256, normalize="imagenet",
                        augment="v8", tta=("none", "rbc0.1"), num_workers=2),
        model=ModelConfig(backbone="tf_efficientnetv2_s", pretrained=True, drop_path_rate=0.2, proj_dim=512,
                          seq_hidden=512, seq_layers=2, seq_dropout=0.3, attn_hidden=256, level_dim=256,
                          head_hidden=512, dropout=0.35, head_dropout=0.175, head_bias=(2.0, -2.5, -3.0)),
        loss=LossConfig(name="weighted_ce", class_weights=(1.0, 4.0, 6.0)),
        train=TrainConfig(epochs=25, batch_size=12, drop_last=True, lr_head=1e-4, lr_backbone=1e-5,
                          wd_head=0.01, wd_backbone=0.03, warmup_epochs=2, lr_floor=1e-6, grad_clip=1.0,
                          swa_start_epoch=18, swa_lr=5e-6, swa_use_for_eval=False, patience=12,
                          min_delta=0.002, gate=0.20),
    )
