"""Reading one DICOM slice into a float array, plus the tags the intensity mapping may need."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from harness.core.errors import DataError

# pydicom's own wording -> the short reason we report; anything else keeps its first line.
_KNOWN_REASONS = (
    ("less than expected", "pixel data is truncated"),
    ("no pixel data", "no pixel data"),
    ("no (0002,0010) 'Transfer Syntax UID'", "no transfer syntax (file ends inside the header?)"),
)
_REASON_CHARS = 160  # a reason is a log line, not an essay


class UnreadableSlice(DataError):
    """A file that does not decode to one 2-D image; the message is one line, '<path>: <reason>'."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {' '.join(reason.split())[:_REASON_CHARS]}")
        self.path, self.reason = Path(path), reason


@dataclass(frozen=True)
class Slice:
    """Pixels (stored values, or rescaled on request) as float32 (H, W), and the display window."""

    pixels: np.ndarray
    window_center: float | None
    window_width: float | None


def _first(value) -> float | None:
    """WindowCenter/Width may be multi-valued; the notebooks took the first value."""
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)
    except (TypeError, ValueError):  # absent, empty or malformed: the mapping falls back to min-max
        return None


def _reason(error: Exception) -> str:
    if isinstance(error, InvalidDicomError):
        return "not a DICOM file"
    if isinstance(error, OSError):  # missing file, a folder, no permission: strerror says which
        return error.strerror or type(error).__name__
    text = str(error)
    for needle, reason in _KNOWN_REASONS:
        if needle in text:
            return reason
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def read_slice(path: str | Path, rescale: bool = False) -> Slice:
    """Decode one single-frame file; rescale=True applies RescaleSlope/Intercept when present.

    Raises UnreadableSlice (never anything else) when no 2-D image comes out, so a caller can turn
    any broken file into a blank slice and count it.
    """
    try:
        # A data run meets thousands of files; pydicom's UserWarnings (excess padding, odd VRs)
        # would flood the log without changing the pixels we return.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array  # compressed syntaxes go through the pylibjpeg plugins
            if rescale:  # modality LUT: slope/intercept when present, stored values otherwise
                pixels = apply_rescale(pixels, ds)
            window = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    except Exception as error:  # decoder plugins raise all sorts; the caller needs one type
        raise UnreadableSlice(path, _reason(error)) from error
    if pixels.ndim != 2:  # multi-frame (frames, H, W) or colour (H, W, 3): not one grey slice
        raise UnreadableSlice(path, f"expected one 2-D grey frame, got shape {pixels.shape}")
    # astype also turns big-endian stored values into native float32
    return Slice(pixels.astype(np.float32), *window)
