"""The preprocessing cache: identical samples with and without it, reused while the source files
and settings stay the same, rebuilt when either changes, unreadable files recorded, not fatal."""
import shutil

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.data import cache
from harness.data.dataset import DirectSource, SliceDataset, crops
from harness.data.preprocess import MISSING, OK, UNREADABLE, prepare_sample, preprocess_key
from harness.data.rsna import data_fingerprint, load_samples

SETTINGS = {  # each a pipeline the cache must reproduce exactly, random training parts included
    "v9 smoke, jitter + v8 augmentation": {"data.crop_jitter": 6, "data.augment": "v8"},
    "padded crops, position order": {"data.crop_border": "pad", "data.slice_mode": "position", "data.crop_jitter": 3},
    "v8 three windows, not collapsed": {"data.intensity": "multiwindow", "data.multiwindow_collapse": False},
    "min-max, v7 stack": {"data.intensity": "minmax", "data.channels": "stack", "data.normalize": "none",
                          "data.crop_jitter": 5},
    "dicom window, frame dropout": {"data.intensity": "dicom_window", "data.frame_dropout": 0.3},
    "output resolution, jitter": {"data.cache_resolution": "output", "data.crop_jitter": 7},
    "output resolution at 3/8, padded": {"data.cache_resolution": "output", "data.img_size": 48,
                                         "data.crop_border": "pad", "data.crop_jitter": 5},
}


def _cfg(**sets):
    return build_config(get_variant("v9"), 0, "smoke", None, sets, None).data


def _copy_demo(demo_root, dst):
    """A writable copy of the demo data (the session fixture stays untouched)."""
    shutil.copytree(demo_root, dst)
    return dst


@pytest.mark.parametrize("sets", list(SETTINGS.values()), ids=list(SETTINGS))
def test_cached_and_uncached_samples_are_identical(demo_root, tmp_path, sets):
    d = _cfg(**sets)
    table = load_samples(demo_root)
    cached = cache.open_or_build(table, d, data_fingerprint(demo_root), tmp_path, workers=2)
    rows = np.arange(len(table.samples))
    for train in (True, False):
        a = SliceDataset(table, rows, d, train, d.augment, 42, cached)
        b = SliceDataset(table, rows, d, train, d.augment, 42, DirectSource(table, d))
        for epoch in (0, 1):
            a.set_epoch(epoch), b.set_epoch(epoch)
            for i in range(0, len(rows), 7):
                x, y = a[i], b[i]
                assert torch.equal(x["image"], y["image"]), (train, epoch, i)
                assert x["label"] == y["label"] and x["level"] == y["level"]


def test_cache_is_reused_and_independent_of_per_epoch_settings(demo_root, tmp_path):
    table, fp = load_samples(demo_root), data_fingerprint(demo_root)
    notes = []
    first = cache.open_or_build(table, _cfg(), fp, tmp_path, workers=1, notice=notes.append)
    again = cache.open_or_build(table, _cfg(**{"data.img_size": 48, "data.augment": "v8"}), fp, tmp_path,
                                notice=notes.append)
    assert again.folder == first.folder and "reused" in notes[-1] and "building" in notes[0]
    assert again.manifest["build_seconds"] == first.manifest["build_seconds"]  # not rebuilt
    # settings of the deterministic part give another cache
    assert preprocess_key(_cfg(**{"data.clahe_clip": 3.0}), fp) != preprocess_key(_cfg(), fp)
    assert preprocess_key(_cfg(**{"data.crop_jitter": 9}), fp) != preprocess_key(_cfg(), fp)  # more room needed
    assert preprocess_key(_cfg(**{"data.window_center": 80.0, "data.intensity": "minmax"}), fp) == \
        preprocess_key(_cfg(**{"data.intensity": "minmax"}), fp)  # the fixed window is unused by min-max
    # no temporary left behind (the builders' lock file stays, empty, as lock files do)
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.folder.name, first.folder.name + ".lock"]


def test_cache_is_rebuilt_when_a_source_file_changes(demo_root, tmp_path):
    root = _copy_demo(demo_root, tmp_path / "data")
    table, d = load_samples(root), _cfg()
    built = cache.open_or_build(table, d, data_fingerprint(root), tmp_path / "cache", workers=1)
    row = table.samples.iloc[0]
    path = table.image_path(row.study_id, row.series_id, row.instance_number)
    import pydicom
    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()  # darker labelled slice
    ds.save_as(path)
    notes = []
    rebuilt = cache.open_or_build(table, d, data_fingerprint(root), tmp_path / "cache", workers=1,
                                  notice=notes.append)
    assert "changed" in notes[0]
    centre = d.num_slices // 2
    assert not np.array_equal(built[0].regions[centre], rebuilt[0].regions[centre])
    assert np.array_equal(rebuilt[0].regions[centre], cache.PreprocessCache(rebuilt.folder)[0].regions[centre])


def test_unreadable_and_missing_slices_are_blank_and_recorded(demo_root, tmp_path):
    root = _copy_demo(demo_root, tmp_path / "data")
    table, d = load_samples(root), _cfg()
    row = table.samples.iloc[0]
    centre = d.num_slices // 2
    broken = table.image_path(row.study_id, row.series_id, row.instance_number + 1)
    shutil.copy(get_testdata_file("MR_truncated.dcm"), broken)  # pydicom's own truncated MR file
    table.samples.loc[0, "instance_number"] = 1  # neighbours below 1 do not exist
    built = cache.open_or_build(table, d, data_fingerprint(root), tmp_path / "cache", workers=2)
    assert built[0].status[:centre].tolist() == [MISSING] * centre and built[0].status[centre] == OK
    broken_rows = [i for i in range(len(built)) if (built[i].status == UNREADABLE).any()]
    assert broken_rows and all(built[i].regions[j] is None for i in broken_rows
                               for j in np.flatnonzero(built[i].status == UNREADABLE))
    assert [p for p, _ in built.unreadable] == [str(broken)]
    assert str(broken) in built.unreadable[0][1] and "\n" not in built.unreadable[0][1]
    image = SliceDataset(table, [broken_rows[0]], d, False, "none", 0, built)[0]["image"]
    assert torch.isfinite(image).all()


def test_output_resolution_regions_hold_every_jittered_window_and_stay_close_to_native(demo_root):
    table, fp = load_samples(demo_root), data_fingerprint(demo_root)
    out = {"data.cache_resolution": "output", "data.img_size": 48}  # 48 / (2 x 64): scale 3/8
    d, roomier = _cfg(**out, **{"data.crop_jitter": 9}), _cfg(**out, **{"data.crop_jitter": 30})
    # keyed: a cache of scaled pixels is its own, and per output size; at scale 1 it is the native one
    assert preprocess_key(d, fp) != preprocess_key(_cfg(**{"data.crop_jitter": 9}), fp)
    assert preprocess_key(d, fp) != preprocess_key(_cfg(**{**out, "data.crop_jitter": 9, "data.img_size": 40}), fp)
    assert preprocess_key(_cfg(**{"data.cache_resolution": "output", "data.img_size": 128}), fp) == \
        preprocess_key(_cfg(**{"data.img_size": 128}), fp)
    half, native = _cfg(**{"data.cache_resolution": "output", "data.crop_jitter": 9}), _cfg(**{"data.crop_jitter": 9})
    to_native, to_shifted = [], []
    for i in range(0, len(table.samples), 4):
        p, big = prepare_sample(table, i, d), prepare_sample(table, i, roomier)
        cx, cy = (int(v) for v in table.samples.loc[i, ["x", "y"]])
        for dx, dy in [(-9, -9), (9, 9), (-9, 4)]:  # the extremes of the jitter: nothing cut off
            assert np.array_equal(crops(p, d, cx + dx, cy + dy), crops(big, d, cx + dx, cy + dy)), (i, dx, dy)
        # scale 1/2 (smoke's 64 px from a 128 px window): a window differs from the native one by less
        # than the native one differs from itself moved one source pixel (the rounding is half of one)
        p, nat = prepare_sample(table, i, half), prepare_sample(table, i, native)
        mean_diff = lambda a, b: np.abs(a.astype(int) - b).mean()
        to_native.append(mean_diff(crops(p, half, cx + 1, cy), crops(nat, native, cx + 1, cy)))
        to_shifted.append(mean_diff(crops(nat, native, cx, cy), crops(nat, native, cx + 1, cy)))
    assert np.mean(to_native) < np.mean(to_shifted)
