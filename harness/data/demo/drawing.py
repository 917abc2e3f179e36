"""Drawing: each series' slices painted from the study's anatomy in relative intensities (every
structure an alpha mask over what lies below), then stored as uint16 with a bias field and noise."""
from __future__ import annotations

import numpy as np

from harness.data.demo.anatomy import (
    CANAL_AXIAL_WIDTH,
    RECESS_RADII,
    Anatomy,
    _foramen_z,
    _recess_centre,
)
from harness.data.demo.geometry import Series

# Relative intensities (x the series' intensity scale). T2: CSF is the brightest structure.
T2_TISSUE = dict(background=0.10, bone=0.30, disc=0.17, epidural=0.20, posterior=0.25,
                 fat=0.35, csf=1.0, air=0.01)
T1_TISSUE = dict(background=0.22, bone=0.55, disc=0.28, epidural=0.50, posterior=0.45,
                 fat=0.90, csf=0.12, air=0.01, pedicle=0.45, root=0.18)
EDGE_PX = 1.5  # width of the soft (partial-volume) edge of every drawn structure
CANAL_FADE_SLICES = 1.5  # sd of the canal's visibility across sagittal slices: gone by +-4


def _ramp(inside_mm, edge_mm):
    """Alpha of a soft-edged region given the signed distance (mm) inside its border."""
    return np.clip(0.5 + inside_mm / edge_mm, 0.0, 1.0)


def _ellipse(u, v, cu, cv, ru, rv, edge_mm):
    d = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return _ramp((1 - d) * min(ru, rv), edge_mm)


def _paint(img, alpha, value):
    img += alpha * (value - img)


def _sagittal_grid(series: Series):
    """Patient y per column (1, W) and z per row (H, 1) of a sagittal slice."""
    y = series.origin[1] + np.arange(series.cols, dtype=np.float32)[None, :] * series.pixel_spacing
    z = series.origin[2] - np.arange(series.rows, dtype=np.float32)[:, None] * series.pixel_spacing
    return y, z


def _sagittal_base(series: Series, anat: Anatomy, tissue: dict) -> tuple[np.ndarray, np.ndarray]:
    """Spine without the canal's contents, and the canal's alpha mask (both H x W)."""
    y, z = _sagittal_grid(series)
    edge = EDGE_PX * series.pixel_spacing
    cy = anat.canal_y(z).astype(np.float32)
    half = anat.canal_half
    body_half = 0.45 * anat.gap
    body_y = cy - half - 3 - body_half
    img = np.full((series.rows, series.cols), tissue["background"], np.float32)
    _paint(img, _ramp(body_half - np.abs(y - body_y), edge), tissue["bone"])
    # discs: dark bands from the front of the bodies to the canal's front wall
    disc = _ramp(0.13 * anat.gap - np.abs(z - anat.disc_z).min(-1, keepdims=True), edge)
    _paint(img, disc * _ramp(np.minimum(y - (body_y - body_half), cy - half - y), edge), tissue["disc"])
    # laminae and spinous processes behind each vertebra, none at the disc levels
    vertebra_z = np.concatenate([anat.disc_z + anat.gap / 2, anat.disc_z[-1:] - anat.gap / 2])
    arch = _ramp(0.28 * anat.gap - np.abs(z - vertebra_z).min(-1, keepdims=True), edge)
    behind = y - (cy + half + 2)
    _paint(img, arch * _ramp(np.minimum(behind, 40 - behind), edge), tissue["posterior"])
    _paint(img, _ramp(half + 1 - np.abs(y - cy), edge), tissue["epidural"])
    skin = anat.skin_y - y
    _paint(img, _ramp(np.minimum(skin, 14 - skin), edge), tissue["fat"])
    _paint(img, _ramp(-skin, edge), tissue["air"])
    canal = _ramp(anat.canal_half_width(z).astype(np.float32) - np.abs(y - cy), edge)
    return img, canal


def _canal_visibility(series: Series, k: int) -> float:
    """Full on the mid-sagittal slice, fading over the next few slices to either side."""
    x = series.position(k)[0]
    return float(np.exp(-0.5 * (x / series.spacing / CANAL_FADE_SLICES) ** 2))


def _draw_sagittal_t2(series: Series, anat: Anatomy) -> list[np.ndarray]:
    base, canal = _sagittal_base(series, anat, T2_TISSUE)
    csf = canal * (T2_TISSUE["csf"] - base)
    return [base + _canal_visibility(series, k) * csf for k in range(len(series.offsets))]


def _foramina(series: Series, anat: Anatomy, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Value and alpha of one side's five foramina: a bony frame around a fat-filled oval
    (scaled by that level's foraminal severity) with the dark nerve root in it."""
    y, z = _sagittal_grid(series)
    edge = EDGE_PX * series.pixel_spacing
    value = np.full((series.rows, series.cols), T1_TISSUE["pedicle"], np.float32)
    alpha = np.zeros_like(value)
    for cz, s in zip(_foramen_z(anat), anat.hole_scale[side]):
        cy = float(anat.canal_y(cz))
        rz, ry = 0.2 * anat.gap, 0.12 * anat.gap
        alpha = np.maximum(alpha, _ellipse(y, z, cy, cz, 1.7 * ry, 1.5 * rz, edge))
        _paint(value, _ellipse(y, z, cy, cz, s * ry, s * rz, edge), T1_TISSUE["fat"])
        root = 0.35 * s * ry
        _paint(value, _ellipse(y, z, cy, cz + 0.3 * s * rz, root, root, edge), T1_TISSUE["root"])
    return value, alpha


def _draw_sagittal_t1(series: Series, anat: Anatomy) -> list[np.ndarray]:
    base, canal = _sagittal_base(series, anat, T1_TISSUE)
    csf = canal * (T1_TISSUE["csf"] - base)
    sides = [_foramina(series, anat, side) for side in (0, 1)]
    images = []
    for k in range(len(series.offsets)):
        img = base + _canal_visibility(series, k) * csf
        x = series.position(k)[0]
        for sign, (value, alpha) in zip((1, -1), sides):  # left foramina at +x
            seen = np.exp(-0.5 * ((x - sign * anat.foramen_x) / series.spacing / 0.6) ** 2)
            if seen > 0.01:
                _paint(img, seen * alpha, value)
        images.append(img)
    return images


def _draw_axial(series: Series, anat: Anatomy) -> list[np.ndarray]:
    x = series.origin[0] + np.arange(series.cols, dtype=np.float32)[None, :] * series.pixel_spacing
    y = series.origin[1] + np.arange(series.rows, dtype=np.float32)[:, None] * series.pixel_spacing
    edge = EDGE_PX * series.pixel_spacing
    t, half, body_half = T2_TISSUE, anat.canal_half, 0.45 * anat.gap
    # the back's cross-section: an ellipse whose posterior edge is the skin, under 14 mm of fat
    skin = _ellipse(x, y, 0, anat.skin_y - 120, 170, 120, edge)
    muscle = _ellipse(x, y, 0, anat.skin_y - 120, 156, 106, edge)
    images = []
    for k in range(len(series.offsets)):
        z = series.position(k)[2]
        cy = float(anat.canal_y(z))
        img = np.full((series.rows, series.cols), t["background"], np.float32)
        _paint(img, 1 - muscle, t["fat"])
        _paint(img, 1 - skin, t["air"])
        on_disc = np.abs(z - anat.disc_z).min() < 0.13 * anat.gap
        _paint(img, _ellipse(x, y, 0, cy - half - 3 - body_half, 1.25 * body_half, body_half, edge),
               t["disc"] if on_disc else t["bone"])
        for sign in (1, -1):  # facet joints
            _paint(img, _ellipse(x, y, sign * (2.2 * half + 6), cy + 0.8 * half, 5, 4, edge), t["posterior"])
        _paint(img, _ellipse(x, y, 0, cy + half + 18, 3, 12, edge), t["posterior"])  # spinous process
        _paint(img, _ellipse(x, y, 0, cy, CANAL_AXIAL_WIDTH * half + 2, half + 1.5, edge), t["epidural"])
        # the canal loses depth (front to back) with stenosis, and some width
        narrowing = 1 - float(anat.canal_half_width(z)) / half
        _paint(img, _ellipse(x, y, 0, cy, CANAL_AXIAL_WIDTH * half * (1 - 0.35 * narrowing),
                             half * (1 - narrowing), edge), t["csf"])
        for side in (0, 1):
            s = float(anat.recess_scale(z, side))
            rx, ry = _recess_centre(anat, z, side)
            _paint(img, _ellipse(x, y, rx, ry, RECESS_RADII[0] * half * s, RECESS_RADII[1] * half * s, edge),
                   t["csf"])
        images.append(img)
    return images


def _to_stored(rng: np.random.Generator, images: list[np.ndarray], scale: float) -> list[np.ndarray]:
    """Relative intensities -> uint16 with the study's scale, a smooth bias field and noise."""
    rows, cols = images[0].shape
    u = np.linspace(-0.5, 0.5, cols, dtype=np.float32)[None, :]
    v = np.linspace(-0.5, 0.5, rows, dtype=np.float32)[:, None]
    a, b, c = rng.uniform(-0.12, 0.12, 3)
    bias = scale * (1 + a * u + b * v + c * (u * u + v * v - 1 / 6))
    noise = rng.uniform(0.02, 0.04) * scale
    out = []
    for img in images:
        raw = img * bias + noise * rng.standard_normal(img.shape, dtype=np.float32)
        out.append(np.rint(np.clip(raw, 0, 65535)).astype(np.uint16))
    return out
