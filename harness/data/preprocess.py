"""The deterministic part of a sample: which files, decoded, intensity-mapped, CLAHE'd and cut to
the crop region with room for the jitter. The preprocessing cache stores exactly this; without the
cache the dataset computes it on the fly, through the same function, so the two cannot disagree.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.config import DataConfig
from harness.data.dicom import UnreadableSlice, read_slice
from harness.data.pixels import crop_region, prepare_full_slice
from harness.data.rsna import SampleTable
from harness.data.series import neighbours

OK, MISSING, UNREADABLE = 0, 1, 2  # per-slice status; MISSING and UNREADABLE become blank slices

# DataConfig fields the deterministic part depends on (the cache's key); everything else is applied
# per epoch and may change freely between runs that share a cache.
PREPROCESS_FIELDS = ("condition", "num_slices", "slice_mode", "rescale", "intensity", "window_center",
                     "window_width", "multiwindow_collapse", "clahe_clip", "clahe_grid")


@dataclass
class PreparedSample:
    """Per slice: the crop region (uint8, (h, w) or (h, w, 3)) or None, its corner in the source
    slice, and a status; plus the unreadable files met, as (path, one-line reason)."""

    regions: list[np.ndarray | None]
    corners: list[tuple[int, int]]
    status: np.ndarray
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def reach(cfg: DataConfig) -> int:
    """How far from the label point the cache must keep pixels: crop radius plus the jitter."""
    return cfg.crop_radius + cfg.crop_jitter


def preprocess_key(cfg: DataConfig, data_fp: str) -> str:
    """Fingerprint of everything that decides a prepared sample (dataset, settings, region reach)."""
    settings = {k: getattr(cfg, k) for k in PREPROCESS_FIELDS} | {"reach": reach(cfg), "data": data_fp}
    if cfg.intensity != "fixed_window":  # keep the key stable under irrelevant fields
        settings.pop("window_center"), settings.pop("window_width")
    if cfg.intensity != "multiwindow":
        settings.pop("multiwindow_collapse")
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _full_slice(path: Path, stamp: tuple[int, int], rescale: bool, intensity: str, center: float, width: float,
                collapse: bool, clip: float, grid: int) -> np.ndarray:
    # the levels of a study mostly share their slices, so a small per-process cache saves decoding;
    # `stamp` (mtime, size) keys it too, so a rewritten file is decoded again
    return prepare_full_slice(read_slice(path, rescale=rescale), intensity, center, width, collapse, clip, grid)


def _stat(path: Path | None) -> os.stat_result | None:
    """The file's stat, or None when there is no regular file."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return st if st is not None and stat.S_ISREG(st.st_mode) else None


def slice_paths(table: SampleTable, row, cfg: DataConfig) -> list[Path | None]:
    """The S files of a sample in the configured slice order; None where there is no file."""
    folder = table.image_path(row.study_id, row.series_id, row.instance_number).parent
    return neighbours(folder, int(row.instance_number), cfg.num_slices // 2, cfg.slice_mode)


def prepare_sample(table: SampleTable, index: int, cfg: DataConfig) -> PreparedSample:
    """The deterministic part of sample `index` of the table. A missing or unreadable file is a
    blank slice (recorded, never raised), as the notebooks did."""
    row = table.samples.iloc[index]
    cx, cy, r = int(row.x), int(row.y), reach(cfg)
    out = PreparedSample([], [], np.zeros(cfg.num_slices, np.int8))
    for s, path in enumerate(slice_paths(table, row, cfg)):
        img = None
        st = _stat(path)
        if st is None:
            out.status[s] = MISSING
        else:
            try:
                img = _full_slice(path, (st.st_mtime_ns, st.st_size), cfg.rescale, cfg.intensity, cfg.window_center, cfg.window_width,
                                  cfg.multiwindow_collapse, cfg.clahe_clip, cfg.clahe_grid)
            except UnreadableSlice as exc:
                out.status[s] = UNREADABLE
                out.unreadable.append((str(path), str(exc)))
        region, x0, y0 = crop_region(img, cx, cy, r) if img is not None else (None, 0, 0)
        out.regions.append(region)
        out.corners.append((x0, y0))
    return out
