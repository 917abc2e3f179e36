"""Deterministic synthetic RSNA 2024 lumbar spine dataset, written in the exact Kaggle layout.

The demo stands in for the real competition data (docs/data.md) wherever that is not
reachable. Its heart is a learnable spinal canal signal on Sagittal T2/STIR: a bright CSF band
that narrows at each disc level in proportion to that level's spinal canal stenosis label.
Neural foramina (Sagittal T1) and lateral recesses (Axial T2) shrink with their labels too.

All anatomy is laid out once per study in patient millimetres (DICOM LPS, midline at x = 0);
every series samples it through its own pixel grid, so the DICOM geometry, the drawn anatomy
and the coordinate file agree with each other by construction.

It also carries the real files' quirks a reader has to survive: empty labels, labelled levels
without a coordinate row (spinal ones at the real rate, mostly at the top two levels), unsorted
coordinate rows, reversed instance numbers, second axial stacks, and one study whose spinal
coordinate rows name its Sagittal T1 series (DEMO.json's "spinal_on_t1_study").
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import pathlib
import shutil
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Callable

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from harness.data.schema import (
    CLASS_KEYS, CONDITIONS, COORDS_COLUMNS, COORDS_CSV, LEVEL_LABELS, LEVELS, SERIES_COLUMNS,
    SERIES_CSV, SEVERITIES, SUBMISSION_COLUMNS, SUBMISSION_CSV, TEST_IMAGES, TEST_SERIES_CSV,
    TRAIN_COLUMNS, TRAIN_CSV, TRAIN_IMAGES,
)

DEFAULT_STUDIES: int = 120
DEFAULT_SEED: int = 0
PARALLEL_MIN_STUDIES = 32  # below this a process pool costs more to start (~1 s) than it saves

GENERATOR = "rsna-harness demo"
# Bumped whenever the same (studies, seed) would write different files, so is_current() reports a
# demo written by an older generator as outdated (2: per-level spinal no-coordinate rates and the
# study with its spinal points on Sagittal T1).
DEMO_VERSION = 2
MARKER = "DEMO.json"  # written last, so its presence means the dataset is complete

SAG_T2, SAG_T1, AXIAL = "Sagittal T2/STIR", "Sagittal T1", "Axial T2"
SPINAL, LEFT_FORAMEN, RIGHT_FORAMEN, LEFT_RECESS, RIGHT_RECESS = range(5)  # CONDITIONS order
CONDITION_KEYS = tuple(CONDITIONS)

# ---- labels ---------------------------------------------------------------------------------
# Marginal (Normal/Mild, Moderate, Severe) probabilities per condition and level, after
# docs/data.md: spinal stenosis concentrates at L4/L5; foraminal ~78/18/4; subarticular ~72/19/9.5.
_SPINAL = ((.955, .034, .011), (.90, .06, .04), (.85, .09, .06), (.78, .13, .09), (.94, .04, .02))
_FORAMINAL = ((.78, .18, .04),) * 5
_SUBARTICULAR = ((.715, .19, .095),) * 5
LABEL_PROBS = np.array([_SPINAL, _FORAMINAL, _FORAMINAL, _SUBARTICULAR, _SUBARTICULAR])
STUDY_LATENT = 0.6  # weight of the per-study degeneration latent: severities correlate in a study
EMPTY_RATE = np.array([.0005, .001, .004, .026, .026])  # per condition, as in the real train.csv
NO_COORD_RATE = .002  # labelled study/levels without any coordinate row (not spinal)
# Spinal per level, L1/L2 .. L5/S1. In the real data 1.2% of the labelled spinal levels have no
# coordinate row, mostly at L1/L2 and L2/L3 (the top of the image, where annotators stopped short).
# These average 1.2% over the (nearly all labelled) levels, 85% of it at the two top levels; the
# floor of 0.3% below still lets a reader meet a missing lower level now and then.
SPINAL_NO_COORD_RATE = (.036, .015, .003, .003, .003)

# ---- anatomy: how much each severity narrows a structure ------------------------------------
CANAL_NARROWING = ((0.0, 0.15), (0.45, 0.60), (0.80, 0.95))  # fraction of canal width removed
HOLE_SCALE = ((0.85, 1.0), (0.55, 0.68), (0.28, 0.40))  # foramen / lateral recess size factor

# Relative intensities (x the series' intensity scale). T2: CSF is the brightest structure.
T2_TISSUE = dict(background=0.10, bone=0.30, disc=0.17, epidural=0.20, posterior=0.25,
                 fat=0.35, csf=1.0, air=0.01)
T1_TISSUE = dict(background=0.22, bone=0.55, disc=0.28, epidural=0.50, posterior=0.45,
                 fat=0.90, csf=0.12, air=0.01, pedicle=0.45, root=0.18)
EDGE_PX = 1.5  # width of the soft (partial-volume) edge of every drawn structure
CANAL_FADE_SLICES = 1.5  # sd of the canal's visibility across sagittal slices: gone by +-4
CANAL_AXIAL_WIDTH = 1.35  # canal half width left-right on Axial T2, in sagittal half widths
RECESS_RADII = (0.55, 0.45)  # lateral recess radii (x, y) at full size, in canal half widths

# ---- acquisition ------------------------------------------------------------------------------
SAG_SIDE = (192, 204)  # sagittal image side (px): the low end of 192-288, for the size budget
SAG_SLICES = (13, 15)
SAG_MARGIN = 40  # px above L1/L2 plus below L5/S1 on a sagittal image
AXIAL_SIDE = (128, 140)
REVERSED_RATE = 0.10  # series whose instance numbers run against the spatial order
SECOND_AXIAL_RATE = 0.10
OFF_CENTRE_INSTANCE_RATE = 0.15  # spinal coordinates placed on a neighbour of the central slice

SAG_ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns run inferior
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows run to patient left, columns posterior
UID_NAMESPACE = "rsna-harness demo"


# =============================================================================================
# labels


def _labels_for(studies: int, seed: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Labels of the train studies: (severity, no_coordinate, spinal_on_t1). The first two are
    shaped (study, condition, level); severity is an index into SEVERITIES or -1 for an empty
    label. spinal_on_t1 is the index of the study whose spinal coordinate rows carry its Sagittal
    T1 series, or None."""
    rng = np.random.default_rng(_seeds(seed, studies).labels)
    labels = _draw_labels(rng, studies)
    no_coord = _draw_missing_coords(rng, labels)
    return labels, no_coord, _pick_spinal_on_t1(rng, labels, no_coord)


def _draw_labels(rng: np.random.Generator, studies: int) -> np.ndarray:
    # An ordinal probit: a study latent plus noise, cut at the quantiles of the target marginals,
    # keeps every per-level class balance exact in expectation while correlating a study's levels.
    latent = rng.standard_normal((studies, 1, 1))
    score = STUDY_LATENT * latent + np.sqrt(1 - STUDY_LATENT**2) * rng.standard_normal((studies, 5, 5))
    cuts = np.vectorize(NormalDist().inv_cdf)(LABEL_PROBS.cumsum(-1)[..., :2])
    labels = (score > cuts[..., 0]).astype(np.int8) + (score > cuts[..., 1])
    empty = rng.random(labels.shape) < EMPTY_RATE[:, None]
    if not empty[:, SPINAL].any():  # readers must meet an empty spinal label
        empty[rng.integers(studies), SPINAL, rng.integers(5)] = True
    return np.where(empty, -1, labels).astype(np.int8)


def _draw_missing_coords(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    rate = np.full(labels.shape[1:], NO_COORD_RATE)
    rate[SPINAL] = SPINAL_NO_COORD_RATE
    missing = (rng.random(labels.shape) < rate) & (labels >= 0)
    if not missing[:, SPINAL].any():  # readers must meet a labelled level with no coordinate
        study, level = np.argwhere(labels[:, SPINAL] >= 0)[0]
        missing[study, SPINAL, level] = True
    return missing


def _pick_spinal_on_t1(rng: np.random.Generator, labels: np.ndarray, no_coord: np.ndarray) -> int | None:
    # In the real data one study's spinal canal coordinate rows carry the series_id of its
    # Sagittal T1 instead of its Sagittal T2/STIR: a reader that trusts the row's series_id crops
    # T1, one that picks the series by description finds no spinal point for that study. Every
    # demo study has a Sagittal T1, so a candidate needs only a spinal coordinate row to move;
    # with a single candidate there is none, so a tiny demo keeps spinal rows on T2 to learn from.
    candidates = np.flatnonzero(((labels[:, SPINAL] >= 0) & ~no_coord[:, SPINAL]).any(-1))
    return int(rng.choice(candidates)) if len(candidates) >= 2 else None


@dataclass(frozen=True)
class _Seeds:
    ids: np.random.SeedSequence
    labels: np.random.SeedSequence
    test_study: np.random.SeedSequence
    studies: list[np.random.SeedSequence]


def _seeds(seed: int, studies: int) -> _Seeds:
    ids, labels, test_study, *per_study = np.random.SeedSequence(seed).spawn(3 + studies)
    return _Seeds(ids, labels, test_study, per_study)


def _distinct_ints(rng: np.random.Generator, n: int, low: int, high: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        value = int(rng.integers(low, high))
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


# =============================================================================================
# anatomy


@dataclass(frozen=True)
class Anatomy:
    """One study's lumbar spine in patient mm. z runs superior, y posterior, x to patient left."""

    disc_z: np.ndarray  # (5,) disc centres, L1/L2 highest
    gap: float  # mean disc spacing
    tilt: float  # canal y drift per mm of z
    curve: float  # lordosis: canal y offset at +-2 gaps from the middle
    canal_half: float  # half width of the healthy canal
    narrow_sd: float  # vertical sd of a narrowing
    canal_narrowing: np.ndarray  # (5,) fraction of canal width removed per level
    hole_scale: np.ndarray  # (4, 5) foramen L/R and lateral recess L/R size factors
    foramen_x: float  # |x| of the lateral sagittal slices through the foramina
    skin_y: float  # posterior skin, relative to the canal at mid height

    def canal_y(self, z):
        """Canal centre (y) along z: a tilt plus a lordotic curve."""
        u = z / (2 * self.gap)
        return self.tilt * z + self.curve * u * u

    def _profile(self, z, amount):
        """Sum over levels of amount[level] x a Gaussian bump centred on that disc."""
        z = np.asarray(z, dtype=np.float64)[..., None]
        bump = np.exp(-0.5 * ((z - self.disc_z) / self.narrow_sd) ** 2)
        return (bump * amount).sum(-1)

    def canal_half_width(self, z):
        return self.canal_half * (1 - self._profile(z, self.canal_narrowing))

    def recess_scale(self, z, side: int):
        """Lateral recess size factor along z for side 0 (left) or 1 (right)."""
        return 1 - self._profile(z, 1 - self.hole_scale[2 + side])


def _sample_in(rng: np.random.Generator, ranges, index: np.ndarray) -> np.ndarray:
    """For each severity index (-1 = unlabelled, drawn as Normal/Mild) a value in its range."""
    lo, hi = np.array(ranges).T
    index = np.maximum(index, 0)
    return rng.uniform(lo[index], hi[index])


def _plan_anatomy(rng: np.random.Generator, severity: np.ndarray, t2_spacing: float,
                  gap_px: float) -> Anatomy:
    """Sizes are drawn in Sagittal T2 pixels (the brief's units) and stored in mm."""
    gap = gap_px * t2_spacing
    return Anatomy(
        disc_z=(2 - np.arange(5)) * gap + rng.uniform(-0.04, 0.04, 5) * gap,
        gap=gap, tilt=rng.uniform(-0.08, 0.08), curve=rng.uniform(2.0, 8.0),
        canal_half=rng.uniform(7, 9) * t2_spacing, narrow_sd=rng.uniform(7, 9) * t2_spacing,
        canal_narrowing=_sample_in(rng, CANAL_NARROWING, severity[SPINAL]),
        hole_scale=_sample_in(rng, HOLE_SCALE, severity[1:]),
        foramen_x=0.0,  # set once the Sagittal T1 slice spacing is known
        skin_y=rng.uniform(55, 75),
    )


# =============================================================================================
# series geometry


@dataclass(frozen=True)
class Series:
    """One series: its identity, pixel grid and where each slice sits (spatial order)."""

    series_id: int
    description: str
    number: int
    orientation: tuple[float, ...]
    origin: np.ndarray  # ImagePositionPatient of spatial slice 0
    offsets: np.ndarray  # position of each slice along the normal, ascending
    rows: int
    cols: int
    pixel_spacing: float
    thickness: float
    spacing: float  # SpacingBetweenSlices
    reversed: bool  # instance 1 at the far end of the stack
    scale: float  # intensity of a relative value of 1.0

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    def position(self, k: int) -> np.ndarray:
        return self.origin + self.offsets[k] * self.normal

    def instance(self, k: int) -> int:
        return len(self.offsets) - k if self.reversed else k + 1


def _mm(value: float) -> float:
    """Geometry rounded to what a DICOM DS (16 characters) states, so headers describe the
    drawing exactly."""
    return round(float(value), 4)


def _sagittal_series(rng, series_id, description, number, anat, pixel_spacing, side, scale):
    """Sagittal stack centred on the midline; slice 0 is the patient-left end."""
    n = int(rng.integers(SAG_SLICES[0], SAG_SLICES[1] + 1))
    centre = n // 2
    thickness = float(rng.choice([3.0, 3.5, 4.0]))
    spacing = _mm(thickness + rng.uniform(0.3, 0.5))
    rows, cols = side, max(SAG_SIDE[0], side - int(rng.choice([0, 8, 16])))  # front-to-back a bit narrower
    # canal at 55-65% of the width, the five discs centred vertically with a little jitter
    y0 = anat.canal_y(0.0) - rng.uniform(0.56, 0.64) * cols * pixel_spacing
    z0 = (rows / 2 + rng.uniform(-0.04, 0.04) * rows) * pixel_spacing
    return Series(series_id, description, number, SAG_ORIENTATION,
                  origin=np.array([_mm(centre * spacing), _mm(y0), _mm(z0)]),
                  offsets=np.arange(n) * spacing,
                  rows=rows, cols=cols, pixel_spacing=pixel_spacing, thickness=thickness,
                  spacing=spacing, reversed=bool(rng.random() < REVERSED_RATE), scale=scale)


def _axial_series(rng, series_id, number, anat, levels, scale):
    """Axial slices in short stacks of 2-3 through each disc of `levels`, normal pointing up."""
    side = int(rng.integers(AXIAL_SIDE[0], AXIAL_SIDE[1] + 1))
    pixel_spacing = _mm(rng.uniform(0.6, 0.75))  # a tight field of view around the canal
    thickness = float(rng.choice([3.5, 4.0]))
    spacing = _mm(thickness + rng.uniform(0.2, 0.5))
    z = []
    for level in levels:
        per_level = 3 if rng.random() < 0.25 else 2
        z.extend(anat.disc_z[level] + (np.arange(per_level) - 1) * spacing)  # offset 0 on the disc
    z = np.array([_mm(v) for v in sorted(z)])
    x0 = -(side / 2 + rng.uniform(-4, 4)) * pixel_spacing
    y0 = anat.canal_y(0.0) - rng.uniform(0.52, 0.58) * side * pixel_spacing
    return Series(series_id, AXIAL, number, AXIAL_ORIENTATION,
                  origin=np.array([_mm(x0), _mm(y0), z[0]]), offsets=z - z[0], rows=side, cols=side,
                  pixel_spacing=pixel_spacing, thickness=thickness, spacing=spacing,
                  reversed=bool(rng.random() < REVERSED_RATE), scale=scale)


def _sagittal_pixel(series: Series, y: float, z: float) -> tuple[float, float]:
    """(column, row) of patient (y, z) on a sagittal slice."""
    return (y - series.origin[1]) / series.pixel_spacing, (series.origin[2] - z) / series.pixel_spacing


def _axial_pixel(series: Series, x: float, y: float) -> tuple[float, float]:
    return (x - series.origin[0]) / series.pixel_spacing, (y - series.origin[1]) / series.pixel_spacing


# =============================================================================================
# drawing (relative intensities; every structure is an alpha mask painted over what is below)


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


def _foramen_z(anat: Anatomy) -> np.ndarray:
    """The foramina sit level with the disc, a little above its centre."""
    return anat.disc_z + 0.1 * anat.gap


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


def _recess_centre(anat: Anatomy, z: float, side: int) -> tuple[float, float]:
    """Lateral recess (x, y): bulging from the canal's front corner; left (side 0) at +x."""
    x = CANAL_AXIAL_WIDTH * anat.canal_half + 0.3 * RECESS_RADII[0] * anat.canal_half
    return (x if side == 0 else -x), float(anat.canal_y(z)) - 0.3 * anat.canal_half


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


# =============================================================================================
# DICOM


def _uid(*parts) -> str:
    # A hash of the parts under pydicom's root: prefix=None would ignore the entropy and return a
    # random UUID. One joined string, since generate_uid concatenates its sources unseparated.
    return generate_uid(PYDICOM_ROOT_UID, entropy_srcs=["/".join(map(str, (UID_NAMESPACE, *parts)))])


IMPLEMENTATION_UID = _uid("implementation")  # one per generator, written into every file's meta


def _write_series(folder: pathlib.Path, series: Series, pixels: list[np.ndarray], study_id: int,
                  seed: int) -> None:
    folder.mkdir(parents=True)
    uids = dict(StudyInstanceUID=_uid(seed, study_id), FrameOfReferenceUID=_uid(seed, study_id, "frame"),
                SeriesInstanceUID=_uid(seed, study_id, series.series_id))
    for k, image in enumerate(pixels):
        instance = series.instance(k)
        ds = _slice_dataset(series, k, image, _uid(seed, study_id, series.series_id, instance))
        ds.PatientID = str(study_id)
        for tag, uid in uids.items():
            setattr(ds, tag, uid)
        ds.save_as(folder / f"{instance}.dcm", enforce_file_format=True)


def _slice_dataset(series: Series, k: int, image: np.ndarray, sop_uid: str) -> Dataset:
    """Spatial slice k of the series as a single-frame MR image (without the study's UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"RSNA_HARNESS_{DEMO_VERSION}"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.SeriesDescription = series.description
    ds.SeriesNumber = series.number
    ds.InstanceNumber = series.instance(k)
    ds.ImagePositionPatient = [_mm(v) for v in series.position(k)]
    ds.ImageOrientationPatient = [_mm(v) for v in series.orientation]
    ds.PixelSpacing = [_mm(series.pixel_spacing)] * 2
    ds.SliceThickness = _mm(series.thickness)
    ds.SpacingBetweenSlices = _mm(series.spacing)
    ds.WindowCenter = round(0.45 * series.scale, 1)  # shows 0 .. 0.9 of the CSF level
    ds.WindowWidth = round(0.9 * series.scale, 1)
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = image.astype("<u2").tobytes()
    return ds


# =============================================================================================
# one study


@dataclass(frozen=True)
class _StudyOut:
    series_rows: list[tuple[int, int, str]]
    coord_rows: list[tuple]


@dataclass(frozen=True)
class _StudyPlan:
    anat: Anatomy
    t2: Series
    t1: Series
    axials: list[Series]
    axial_levels: list[tuple[int, ...]]


def _plan_study(rng: np.random.Generator, series_ids: list[int], severity: np.ndarray) -> _StudyPlan:
    # CSF raw value on T2. Tissue then lies at 30-300: v9's fixed 50/350 window (a CT window on MR
    # values, VARIANTS.md §12.3) saturates the CSF and some bone but still shows the canal's edges.
    scale = float(np.exp(rng.uniform(np.log(300), np.log(900))))

    def series_scale() -> float:
        return scale * rng.uniform(0.9, 1.1)

    numbers = [int(n) for n in rng.permutation(4) + 1]
    side_t2 = int(rng.integers(SAG_SIDE[0], SAG_SIDE[1] + 1))
    spacing_t2 = _mm(rng.uniform(0.85, 1.0))
    gap_px = rng.uniform(34, min(44, (side_t2 - SAG_MARGIN) / 4))  # all five discs stay in view
    anat = _plan_anatomy(rng, severity, spacing_t2, gap_px)
    t2 = _sagittal_series(rng, series_ids[0], SAG_T2, numbers[0], anat, spacing_t2, side_t2, series_scale())
    side_t1 = int(rng.integers(SAG_SIDE[0], SAG_SIDE[1] + 1))
    spacing_t1 = _mm(max(spacing_t2 * rng.uniform(0.95, 1.08), 4 * anat.gap / (side_t1 - SAG_MARGIN)))
    t1 = _sagittal_series(rng, series_ids[1], SAG_T1, numbers[1], anat, spacing_t1, side_t1, series_scale())
    # the foramina sit exactly on the 4th or 5th Sagittal T1 slice off the midline
    anat = replace(anat, foramen_x=int(rng.integers(4, 6)) * t1.spacing)
    if rng.random() < SECOND_AXIAL_RATE:  # an upper and a lower stack, both through L3/L4
        axial_levels = [(0, 1, 2), (2, 3, 4)]
    else:
        axial_levels = [(0, 1, 2, 3, 4)]
    axials = [_axial_series(rng, series_ids[2 + i], numbers[2 + i], anat, levels, series_scale())
              for i, levels in enumerate(axial_levels)]
    return _StudyPlan(anat, t2, t1, axials, axial_levels)


def _make_study(rng: np.random.Generator, root: pathlib.Path, study_id: int, series_ids: list[int],
                severity: np.ndarray, no_coord: np.ndarray, seed: int,
                spinal_on_t1: bool = False) -> _StudyOut:
    """Plan, draw and write one study; returns its series rows and coordinate rows. With
    spinal_on_t1 the spinal coordinate rows name the Sagittal T1 series (see _pick_spinal_on_t1)."""
    plan = _plan_study(rng, series_ids, severity)
    drawings = [(plan.t2, _draw_sagittal_t2), (plan.t1, _draw_sagittal_t1)]
    drawings += [(axial, _draw_axial) for axial in plan.axials]
    for series, draw in drawings:
        pixels = _to_stored(rng, draw(series, plan.anat), series.scale)
        _write_series(root / str(study_id) / str(series.series_id), series, pixels, study_id, seed)

    coord_rows = [(study_id, series.series_id, instance, CONDITIONS[CONDITION_KEYS[c]][0],
                   LEVEL_LABELS[level], x, y)
                  for (c, level), (series, instance, x, y) in _coordinates(rng, plan, spinal_on_t1).items()
                  if severity[c, level] >= 0 and not no_coord[c, level]]
    coord_rows = [coord_rows[i] for i in rng.permutation(len(coord_rows))]  # unsorted, like the real file
    all_series = sorted([plan.t2, plan.t1, *plan.axials], key=lambda s: s.series_id)
    return _StudyOut([(study_id, s.series_id, s.description) for s in all_series], coord_rows)


def _coordinates(rng: np.random.Generator, plan: _StudyPlan, spinal_on_t1: bool = False) -> dict:
    """(condition, level) -> (series, instance, x, y) where an annotator would click; with
    spinal_on_t1 the spinal points are the canal on Sagittal T1's mid slice instead of T2's."""
    anat, t2, t1 = plan.anat, plan.t2, plan.t1

    def noisy(col, row):
        return (round(float(col + rng.uniform(-2, 2)), 6), round(float(row + rng.uniform(-2, 2)), 6))

    def midline(series: Series) -> int:
        return int(np.argmin(np.abs([series.position(k)[0] for k in range(len(series.offsets))])))

    coords = {}
    centre = midline(t2)
    for lvl in range(5):
        z = anat.disc_z[lvl]
        k = centre
        if rng.random() < OFF_CENTRE_INSTANCE_RATE:  # drawn either way: the study's other draws stay put
            k += int(rng.choice([-1, 1]))
        # valid pixels on T1 too: its spacing keeps all five discs in view, the canal at 56-64% across
        spinal_series, k = (t1, midline(t1)) if spinal_on_t1 else (t2, k)
        coords[SPINAL, lvl] = (spinal_series, spinal_series.instance(k),
                               *noisy(*_sagittal_pixel(spinal_series, anat.canal_y(z), z)))
        for side, condition in enumerate((LEFT_FORAMEN, RIGHT_FORAMEN)):
            x = anat.foramen_x if side == 0 else -anat.foramen_x
            k = int(np.argmin(np.abs([t1.position(j)[0] - x for j in range(len(t1.offsets))])))
            fz = _foramen_z(anat)[lvl]
            coords[condition, lvl] = (t1, t1.instance(k), *noisy(*_sagittal_pixel(t1, anat.canal_y(fz), fz)))
        # with two axial stacks the shared level puts left on the upper and right on the lower one
        holders = [a for a, levels in zip(plan.axials, plan.axial_levels) if lvl in levels]
        for side, condition in enumerate((LEFT_RECESS, RIGHT_RECESS)):
            series = holders[min(side, len(holders) - 1)]
            k = int(np.argmin(np.abs(series.position(0)[2] + series.offsets - z)))
            coords[condition, lvl] = (series, series.instance(k),
                                      *noisy(*_axial_pixel(series, *_recess_centre(anat, z, side))))
    return coords


# =============================================================================================
# the dataset


def generate_demo(out_dir: str | os.PathLike, studies: int = DEFAULT_STUDIES, seed: int = DEFAULT_SEED,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> pathlib.Path:
    """Write a synthetic dataset in the Kaggle layout to `out_dir` and return its path.

    Byte-identical for the same (studies, seed), whatever `workers` is: the train studies are drawn
    by that many processes (None: every core from PARALLEL_MIN_STUDIES studies on, else one), each
    from its own spawned seed; the processes are spawned, so a calling script needs the usual
    `if __name__ == "__main__":` guard. Everything is written to a sibling `<out_dir>.tmp-<pid>` first and
    renamed at the end, so an interrupted run leaves nothing at out_dir; an existing non-empty
    out_dir raises FileExistsError. `progress(done, total)` is called after each train study, in
    study order (the one test study is drawn before them)."""
    if studies < 1:
        raise ValueError(f"studies must be at least 1, got {studies}")
    if workers is None:
        workers = (os.cpu_count() or 1) if studies >= PARALLEL_MIN_STUDIES else 1
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; refusing to write the demo there")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left by an earlier run of a process that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        _write_dataset(tmp, studies, seed, progress, workers)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_dataset(root: pathlib.Path, studies: int, seed: int,
                   progress: Callable[[int, int], None] | None, workers: int = 1) -> None:
    seeds = _seeds(seed, studies)
    id_rng = np.random.default_rng(seeds.ids)
    taken: set[int] = set()
    # ids like the real ones: studies 7-10 digits (sorted, as train.csv is), series 8-10 digits
    study_ids = sorted(_distinct_ints(id_rng, studies, 10**6, 2**32, taken))
    test_id = _distinct_ints(id_rng, 1, 10**6, 2**32, taken)[0]
    series_ids = [_distinct_ints(id_rng, 4, 10**7, 2**32, taken) for _ in range(studies + 1)]
    labels, no_coord, spinal_on_t1 = _labels_for(studies, seed)

    test_rng = np.random.default_rng(seeds.test_study)
    hidden = _draw_labels(test_rng, 1)[0]
    test = _make_study(test_rng, root / TEST_IMAGES, test_id, series_ids[-1], hidden,
                       np.zeros_like(hidden, bool), seed)

    series_rows, coord_rows = [], []
    tasks = [(seeds.studies[i], root / TRAIN_IMAGES, study_id, series_ids[i], labels[i], no_coord[i], seed,
              i == spinal_on_t1) for i, study_id in enumerate(study_ids)]
    # closing: if progress() raises, the pool is shut down before the caller removes the folder
    with contextlib.closing(_train_studies(tasks, workers)) as outs:
        for i, out in enumerate(outs):
            series_rows += out.series_rows
            coord_rows += out.coord_rows
            if progress is not None:
                progress(i + 1, studies)

    _write_csvs(root, study_ids, labels, series_rows, coord_rows, test)
    marker = {"generator": GENERATOR, "demo_version": DEMO_VERSION, "studies": studies, "seed": seed,
              # the study_id whose spinal coordinate rows name its Sagittal T1 series (None: no such study)
              "spinal_on_t1_study": None if spinal_on_t1 is None else study_ids[spinal_on_t1]}
    (root / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def is_current(root: str | os.PathLike) -> bool:
    """Whether `root` holds a complete demo written by this generator version: its marker exists and
    states DEMO_VERSION. A built-in demo for which this is False is outdated and can be regenerated."""
    try:
        marker = json.loads((pathlib.Path(root) / MARKER).read_text())
    except (OSError, ValueError):  # missing, unreadable or not JSON
        return False
    return (isinstance(marker, dict) and marker.get("generator") == GENERATOR
            and marker.get("demo_version") == DEMO_VERSION)


def _train_study(task) -> _StudyOut:
    seed_seq, *args = task
    return _make_study(np.random.default_rng(seed_seq), *args)


def _train_studies(tasks: list, workers: int):
    """_StudyOut of each task, in task order. Every study draws from its own seed and writes its own
    folder, so the files do not depend on which process made them or when."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_train_study, tasks)
        return
    # spawn, not fork: the caller may run threads (a progress bar's refresh), and a fork copies their locks
    pool = cf.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(_train_study, tasks, chunksize=4)
    finally:
        # on an error or interrupt, drop what has not started and wait for what has: the caller
        # deletes the folder next, and no worker may still be writing into it
        pool.shutdown(wait=True, cancel_futures=True)


def _write_csvs(root, study_ids, labels, series_rows, coord_rows, test: _StudyOut) -> None:
    severity_names = np.array(SEVERITIES + ("",), dtype=object)  # index -1 -> empty cell
    train = pd.DataFrame(severity_names[labels.reshape(len(study_ids), -1)], columns=TRAIN_COLUMNS[1:])
    train.insert(0, "study_id", study_ids)
    train.to_csv(root / TRAIN_CSV, index=False)
    pd.DataFrame(coord_rows, columns=COORDS_COLUMNS).to_csv(root / COORDS_CSV, index=False)
    pd.DataFrame(series_rows, columns=SERIES_COLUMNS).to_csv(root / SERIES_CSV, index=False)
    pd.DataFrame(test.series_rows, columns=SERIES_COLUMNS).to_csv(root / TEST_SERIES_CSV, index=False)
    test_id = test.series_rows[0][0]
    row_ids = [f"{test_id}_{c}_{lvl}" for c in CONDITIONS for lvl in LEVELS]
    submission = pd.DataFrame({"row_id": row_ids, **{k: 0.333333 for k in CLASS_KEYS}})
    submission[list(SUBMISSION_COLUMNS)].to_csv(root / SUBMISSION_CSV, index=False)
