"""Training and TTA augmentation recipes, with each notebook parameter kept at its albumentations 1.x meaning.

The notebooks were written against albumentations 1.x; 2.x silently ignores some of those arguments
(VARIANTS.md §1.10). Each helper below takes the 1.x arguments and builds the 2.x transform that
does what 1.x did, so a recipe reads like the notebook it came from.
"""
from __future__ import annotations

import math
from typing import Callable

import albumentations as A
import cv2


def shift_scale_rotate(shift_limit: float, scale_limit: float, rotate_limit: float, p: float,
                       border_mode: int = cv2.BORDER_CONSTANT) -> A.Affine:
    """1.x ShiftScaleRotate: independent x/y shift, one isotropic scale, rotation, constant 0 border."""
    return A.Affine(translate_percent=(-shift_limit, shift_limit), scale=(1 - scale_limit, 1 + scale_limit),
                    rotate=(-rotate_limit, rotate_limit), keep_ratio=True, border_mode=border_mode, fill=0, p=p)


def gauss_noise(var_limit: tuple[float, float], p: float) -> A.GaussNoise:
    """1.x GaussNoise(var_limit) in grey levels: 2.x takes a std range as a fraction of 255.

    1.x drew the variance uniformly, 2.x draws the standard deviation uniformly over the same span.
    """
    low, high = (math.sqrt(v) / 255.0 for v in var_limit)
    return A.GaussNoise(std_range=(low, high), mean_range=(0.0, 0.0), per_channel=True, p=p)


def v8_train() -> A.Compose:
    """v8 and v9 `train_aug` (VARIANTS.md §8.1, §9.1), per slice, before Normalize."""
    return A.Compose([
        shift_scale_rotate(0.1, 0.12, 12, p=0.6),
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25),
                 A.RandomGamma(gamma_limit=(75, 125))], p=0.6),
        gauss_noise((5, 30), p=0.3),
    ])


def rbc_tta() -> A.Compose:
    """The second TTA view of v8/v9: RandomBrightnessContrast(0.1, 0.1, p=1)."""
    return A.Compose([A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=1.0)])


RECIPES: dict[str, Callable[[], A.Compose] | None] = {
    "none": None,
    "v8": v8_train,
    "rbc0.1": rbc_tta,
}


def build(name: str) -> A.Compose | None:
    """The recipe called `name` (None for 'none'); unknown names are refused by the config check."""
    factory = RECIPES[name]
    return factory() if factory else None
