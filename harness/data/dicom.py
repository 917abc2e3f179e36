"""Reading one DICOM slice into a float array, plus the tags the intensity mapping may need."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom


@dataclass(frozen=True)
class Slice:
    """Raw stored pixel values (no RescaleSlope/Intercept, as the notebooks) and the display window."""

    pixels: np.ndarray
    window_center: float | None
    window_width: float | None


def _first(value) -> float | None:
    """WindowCenter/Width may be multi-valued; the notebooks took the first value."""
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    return None if value is None else float(value)


def read_slice(path: str | Path) -> Slice:
    """Decode one file; raises on an unreadable file (the dataset turns that into a blank slice)."""
    ds = pydicom.dcmread(path)
    return Slice(ds.pixel_array.astype(np.float32),
                 _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth")))
