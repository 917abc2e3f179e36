"""Shared, persisted folds: StratifiedGroupKFold on the label, grouped by study (docs/variants.md §1.7).

Computed once per dataset fingerprint, condition, fold count and seed, then read back by every
variant, so all compared runs see the same validation samples.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


def split_studies(samples: pd.DataFrame, num_folds: int, seed: int) -> pd.DataFrame:
    """study_id -> fold, from the notebooks' exact call on the sample table in its row order."""
    sgkf = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    rows = []
    with warnings.catch_warnings():  # tiny datasets have classes rarer than n_splits; that is fine
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(sgkf.split(samples, y=samples["label"], groups=samples["study_id"]))
    for fold, (_, val_idx) in enumerate(splits):
        rows += [(study, fold) for study in samples["study_id"].iloc[val_idx].unique()]
    return pd.DataFrame(rows, columns=["study_id", "fold"]).sort_values("study_id", ignore_index=True)


def load_or_create(samples: pd.DataFrame, folds_dir: Path, key: str, num_folds: int, seed: int) -> pd.DataFrame:
    """The persisted study -> fold table for `key` (dataset fingerprint and condition), created on first use."""
    path = Path(folds_dir) / f"folds-{key}-k{num_folds}-s{seed}.csv"
    if path.is_file():
        folds = pd.read_csv(path)
        if set(folds["study_id"]) >= set(samples["study_id"]):
            return folds
    folds = split_studies(samples, num_folds, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    folds.to_csv(tmp, index=False)
    os.replace(tmp, path)  # atomic: parallel runs never read a half-written table
    return folds


def fold_fingerprint(val_samples: pd.DataFrame) -> str:
    """Identity of a validation set: compare refuses runs whose fingerprints differ."""
    keys = sorted(f"{s}_{lvl}" for s, lvl in zip(val_samples["study_id"], val_samples["level"]))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
