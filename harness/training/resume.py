"""Resume: a checkpoint after every completed epoch (and where a stop was asked for, between two
batches), and finding the run `--resume` continues.

A run's working folder is $HARNESS_HOME/runs/<run_id>/ (its path is the run's `harness.checkpoint_dir`
tag): `last.pt` holds the trainer's and the hooks' state after the last completed epoch, beside the
selected-epoch checkpoints. It is kept while the run is unfinished and removed once it is FINISHED
(the selected checkpoint is then an MLflow artifact). A process holds `lock` while it trains the run,
so a second process cannot resume a run that is still going.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.config import Config
from harness.core.errors import DataError, UsageError, first_line
from harness.tracking import store
from harness.training.hooks import save_atomic
from harness.training.trainer import Hook, Trainer

LAST = "last.pt"
FORMAT = 1
# Where and how a run executes, not what it computes: these may change between a stop and its resume.
# train.threads does change the numbers, but a resume takes the count the run started with (the
# checkpoint's "threads"), whatever it is set to now.
LOCATION_KEYS = ("data_dir", "data.cache", "data.cache_dir", "data.num_workers", "data.prefetch_factor",
                 "train.device", "model.weights_file", "train.threads")


def config_identity(cfg: Config) -> dict:
    """The config keys that decide a run's result (alarm thresholds and locations left out)."""
    return {k: v for k, v in cfg.flat().items() if k not in LOCATION_KEYS and not k.startswith("alarms.")}


def config_hash(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(config_identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_dir(home: Path, run_id: str) -> Path:
    return home / "runs" / run_id


class EpochCheckpoint(Hook):
    """After every completed epoch, the trainer's state and every stateful hook's, written atomically."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity

    def after_epoch(self, t: Trainer):
        self.save(t)

    def on_stop(self, t: Trainer):  # between two batches: the trainer's state includes the epoch so far
        self.save(t)

    def save(self, t: Trainer):
        hooks = {type(h).__name__: h.state_dict() for h in t.hooks}
        # the intra-op threads in force (set once when the run started): a resume computes with them
        save_atomic({"format": FORMAT, "identity": self.identity, "trainer": t.state_dict(),
                     "hooks": {k: v for k, v in hooks.items() if v is not None},
                     "threads": torch.get_num_threads()}, self.path)


def restore(t: Trainer, state: dict) -> None:
    """Put a trainer and its hooks back where the checkpoint left them."""
    t.load_state_dict(state["trainer"])
    for hook in t.hooks:
        name = type(hook).__name__
        if name in state["hooks"]:
            hook.load_state_dict(state["hooks"][name])


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A resume checkpoint, loaded with weights_only=True (plain types and tensors, no code)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, or holding pickled code
        raise UsageError(f"--resume {path}: not a readable harness checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "identity" not in state:
        raise UsageError(f"--resume {path}: not a harness resume checkpoint")
    return state


@dataclass
class ResumePoint:
    """An unfinished run to continue: its MLflow id, its checkpoint file, and that file's content."""

    run_id: str
    path: Path
    state: dict

    @property
    def epochs_done(self) -> int:
        return self.state["trainer"]["next_epoch"]

    @property
    def threads(self) -> int | None:
        """The intra-op threads the run computed with (None: a checkpoint written before they were kept)."""
        return self.state.get("threads")

    @property
    def where(self) -> str:
        """Where training goes on, in words."""
        partial = self.state["trainer"].get("partial")
        if partial:
            return f"in epoch {self.epochs_done + 1} after batch {partial['batches']}"
        return f"after epoch {self.epochs_done}"


def find(experiment_id: str, cfg: Config, data_fp: str, wanted: str) -> ResumePoint | None:
    """`--resume` (wanted="latest"): the newest unfinished run of this variant, fold and config with
    a checkpoint, or None. `--resume RUN_ID` or `--resume FILE`: that run, checked to match."""
    if wanted != "latest":
        return _named(cfg, data_fp, wanted)
    filt = (f"tags.`harness.variant` = '{cfg.variant}' and tags.`harness.fold` = '{cfg.fold}' and "
            f"tags.`harness.config_hash` = '{config_hash(cfg)}' and attributes.status != 'FINISHED'")
    for run in store.search_runs([experiment_id], filt):
        path = _checkpoint_of(run)
        if path is not None and path.is_file():
            return _checked(load_checkpoint(path), path, cfg, data_fp, run.info.run_id)
    return None


def _named(cfg: Config, data_fp: str, wanted: str) -> ResumePoint:
    if Path(wanted).is_file():
        path = Path(wanted)
        state = load_checkpoint(path)
        run_id = state["identity"]["run_id"]
    else:
        run = store.find_run(wanted)
        if run is None:
            raise UsageError(f"--resume {wanted}: no such run id or checkpoint file")
        tags = run.data.tags
        if tags.get("harness.variant") != cfg.variant or tags.get("harness.fold") != str(cfg.fold):
            raise UsageError(f"--resume {wanted}: that run is {tags.get('harness.variant')} fold "
                             f"{tags.get('harness.fold')}, not {cfg.variant} fold {cfg.fold}")
        if run.info.status == "FINISHED":
            raise UsageError(f"--resume {wanted}: that run is already FINISHED")
        path = _checkpoint_of(run)
        if path is None or not path.is_file():
            raise UsageError(f"--resume {wanted}: no checkpoint at {path} (the run stopped before its first "
                             "epoch ended, or ran on another machine); start it again without --resume")
        run_id, state = wanted, load_checkpoint(path)
    run = store.find_run(run_id)
    if run is None:
        raise UsageError(f"--resume {wanted}: its run {run_id} is not in this tracking store")
    if run.info.status == "FINISHED":
        raise UsageError(f"--resume {wanted}: run {run_id} is already FINISHED")
    return _checked(state, path, cfg, data_fp, run_id)


def _checkpoint_of(run) -> Path | None:
    folder = run.data.tags.get("harness.checkpoint_dir")
    return Path(folder) / LAST if folder else None


def _checked(state: dict, path: Path, cfg: Config, data_fp: str, run_id: str) -> ResumePoint:
    """The checkpoint must be of this variant and fold, with the same config and data."""
    ident = state["identity"]
    if (ident["variant"], ident["fold"]) != (cfg.variant, cfg.fold):
        raise UsageError(f"--resume {path}: a checkpoint of {ident['variant']} fold {ident['fold']}, "
                         f"not {cfg.variant} fold {cfg.fold}")
    mine = config_identity(cfg)
    differ = sorted(k for k in set(mine) | set(ident["config"]) if mine.get(k) != ident["config"].get(k))
    if differ:
        k = differ[0]
        more = f", and {len(differ) - 1} more key(s)" if len(differ) > 1 else ""
        raise UsageError(f"--resume {run_id}: config differs from the run's in {k} ({mine.get(k)!r} here, "
                         f"{ident['config'].get(k)!r} in the run{more}); "
                         "resume with the run's --set/--config, or start a new run")
    if ident["data_fingerprint"] != data_fp:
        raise DataError(f"--resume {run_id}: the dataset's CSVs changed since the run started "
                        f"(fingerprint {data_fp}, run {ident['data_fingerprint']})")
    return ResumePoint(run_id, path, state)


def identity(cfg: Config, run_id: str, data_fp: str) -> dict:
    """What a checkpoint is of: checked before it is resumed."""
    return {"run_id": run_id, "variant": cfg.variant, "fold": cfg.fold, "config": config_identity(cfg),
            "data_fingerprint": data_fp}


class RunLock:
    """An exclusive lock on a run's folder while a process trains it; the OS drops it when the
    process dies, even by SIGKILL, so a dead run can be resumed and a live one cannot."""

    def __init__(self, folder: Path, run_id: str):
        self.path, self.run_id, self.handle = folder / "lock", run_id, None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UsageError(f"run {self.run_id} is being trained by another process right now "
                             f"(lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        self.handle.close()  # closing the file releases the lock


def remove(folder: Path) -> None:
    """A FINISHED run's working folder is no longer needed."""
    shutil.rmtree(folder, ignore_errors=True)
