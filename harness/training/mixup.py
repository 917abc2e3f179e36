"""Mixup as v5-v7 trained with it."""
from __future__ import annotations

import numpy as np
import torch


def mix_batch(batch: dict, rng: np.random.Generator, alpha: float, same_level: bool) -> dict:
    """Mixup of v5-v7: images mixed with a permutation of the batch, lam ~ Beta(alpha, alpha); the
    loss combines both labels. The level is not mixed: each sample keeps its own (the first's), as
    the notebooks did, unless same_level pairs samples only within a level."""
    lam = float(rng.beta(alpha, alpha))
    n = len(batch["label"])
    perm = rng.permutation(n)
    if same_level:
        levels = batch["level"].cpu().numpy()
        for lv in np.unique(levels):
            idx = np.flatnonzero(levels == lv)
            perm[idx] = idx[rng.permutation(len(idx))]
    # non_blocking: no wait for the GPU; lam stays a CPU scalar tensor, which multiplies a GPU tensor as is
    perm = torch.from_numpy(perm).to(batch["label"].device, non_blocking=True)
    image = batch["image"].float()
    return batch | {"image": lam * image + (1 - lam) * image[perm], "label_b": batch["label"][perm],
                    "lam": torch.tensor(lam)}
