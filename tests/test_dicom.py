"""read_slice on real files: every transfer syntax pydicom ships for MR_small, and broken files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_files import write_mr
from pydicom.data import get_testdata_file, get_testdata_files

from harness.core.errors import DataError
from harness.data.dicom import UnreadableSlice, read_slice

MR_SMALL_VARIANTS = sorted(get_testdata_files("MR_small*"))


def _reference() -> np.ndarray:
    """MR_small.dcm's stored values, decoded independently of read_slice."""
    return pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32)


def test_all_mr_small_variants_are_present():
    names = {Path(p).name for p in MR_SMALL_VARIANTS}
    assert {"MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm",
            "MR_small_padded.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_jp2klossless.dcm"} <= names


@pytest.mark.parametrize("path", MR_SMALL_VARIANTS, ids=lambda p: Path(p).name)
def test_every_transfer_syntax_gives_the_same_pixels(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the padded file's warning must be silenced inside the read
        sl = read_slice(path)
    assert sl.pixels.dtype == np.float32 and sl.pixels.dtype.isnative
    assert np.array_equal(sl.pixels, _reference())
    assert sl.window_center == 600.0 and sl.window_width == 1600.0


def test_truncated_file_raises_one_line_message_with_the_path():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(UnreadableSlice) as caught:
        read_slice(path)
    message = str(caught.value)
    assert isinstance(caught.value, DataError)
    assert message == f"{path}: pixel data is truncated"
    assert "\n" not in message and "Traceback" not in message


def test_non_dicom_file_raises(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a DICOM file" * 20)
    with pytest.raises(UnreadableSlice, match="not a DICOM file"):
        read_slice(path)


def test_missing_file_raises_unreadable_not_oserror(tmp_path):
    with pytest.raises(UnreadableSlice, match="No such file"):
        read_slice(tmp_path / "absent.dcm")


def test_dicom_without_pixel_data_raises(tmp_path):
    path = write_mr(tmp_path / "nopixels.dcm", None)
    with pytest.raises(UnreadableSlice) as caught:
        read_slice(path)
    assert str(caught.value) == f"{path}: no pixel data"


def test_multi_frame_file_raises(tmp_path):
    frames = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    path = write_mr(tmp_path / "multi.dcm", frames[0], NumberOfFrames=2)
    ds = pydicom.dcmread(path)
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnreadableSlice, match=r"expected one 2-D grey frame, got shape \(2, 4, 5\)"):
        read_slice(path)


def test_rescale_applies_slope_and_intercept_only_when_asked(tmp_path):
    stored = np.arange(20, dtype=np.uint16).reshape(4, 5) * 7
    path = write_mr(tmp_path / "rescaled.dcm", stored, RescaleSlope=2, RescaleIntercept=-100)
    plain, rescaled = read_slice(path), read_slice(path, rescale=True)
    assert np.array_equal(plain.pixels, stored.astype(np.float32))
    assert np.array_equal(rescaled.pixels, stored.astype(np.float32) * 2 - 100)
    assert rescaled.pixels.dtype == np.float32 and rescaled.pixels.min() == -100


def test_rescale_without_the_tags_returns_stored_values(tmp_path):
    stored = np.arange(20, dtype=np.uint16).reshape(4, 5)
    path = write_mr(tmp_path / "plain.dcm", stored)
    assert np.array_equal(read_slice(path, rescale=True).pixels, stored.astype(np.float32))


def test_multi_valued_window_gives_the_first_value(tmp_path):
    path = write_mr(tmp_path / "windows.dcm", np.ones((4, 5), np.uint16),
                     WindowCenter=[300, 500], WindowWidth=[800, 1200])
    sl = read_slice(path)
    assert (sl.window_center, sl.window_width) == (300.0, 800.0)


def test_absent_window_is_none(tmp_path):
    sl = read_slice(write_mr(tmp_path / "nowindow.dcm", np.ones((4, 5), np.uint16)))
    assert sl.window_center is None and sl.window_width is None
