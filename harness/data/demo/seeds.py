"""The demo's random streams and ids: one (seed, studies) pair is spawned into independent seed
sequences (ids, train labels, the test study, one per train study), so a study's files do not
depend on which process draws it or on how many studies come after it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Seeds:
    ids: np.random.SeedSequence
    labels: np.random.SeedSequence
    test_study: np.random.SeedSequence
    studies: list[np.random.SeedSequence]


def _seeds(seed: int, studies: int) -> _Seeds:
    ids, labels, test_study, *per_study = np.random.SeedSequence(seed).spawn(3 + studies)
    return _Seeds(ids, labels, test_study, per_study)


def _distinct_ints(rng: np.random.Generator, n: int, low: int, high: int, taken: set[int]) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        value = int(rng.integers(low, high))
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out
