"""One study: plan its anatomy and series, draw and write every series, and place the coordinate
rows where an annotator would click."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, replace

import numpy as np

from harness.core.competition import CONDITIONS, LEVEL_LABELS
from harness.data.demo.anatomy import Anatomy, _foramen_z, _plan_anatomy, _recess_centre
from harness.data.demo.dicom_writer import _write_series
from harness.data.demo.drawing import _draw_axial, _draw_sagittal_t1, _draw_sagittal_t2, _to_stored
from harness.data.demo.geometry import (
    SAG_MARGIN,
    SAG_SIDE,
    SAG_T1,
    SAG_T2,
    Series,
    _axial_pixel,
    _axial_series,
    _mm,
    _sagittal_pixel,
    _sagittal_series,
)
from harness.data.demo.labels import (
    CONDITION_KEYS,
    LEFT_FORAMEN,
    LEFT_RECESS,
    RIGHT_FORAMEN,
    RIGHT_RECESS,
    SPINAL,
)

SECOND_AXIAL_RATE = 0.10
OFF_CENTRE_INSTANCE_RATE = 0.15  # spinal coordinates placed on a neighbour of the central slice


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
    # values, docs/variants.md §12.3) saturates the CSF and some bone but still shows the canal's edges.
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
    spinal_on_t1 the spinal coordinate rows name the Sagittal T1 series (see labels._pick_spinal_on_t1)."""
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
