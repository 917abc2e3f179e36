"""Series geometry: each series' pixel grid, slice positions and instance order in patient
millimetres, laid over the study's anatomy, and the mapping from patient mm to pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAG_T2, SAG_T1, AXIAL = "Sagittal T2/STIR", "Sagittal T1", "Axial T2"

# ---- acquisition ------------------------------------------------------------------------------
SAG_SIDE = (192, 204)  # sagittal image side (px): the low end of 192-288, for the size budget
SAG_SLICES = (13, 15)
SAG_MARGIN = 40  # px above L1/L2 plus below L5/S1 on a sagittal image
AXIAL_SIDE = (128, 140)
REVERSED_RATE = 0.10  # series whose instance numbers run against the spatial order

SAG_ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns run inferior
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows run to patient left, columns posterior


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
