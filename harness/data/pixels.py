"""The per-slice pixel pipeline of the notebooks (docs/variants.md §1.6).

Deterministic part (cacheable): intensity mapping -> uint8, CLAHE on the full slice, and the crop
region around the label point with room for the training jitter. Random part (per epoch): the
jittered crop window inside that region, clipped at the border or padded, and the resize.
"""
from __future__ import annotations

import cv2
import numpy as np

from harness.data.dicom import Slice

SOFT_WINDOW = (50.0, 350.0)  # v8's CT soft-tissue window (center, width), applied to MR values
BONE_WINDOW = (400.0, 2000.0)  # v8's CT bone window


def window(img: np.ndarray, center: float, width: float) -> np.ndarray:
    """The notebooks' window formula: clip((img - (c - w/2)) / max(w, 1) * 255, 0, 255)."""
    return np.clip((img - (center - width / 2)) / max(width, 1.0) * 255.0, 0, 255)


def minmax(img: np.ndarray) -> np.ndarray:
    """Per-slice min-max to [0, 255]; a constant slice becomes zeros."""
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)


def dicom_window(sl: Slice) -> np.ndarray:
    """The file's own WindowCenter/Width, else per-slice min-max (v5-v8)."""
    if sl.window_center is not None and sl.window_width is not None:
        return window(sl.pixels, sl.window_center, sl.window_width)
    return minmax(sl.pixels)


def to_uint8(sl: Slice, mode: str, center: float, width: float) -> np.ndarray:
    """One intensity mapping then truncation to uint8 (astype truncates, as the notebooks did)."""
    if mode == "fixed_window":
        out = window(sl.pixels, center, width)
    elif mode == "dicom_window":
        out = dicom_window(sl)
    else:
        out = minmax(sl.pixels)
    return out.astype(np.uint8)


def three_windows(sl: Slice) -> np.ndarray:
    """v8's RGB stack [soft, bone, DICOM window], each truncated to uint8: (H, W, 3)."""
    views = (window(sl.pixels, *SOFT_WINDOW), window(sl.pixels, *BONE_WINDOW), dicom_window(sl))
    return np.stack([v.astype(np.uint8) for v in views], axis=-1)


def clahe(img: np.ndarray, clip: float, grid: int) -> np.ndarray:
    """CLAHE on the full slice (before cropping), every version's order; clip 0 turns it off.
    A 3-channel image gets CLAHE per channel."""
    if clip <= 0:
        return img
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid))
    if img.ndim == 3:
        return np.stack([op.apply(np.ascontiguousarray(img[..., c])) for c in range(img.shape[2])], axis=-1)
    return op.apply(img)


def prepare_full_slice(sl: Slice, intensity: str, center: float, width: float, collapse: bool,
                       clip: float, grid: int) -> np.ndarray:
    """Intensity mapping and CLAHE of a whole slice: (H, W) uint8, or (H, W, 3) for uncollapsed multiwindow."""
    if intensity != "multiwindow":
        return clahe(to_uint8(sl, intensity, center, width), clip, grid)
    rgb = three_windows(sl)
    if collapse:  # v8 as it ran: 0.299 soft + 0.587 bone + 0.114 orig, one grey channel
        return clahe(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), clip, grid)
    return clahe(rgb, clip, grid)


def crop_box(img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, int, int]:
    """The part of [x0, x1) x [y0, y1) inside the image, and its top-left corner. A box with room for
    every jittered crop window is all a cache needs to keep (preprocess.prepare_sample)."""
    h, w = img.shape[:2]
    x0, y0 = min(max(0, x0), w), min(max(0, y0), h)
    x1, y1 = max(min(w, x1), x0), max(min(h, y1), y0)
    return img[y0:y1, x0:x1], x0, y0


def scale_slice(img: np.ndarray, scale: float) -> np.ndarray:
    """The image scaled by `scale` (bilinear, as the crop's resize): output pixel u covers source
    [u / scale, (u + 1) / scale), so source coordinate x lands at x * scale."""
    if scale == 1:
        return img
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)


def crop_window(region: np.ndarray, x0: int, y0: int, cx: int, cy: int, radius: int, size: int,
                pad: bool = False) -> np.ndarray:
    """Window [cx-r, cx+r) x [cy-r, cy+r) (source coordinates) from a region cut at (x0, y0), resized
    bilinearly to size x size.

    Clipped (pad=False, the notebooks): only the part inside the image, stretched to a square near a
    border; an empty window (point outside the image) gives zeros. Padded: the full 2r window with
    zeros outside the image, so the scale never changes.
    """
    h, w = region.shape[:2]
    wx0, wx1 = max(x0, cx - radius), min(x0 + w, cx + radius)
    wy0, wy1 = max(y0, cy - radius), min(y0 + h, cy + radius)
    inside = region[wy0 - y0:max(wy1, wy0) - y0, wx0 - x0:max(wx1, wx0) - x0]
    if pad:
        canvas = np.zeros((2 * radius, 2 * radius) + region.shape[2:], region.dtype)
        if inside.size:
            top, left = wy0 - (cy - radius), wx0 - (cx - radius)
            canvas[top:top + inside.shape[0], left:left + inside.shape[1]] = inside
        inside = canvas
    if not inside.size:
        return np.zeros((size, size) + region.shape[2:], region.dtype)
    return cv2.resize(inside, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_resize(img: np.ndarray, cx: int, cy: int, radius: int, size: int, pad: bool = False) -> np.ndarray:
    """crop_window on a whole slice."""
    return crop_window(img, 0, 0, cx, cy, radius, size, pad)
