"""The v9 sample: 7 slices around the labelled instance, blank where a file is missing, normalised."""
import numpy as np
import torch

from harness.data.dataset import IMAGENET_MEAN, IMAGENET_STD, SliceDataset
from harness.data.rsna import load_samples
from harness.registry import get_variant
from harness.runner import build_config


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
