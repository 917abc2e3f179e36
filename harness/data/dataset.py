"""Torch dataset: a sample row -> (S, 3, H, W) tensor of the labelled slice and its neighbours.

Slice selection in 'instance' mode (VARIANTS.md §1.5): instance numbers centre-k .. centre+k, a
missing or unreadable file is a blank slice in its place, the same (x, y) for every slice.
Randomness (crop jitter, augmentation) comes from a generator seeded by (seed, epoch, index), so a
sample looks the same whichever worker loads it.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import DataConfig
from harness.data import augment
from harness.data.dicom import read_slice
from harness.data.pixels import clahe, crop_resize, to_uint8
from harness.data.rsna import SampleTable

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@functools.lru_cache(maxsize=2048)
def prepared_slice(path: Path, intensity: str, center: float, width: float, clip: float, grid: int) -> np.ndarray:
    """The deterministic full-slice part (decode, intensity, CLAHE), shared by the levels of a study.

    The levels of a study mostly sit on the same instances, so this per-process cache removes most
    decoding; the on-disk preprocessing cache of DESIGN.md replaces it for real-size data.
    """
    return clahe(to_uint8(read_slice(path), intensity, center, width), clip, grid)


class SliceDataset(Dataset):
    """Samples of one fold; `augment` names a recipe of harness.data.augment ('none' for validation)."""

    def __init__(self, table: SampleTable, rows, cfg: DataConfig, train: bool, recipe: str, seed: int):
        self.table, self.cfg, self.train, self.seed = table, cfg, train, seed
        self.samples = table.samples.iloc[rows].reset_index(drop=True)
        self.transform = augment.build(recipe)
        self.epoch = 0
        self.unreadable = 0  # files that exist but failed to decode (per process)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.samples)

    def _slice(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        c = self.cfg
        try:
            return prepared_slice(path, c.intensity, c.window_center, c.window_width, c.clahe_clip, c.clahe_grid)
        except Exception:  # a broken file is a blank slice, as in the notebooks, and is counted
            self.unreadable += 1
            return None

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row, c = self.samples.iloc[i], self.cfg
        rng = np.random.default_rng([self.seed, self.epoch, i, int(self.train)])
        cx, cy = int(row.x), int(row.y)
        if self.train and c.crop_jitter:
            cx, cy = (int(v) + int(rng.integers(-c.crop_jitter, c.crop_jitter + 1)) for v in (cx, cy))
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
        half = c.num_slices // 2
        slices = []
        for offset in range(-half, half + 1):
            img = self._slice(self.table.image_path(row.study_id, row.series_id, row.instance_number + offset))
            crop = (np.zeros((c.img_size, c.img_size), np.uint8) if img is None
                    else crop_resize(img, cx, cy, c.crop_radius, c.img_size))
            rgb = np.repeat(crop[:, :, None], 3, axis=2)
            if self.transform is not None:  # per slice, independently, as the notebooks did
                rgb = self.transform(image=rgb)["image"]
            slices.append(rgb)
        x = np.stack(slices).astype(np.float32) / 255.0
        if c.normalize == "imagenet":
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        return {"image": torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                "level": torch.tensor(row.level_idx, dtype=torch.long),
                "label": torch.tensor(row.label, dtype=torch.long),
                "index": torch.tensor(i, dtype=torch.long)}
