"""Albumentations 1.x semantics on albumentations 2.x, and what 2.x does with the same notebook line.

Each helper takes the arguments a notebook passed to a 1.x transform, plus `api`:
- '1.x' builds 2.x transforms that do what albumentations 1.3 did with those arguments;
- '2.x' builds what albumentations 2.0.8 does when the line runs unchanged: the 1.x-only arguments are
  ignored there with a warning (docs/variants.md §1.10), so the helper passes the 2.x defaults explicitly instead.
Transforms whose 1.x and 2.x behaviour and defaults agree (RandomBrightnessContrast, RandomGamma,
HorizontalFlip) are used directly by the recipes.
"""
from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2
import numpy as np

APIS = ("1.x", "2.x")
REFLECT_101 = cv2.BORDER_REFLECT_101  # 1.x default border of every geometric transform used here; 2.x's is CONSTANT


class Recipe(A.Compose):
    """A.Compose whose set_random_seed gives every transform inside it its own random stream.

    2.x's Compose.set_random_seed hands all transforms the same seed, so right after seeding their
    "apply with probability p" draws are the same number (p=0.3 applied implies p=0.5 applied). 1.x
    drew them from one running stream, i.e. independently.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        if seed is not None:
            _own_streams(self.transforms, seed)


def _own_streams(transforms, seed: int) -> None:
    """Seed each transform (and those nested in OneOf) from its own child of SeedSequence(seed)."""
    for transform, child_seed in zip(transforms, np.random.SeedSequence(seed).generate_state(len(transforms))):
        transform.set_random_seed(int(child_seed))
        _own_streams(getattr(transform, "transforms", ()), int(child_seed))


def _check_api(api: str) -> None:
    if api not in APIS:
        raise ValueError(f"api must be one of {APIS}, got {api!r}")


def warp_affine(img: np.ndarray, matrix: np.ndarray, interpolation: int, border_mode: int) -> np.ndarray:
    """cv2.warpAffine over at most 4 channels at a time, as 1.x did.

    OpenCV interpolates images with more than 4 channels on another code path (up to 4 grey levels
    apart), so a 7-channel stack would not match its slices warped one by one.
    """
    size = (img.shape[1], img.shape[0])
    if img.ndim == 2:
        return cv2.warpAffine(img, matrix, size, flags=interpolation, borderMode=border_mode)
    return np.dstack([cv2.warpAffine(np.ascontiguousarray(img[..., i:i + 4]), matrix, size, flags=interpolation,
                                     borderMode=border_mode) for i in range(0, img.shape[2], 4)])


class GaussNoiseVariance(A.ImageOnlyTransform):
    """1.x GaussNoise(var_limit): variance ~ U(var_limit) in grey levels², sigma = sqrt(variance), per channel."""

    def __init__(self, var_limit: tuple[float, float], p: float = 0.5):
        super().__init__(p=p)
        self.var_limit = tuple(var_limit)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        sigma = math.sqrt(self.py_random.uniform(*self.var_limit))
        return {"gauss": self.random_generator.normal(0.0, sigma, params["shape"]).astype(np.float32)}

    def apply(self, img: np.ndarray, gauss: np.ndarray, **params: Any) -> np.ndarray:
        # 1.x added in float32 then clipped and truncated to uint8 (2.x's GaussNoise rounds)
        return np.clip(img.astype(np.float32) + gauss, 0, 255).astype(img.dtype)


class ElasticTransformAffine(A.ElasticTransform):
    """1.x ElasticTransform: a random 3-point affine (alpha_affine px), then the smoothed displacement field.

    Images only (masks would miss the affine). The field is 1.x's: U(-1, 1) noise through scipy's
    gaussian_filter (reflect border), which cv2's float64 BORDER_REFLECT blur reproduces. 2.x blurs with a
    replicate border, which on crops smaller than the 401 px kernel makes the field ~20x larger.
    """

    def __init__(self, alpha: float, sigma: float, alpha_affine: float, p: float = 0.5):
        super().__init__(alpha=alpha, sigma=sigma, approximate=False, same_dxdy=False,
                         noise_distribution="uniform", border_mode=REFLECT_101, p=p)
        self.alpha_affine = alpha_affine

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        centre = np.float32((height, width)) // 2  # 1.x used (h, w) as an (x, y) point; the same for square crops
        size = min(height, width) // 3
        src = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
        dst = src + self.random_generator.uniform(-self.alpha_affine, self.alpha_affine, src.shape).astype(np.float32)
        dx, dy = (cv2.GaussianBlur(self.random_generator.uniform(-1, 1, (height, width)), (0, 0), self.sigma,
                                   borderType=cv2.BORDER_REFLECT) * self.alpha for _ in range(2))
        x, y = np.meshgrid(np.arange(width), np.arange(height))
        return {"affine": cv2.getAffineTransform(src, dst), "map_x": np.float32(x + dx), "map_y": np.float32(y + dy)}

    def apply(self, img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, affine: np.ndarray,
              **params: Any) -> np.ndarray:
        img = warp_affine(img, affine, self.interpolation, self.border_mode)
        return super().apply(img, map_x, map_y, **params)


def _grid_axis_1x(size: int, num_steps: int, steps: list[float]) -> np.ndarray:
    """1.x grid_distortion along one axis: the last cell ends exactly at the border (2.x lets it overshoot)."""
    cell = size // num_steps
    axis = np.zeros(size, np.float32)
    prev = 0.0
    for idx, step in enumerate(steps):
        start, end, cur = idx * cell, idx * cell + cell, prev + cell * step
        if end > size:
            end, cur = size, size
        axis[start:end] = np.linspace(prev, cur, end - start)
        prev = cur
    return axis


class GridDistortion1x(A.GridDistortion):
    """1.x GridDistortion: unnormalised steps 1 + U(±distort_limit), REFLECT_101 border, 1.x grid ends."""

    def __init__(self, num_steps: int, distort_limit: float, p: float = 0.5):
        super().__init__(num_steps=num_steps, distort_limit=distort_limit, normalized=False,
                         border_mode=REFLECT_101, p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        steps_x = [1 + self.py_random.uniform(*self.distort_limit) for _ in range(self.num_steps + 1)]
        steps_y = [1 + self.py_random.uniform(*self.distort_limit) for _ in range(self.num_steps + 1)]
        map_x, map_y = np.meshgrid(_grid_axis_1x(width, self.num_steps, steps_x),
                                   _grid_axis_1x(height, self.num_steps, steps_y))
        return {"map_x": map_x, "map_y": map_y}


def shift_scale_rotate(shift_limit: float, scale_limit: float, rotate_limit: float, p: float,
                       border_mode: int | None = None, api: str = "1.x") -> A.Affine:
    """ShiftScaleRotate; `border_mode=None` is the library default (1.x REFLECT_101, 2.x CONSTANT).

    1.x: one isotropic scale. Approximated: 2.x truncates the shift to whole pixels (1.x kept the
    fraction), at most 1 px. 2.x's ShiftScaleRotate is an Affine with independent x and y scales.
    """
    _check_api(api)
    default_border = REFLECT_101 if api == "1.x" else cv2.BORDER_CONSTANT
    return A.Affine(translate_percent=(-shift_limit, shift_limit), scale=(1 - scale_limit, 1 + scale_limit),
                    rotate=(-rotate_limit, rotate_limit), keep_ratio=(api == "1.x"),
                    border_mode=default_border if border_mode is None else border_mode, fill=0, p=p)


def gauss_noise(var_limit: tuple[float, float], p: float = 0.5, api: str = "1.x") -> A.BasicTransform:
    """GaussNoise(var_limit): 1.x sigma = sqrt(U(var_limit)) grey levels; 2.x ignores it: sigma 0.2-0.44 of 255."""
    _check_api(api)
    if api == "1.x":
        return GaussNoiseVariance(var_limit, p=p)
    return A.GaussNoise(std_range=(0.2, 0.44), mean_range=(0.0, 0.0), per_channel=True, noise_scale_factor=1, p=p)


def elastic_transform(alpha: float, sigma: float, alpha_affine: float = 50, p: float = 0.5,
                      api: str = "1.x") -> A.ElasticTransform:
    """ElasticTransform; 1.x's alpha_affine defaults to 50 px when not given. 2.x has no affine part."""
    _check_api(api)
    if api == "1.x":
        return ElasticTransformAffine(alpha, sigma, alpha_affine, p=p)
    return A.ElasticTransform(alpha=alpha, sigma=sigma, approximate=False, same_dxdy=False,
                              noise_distribution="gaussian", border_mode=cv2.BORDER_CONSTANT, fill=0, p=p)


def grid_distortion(num_steps: int, distort_limit: float, p: float = 0.5, api: str = "1.x") -> A.GridDistortion:
    """GridDistortion; 2.x defaults to normalized=True and a constant 0 border."""
    _check_api(api)
    if api == "1.x":
        return GridDistortion1x(num_steps, distort_limit, p=p)
    return A.GridDistortion(num_steps=num_steps, distort_limit=distort_limit, normalized=True,
                            border_mode=cv2.BORDER_CONSTANT, fill=0, p=p)


def optical_distortion(distort_limit: float, shift_limit: float, p: float = 0.5,
                       api: str = "1.x") -> A.OpticalDistortion:
    """OpticalDistortion, camera model k1 = k2 = U(±distort_limit), focal length = image side.

    1.x shifted the centre by round(U(±shift_limit)) *pixels*, so any shift_limit below 0.5 never moved
    it: that is exactly 2.x's centred camera model. 2.x ignores shift_limit and uses a constant border.
    """
    _check_api(api)
    if api == "1.x" and abs(shift_limit) >= 0.5:
        raise ValueError("1.x OpticalDistortion centre shifts of whole pixels (shift_limit >= 0.5) are not implemented")
    border = REFLECT_101 if api == "1.x" else cv2.BORDER_CONSTANT
    return A.OpticalDistortion(distort_limit=distort_limit, mode="camera", border_mode=border, fill=0, p=p)


def coarse_dropout(max_holes: int, max_height: int, max_width: int, min_holes: int, min_height: int,
                   min_width: int, fill_value: float = 0, p: float = 0.5, api: str = "1.x") -> A.CoarseDropout:
    """CoarseDropout with 1.x hole counts and pixel sizes; 2.x ignores them: 1-2 holes of 10-20 % of the side."""
    _check_api(api)
    if api == "1.x":
        return A.CoarseDropout(num_holes_range=(min_holes, max_holes), hole_height_range=(min_height, max_height),
                               hole_width_range=(min_width, max_width), fill=fill_value, p=p)
    return A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2),
                           fill=0, p=p)


def clahe(clip_limit: float, tile_grid_size: tuple[int, int] = (8, 8), p: float = 0.5) -> A.CLAHE:
    """CLAHE(clip_limit): clip limit U(1, clip_limit) on the LAB lightness, in 1.x and 2.x alike."""
    return A.CLAHE(clip_limit=(1, clip_limit), tile_grid_size=tile_grid_size, p=p)


def multiplicative_noise(low: float, high: float, p: float = 0.5) -> A.MultiplicativeNoise:
    """MultiplicativeNoise: one multiplier for the whole image (1.x and 2.x defaults, pinned)."""
    return A.MultiplicativeNoise(multiplier=(low, high), per_channel=False, elementwise=False, p=p)
