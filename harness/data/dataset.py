"""Torch dataset: a sample row -> the tensor of the labelled slice and its neighbours.

The deterministic part of a sample comes from a source: the preprocessing cache, or `DirectSource`
computing the same thing on the fly. The random part happens here, per epoch: crop jitter (one
draw per sample, the same for every slice), the crop window and resize, channel layout,
augmentation (per slice as the notebooks did, or once per sample), normalisation, frame dropout.
Randomness comes from a generator seeded by (seed, epoch, index), so a sample looks the same
whichever worker loads it.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from harness.core.config import DataConfig
from harness.data import augment
from harness.data.pixels import crop_window
from harness.data.preprocess import PreparedSample, prepare_sample, window
from harness.data.rsna import SampleTable

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# uint8 -> float32 per output channel, the exact values of (x / 255 - mean) / std in float32: a table
# lookup is one pass over the sample instead of three (the sample is 5.5 MB of floats at 256 px)
_GREY = np.arange(256, dtype=np.float32) / 255.0
LOOKUP = {"imagenet": (_GREY[None, :] - IMAGENET_MEAN[:, None]) / IMAGENET_STD[:, None],
          "none": np.tile(_GREY, (3, 1))}
# channels='stack' has no RGB: ImageNet normalisation there uses the grey mean/std of the three
STACK_LOOKUP = {"imagenet": (_GREY - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean(), "none": _GREY}


def to_float(x: np.ndarray, normalize: str) -> np.ndarray:
    """(S, H, W, C) uint8, C = 1 (grey, replicated as COLOR_GRAY2RGB did) or 3 -> (S, 3, H, W) float32."""
    lut = LOOKUP[normalize]
    out = np.empty((x.shape[0], 3) + x.shape[1:3], np.float32)
    for c in range(3):
        plane = np.ascontiguousarray(x[..., c if x.shape[-1] == 3 else 0])
        out[:, c] = lookup(plane, lut[c])
    return out


@functools.lru_cache(maxsize=None)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # copied once per device: a blocking host-to-device copy per batch would make each step wait for the GPU
    return tuple(torch.from_numpy(a).to(device).view(1, 1, 3, 1, 1) for a in (IMAGENET_MEAN, IMAGENET_STD))


def normalize_on_device(image: torch.Tensor, zero: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """The float batch the dataset makes, from its uint8 hand-off (SliceDataset uint8=True): the same
    float32 operations as the lookup tables, so the values are identical, done on the GPU. `zero`
    marks the slices set to 0 after normalisation (blank_slice='normalized', frame dropout)."""
    x = image.float() / np.float32(255.0)
    if cfg.channels == "stack":
        if cfg.normalize == "imagenet":
            x = (x - float(IMAGENET_MEAN.mean())) / float(IMAGENET_STD.mean())
    else:
        x = x.expand(-1, -1, 3, -1, -1).clone() if x.shape[2] == 1 else x  # grey: one plane travelled
        if cfg.normalize == "imagenet":
            mean, std = _imagenet_stats(x.device)
            x = (x - mean) / std
    x[zero] = 0
    return x


def lookup(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """lut[x] for uint8 x of any shape; cv2.LUT is several times faster than NumPy indexing."""
    return cv2.LUT(x.reshape(-1, x.shape[-1]), lut).reshape(x.shape)


def crops(p: PreparedSample, cfg: DataConfig, cx: int, cy: int) -> np.ndarray:
    """(S, H, W, C) uint8: the crop of every slice around (cx, cy) (source pixels, jitter included),
    blank where the slice is. With cache_resolution='output' the window is placed in the scaled
    pixels of the regions, where it is already img_size wide."""
    wx, wy, radius = window(cfg, cx, cy)
    channels = next((r.shape[2] for r in p.regions if r is not None and r.ndim == 3), 1)
    out = np.zeros((len(p.regions), cfg.img_size, cfg.img_size, channels), np.uint8)
    for s, (region, (x0, y0)) in enumerate(zip(p.regions, p.corners)):
        if region is not None:
            crop = crop_window(region, x0, y0, wx, wy, radius, cfg.img_size, cfg.crop_border == "pad")
            out[s] = crop.reshape(cfg.img_size, cfg.img_size, channels)
    return out


class Source(Protocol):
    def __getitem__(self, index: int) -> PreparedSample: ...


class DirectSource:
    """Prepares samples on every read (data.cache=false). Unreadable files are appended to
    `log` (one 'path<TAB>reason' line each), so DataLoader worker processes report them too."""

    def __init__(self, table: SampleTable, cfg: DataConfig, log: Path | None = None):
        self.table, self.cfg, self.log = table, cfg, log

    def __getitem__(self, index: int) -> PreparedSample:
        p = prepare_sample(self.table, index, self.cfg)
        if p.unreadable and self.log is not None:
            with open(self.log, "a") as f:  # appends of a short line are atomic across processes
                f.writelines(f"{path}\t{reason}\n" for path, reason in p.unreadable)
        return p


class SliceDataset(Dataset):
    """Samples `rows` of a table. `recipe` names the augmentation (harness.data.augment; 'none' for
    validation); `copies` gives, per item, -1 for an original row or the augmentation variant of
    an oversampled copy, which gets `cfg.strong_augment` (sampler='progressive').
    `uint8=True` (on CUDA): the image leaves as uint8, one plane per grey slice, with the mask of
    slices to zero, and `normalize_on_device` finishes it: 4-12x fewer bytes between the loader
    workers and the main process, and over PCIe."""

    def __init__(self, table: SampleTable, rows, cfg: DataConfig, train: bool, recipe: str, seed: int,
                 source: Source | None = None, copies: np.ndarray | None = None, uint8: bool = False):
        self.table, self.cfg, self.train, self.seed, self.uint8 = table, cfg, train, seed, uint8
        self.rows = np.asarray(rows, dtype=np.int64)
        self.source = source if source is not None else DirectSource(table, cfg)
        self.copies = copies
        self.transform = augment.build(recipe, api=cfg.augment_api)
        self.strong = augment.build(cfg.strong_augment, api=cfg.augment_api) if copies is not None else None
        column = lambda name: table.samples[name].to_numpy()[self.rows]  # arrays: no pandas row per item
        self.labels, self.levels, self.points = column("label"), column("level_idx"), column(["x", "y"])
        # in shared memory: persistent loader workers keep their copy of the dataset across epochs,
        # and must still see the epoch the trainer sets (fork and spawn both share the storage)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int):
        self._epoch.fill_(epoch)

    def __len__(self):
        return len(self.rows)

    def _transform_for(self, i: int):
        """The recipe of item i: the strong one for an oversampled copy, else the dataset's."""
        return self.strong if self.copies is not None and self.copies[i] >= 0 else self.transform

    def _augments(self, i: int) -> bool:
        return self._transform_for(i) is not None

    def _augment(self, x: np.ndarray, i: int, rng: np.random.Generator) -> np.ndarray:
        copy = -1 if self.copies is None else int(self.copies[i])
        transform = self._transform_for(i)
        if transform is None:
            return x
        aug_seed = int(rng.integers(2**31))
        if copy >= 0 and self.cfg.oversample_fixed_aug:  # the notebooks' np.random.seed(idx*1000+variant)
            aug_seed = i * 1000 + copy
        return augment.apply(transform, x, self.cfg.augment_per_slice, aug_seed)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, r = self.cfg, int(self.rows[i])
        rng = np.random.default_rng([self.seed, self.epoch, i, int(self.train)])
        cx, cy = (int(v) for v in self.points[i])
        if self.train and c.crop_jitter:
            cx, cy = (v + int(rng.integers(-c.crop_jitter, c.crop_jitter + 1)) for v in (cx, cy))
        prepared = self.source[r]
        x = crops(prepared, c, cx, cy)
        if c.channels == "stack":  # v7: the S grey slices are the channels of one image
            x = np.ascontiguousarray(self._augment(x[..., 0].transpose(1, 2, 0)[None], i, rng)[0].transpose(2, 0, 1))
            image = x if self.uint8 else lookup(x, STACK_LOOKUP[c.normalize])  # (S, H, W)
        else:
            if self._augments(i) and x.shape[-1] == 1:  # grey -> RGB first: noise differs per channel
                x = np.repeat(x, 3, axis=-1)
            x = self._augment(x, i, rng)
            image = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.uint8 else to_float(x, c.normalize)
        zero = np.zeros(len(image), bool)
        if c.blank_slice == "normalized":  # blank slices at the normalised mean instead of black
            zero |= prepared.status != 0
        if self.train and c.frame_dropout > 0:  # v6: zero after normalisation, centre slice always kept
            drop = rng.random(len(image)) <= c.frame_dropout
            drop[len(image) // 2] = False
            zero |= drop
        sample = {"level": torch.tensor(self.levels[i], dtype=torch.long),
                  "label": torch.tensor(self.labels[i], dtype=torch.long),
                  "index": torch.tensor(i, dtype=torch.long)}
        if self.uint8:
            return sample | {"image": torch.from_numpy(image), "zero": torch.from_numpy(zero)}
        image[zero] = 0
        return sample | {"image": torch.from_numpy(image)}
