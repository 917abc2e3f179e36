"""Training-set sampling of the notebooks: plain shuffle, inverse-frequency WeightedRandomSampler
(v5-v7), and the level-by-label "progressive" oversampling of enhanced/v4/v10 (docs/variants.md §4.3)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

PROGRESSIVE_BOOST = 0.3  # target = median(level counts) * (1 + 0.3 * label)
AUG_VARIANTS = 4  # each oversampled copy draws one of 4 fixed augmentation variants


def progressive_oversample(samples: pd.DataFrame, rows: np.ndarray, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """v4's `create_stratified_balanced_df(strategy='progressive')` on the training rows.

    Per (level, label) group: target = int(median of that level's label counts * (1 + 0.3 label));
    a group below target gets target - n copies drawn with replacement, each with an augmentation
    variant in 0..3; then everything is shuffled. Returns (table rows, copy variant or -1 for an
    original). Uses NumPy's legacy global-style RandomState with the notebook's seed (42 + fold).
    """
    rs = np.random.RandomState(random_state)
    train = samples.iloc[rows][["level_idx", "label"]].assign(row=rows)
    extra_rows, extra_variants = [], []
    for _level, at_level in train.groupby("level_idx", sort=True):
        level_counts = at_level["label"].value_counts()
        median = float(np.median(level_counts.to_numpy()))
        for label, group in at_level.groupby("label", sort=True):
            target = int(median * (1 + PROGRESSIVE_BOOST * label))
            need = target - len(group)
            if need > 0:
                extra_rows.append(rs.choice(group["row"].to_numpy(), size=need, replace=True))
                extra_variants.append(rs.randint(0, AUG_VARIANTS, size=need))
    frame = pd.DataFrame({"row": np.concatenate([train["row"].to_numpy(), *extra_rows]),
                          "copy": np.concatenate([np.full(len(train), -1), *extra_variants])})
    frame = frame.sample(frac=1, random_state=random_state)
    return frame["row"].to_numpy(np.int64), frame["copy"].to_numpy(np.int64)


def weighted_sampler(labels: np.ndarray, generator: torch.Generator) -> WeightedRandomSampler:
    """v5-v7: weight 1/count[label] per sample, len(train) draws with replacement (each class ~1/3)."""
    counts = np.bincount(labels, minlength=3).astype(np.float64)
    weights = 1.0 / counts[labels]
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels),
                                 replacement=True, generator=generator)
