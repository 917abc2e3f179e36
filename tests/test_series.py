"""Slice neighbours on real series written with pydicom: pixel value = spatial index, so order shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_files import write_mr

from harness.core import competition
from harness.data.dicom import read_slice
from harness.data.series import build_index, instance_neighbours, neighbours, series_index

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # as the demo: normal = -x
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal = +z
OBLIQUE = (0.0, float(np.cos(0.2)), float(np.sin(0.2)), 0.0, 0.0, -1.0)  # a second, tilted sagittal block
SPACING = 4.0


def _normal(orientation) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def write_slice(folder: Path, instance: int, value: int, position=None, orientation=None,
                shape: tuple[int, int] = (16, 16)) -> Path:
    """One file '<instance>.dcm' filled with `value`; geometry left out when None."""
    folder.mkdir(parents=True, exist_ok=True)
    tags = {"InstanceNumber": instance}
    if position is not None:
        tags["ImagePositionPatient"] = [round(float(v), 4) for v in position]
    if orientation is not None:
        tags["ImageOrientationPatient"] = [round(float(v), 6) for v in orientation]
    return write_mr(folder / f"{instance}.dcm", np.full(shape, value), **tags)


def write_stack(folder: Path, instances: list[int], orientation=SAGITTAL, origin=(0.0, 0.0, 0.0),
                value_base: int = 0, shapes=None) -> None:
    """Spatial slice j (ascending along the normal) gets instances[j] and pixel value value_base + j."""
    for j, instance in enumerate(instances):
        position = np.asarray(origin) + j * SPACING * _normal(orientation)
        write_slice(folder, instance, value_base + j, position, orientation,
                    shapes[j] if shapes else (16, 16))


def values(paths: list[Path | None]) -> list[int | None]:
    """The pixel value (spatial index) of each file, None kept."""
    return [None if p is None else int(read_slice(p).pixels[0, 0]) for p in paths]


@pytest.mark.parametrize("numbers", [[7, 6, 5, 4, 3, 2, 1], [3, 6, 1, 7, 2, 5, 4]],
                         ids=["reversed", "shuffled"])
def test_position_mode_follows_space_instance_mode_follows_numbers(tmp_path, numbers):
    write_stack(tmp_path, numbers)
    centre = numbers[3]
    assert values(neighbours(tmp_path, centre, 2, "position")) == [1, 2, 3, 4, 5]
    by_number = {n: j for j, n in enumerate(numbers)}
    by_instance = [by_number.get(centre + o) for o in range(-2, 3)]
    assert values(neighbours(tmp_path, centre, 2, "instance")) == by_instance
    assert not build_index(tmp_path).problems


def test_two_orientation_stacks_stay_apart(tmp_path):
    # odd instances: a sagittal block; even: a tilted one through the same space, so numbers interleave
    # and a merged sort along one normal would mix the two
    write_stack(tmp_path, [1, 3, 5, 7, 9], SAGITTAL, value_base=0)
    write_stack(tmp_path, [2, 4, 6, 8, 10], OBLIQUE, origin=(-2.0, 0.0, 0.0), value_base=100)
    index = build_index(tmp_path)
    assert sorted(map(sorted, index.stacks)) == [[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]]
    assert values(neighbours(tmp_path, 5, 2, "position")) == [0, 1, 2, 3, 4]
    assert values(neighbours(tmp_path, 6, 2, "position")) == [100, 101, 102, 103, 104]
    assert values(neighbours(tmp_path, 5, 1, "instance")) == [101, 2, 102]


def test_orientation_within_tolerance_is_one_stack(tmp_path):
    write_stack(tmp_path, [1, 2, 3])
    write_slice(tmp_path, 4, 3, 3 * SPACING * _normal(SAGITTAL), (0.0, 1.0, 2e-5, 0.0, 0.0, -1.0))
    assert build_index(tmp_path).stacks == [[1, 2, 3, 4]]


def test_slice_sizes_vary_within_a_series(tmp_path):
    shapes = [(16, 16), (24, 12), (8, 32), (16, 20), (30, 30)]
    write_stack(tmp_path, [5, 4, 3, 2, 1], shapes=shapes)
    paths = neighbours(tmp_path, 3, 2, "position")
    assert values(paths) == [0, 1, 2, 3, 4]
    assert [read_slice(p).pixels.shape for p in paths] == shapes
    headers = build_index(tmp_path).headers
    assert [(headers[n].rows, headers[n].columns) for n in (5, 4, 3, 2, 1)] == shapes


@pytest.mark.parametrize("numbers", [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]], ids=["forward", "reversed"])
def test_edge_slices_are_padded_with_none_on_their_side(tmp_path, numbers):
    write_stack(tmp_path, numbers)
    first, last = numbers[0], numbers[-1]
    assert values(neighbours(tmp_path, first, 2, "position")) == [None, None, 0, 1, 2]
    assert values(neighbours(tmp_path, last, 3, "position")) == [1, 2, 3, 4, None, None, None]


def test_file_without_geometry_is_left_out_and_falls_back_to_number_order(tmp_path):
    write_stack(tmp_path, [1, 2, 3, 5, 6])  # spatial values 0 1 2 3 4
    write_slice(tmp_path, 4, 99)  # no ImagePositionPatient / ImageOrientationPatient
    (tmp_path / "7.dcm").write_bytes(b"not a dicom header")
    (tmp_path / "notes.dcm").write_bytes(b"not numbered: ignored")
    (tmp_path / "8.txt").write_bytes(b"not a .dcm: ignored")
    index = build_index(tmp_path)
    assert index.stacks == [[1, 2, 3, 5, 6]]
    assert sorted(index.files) == [1, 2, 3, 4, 5, 6, 7]
    assert len(index.problems) == 2
    assert any(p.startswith("4.dcm: no usable") for p in index.problems)
    assert any(p.startswith("7.dcm: header unreadable") for p in index.problems)
    # the stack skips the slice it cannot place
    assert values(neighbours(tmp_path, 3, 1, "position")) == [1, 2, 3]
    # the labelled slice itself has no geometry: centre +-k by number, the broken 7.dcm included
    paths = index.neighbours(4, 3)
    assert [p.name if p else None for p in paths] == [f"{n}.dcm" for n in range(1, 8)]
    assert values(index.neighbours(4, 2)) == [1, 2, 99, 3, 4]


def test_instance_without_a_file_gives_all_none(tmp_path):
    write_stack(tmp_path, [1, 2, 3, 5, 6])
    assert neighbours(tmp_path, 4, 2, "position") == [None] * 5
    # instance mode is arithmetic: the neighbours that exist are kept, the missing centre is None
    assert [p.name if p else None for p in neighbours(tmp_path, 4, 2, "instance")] == \
        ["2.dcm", "3.dcm", None, "5.dcm", "6.dcm"]
    assert instance_neighbours(tmp_path, 1, 1)[0] is None


def test_missing_folder_does_not_crash(tmp_path):
    folder = tmp_path / "absent"
    assert neighbours(folder, 3, 1, "position") == [None] * 3
    assert neighbours(folder, 3, 1, "instance") == [None] * 3
    assert build_index(folder).problems


def test_index_is_cached_per_folder_and_mode_is_checked(tmp_path):
    write_stack(tmp_path, [1, 2, 3])
    assert series_index(tmp_path) is series_index(str(tmp_path))
    with pytest.raises(ValueError, match="slice mode"):
        neighbours(tmp_path, 2, 1, "spatial")


def _projection(path: Path) -> float:
    """Position along the slice normal, from the header alone (independent of harness.data.series)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    return float(np.array(ds.ImagePositionPatient, dtype=float) @ _normal(orientation))


def test_demo_position_neighbours_run_along_the_normal(demo_root):
    coords = pd.read_csv(demo_root / competition.COORDS_CSV)
    reversed_met = 0
    for row in coords.itertuples():
        folder = demo_root / competition.TRAIN_IMAGES / str(row.study_id) / str(row.series_id)
        paths = neighbours(folder, row.instance_number, 3, "position")
        assert paths[3] == folder / f"{row.instance_number}.dcm"
        z = [_projection(p) for p in paths if p is not None]
        assert all(a < b for a, b in zip(z, z[1:])), (row, z)
        if row.condition == competition.CONDITIONS["spinal_canal_stenosis"][0]:
            by_number = [_projection(p) for p in neighbours(folder, row.instance_number, 3, "instance") if p]
            reversed_met += all(a > b for a, b in zip(by_number, by_number[1:]))
    assert reversed_met  # the demo's reversed series were met, where the two modes disagree
