"""Which files are a labelled slice's neighbours: by instance number, or in true spatial order.

'instance' mode is the notebooks' (docs/variants.md §1.5): instance numbers centre-k .. centre+k.
'position' mode follows docs/data.md: instance numbers need not follow anatomy, the projection of
ImagePositionPatient on the slice normal does. Both return 2k+1 entries centred on the labelled
slice, None where there is no slice, so the caller pads with blank slices exactly as it does for
a missing file and the centre stays in the middle.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from harness.core.errors import first_line

MODES = ("instance", "position")
ORIENTATION_TOLERANCE = 1e-3  # max abs difference of unit direction cosines within one stack
POSITION_DECIMALS = 3  # mm; slices this close count as one position and fall back on instance order
_HEADER_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns"]


@dataclass(frozen=True)
class SliceHeader:
    """What the ordering needs from one file; orientation/position are None without usable geometry."""

    instance: int
    path: Path
    orientation: np.ndarray | None = None  # (6,) unit row cosines then unit column cosines
    position: np.ndarray | None = None  # (3,) ImagePositionPatient, mm
    rows: int | None = None
    columns: int | None = None


@dataclass
class SeriesIndex:
    """One series folder: its numbered files, their orientation stacks in spatial order, problems."""

    folder: Path
    files: dict[int, Path]  # instance number (file name stem) -> file, every numbered file
    headers: dict[int, SliceHeader]  # files whose header could be read
    stacks: list[list[int]]  # instance numbers per orientation stack, in spatial order
    problems: list[str] = field(default_factory=list)  # one line each, for reporting
    _place: dict[int, tuple[int, int]] = field(init=False, repr=False)  # instance -> (stack, index)

    def __post_init__(self):
        self._place = {n: (s, i) for s, stack in enumerate(self.stacks) for i, n in enumerate(stack)}

    def neighbours(self, instance: int, k: int) -> list[Path | None]:
        """The 2k+1 files centred on `instance` in its stack's spatial order, None past either end.

        An instance without usable geometry falls back to instance-number order (centre +-k, None
        where no file); an instance without a file has no place in any order: 2k+1 Nones.
        """
        offsets = range(-k, k + 1)
        if instance not in self.files:
            return [None for _ in offsets]
        if instance not in self._place:
            return [self.files.get(instance + offset) for offset in offsets]
        s, i = self._place[instance]
        stack = self.stacks[s]
        return [self.files[stack[i + offset]] if 0 <= i + offset < len(stack) else None
                for offset in offsets]


def _unit(vector) -> np.ndarray | None:
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    return v / norm if np.isfinite(norm) and norm > 1e-6 else None


def _geometry(ds) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Unit orientation (6,) and position (3,), or (None, None) when either is absent or unusable."""
    try:
        orientation = [float(v) for v in ds.ImageOrientationPatient]
        position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):  # tag missing, empty or not numbers
        return None, None
    if len(orientation) != 6 or position.shape != (3,) or not np.isfinite(position).all():
        return None, None
    row, col = _unit(orientation[:3]), _unit(orientation[3:])
    if row is None or col is None or _unit(np.cross(row, col)) is None:  # zero or parallel cosines
        return None, None
    return np.concatenate([row, col]), position


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_header(instance: int, path: Path) -> SliceHeader:
    """Geometry tags only (no pixels: fast); raises what pydicom raises on an unreadable file."""
    with warnings.catch_warnings():  # odd VRs in a header are not worth a warning per file
        warnings.simplefilter("ignore", UserWarning)
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        orientation, position = _geometry(ds)
        return SliceHeader(instance, path, orientation, position,
                           _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns")))


def _numbered_files(folder: Path, problems: list[str]) -> dict[int, Path]:
    """Instance number -> file; the Kaggle name '<instance>.dcm' is the key, other files are ignored."""
    files: dict[int, Path] = {}
    for path in sorted(folder.glob("*.dcm"), key=lambda p: (len(p.name), p.name)):  # '7' before '007'
        if not (path.stem.isascii() and path.stem.isdigit()):
            continue
        number = int(path.stem)
        if number in files:  # '7.dcm' and '007.dcm': keep the first name, say so
            problems.append(f"{path.name}: instance {number} already read from {files[number].name}")
            continue
        files[number] = path
    return files


def _stack_order(headers: list[SliceHeader]) -> list[list[int]]:
    """Group by orientation (within tolerance), sort each group along its slice normal."""
    groups: list[list[SliceHeader]] = []
    for header in sorted(headers, key=lambda h: h.instance):
        for group in groups:
            if np.abs(group[0].orientation - header.orientation).max() < ORIENTATION_TOLERANCE:
                group.append(header)
                break
        else:
            groups.append([header])
    stacks = []
    for group in groups:
        # one normal per stack, so every member is measured along the same axis
        normal = np.cross(group[0].orientation[:3], group[0].orientation[3:])
        key = {h.instance: round(float(h.position @ normal), POSITION_DECIMALS) for h in group}
        stacks.append(sorted(key, key=lambda n: (key[n], n)))
    return stacks


def build_index(folder: str | Path) -> SeriesIndex:
    """Read every numbered header of one series folder; never raises for a bad file."""
    folder, problems = Path(folder), []
    if not folder.is_dir():
        problems.append(f"{folder}: no such series folder")
    files = _numbered_files(folder, problems) if folder.is_dir() else {}
    headers: dict[int, SliceHeader] = {}
    for number, path in files.items():
        try:
            headers[number] = read_header(number, path)
        except Exception as error:  # a broken header must not cost the other slices their order
            problems.append(f"{path.name}: header unreadable ({first_line(error)})")
    placed = [h for h in headers.values() if h.orientation is not None]
    unplaced = sorted(set(headers) - {h.instance for h in placed})
    problems += [f"{files[n].name}: no usable ImagePositionPatient/ImageOrientationPatient, "
                 "left out of the spatial order" for n in unplaced]
    return SeriesIndex(folder, files, headers, _stack_order(placed), problems)


@functools.lru_cache(maxsize=256)  # a series serves up to five levels; a study has a few series
def _cached_index(folder: Path) -> SeriesIndex:
    return build_index(folder)


def series_index(folder: str | Path) -> SeriesIndex:
    """The (cached, per process) index of one series folder; treat it as read-only."""
    return _cached_index(Path(folder))


def instance_neighbours(folder: str | Path, instance: int, k: int) -> list[Path | None]:
    """The notebooks' order: instance numbers centre-k .. centre+k, None where no such file."""
    paths = [Path(folder) / f"{int(instance) + offset}.dcm" for offset in range(-k, k + 1)]
    return [path if path.is_file() else None for path in paths]


def neighbours(folder: str | Path, instance: int, k: int, mode: str) -> list[Path | None]:
    """2k+1 files centred on `instance` in 'instance' or 'position' order, None for a blank slice."""
    if mode == "instance":
        return instance_neighbours(folder, instance, k)
    if mode == "position":
        return series_index(folder).neighbours(instance, k)
    raise ValueError(f"slice mode must be one of {MODES}, got {mode!r}")
