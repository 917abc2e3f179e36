"""One study's lumbar spine, planned in patient millimetres (DICOM LPS, midline at x = 0) from
its labels: disc heights, the canal's course and how far each level's stenosis narrows the
canal, the neural foramina and the lateral recesses."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.demo.labels import SPINAL

# ---- anatomy: how much each severity narrows a structure ------------------------------------
CANAL_NARROWING = ((0.0, 0.15), (0.45, 0.60), (0.80, 0.95))  # fraction of canal width removed
HOLE_SCALE = ((0.85, 1.0), (0.55, 0.68), (0.28, 0.40))  # foramen / lateral recess size factor
CANAL_AXIAL_WIDTH = 1.35  # canal half width left-right on Axial T2, in sagittal half widths
RECESS_RADII = (0.55, 0.45)  # lateral recess radii (x, y) at full size, in canal half widths


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


def _foramen_z(anat: Anatomy) -> np.ndarray:
    """The foramina sit level with the disc, a little above its centre."""
    return anat.disc_z + 0.1 * anat.gap


def _recess_centre(anat: Anatomy, z: float, side: int) -> tuple[float, float]:
    """Lateral recess (x, y): bulging from the canal's front corner; left (side 0) at +x."""
    x = CANAL_AXIAL_WIDTH * anat.canal_half + 0.3 * RECESS_RADII[0] * anat.canal_half
    return (x if side == 0 else -x), float(anat.canal_y(z)) - 0.3 * anat.canal_half
