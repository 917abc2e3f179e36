"""The deterministic part of a sample: which files, decoded, intensity-mapped, CLAHE'd and cut to
the crop region with room for the jitter. The preprocessing cache stores exactly this; without the
cache the dataset computes it on the fly, through the same function, so the two cannot disagree.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.core.config import DataConfig
from harness.data.dicom import UnreadableSlice, read_slice
from harness.data.pixels import crop_box, prepare_full_slice, scale_slice
from harness.data.rsna import SampleTable
from harness.data.series import neighbours

OK, MISSING, UNREADABLE = 0, 1, 2  # per-slice status; MISSING and UNREADABLE become blank slices

# DataConfig fields the deterministic part depends on (the cache's key); everything else is applied
# per epoch and may change freely between runs that share a cache.
PREPROCESS_FIELDS = ("condition", "other_series_points", "num_slices", "slice_mode", "rescale", "intensity",
                     "window_center", "window_width", "multiwindow_collapse", "clahe_clip", "clahe_grid",
                     "cache_resolution")


@dataclass
class PreparedSample:
    """Per slice: the crop region (uint8, (h, w) or (h, w, 3)) or None, its corner in the slice (in
    cached pixels: see output_scale), and a status; plus the unreadable files met, as (path, one-line reason)."""

    regions: list[np.ndarray | None]
    corners: list[tuple[int, int]]
    status: np.ndarray
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def reach(cfg: DataConfig) -> int:
    """How far from the label point the cache must keep pixels: crop radius plus the jitter."""
    return cfg.crop_radius + cfg.crop_jitter


def output_scale(cfg: DataConfig) -> float:
    """Cached pixels per source pixel: 1 at native resolution; for cache_resolution='output' the
    crop's own resize factor, img_size / (2 crop_radius), so the window needs no resize."""
    return 1.0 if cfg.cache_resolution == "native" else cfg.img_size / (2 * cfg.crop_radius)


def scaled(v: float, scale: float) -> int:
    """Source coordinate -> cached pixels, rounded half up: monotone, so the jitter's range of
    centres maps onto a range, which the cached region covers."""
    return v if scale == 1 else math.floor(v * scale + 0.5)


def window(cfg: DataConfig, cx: int, cy: int) -> tuple[int, int, int]:
    """Centre and radius of the crop window in cached pixels, for a (jittered) centre in source pixels."""
    s = output_scale(cfg)
    return scaled(cx, s), scaled(cy, s), scaled(cfg.crop_radius, s)


def preprocess_key(cfg: DataConfig, data_fp: str) -> str:
    """Fingerprint of everything that decides a prepared sample (dataset, settings, region reach)."""
    settings = {k: getattr(cfg, k) for k in PREPROCESS_FIELDS} | {"reach": reach(cfg), "data": data_fp}
    if cfg.other_series_points == "drop":  # the samples as before the switch existed: keys stay valid
        settings.pop("other_series_points")
    if cfg.intensity != "fixed_window":  # keep the key stable under irrelevant fields
        settings.pop("window_center"), settings.pop("window_width")
    if cfg.intensity != "multiwindow":
        settings.pop("multiwindow_collapse")
    if output_scale(cfg) == 1:  # native pixels, however asked for: the keys of existing caches stay valid
        settings.pop("cache_resolution")
    else:  # the cached pixels are scaled for this output size
        settings["img_size"] = cfg.img_size
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _full_slice(path: Path, stamp: tuple[int, int], rescale: bool, intensity: str, center: float, width: float,
                collapse: bool, clip: float, grid: int, scale: float) -> np.ndarray:
    # the levels of a study mostly share their slices, so a small per-process cache saves decoding;
    # `stamp` (mtime, size) keys it too, so a rewritten file is decoded again. CLAHE runs at native
    # resolution in both modes (it is what the notebooks saw); only then is the slice scaled.
    img = prepare_full_slice(read_slice(path, rescale=rescale), intensity, center, width, collapse, clip, grid)
    return scale_slice(img, scale)


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
    cx, cy, j, scale = int(row.x), int(row.y), cfg.crop_jitter, output_scale(cfg)
    # room for every window the jitter can give, in cached pixels: the centres run from
    # scaled(c - j) to scaled(c + j) (at native scale this is crop radius + jitter around the point)
    r = scaled(cfg.crop_radius, scale)
    lo = [scaled(c - j, scale) - r for c in (cx, cy)]
    hi = [scaled(c + j, scale) + r for c in (cx, cy)]
    box = (lo[0], lo[1], hi[0], hi[1])
    out = PreparedSample([], [], np.zeros(cfg.num_slices, np.int8))
    for s, path in enumerate(slice_paths(table, row, cfg)):
        img = None
        st = _stat(path)
        if st is None:
            out.status[s] = MISSING
        else:
            try:
                img = _full_slice(path, (st.st_mtime_ns, st.st_size), cfg.rescale, cfg.intensity, cfg.window_center,
                                  cfg.window_width, cfg.multiwindow_collapse, cfg.clahe_clip, cfg.clahe_grid, scale)
            except UnreadableSlice as exc:
                out.status[s] = UNREADABLE
                out.unreadable.append((str(path), str(exc)))
        region, x0, y0 = crop_box(img, *box) if img is not None else (None, 0, 0)
        out.regions.append(region)
        out.corners.append((x0, y0))
    return out
