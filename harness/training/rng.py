"""Reproducibility: the seed, every random state a checkpoint saves, and a loader's order resumed
after the batches an epoch already did."""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_states() -> dict:
    """Python's, NumPy's global and torch's (CPU and CUDA) random states, as checkpointable types."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_generators(loader) -> list[torch.Generator]:
    """The generators a DataLoader draws its order and worker seeds from (sampler's and its own)."""
    found = []
    for gen in (getattr(loader, "generator", None), getattr(loader.sampler, "generator", None)):
        if gen is not None and all(gen is not g for g in found):
            found.append(gen)
    return found


class _SkipFirst(torch.utils.data.Sampler):
    """A batch sampler without its first n batches: their indices are drawn (so the generator moves
    as before) but never loaded."""

    def __init__(self, batch_sampler, n: int):
        self.batch_sampler, self.n = batch_sampler, n

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.n, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.n)


def skip_batches(loader: DataLoader, n: int) -> DataLoader:
    """The rest of an epoch of `loader` after n batches, in the same order, drawing from the same
    generators in the same sequence. A loader without its own generator draws its workers' base seed
    from the global RNG: the copy gets a private one, so the global stream stays as it was saved."""
    return DataLoader(loader.dataset, batch_sampler=_SkipFirst(loader.batch_sampler, n),
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator or torch.Generator(),
                      prefetch_factor=loader.prefetch_factor)
