"""v4 (le3ba_with_aux_heads.ipynb, docs/variants.md §4): EffNetV2-S per slice -> proj 512 -> BiLSTM 2x256 ->
multi-head self-attention -> mean over slices -> concat level embedding 64 -> MLP, plus binary and
severity aux heads; focal loss (gamma 2.5, LS 0.1, clipped 1/sqrt(n) weights); progressive
level-by-label oversampling with strong augmentation for the copies.

The committed notebook does not parse (two missing commas, §4.8); this is the fixed copy that must
have produced the reported 74.9% BA."""
from harness.core.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from harness.core.registry import register_variant


def v4_config(variant: str = "v4") -> Config:
    return Config(
        variant=variant,
        data=DataConfig(intensity="minmax", clahe_clip=2.0, crop_radius=128, crop_jitter=0, img_size=256,
                        normalize="imagenet", augment="v4", strong_augment="v4_strong", sampler="progressive",
                        oversample_fixed_aug=True, tta=("none",), num_workers=2),
        model=ModelConfig(backbone="tf_efficientnetv2_s", pretrained=True, drop_path_rate=0.2, proj_dim=512,
                          seq_hidden=256, seq_layers=2, seq_dropout=0.4, attn_heads=4, level_dim=64,
                          head_hidden=128, dropout=0.4, head_dropout=0.4, aux_hidden=64, head_bias=None),
        loss=LossConfig(name="focal", class_weight_rule="inverse_sqrt", gamma=2.5, label_smoothing=0.1,
                        focal_form="notebook", aux_weight=0.1),
        train=TrainConfig(epochs=25, batch_size=8, drop_last=False, lr_head=3e-4, lr_backbone=3e-5,
                          wd_head=0.05, wd_backbone=0.05, warmup_epochs=2, lr_floor=0.0, grad_clip=None,
                          swa_start_epoch=None, patience=10, min_delta=0.005, gate=0.20),
    )


def build_model(cfg: Config):
    """SpineSeqAttentionWithAux (docs/variants.md §4.4): MLP proj, BiLSTM, MHA -> mean, level concat,
    main + aux heads."""
    from harness.models.blocks import LevelConcat, MainAuxHeads, SelfAttentionMeanPool
    from harness.models.slice_model import NUM_LEVELS, SliceSequenceModel, recurrent_trunk

    m = cfg.model
    trunk, width = recurrent_trunk(m, "lstm", mlp_proj=True)
    return SliceSequenceModel(
        **trunk,
        pool=SelfAttentionMeanPool(width, m.attn_heads, m.dropout),
        level=LevelConcat(NUM_LEVELS, m.level_dim),
        head=MainAuxHeads(width + m.level_dim, m.head_hidden, m.aux_hidden, m.dropout, bias=m.head_bias),
        names=dict(proj="feature_proj", sequence="lstm", pool="attention", level="level_embedding", head="heads"),
    )


@register_variant("v4", "BiLSTM 2x256 + self-attention + mean, level concat 64, aux heads; focal g2.5 LS0.1 "
                  "1/sqrt(n) weights; progressive oversampling", build_model=build_model,
                  outputs=("logits", "binary", "severity"))
def v4() -> Config:
    return v4_config()
