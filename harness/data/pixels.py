"""The deterministic per-slice pixel pipeline of the notebooks (VARIANTS.md §1.6): intensity -> uint8,
CLAHE on the full slice, crop around the label point clipped at the border, resize."""
from __future__ import annotations

import cv2
import numpy as np

from harness.data.dicom import Slice


def window(img: np.ndarray, center: float, width: float) -> np.ndarray:
    """The notebooks' window formula: clip((img - (c - w/2)) / max(w, 1) * 255, 0, 255)."""
    return np.clip((img - (center - width / 2)) / max(width, 1.0) * 255.0, 0, 255)


def minmax(img: np.ndarray) -> np.ndarray:
    """Per-slice min-max to [0, 255]; a constant slice becomes zeros."""
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(img)


def to_uint8(sl: Slice, mode: str, center: float, width: float) -> np.ndarray:
    """Intensity mapping then truncation to uint8 (astype truncates, as the notebooks did)."""
    if mode == "fixed_window":
        out = window(sl.pixels, center, width)
    elif mode == "dicom_window" and sl.window_center is not None and sl.window_width is not None:
        out = window(sl.pixels, sl.window_center, sl.window_width)
    else:  # 'minmax', and 'dicom_window' on a file without window tags
        out = minmax(sl.pixels)
    return out.astype(np.uint8)


def clahe(img: np.ndarray, clip: float, grid: int) -> np.ndarray:
    """CLAHE on the full slice (before cropping), every version's order; clip 0 turns it off."""
    if clip <= 0:
        return img
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(img)


def crop_resize(img: np.ndarray, cx: int, cy: int, radius: int, size: int) -> np.ndarray:
    """Window [cx-r, cx+r) x [cy-r, cy+r) clipped at the border (not padded), bilinear resize to size.

    Near a border the clipped window is stretched to a square, as in the notebooks; an empty window
    (point outside the image) gives zeros.
    """
    h, w = img.shape[:2]
    x0, x1 = max(0, cx - radius), min(w, cx + radius)
    y0, y1 = max(0, cy - radius), min(h, cy + radius)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size), dtype=img.dtype)
    return cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_LINEAR)
