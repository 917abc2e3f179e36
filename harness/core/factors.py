"""The named factors a notebook version changes, and the config difference between two variants grouped
into them (`harness diff A B`).

Every config key belongs to exactly one factor, or to the setup (which data, which fold, which device,
how fast: nothing a recipe is made of); tests/test_factors.py holds every key of harness.core.config to
that, so a new key must be given a place. The model factor also holds what is not a key: the variant's
model builder and its prediction rule. Keys that only make sense together sit in one factor, declared
once in `Factor.coupled`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.core.config import Config
from harness.core.config_view import as_plain, key_docs
from harness.core.errors import UsageError, did_you_mean
from harness.core.variant import Variant, reference


@dataclass(frozen=True)
class Factor:
    """One thing a competitor changes between versions, as the config keys that make it up."""

    name: str
    """What `--take` and `--factors` call it."""
    title: str
    """What a competitor calls it."""
    keys: tuple[str, ...]
    """Its dotted config keys."""
    coupled: dict[str, str] = field(default_factory=dict)
    """Keys held here because they only work together with the rest: key -> why."""


FACTORS: tuple[Factor, ...] = (
    Factor("pixels", "pixels: intensity, window, CLAHE, rescale",
           ("data.rescale", "data.intensity", "data.window_center", "data.window_width", "data.multiwindow_collapse",
            "data.clahe_clip", "data.clahe_grid", "data.normalize", "data.blank_slice")),
    Factor("crop", "crop and slices: radius, jitter, border, slice order",
           ("data.num_slices", "data.slice_mode", "data.crop_radius", "data.crop_border", "data.crop_jitter",
            "data.img_size", "data.cache_resolution")),
    Factor("augmentation", "augmentation",
           ("data.augment", "data.strong_augment", "data.augment_per_slice", "data.augment_api",
            "data.oversample_fixed_aug", "data.frame_dropout")),
    Factor("sampling", "sampling", ("data.sampler",)),
    Factor("loss", "loss and class weights",
           ("loss.name", "loss.class_weights", "loss.class_weight_rule", "loss.label_smoothing", "loss.gamma",
            "loss.focal_form", "loss.aux_weight", "loss.ce_weight", "loss.ordinal_weight")),
    Factor("optimiser", "optimiser and schedule: learning rates, weight decay, warmup, floor, clipping",
           ("train.epochs", "train.batch_size", "train.drop_last", "train.lr_head", "train.lr_backbone",
            "train.wd_head", "train.wd_backbone", "train.warmup_epochs", "train.lr_floor", "train.grad_clip",
            "train.lr_first_step_zero")),
    Factor("regularisation", "regularisation and averaging: dropout, drop path, mixup, SWA, freeze",
           ("model.drop_path_rate", "model.dropout", "model.head_dropout", "model.seq_dropout", "train.mixup_prob",
            "train.mixup_alpha", "train.mixup_same_level", "train.swa_start_epoch", "train.swa_lr",
            "train.swa_anneal_batches", "train.swa_use_for_eval", "train.swa_update_bn", "train.freeze_epochs")),
    Factor("model", "model: the builder and model.*",
           ("model.backbone", "model.proj_dim", "model.seq_hidden", "model.seq_layers", "model.attn_hidden",
            "model.level_dim", "model.head_hidden", "model.head_bias", "model.attn_heads", "model.aux_hidden",
            "model.ordinal_hidden", "model.ordinal_bias", "model.stem_side_scale", "data.channels"),
           coupled={"data.channels": "the slices as one image's channels ('stack', v7) only fit a stem built for "
                                     "them, and one RGB image per slice ('grey3') only a per-slice backbone"}),
    Factor("evaluation", "evaluation: TTA and the checkpoint gate",
           ("data.tta", "train.gate", "train.gate_fallback", "train.patience", "train.min_delta",
            "train.fallback_prediction")),
)
BY_NAME = {f.name: f for f in FACTORS}
NAMES = tuple(BY_NAME)

SETUP = ("variant", "fold", "profile", "data_dir", "data.condition", "data.other_series_points", "data.cache",
         "data.cache_dir", "data.num_workers", "data.prefetch_factor", "data.num_folds", "data.fold_seed",
         "model.pretrained", "model.weights_file", "train.amp", "train.amp_dtype", "train.seed", "train.device",
         "train.devices", "train.channels_last", "train.compile", "train.deterministic", "train.threads")
"""Keys that say which data, fold and machine, not what the recipe is; plus every alarms.* key (alarms watch a
run and change nothing in it). They are never taken from another variant."""

BUILDER, PREDICTION = "builder", "prediction"  # the model factor's two entries that are not config keys


def factor_of(key: str) -> str | None:
    """The factor a config key belongs to; None for the setup."""
    for f in FACTORS:
        if key in f.keys:
            return f.name
    return None


def parse_factors(text: str, flag: str) -> tuple[str, ...]:
    """'loss,sampling' -> the named factors in their declared order; an unknown name is one line."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{flag}: name at least one factor ({', '.join(NAMES)})")
    for name in names:
        if name not in BY_NAME:
            raise UsageError(f"{flag}: unknown factor {name!r}{did_you_mean(name, NAMES)}; factors: {', '.join(NAMES)}")
    if len(set(names)) != len(names):
        raise UsageError(f"{flag}: a factor is named twice")
    return tuple(n for n in NAMES if n in names)


@dataclass(frozen=True)
class Change:
    """One key (or the builder, or the prediction rule) that differs between two variants."""

    key: str
    a: Any
    b: Any
    doc: str


def model_parts(variant: Variant) -> dict[str, str]:
    """The model factor's entries that are code, not keys: the builder and the prediction rule, as paths."""
    return {BUILDER: reference(variant.model_builder), PREDICTION: reference(variant.prediction)}


def differences(a: Variant, b: Variant, cfg_a: Config | None = None, cfg_b: Config | None = None
                ) -> tuple[dict[str, list[Change]], list[Change]]:
    """({factor: changes, in declared order, only factors that changed}, setup changes) between the
    variants' defaults (or the configs given)."""
    docs = key_docs()
    flat_a, flat_b = (cfg_a or a.defaults()).flat(), (cfg_b or b.defaults()).flat()
    by_factor: dict[str, list[Change]] = {}
    setup = []
    for key, value in flat_a.items():
        if key == "variant" or value == flat_b[key]:
            continue
        change = Change(key, value, flat_b[key], docs.get(key, ""))
        owner = factor_of(key)
        (setup if owner is None else by_factor.setdefault(owner, [])).append(change)
    parts_a, parts_b = model_parts(a), model_parts(b)
    code = [Change(k, parts_a[k], parts_b[k], _CODE_DOCS[k]) for k in (BUILDER, PREDICTION) if parts_a[k] != parts_b[k]]
    if code:
        by_factor["model"] = code + by_factor.get("model", [])
    return {name: by_factor[name] for name in NAMES if name in by_factor}, setup


_CODE_DOCS = {BUILDER: "the function that builds the model from the config (the variant's architecture)",
              PREDICTION: "the rule that turns the model's outputs into class probabilities"}


def as_dict(a: Variant, b: Variant) -> dict:
    """`harness diff --json`: {"a", "b", "factors": [{"name", "title", "changes": [{key, a, b, doc, coupled}]}],
    "setup": [...], "unchanged": [factor names]}."""
    changed, setup = differences(a, b)

    def rows(name: str | None, changes: list[Change]) -> list[dict]:
        coupled = BY_NAME[name].coupled if name else {}
        return [{"key": c.key, "a": as_plain(c.a), "b": as_plain(c.b), "doc": c.doc,
                 **({"coupled": coupled[c.key]} if c.key in coupled else {})} for c in changes]

    return {"a": a.name, "b": b.name,
            "factors": [{"name": n, "title": BY_NAME[n].title, "changes": rows(n, ch)} for n, ch in changed.items()],
            "setup": rows(None, setup), "unchanged": [n for n in NAMES if n not in changed]}
