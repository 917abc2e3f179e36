"""v5 (le3ba_v5.ipynb, docs/variants.md §5): EffNetV2-S -> proj 256 -> BiGRU 2x128 -> attention pooling ->
FiLM level conditioning -> MLP; focal (gamma 2, LS 0.05, no weights); WeightedRandomSampler; DICOM
window; mixup (alpha 0.3); SWA from epoch 20, used for validation and checkpoints; hflip TTA."""
from harness.core.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from harness.core.registry import register_variant

LR_HEAD = 3e-4


def v5_config(variant: str = "v5") -> Config:
    return Config(
        variant=variant,
        data=DataConfig(intensity="dicom_window", clahe_clip=2.0, crop_radius=128, crop_jitter=12, img_size=256,
                        normalize="imagenet", augment="v5", sampler="weighted", tta=("none", "hflip"),
                        num_workers=2),
        # drop_path_rate: the notebook meant 0.1, but its override loop was a no-op (§12.5)
        model=ModelConfig(backbone="tf_efficientnetv2_s", pretrained=True, drop_path_rate=0.2, proj_dim=256,
                          seq_hidden=128, seq_layers=2, seq_dropout=0.4, attn_hidden=64, head_hidden=128,
                          dropout=0.4, head_dropout=0.2, head_bias=None),
        loss=LossConfig(name="focal", class_weight_rule="fixed", class_weights=(1.0, 1.0, 1.0), gamma=2.0,
                        label_smoothing=0.05, focal_form="notebook", aux_weight=0.0),
        train=TrainConfig(epochs=30, batch_size=8, drop_last=True, lr_head=LR_HEAD, lr_backbone=3e-5,
                          wd_head=0.05, wd_backbone=0.05, warmup_epochs=2, lr_floor=1e-6 / LR_HEAD, grad_clip=1.0,
                          swa_start_epoch=20, swa_lr=1e-5, swa_use_for_eval=True, swa_update_bn=False,
                          mixup_prob=0.5, mixup_alpha=0.3, patience=12, min_delta=0.003, gate=0.15),
    )


FILM_GRU_NAMES = dict(proj="feature_proj", sequence="gru", pool="attn_pool", level="film")


def film_gru_trunk(m):
    """v5/v6 shared trunk (docs/variants.md §5.4, §6.4): MLP proj, BiGRU, tanh attention pool, FiLM;
    parts and context width."""
    from harness.models.blocks import AttentionPool, FiLM
    from harness.models.slice_model import NUM_LEVELS, recurrent_trunk

    trunk, width = recurrent_trunk(m, "gru", mlp_proj=True)
    return dict(trunk, pool=AttentionPool(width, m.attn_hidden), level=FiLM(NUM_LEVELS, width)), width


def build_model(cfg: Config):
    """SpineModelV5 (docs/variants.md §5.4): the FiLM/GRU trunk and one MLP classifier."""
    from harness.models.slice_model import SliceSequenceModel, classifier_head

    trunk, width = film_gru_trunk(cfg.model)
    return SliceSequenceModel(**trunk, head=classifier_head(cfg.model, width),
                              names=FILM_GRU_NAMES | {"head": "classifier"})


@register_variant("v5", "BiGRU 2x128 + attention pool + FiLM; focal g2 LS0.05; weighted sampler; mixup; SWA used "
                  "for eval; hflip TTA", build_model=build_model)
def v5() -> Config:
    return v5_config()
