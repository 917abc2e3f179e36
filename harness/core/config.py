"""Typed, frozen run configuration: dataclasses grouped by concern, each field with a one-line
docstring (`harness config` prints them), each section checking its own values.

Layering the config (variant defaults, then --profile, then --config FILE.yaml, then --set) is
harness.core.overrides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.core.alarm_config import AlarmConfig
from harness.core.competition import CONDITIONS
from harness.core.errors import UsageError
from harness.core.names import check_recipe


@dataclass(frozen=True)
class DataConfig:
    """Which samples, and how a sample's pixels are made."""

    condition: str = "spinal_canal_stenosis"
    """Condition to train on; its series description follows from it (docs/data.md)."""
    other_series_points: str = "drop"
    """A level whose only points lie on a series of another type (spinal points on Sagittal T1):
    'drop' it, as the notebooks did, or 'use' that series. Either way it is counted and named."""
    num_slices: int = 7
    """Slices per sample, centred on the labelled instance."""
    slice_mode: str = "instance"
    """'instance': centre instance number +-k (the notebooks); 'position': neighbours in the order of
    ImagePositionPatient along the slice normal, within the labelled slice's orientation stack."""
    rescale: bool = False
    """Apply RescaleSlope/RescaleIntercept before the intensity mapping (no notebook did)."""
    intensity: str = "fixed_window"
    """'minmax' per slice, 'dicom_window' (min-max when the tags are absent), 'fixed_window', or
    'multiwindow' (v8: soft 50/350, bone 400/2000 and the DICOM window as three channels)."""
    window_center: float = 50.0
    """Centre of the fixed window (intensity='fixed_window')."""
    window_width: float = 350.0
    """Width of the fixed window (intensity='fixed_window')."""
    multiwindow_collapse: bool = True
    """intensity='multiwindow': convert the three windows to grey before CLAHE, as v8 ran (a defect:
    the model sees one grey image); False applies CLAHE per channel and keeps three real views."""
    clahe_clip: float = 2.0
    """CLAHE clip limit on the full slice; 0 turns CLAHE off."""
    clahe_grid: int = 8
    """CLAHE tile grid (grid x grid)."""
    crop_radius: int = 256
    """Half side of the crop window around (x, y), in source pixels."""
    crop_border: str = "clip"
    """'clip': the window is clipped at the image border and stretched to a square (the notebooks);
    'pad': the window keeps its size and the outside is zero."""
    crop_jitter: int = 0
    """Training-time shift of the crop centre, uniform in [-jitter, jitter] px, one draw per sample."""
    img_size: int = 256
    """Side of the resized crop fed to the model."""
    cache_resolution: str = "native"
    """Resolution of the prepared crop regions: 'native' source pixels (the notebooks: crop, then resize),
    or 'output': already scaled by img_size / (2 crop_radius), the jitter then rounded to output pixels
    (a cache that many times smaller; pixels measured in benchmarks/fullscale.md)."""
    channels: str = "grey3"
    """'grey3': each slice an RGB image (grey replicated, or the three windows), sample (S, 3, H, W);
    'stack': the S grey slices as the channels of one image (v7), sample (S, H, W)."""
    normalize: str = "imagenet"
    """'imagenet' mean/std standardisation of pixel/255 (channels='stack': the grey mean/std of the
    three), or 'none' (pixel/255: v7, a defect with an ImageNet-pretrained backbone)."""
    blank_slice: str = "pixel"
    """A missing or unreadable slice is 'pixel' zero (black, i.e. -mean/std after normalisation, as the
    notebooks) or 'normalized' zero (the mean grey after normalisation)."""
    frame_dropout: float = 0.0
    """Training: each non-centre slice is zeroed (after normalisation) with this probability (v6)."""
    augment: str = "none"
    """Training augmentation recipe (harness.data.augment.RECIPES)."""
    strong_augment: str = "none"
    """Recipe for the oversampled copies of sampler='progressive' (v4/v10 'strong_aug')."""
    augment_per_slice: bool = True
    """Draw augmentation parameters per slice, as the notebooks did (the slices then disagree
    geometrically); False draws once per sample so the slices stay aligned."""
    augment_api: str = "1.x"
    """Meaning of the notebooks' albumentations arguments: '1.x' (what they were written for) or
    '2.x' (what albumentations 2 does with them: some silently ignored; README "Known defects", 11)."""
    oversample_fixed_aug: bool = True
    """sampler='progressive': each oversampled copy gets the same augmentation every epoch (the
    notebooks re-seeded per row; a quirk under albumentations 1.x)."""
    sampler: str = "shuffle"
    """'shuffle', 'weighted' (WeightedRandomSampler 1/n per class, with replacement, len(train) draws),
    or 'progressive' (v4/v10 level-by-label oversampling with strong-augmentation copies)."""
    tta: tuple[str, ...] = ("none",)
    """Augmentation recipes averaged at the final evaluation; ('none',) means no TTA."""
    cache: bool = True
    """Read the deterministic part of the pipeline from the preprocessing cache (built on first use)."""
    cache_dir: str | None = None
    """Folder of the preprocessing cache; None: $HARNESS_HOME/cache."""
    num_workers: int = 0
    """DataLoader worker processes (the cache build uses the free cores regardless); kept alive across epochs."""
    prefetch_factor: int = 4
    """Batches each loader worker prepares ahead (with num_workers > 0), so a GPU step never waits."""
    num_folds: int = 5
    """StratifiedGroupKFold splits (shared by every variant)."""
    fold_seed: int = 42
    """StratifiedGroupKFold shuffle seed (shared by every variant)."""

    def __post_init__(self):
        _choice("data.condition", self.condition, tuple(CONDITIONS))
        _choice("data.other_series_points", self.other_series_points, ("drop", "use"))
        _choice("data.slice_mode", self.slice_mode, ("instance", "position"))
        _choice("data.intensity", self.intensity, ("minmax", "dicom_window", "fixed_window", "multiwindow"))
        _choice("data.crop_border", self.crop_border, ("clip", "pad"))
        _choice("data.cache_resolution", self.cache_resolution, ("native", "output"))
        _choice("data.channels", self.channels, ("grey3", "stack"))
        _choice("data.normalize", self.normalize, ("imagenet", "none"))
        _choice("data.blank_slice", self.blank_slice, ("pixel", "normalized"))
        _choice("data.sampler", self.sampler, ("shuffle", "weighted", "progressive"))
        _choice("data.augment_api", self.augment_api, ("1.x", "2.x"))
        for key in ("augment", "strong_augment"):
            check_recipe(f"data.{key}", getattr(self, key))
        for recipe in self.tta:
            check_recipe("data.tta", recipe)
        if self.channels == "stack" and self.intensity == "multiwindow" and not self.multiwindow_collapse:
            raise UsageError("data.channels=stack needs one grey channel per slice; it cannot carry "
                             "intensity=multiwindow with multiwindow_collapse=false")
        if not 0 <= self.frame_dropout < 1:
            raise UsageError(f"data.frame_dropout must be in [0, 1), got {self.frame_dropout}")
        if self.num_slices < 1 or self.num_slices % 2 == 0:
            raise UsageError(f"data.num_slices must be a positive odd number, got {self.num_slices}")
        for key in ("crop_radius", "img_size"):
            if getattr(self, key) < 1:
                raise UsageError(f"data.{key} must be positive, got {getattr(self, key)}")
        if self.crop_jitter < 0 or self.clahe_clip < 0 or self.window_width <= 0:
            raise UsageError("data.crop_jitter and data.clahe_clip must be >= 0, data.window_width > 0")
        if self.num_folds < 2:
            raise UsageError(f"data.num_folds must be at least 2, got {self.num_folds}")
        if self.num_workers < 0 or self.prefetch_factor < 1:
            raise UsageError("data.num_workers must be >= 0 and data.prefetch_factor >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. Variants read the fields they use; the backbone fields are shared by all."""

    backbone: str = "tf_efficientnetv2_s"
    """timm model name of the per-slice feature extractor (num_classes=0)."""
    pretrained: bool = True
    """Start the backbone from weights_file; False trains from random weights."""
    weights_file: str | None = None
    """Local backbone weights (.safetensors, .pth or .bin). Never downloaded."""
    drop_path_rate: float = 0.2
    """Stochastic depth of the backbone (torchvision's effnet_v2_s default, active in the notebooks)."""
    proj_dim: int = 512
    """Width of the projection after the backbone."""
    seq_hidden: int = 512
    """Hidden size per direction of the bidirectional slice-sequence RNN."""
    seq_layers: int = 2
    """Layers of the slice-sequence RNN."""
    seq_dropout: float = 0.3
    """Dropout between RNN layers."""
    attn_hidden: int = 256
    """Hidden size of the tanh attention pooling over slices."""
    level_dim: int = 256
    """Size of the level embedding concatenated to the pooled features."""
    head_hidden: int = 512
    """Hidden width of the classifier MLP."""
    dropout: float = 0.35
    """Dropout before the classifier's first Linear."""
    head_dropout: float = 0.175
    """Dropout before the classifier's last Linear."""
    head_bias: tuple[float, ...] | None = None
    """Initial bias of the final layer (one per class); None keeps PyTorch's default init."""
    attn_heads: int = 4
    """Heads of the multi-head self-attention over slices (v4/v10)."""
    aux_hidden: int = 64
    """Hidden width of the auxiliary binary/severity heads (v4/v10)."""
    ordinal_hidden: int = 128
    """Hidden width of the ordinal head (v7); v6's CORAL head reads head_hidden."""
    ordinal_bias: tuple[float, ...] = (-2.0, -2.95)
    """Initial thresholds of v6's CORAL head: sigmoid gives P(Y>0)=0.119, P(Y>1)=0.050."""
    stem_side_scale: float = 0.1
    """v7's 7-channel stem: outer slices start at this times the mean pretrained RGB kernel."""

    def __post_init__(self):
        if self.head_bias is not None and len(self.head_bias) != 3:
            raise UsageError(f"model.head_bias needs 3 values, got {len(self.head_bias)}")
        if self.pretrained and self.weights_file is not None and not Path(self.weights_file).is_file():
            raise UsageError(f"model.weights_file: no such file: {self.weights_file}")


@dataclass(frozen=True)
class LossConfig:
    """Training objective."""

    name: str = "weighted_ce"
    """Loss function (harness.losses.LOSSES): weighted_ce, focal, coral_ce (v6), focal_ordinal (v7)."""
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Per-class weights (Normal/Mild, Moderate, Severe) when class_weight_rule='fixed'."""
    class_weight_rule: str = "fixed"
    """'fixed' (class_weights), 'inverse' (1/n, sum 3: baseline) or 'inverse_sqrt' (1/sqrt(n), sum 3,
    clipped to [0.3, 2]: v4), the last two from the training fold's class counts before oversampling."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy."""
    gamma: float = 2.0
    """Focusing exponent of the focal loss."""
    focal_form: str = "notebook"
    """'notebook': pt = exp(-weighted smoothed CE), so the class weights also change the focusing
    (a defect: README "Known defects", 8); 'textbook': pt = softmax probability of the true class."""
    aux_weight: float = 0.1
    """Weight of the auxiliary binary + severity CE terms (v4/v10); 0 turns them off."""
    ce_weight: float = 0.6
    """v6: weight of the CE head's loss added to the CORAL loss."""
    ordinal_weight: float = 0.5
    """v7: weight of the ordinal BCE added to the focal loss."""

    def __post_init__(self):
        _choice("loss.class_weight_rule", self.class_weight_rule, ("fixed", "inverse", "inverse_sqrt"))
        _choice("loss.focal_form", self.focal_form, ("notebook", "textbook"))
        if len(self.class_weights) != 3 or min(self.class_weights) < 0:
            raise UsageError(f"loss.class_weights needs 3 non-negative values, got {list(self.class_weights)}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule and the run-level rules of the trainer."""

    epochs: int = 25
    """Training epochs."""
    batch_size: int = 12
    """Samples per batch (train and validation)."""
    drop_last: bool = True
    """Drop the last incomplete training batch."""
    lr_head: float = 1e-4
    """Learning rate of every non-backbone parameter group."""
    lr_backbone: float = 1e-5
    """Learning rate of the backbone group."""
    wd_head: float = 0.01
    """AdamW weight decay of every non-backbone group."""
    wd_backbone: float = 0.03
    """AdamW weight decay of the backbone group."""
    warmup_epochs: float = 2.0
    """Linear warmup from LR 0, stepped per batch."""
    lr_floor: float = 1e-6
    """Floor of the LR multiplier after warmup (a multiplier, as in the notebooks, not an absolute LR)."""
    grad_clip: float | None = 1.0
    """Max gradient norm (after AMP unscale); None disables clipping."""
    amp: bool = True
    """Mixed precision on CUDA (see amp_dtype). Inert on CPU."""
    amp_dtype: str = "auto"
    """AMP precision: 'auto' (bf16 where the GPU supports it, e.g. A100/H100/RTX 30+; else fp16 with a
    gradient scaler, e.g. T4/P100), 'bf16' or 'fp16'."""
    swa_start_epoch: int | None = 18
    """Epoch index from which SWALR replaces the schedule and the weights are averaged; None: no SWA."""
    swa_lr: float = 5e-6
    """SWALR target learning rate."""
    swa_anneal_batches: int = 10
    """SWALR anneal length (stepped per batch, as the notebooks did)."""
    swa_use_for_eval: bool = False
    """Validate and checkpoint the averaged model during SWA (v5); False: computed, unused (v6-v9)."""
    swa_update_bn: bool = False
    """Recompute the averaged model's BatchNorm statistics over the training data before using it
    (no notebook did: v5 evaluated its SWA model with the live model's statistics)."""
    freeze_epochs: int = 0
    """Backbone groups are frozen (requires_grad=False) for this many epochs (v7, v8: 2), still in
    train mode, so BatchNorm statistics keep updating, as the notebooks did."""
    mixup_prob: float = 0.0
    """Probability that a training batch is mixed (v5-v7: 0.5); never during SWA."""
    mixup_alpha: float = 0.2
    """Mixup's Beta(alpha, alpha) parameter (v5: 0.3, v6/v7: 0.2)."""
    mixup_same_level: bool = False
    """Pair each sample only with one of the same level. The notebooks mixed any pair and kept the
    first sample's level index (a defect: the mixed image gets one level's embedding)."""
    lr_first_step_zero: bool = True
    """The warmup multiplier starts at step/W, so the first update uses LR 0 (as the notebooks);
    False starts at (step+1)/W."""
    patience: int = 12
    """Early stopping: epochs without a BA gain above min_delta."""
    min_delta: float = 0.002
    """Early stopping: smallest BA gain that counts."""
    gate: float = 0.20
    """Checkpoint gate: an epoch is saved only if min(recall Moderate, recall Severe) >= gate."""
    gate_fallback: bool = True
    """If no epoch passes the gate, keep the best-BA epoch (True) or fail as the notebooks did (False)."""
    fallback_prediction: str = "train_prior"
    """What the competition score predicts for a labelled validation level the model cannot see (no
    coordinate or image): 'train_prior' (the training fold's class frequencies) or 'uniform'."""
    seed: int = 42
    """Seed of Python, NumPy and torch."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda[:N]'."""
    devices: int = 1
    """Processes of one DistributedDataParallel run (one per GPU; gloo processes on CPU). Each takes
    batch_size / devices samples of every batch, so the schedule and global batch stay the variant's."""
    channels_last: bool = True
    """NHWC weights and activations on CUDA (faster convolutions with AMP on tensor cores). Inert on CPU."""
    compile: bool = False
    """torch.compile the model on CUDA (minutes of compilation first; worth it for long runs). Inert on CPU."""
    deterministic: bool = False
    """Deterministic CUDA kernels, and no cuDNN autotuning (cudnn.benchmark is on otherwise). Slower."""
    threads: int = 0
    """0: chosen at start from the free cores (harness.core.threads); N: exactly N intra-op threads."""

    def __post_init__(self):
        _choice("train.amp_dtype", self.amp_dtype, ("auto", "bf16", "fp16"))
        _choice("train.fallback_prediction", self.fallback_prediction, ("train_prior", "uniform"))
        if self.devices < 1 or self.batch_size % self.devices:
            raise UsageError(f"train.devices must be at least 1 and divide train.batch_size ({self.batch_size}), "
                             f"got {self.devices}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise UsageError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("lr_head", "lr_backbone", "swa_lr"):
            if getattr(self, key) <= 0:
                raise UsageError(f"train.{key} must be positive, got {getattr(self, key)}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UsageError(f"train.warmup_epochs must be within [0, train.epochs], got {self.warmup_epochs}")
        if not 0 <= self.gate <= 1:
            raise UsageError(f"train.gate must be within [0, 1], got {self.gate}")
        if self.freeze_epochs < 0 or not 0 <= self.mixup_prob <= 1 or self.mixup_alpha <= 0:
            raise UsageError("train.freeze_epochs must be >= 0, train.mixup_prob in [0, 1], train.mixup_alpha > 0")
        if self.swa_start_epoch is not None and self.swa_start_epoch < 0:
            raise UsageError(f"train.swa_start_epoch must be >= 0, got {self.swa_start_epoch}")
        if self.threads < 0:
            raise UsageError(f"train.threads must be >= 0 (0: chosen from the free cores), got {self.threads}")


@dataclass(frozen=True)
class Config:
    """Everything that defines a run. Saved verbatim with every run and checkpoint."""

    variant: str = ""
    """Registered variant name (v9, ...)."""
    fold: int = 0
    """Validation fold index."""
    profile: str = "full"
    """Profile applied on top of the variant defaults ('smoke' or 'full')."""
    data_dir: str | None = None
    """Dataset root in the Kaggle layout; None uses the built-in demo dataset."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    alarms: AlarmConfig = field(default_factory=AlarmConfig)

    def __post_init__(self):
        if not 0 <= self.fold < self.data.num_folds:
            raise UsageError(f"fold must be within 0-{self.data.num_folds - 1}, got {self.fold}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, as logged to MLflow params."""
        return dict(flatten(self.to_dict()))


def flatten(d: Mapping[str, Any], prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _choice(key: str, value: str, allowed: tuple[str, ...]):
    if value not in allowed:
        raise UsageError(f"{key}={value!r} is not one of {', '.join(allowed)}")
