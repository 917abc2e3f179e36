"""The v9 pixel pipeline on known images: window, CLAHE, clipped crop, resize, channels, normalisation."""
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from harness.data.dicom import Slice, read_slice
from harness.data.pixels import clahe, crop_resize, minmax, to_uint8, window


def test_fixed_window_maps_the_notebook_range():
    img = np.array([[-125.0, 50.0, 225.0, 1000.0, -500.0]], dtype=np.float32)
    out = to_uint8(Slice(img, None, None), "fixed_window", 50, 350)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 127, 255, 255, 0]]  # 127.5 truncates to 127, as astype(uint8) did


def test_dicom_window_falls_back_to_minmax_without_tags():
    img = np.array([[0.0, 50.0, 100.0]], dtype=np.float32)
    assert to_uint8(Slice(img, None, None), "dicom_window", 0, 1).tolist() == [[0, 127, 255]]
    assert to_uint8(Slice(img, 50.0, 100.0), "dicom_window", 0, 1).tolist() == [[0, 127, 255]]
    assert to_uint8(Slice(img, 100.0, 100.0), "dicom_window", 0, 1).tolist() == [[0, 0, 127]]


def test_minmax_constant_slice_is_zero():
    assert not minmax(np.full((4, 4), 7.0)).any()


def test_window_formula():
    assert window(np.array([0.0]), 50, 350)[0] == pytest.approx((0 + 125) / 350 * 255)


def test_clahe_is_applied_to_the_full_slice_and_can_be_off():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) * 60 + 100).astype(np.uint8)
    out = clahe(img, 2.0, 8)
    assert out.shape == img.shape and out.std() > img.std()  # contrast stretched
    assert clahe(img, 0, 8) is img


def test_crop_is_clipped_at_the_border_then_stretched():
    img = np.zeros((100, 100), np.uint8)
    img[:, :50] = 200
    interior = crop_resize(img, 50, 50, 10, 20)  # window x 40..60: left half bright
    assert interior[:, :10].min() == 200 and interior[:, 10:].max() == 0
    corner = crop_resize(img, 0, 0, 40, 40)  # window clipped to 0..40 x 0..40, all bright, stretched to 40
    assert corner.shape == (40, 40) and corner.min() == 200
    assert not crop_resize(img, 500, 500, 10, 16).any()  # point outside the image: zeros


def test_reads_pydicom_bundled_mr_file():
    path = get_testdata_file("MR_small.dcm")
    sl = read_slice(path)
    ds = pydicom.dcmread(path)
    assert sl.pixels.shape == (ds.Rows, ds.Columns) and sl.pixels.dtype == np.float32
    assert np.array_equal(sl.pixels, ds.pixel_array.astype(np.float32))  # stored values, no rescale
