"""Training and TTA augmentation recipes of notebooks v4..v10, before Normalize/ToTensorV2.

Each recipe reads like the notebook's Compose list; `api` picks what its arguments mean
(harness.data.albu_compat): '1.x' what the notebooks were written for (default), '2.x' what the same
lines do under albumentations 2.0.8, where several 1.x arguments are silently ignored (docs/variants.md §1.10).
"""
from __future__ import annotations

import importlib
from typing import Callable

import albumentations as A
import cv2
import numpy as np

from harness.core.errors import UsageError
from harness.core.names import RECIPE_NAMES
from harness.data.albu_compat import (
    APIS,
    Recipe,
    clahe,
    coarse_dropout,
    elastic_transform,
    gauss_noise,
    grid_distortion,
    multiplicative_noise,
    optical_distortion,
    shift_scale_rotate,
)

CONSTANT = cv2.BORDER_CONSTANT


def v4_train(api: str = "1.x") -> Recipe:
    """v4/v10 `train_aug` for original rows (docs/variants.md §4.1)."""
    return Recipe([
        shift_scale_rotate(0.05, 0.1, 5, p=0.5, border_mode=CONSTANT, api=api),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        gauss_noise((5, 20), p=0.2, api=api),
    ])


def _strong_aug(elastic: A.BasicTransform, api: str) -> Recipe:
    """v4/v10 `strong_aug` for oversampled copies; the two differ only in the ElasticTransform."""
    return Recipe([
        shift_scale_rotate(0.1, 0.15, 8, p=0.7, border_mode=CONSTANT, api=api),
        elastic,
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3),
                 A.RandomGamma(gamma_limit=(80, 120)),
                 clahe(clip_limit=4.0)], p=0.8),
        A.OneOf([gauss_noise((10, 50), api=api),
                 multiplicative_noise(0.9, 1.1)], p=0.3),
        grid_distortion(num_steps=5, distort_limit=0.1, p=0.3, api=api),
    ])


def v4_strong(api: str = "1.x") -> Recipe:
    """v4 `strong_aug` (§4.1): ElasticTransform(alpha=1, sigma=50, alpha_affine=20, p=0.3)."""
    return _strong_aug(elastic_transform(alpha=1, sigma=50, alpha_affine=20, p=0.3, api=api), api)


def v10_strong(api: str = "1.x") -> Recipe:
    """v10 `strong_aug` (§10.1): ElasticTransform(alpha=1, sigma=50, p=0.3), no alpha_affine.

    docs/variants.md §10.1/§11.3 read the omission as "no affine part" (the author removed it on purpose,
    and from late 1.4 on an omitted alpha_affine means none). Albumentations 1.3 would have used its
    default of 50 px instead; `v4_strong` keeps v4's 20 px.
    """
    return _strong_aug(elastic_transform(alpha=1, sigma=50, alpha_affine=0, p=0.3, api=api), api)


def v5_train(api: str = "1.x") -> Recipe:
    """v5 `train_aug` (§5.1)."""
    return Recipe([
        shift_scale_rotate(0.08, 0.12, 8, p=0.6, border_mode=CONSTANT, api=api),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25),
                 A.RandomGamma(gamma_limit=(80, 120)),
                 clahe(clip_limit=4.0)], p=0.7),
        A.OneOf([gauss_noise((5, 30), api=api),
                 multiplicative_noise(0.9, 1.1)], p=0.3),
        elastic_transform(alpha=1, sigma=50, alpha_affine=20, p=0.2, api=api),
        grid_distortion(num_steps=5, distort_limit=0.08, p=0.2, api=api),
        A.HorizontalFlip(p=0.5),
    ])


def v6_train(api: str = "1.x") -> Recipe:
    """v6 `train_aug` (§6.1)."""
    return Recipe([
        shift_scale_rotate(0.1, 0.15, 15, p=0.7, border_mode=CONSTANT, api=api),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3),
                 A.RandomGamma(gamma_limit=(70, 130)),
                 clahe(clip_limit=4.0, tile_grid_size=(8, 8))], p=0.8),
        A.OneOf([gauss_noise((5, 40), api=api),
                 multiplicative_noise(0.85, 1.15)], p=0.4),
        A.OneOf([elastic_transform(alpha=1, sigma=50, alpha_affine=25, api=api),
                 grid_distortion(num_steps=5, distort_limit=0.1, api=api),
                 optical_distortion(distort_limit=0.1, shift_limit=0.05, api=api)], p=0.3),
        coarse_dropout(max_holes=6, max_height=32, max_width=32, min_holes=2, min_height=16, min_width=16,
                       fill_value=0, p=0.4, api=api),
    ])


def v7_train(api: str = "1.x") -> Recipe:
    """v7 `train_aug` (§7.1), applied once to the (H, W, 7) stack of grey slices."""
    return Recipe([
        shift_scale_rotate(0.1, 0.15, 15, p=0.7, border_mode=CONSTANT, api=api),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3),
                 A.RandomGamma(gamma_limit=(70, 130))], p=0.7),
        A.OneOf([gauss_noise((5, 40), api=api),
                 multiplicative_noise(0.85, 1.15)], p=0.3),
        A.OneOf([elastic_transform(alpha=1, sigma=50, alpha_affine=25, api=api),
                 grid_distortion(num_steps=5, distort_limit=0.1, api=api)], p=0.25),
        coarse_dropout(max_holes=5, max_height=28, max_width=28, min_holes=1, min_height=12, min_width=12,
                       fill_value=0, p=0.3, api=api),
    ])


def v8_train(api: str = "1.x") -> Recipe:
    """v8 and v9 `train_aug` (§8.1, §9.1)."""
    return Recipe([
        shift_scale_rotate(0.1, 0.12, 12, p=0.6, border_mode=CONSTANT, api=api),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25),
                 A.RandomGamma(gamma_limit=(75, 125))], p=0.6),
        gauss_noise((5, 30), p=0.3, api=api),
    ])


def rbc_tta(api: str = "1.x") -> Recipe:
    """TTA view of v6-v9: RandomBrightnessContrast(0.1, 0.1, p=1)."""
    return Recipe([A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=1.0)])


def hflip_tta(api: str = "1.x") -> Recipe:
    """TTA view of v5: HorizontalFlip(p=1)."""
    return Recipe([A.HorizontalFlip(p=1.0)])


def scale_tta(api: str = "1.x") -> Recipe:
    """TTA view of v6/v7: ShiftScaleRotate(0, 0.05, 0, p=1) with the library's default border."""
    return Recipe([shift_scale_rotate(0, 0.05, 0, p=1.0, api=api)])


RECIPES: dict[str, Callable[[str], Recipe] | None] = {
    "none": None,
    "v4": v4_train,
    "v4_strong": v4_strong,
    "v10_strong": v10_strong,
    "v5": v5_train,
    "v6": v6_train,
    "v7": v7_train,
    "v8": v8_train,
    "rbc0.1": rbc_tta,
    "hflip": hflip_tta,
    "scale0.05": scale_tta,
}
if tuple(RECIPES) != RECIPE_NAMES:  # the config checks names against RECIPE_NAMES: the two lists are one
    raise RuntimeError("harness.core.names.RECIPE_NAMES must list exactly the keys of RECIPES")


def build(name: str, api: str = "1.x") -> Recipe | None:
    """The recipe called `name` (None for 'none'), or the one a variant's 'module:function' path names
    (function(api) -> Recipe); other names are refused by the config check."""
    if api not in APIS:
        raise ValueError(f"api must be one of {APIS}, got {api!r}")
    if name in RECIPES:
        factory = RECIPES[name]
    else:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"augmentation recipe {name!r}: cannot import it ({exc})") from None
    return factory(api) if factory else None


def apply(transform: A.Compose | None, slices: np.ndarray, per_slice: bool, seed: int) -> np.ndarray:
    """Augment (S, H, W, C) uint8 slices, reproducibly from `seed`.

    per_slice=True: one call per slice on a running random stream, so every slice gets its own
    parameters, as the notebooks did (docs/variants.md §1.6 item 7). per_slice=False: one parameter draw
    for all slices (2.x's `images` target), so they stay spatially aligned.
    """
    if transform is None:
        return slices
    transform.set_random_seed(seed)
    if per_slice:
        return np.stack([transform(image=np.ascontiguousarray(s))["image"] for s in slices])
    return transform(images=np.ascontiguousarray(slices))["images"]
