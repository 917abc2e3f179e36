"""The cells of a run matrix, parsed before anything heavy is imported: `--fold 0`, `--fold 0,2,4` or
`--fold all`, times `--seed 7`, `--seed 1,2,3` or `--seeds 3` (like Hydra's multirun)."""
from __future__ import annotations

from harness.core.errors import UsageError


def parse_folds(text: str, num_folds: int) -> list[int]:
    """'all' -> every fold; '0,2,4' -> those; '3' -> [3]. Each within 0..num_folds-1, none twice."""
    if text.strip() == "all":
        return list(range(num_folds))
    folds = _integers(text, "--fold")
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad:
        raise UsageError(f"--fold {text}: fold must be within 0-{num_folds - 1}, got {bad[0]}")
    return folds


def parse_seeds(seed: str | None, seeds: int | None, default: int) -> list[int]:
    """`--seed 1,2,3` -> those; `--seeds N` -> N seeds counting up from the variant's train.seed
    (`default`); neither -> [default]."""
    if seed is not None and seeds is not None:
        raise UsageError("--seed and --seeds: give one (--seed 1,2,3 names the seeds, --seeds N counts them)")
    if seeds is not None:
        if seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {seeds}")
        return [default + i for i in range(seeds)]
    return [default] if seed is None else _integers(seed, "--seed")


def _integers(text: str, flag: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text}: expected an integer or a comma-separated list of integers") from None
    if len(set(values)) != len(values):
        raise UsageError(f"{flag} {text}: a value is named twice")
    return values
