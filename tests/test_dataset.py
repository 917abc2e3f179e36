"""The v9 sample: 7 slices around the labelled instance, blank where a file is missing, normalised."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.data.dataset import IMAGENET_MEAN, IMAGENET_STD, SliceDataset, normalize_on_device
from harness.data.rsna import load_samples


def _cfg(profile="smoke", **sets):
    return build_config(get_variant("v9"), 0, profile, None, sets, None)


def test_sample_shape_and_normalisation(demo_root):
    cfg = _cfg()
    table = load_samples(demo_root)
    ds = SliceDataset(table, np.arange(len(table.samples)), cfg.data, False, "none", 0)
    item = ds[0]
    assert item["image"].shape == (7, 3, 64, 64) and item["image"].dtype == torch.float32
    assert item["label"].item() == table.samples["label"].iloc[0]
    # grey replicated to 3 channels: after de-normalising, channels are equal
    rgb = item["image"].permute(0, 2, 3, 1).numpy() * IMAGENET_STD + IMAGENET_MEAN
    assert np.allclose(rgb[..., 0], rgb[..., 1], atol=1e-5) and np.allclose(rgb[..., 1], rgb[..., 2], atol=1e-5)


def test_missing_neighbours_are_blank_slices(demo_root):
    cfg = _cfg()
    table = load_samples(demo_root)
    table.samples = table.samples.assign(instance_number=1)  # slices -2..0 do not exist
    ds = SliceDataset(table, np.arange(1), cfg.data, False, "none", 0)
    img = ds[0]["image"].permute(0, 2, 3, 1).numpy() * IMAGENET_STD + IMAGENET_MEAN
    assert np.allclose(img[:3], 0, atol=1e-5)  # zero in pixel space, as the notebooks
    assert img[3].max() > 0.1


def test_training_randomness_is_reproducible_per_epoch(demo_root):
    cfg = _cfg(**{"data.augment": "v8", "data.crop_jitter": 4})  # v9's training randomness
    table = load_samples(demo_root)
    ds = SliceDataset(table, np.arange(4), cfg.data, True, cfg.data.augment, 42)
    a, b = ds[1]["image"], ds[1]["image"]
    assert torch.equal(a, b)  # same (seed, epoch, index) -> same jitter and augmentation
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1]["image"])


def _denormalised(item) -> np.ndarray:
    return item["image"].permute(0, 2, 3, 1).numpy() * IMAGENET_STD + IMAGENET_MEAN


def test_v8_collapse_switch_gives_equal_or_distinct_channels(demo_root):
    table = load_samples(demo_root)
    collapsed = _cfg(**{"data.intensity": "multiwindow"}).data
    views = _cfg(**{"data.intensity": "multiwindow", "data.multiwindow_collapse": False}).data
    rgb = _denormalised(SliceDataset(table, [0], collapsed, False, "none", 0)[0])[3]
    assert np.allclose(rgb[..., 0], rgb[..., 1], atol=1e-5) and np.allclose(rgb[..., 1], rgb[..., 2], atol=1e-5)
    rgb = _denormalised(SliceDataset(table, [0], views, False, "none", 0)[0])[3]
    diffs = [np.abs(rgb[..., a] - rgb[..., b]).mean() for a, b in ((0, 1), (1, 2), (0, 2))]
    assert min(diffs) > 0.02, diffs  # soft, bone and DICOM windows really differ


def test_slices_as_channels_for_v7(demo_root):
    d = _cfg(**{"data.channels": "stack", "data.normalize": "none", "data.intensity": "dicom_window"}).data
    table = load_samples(demo_root)
    grey = SliceDataset(table, [0], _cfg(**{"data.intensity": "dicom_window", "data.normalize": "none"}).data,
                        False, "none", 0)[0]["image"]
    item = SliceDataset(table, [0], d, False, "none", 0)[0]["image"]
    assert item.shape == (7, 64, 64) and 0 <= item.min() and item.max() <= 1
    assert torch.allclose(item, grey[:, 0])  # the same slices, one channel each, in slice order


def test_frame_dropout_zeroes_whole_neighbour_slices_in_training_only(demo_root):
    d = _cfg(**{"data.frame_dropout": 0.5}).data
    table = load_samples(demo_root)
    train = SliceDataset(table, np.arange(40), d, True, "none", 0)
    dropped = np.array([[not train[i]["image"][s].any() for s in range(7)] for i in range(40)])
    assert not dropped[:, 3].any()  # the labelled slice is always kept
    assert 0.3 < dropped[:, [0, 1, 2, 4, 5, 6]].mean() < 0.7
    val = SliceDataset(table, np.arange(40), d, False, "none", 0)
    assert all(val[i]["image"][s].any() for i in range(0, 40, 5) for s in range(7))  # blank slices are -mean/std


def test_position_order_follows_anatomy_where_instance_numbers_run_backwards(demo_root):
    """The demo has series numbered against their position: instance mode then walks the other way."""
    import pydicom

    from harness.data.series import series_index

    table = load_samples(demo_root)
    for r, row in table.samples.iterrows():  # noqa: B007 - r is used after the loop
        folder = table.image_path(row.study_id, row.series_id, row.instance_number).parent
        stack = series_index(folder).stacks[0]
        if stack[0] > stack[-1] and row.instance_number - 3 >= 1 and row.instance_number + 3 <= max(stack):
            break
    else:
        raise AssertionError("the demo should hold a series numbered against its position")
    by_instance = SliceDataset(table, [r], _cfg().data, False, "none", 0)[0]["image"]
    by_position = SliceDataset(table, [r], _cfg(**{"data.slice_mode": "position"}).data, False, "none", 0)[0]["image"]
    assert torch.equal(by_position, by_instance.flip(0))  # same slices, anatomical order
    z = []
    for offset in range(-3, 4):
        ds = pydicom.dcmread(folder / f"{row.instance_number - offset}.dcm", stop_before_pixels=True)
        normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:],
                                                                                    float))
        z.append(float(np.array(ds.ImagePositionPatient, float) @ normal))
    assert np.all(np.diff(z) > 0)  # position order = increasing projection on the normal


@pytest.mark.parametrize("variant, sets", [
    ("v9", {"data.augment": "v8", "data.crop_jitter": 3, "data.blank_slice": "normalized", "data.frame_dropout": 0.3}),
    ("v9", {}),  # no augmentation: one grey plane travels per slice
    ("v7", {"data.augment": "v7"}),  # slices as channels
    ("v8", {"data.multiwindow_collapse": False, "data.normalize": "none"}),
], ids=["v9-augmented", "v9-grey", "v7-stack", "v8-windows-unnormalised"])
def test_uint8_handoff_normalised_on_the_device_equals_the_float_samples(demo_root, variant, sets):
    """On CUDA the loader hands over uint8 and the trainer normalises on the device: the batches must
    be the very tensors the CPU path makes (run here on the CPU, the same float32 operations)."""
    cfg = build_config(get_variant(variant), 0, "smoke", None, sets, None)
    assert (cfg.data.channels == "stack") == (variant == "v7")
    table = load_samples(demo_root)
    rows = np.arange(12)
    floats, uint8s = (SliceDataset(table, rows, cfg.data, True, cfg.data.augment, 0, uint8=u) for u in (False, True))
    for ds in (floats, uint8s):
        ds.set_epoch(2)
    expected = next(iter(DataLoader(floats, batch_size=6)))
    handoff = next(iter(DataLoader(uint8s, batch_size=6)))
    assert handoff["image"].dtype == torch.uint8
    assert handoff["image"].nbytes * 4 <= expected["image"].nbytes
    got = normalize_on_device(handoff["image"], handoff["zero"], cfg.data)
    assert got.dtype == torch.float32 and torch.equal(got, expected["image"])
