"""The v9 pixel pipeline on known images: window, CLAHE, clipped crop, resize, channels, normalisation."""
import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from harness.data.dicom import Slice, read_slice
from harness.data.pixels import (
    BONE_WINDOW,
    SOFT_WINDOW,
    clahe,
    crop_box,
    crop_resize,
    crop_window,
    minmax,
    prepare_full_slice,
    three_windows,
    to_uint8,
    window,
)


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


def _ramp_slice(wc=None, ww=None) -> Slice:
    """A slice spanning raw MR values 0..1500, so the soft, bone and DICOM windows all differ."""
    return Slice(np.tile(np.linspace(0, 1500, 64, dtype=np.float32), (64, 1)), wc, ww)


def test_three_windows_are_soft_bone_and_dicom():
    rgb = three_windows(_ramp_slice(700.0, 1400.0))
    raw = _ramp_slice().pixels
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], window(raw, *SOFT_WINDOW).astype(np.uint8))
    assert np.array_equal(rgb[..., 1], window(raw, *BONE_WINDOW).astype(np.uint8))
    assert np.array_equal(rgb[..., 2], window(raw, 700, 1400).astype(np.uint8))
    assert rgb[0, 0, 1] == 76  # bone window: raw 0 -> 76.5, truncated (docs/variants.md §8.1)


def test_multiwindow_collapse_gives_one_grey_image_replicated():
    """v8 as it ran: RGB2GRAY before CLAHE, so the model sees three equal channels."""
    grey = prepare_full_slice(_ramp_slice(), "multiwindow", 0, 1, collapse=True, clip=2.0, grid=8)
    assert grey.ndim == 2
    rgb = three_windows(_ramp_slice())
    expected = clahe(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 2.0, 8)
    assert np.array_equal(grey, expected)
    three = np.repeat(grey[..., None], 3, axis=-1)
    assert np.array_equal(three[..., 0], three[..., 1]) and np.array_equal(three[..., 1], three[..., 2])


def test_multiwindow_without_collapse_keeps_three_views():
    views = prepare_full_slice(_ramp_slice(), "multiwindow", 0, 1, collapse=False, clip=2.0, grid=8)
    assert views.shape == (64, 64, 3)
    assert not np.array_equal(views[..., 0], views[..., 1]) and not np.array_equal(views[..., 1], views[..., 2])
    for c in range(3):  # CLAHE per channel
        assert np.array_equal(views[..., c], clahe(np.ascontiguousarray(three_windows(_ramp_slice())[..., c]), 2.0, 8))


def test_pad_keeps_the_scale_where_clip_stretches():
    img = np.full((100, 100), 200, np.uint8)
    padded = crop_resize(img, 0, 0, 40, 80, pad=True)  # 80x80 window, only its lower-right quarter inside
    assert padded[:40, :].max() == 0 and padded[:, :40].max() == 0 and padded[41:, 41:].min() == 200
    clipped = crop_resize(img, 0, 0, 40, 80)
    assert clipped.min() == 200  # the 40x40 inside part stretched over everything


def test_a_region_with_room_for_jitter_gives_the_same_crop_as_the_whole_slice():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (90, 120), dtype=np.uint8)
    for cx, cy in [(5, 7), (60, 45), (118, 88), (200, 10)]:
        reach = 30 + 8  # crop radius + jitter
        region, x0, y0 = crop_box(img, cx - reach, cy - reach, cx + reach, cy + reach)
        for dx, dy in [(-8, 8), (0, 0), (8, -3)]:
            for pad in (False, True):
                assert np.array_equal(crop_window(region, x0, y0, cx + dx, cy + dy, 30, 32, pad),
                                      crop_resize(img, cx + dx, cy + dy, 30, 32, pad))
