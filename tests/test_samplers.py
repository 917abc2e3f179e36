"""Samplers of the notebooks: v4/v10 progressive level-by-label oversampling and v5-v7's
inverse-frequency WeightedRandomSampler."""
import numpy as np
import pandas as pd
import torch

from harness.data.samplers import progressive_oversample, weighted_sampler


def _samples(counts_per_level: dict[int, tuple[int, int, int]]) -> pd.DataFrame:
    rows = [(level, label) for level, counts in counts_per_level.items()
            for label, n in enumerate(counts) for _ in range(n)]
    return pd.DataFrame(rows, columns=["level_idx", "label"])


def test_progressive_targets_follow_the_notebook_formula():
    """docs/variants.md §4.3: level counts (1300, 150, 100) -> targets (150, 195, 240): +45 Moderate, +140 Severe."""
    samples = _samples({0: (1300, 150, 100), 1: (40, 10, 3)})
    rows, copies = progressive_oversample(samples, np.arange(len(samples)), random_state=42)
    picked = samples.iloc[rows].assign(copy=copies)
    extra = picked[picked["copy"] >= 0].groupby(["level_idx", "label"]).size().to_dict()
    # level 1: median(40, 10, 3) = 10 -> targets (10, 13, 16): +3 Moderate, +13 Severe
    assert extra == {(0, 1): 45, (0, 2): 140, (1, 1): 3, (1, 2): 13}
    originals = picked[picked["copy"] < 0]
    assert sorted(originals.index) == list(range(len(samples)))  # every original row exactly once
    assert set(copies[copies >= 0]) <= {0, 1, 2, 3}
    # copies are drawn from their own (level, label) group, and the whole frame is shuffled
    assert not np.array_equal(rows[:len(samples)], np.arange(len(samples)))


def test_progressive_is_reproducible_from_its_seed():
    samples = _samples({0: (50, 8, 3), 2: (30, 6, 6)})
    a = progressive_oversample(samples, np.arange(len(samples)), 42)
    b = progressive_oversample(samples, np.arange(len(samples)), 42)
    c = progressive_oversample(samples, np.arange(len(samples)), 43)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_progressive_uses_only_the_given_rows():
    samples = _samples({0: (50, 8, 3)})
    train = np.arange(0, len(samples), 2)
    rows, _ = progressive_oversample(samples, train, 42)
    assert set(rows) <= set(train)


def test_weighted_sampler_draws_each_class_about_a_third():
    labels = np.array([0] * 880 + [1] * 75 + [2] * 45)
    sampler = weighted_sampler(labels, torch.Generator().manual_seed(0))
    draws = labels[list(sampler)]
    assert len(draws) == len(labels)  # num_samples = len(train)
    share = np.bincount(draws, minlength=3) / len(draws)
    assert np.all(np.abs(share - 1 / 3) < 0.06), share
    assert len(set(np.flatnonzero(labels == 2)) & set(list(sampler))) > 0  # with replacement, rare rows drawn
