"""The one training loop every variant shares.

The loop itself (`Trainer.fit`) is short; what varies hangs on hooks called at documented points:
  before_train, before_epoch, after_step, after_validation, after_epoch, after_train, and on_stop
  (a stop was requested between two batches). `state_dict()` holds everything the loop needs to go on
  exactly where it stopped, mid-epoch included.
MLflow logging, checkpoint selection, early stopping, the dead-class monitor, progress display, the
resume checkpoint and Optuna pruning are hooks, so none of them needs a second loop. The model returns a dict of
outputs and the loss function a dict of named terms, so the loop knows nothing about architectures.
"""
from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import SWALR, AveragedModel

from harness.core import collectives
from harness.core.config import Config
from harness.data.dataset import normalize_on_device
from harness.losses import LossFn
from harness.metrics.classification import classification_metrics
from harness.training.device import amp_dtype, configure_cuda, resolve_device
from harness.training.mixup import mix_batch
from harness.training.optim import backbone_groups, lr_multiplier, refresh_batchnorm
from harness.training.rng import loader_generators, rng_states, set_rng_states, skip_batches


class Hook:
    """Override any of these; `t` is the Trainer (its `epoch`, `result`, `model`, ... are readable)."""

    def before_train(self, t: "Trainer"): ...
    def before_epoch(self, t: "Trainer"): ...
    def after_step(self, t: "Trainer"): ...
    def after_validation(self, t: "Trainer"): ...
    def after_epoch(self, t: "Trainer"): ...
    def after_train(self, t: "Trainer"): ...
    def on_stop(self, t: "Trainer"): ...  # a stop was requested: the loop ends after this, mid-epoch or not

    # A hook that keeps run-level state returns it here, so a resumed run continues exactly.
    def state_dict(self) -> dict | None: return None
    def load_state_dict(self, state: dict): ...


@dataclass
class EpochResult:
    """What one epoch produced: losses, validation metrics and the per-sample validation outputs."""

    epoch: int
    train_loss: float
    val_loss: float
    metrics: dict[str, float]
    probs: np.ndarray
    labels: np.ndarray
    lrs: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    samples_per_s: float = 0.0

    def to_state(self) -> dict:
        """Plain types and tensors only, so a checkpoint holding it loads with weights_only=True."""
        arrays = {"probs": torch.from_numpy(self.probs), "labels": torch.from_numpy(self.labels)}
        return dataclasses.asdict(self) | arrays

    @classmethod
    def from_state(cls, state: dict) -> "EpochResult":
        return cls(**state | {"probs": state["probs"].numpy(), "labels": state["labels"].numpy()})


class Trainer:
    def __init__(self, cfg: Config, model: torch.nn.Module, loss_fn: LossFn, predict, train_loader,
                 val_loader, hooks: list[Hook],
                 score: Callable[[np.ndarray, np.ndarray], dict[str, float]] = classification_metrics):
        self.cfg, self.loss_fn, self.predict = cfg, loss_fn, predict
        self.score = score  # labels, probabilities -> the epoch's validation metrics (metrics.ValidationScorer)
        self.train_loader, self.val_loader, self.hooks = train_loader, val_loader, hooks
        self.device = resolve_device(cfg.train.device)
        tc = cfg.train
        cuda = self.device.type == "cuda"
        if cuda:
            configure_cuda(tc)
        self.model = model.to(self.device)
        if cuda and tc.channels_last:  # NHWC weights: the convolutions then run NHWC on tensor cores
            self.model.to(memory_format=torch.channels_last)
        self.world = collectives.world_size()
        self._step_model, self._step_model_key = None, None  # what the training step calls (DDP, compiled)
        groups = model.param_groups()
        backbone = backbone_groups(model)
        # fused: one kernel for all parameters (4x faster steps on CPU than the per-tensor loop)
        self.optimizer = torch.optim.AdamW([
            {"params": params, "name": name,
             "lr": tc.lr_backbone if name in backbone else tc.lr_head,
             "weight_decay": tc.wd_backbone if name in backbone else tc.wd_head}
            for name, params in groups.items() if params], fused=self.device.type in ("cpu", "cuda"))
        steps = len(train_loader)
        warmup, total = int(tc.warmup_epochs * steps), tc.epochs * steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, warmup, total, tc.lr_floor, tc.lr_first_step_zero))
        self.mixup_rng = np.random.default_rng(tc.seed)  # mixup's coin, Beta draw and pairing
        self.swa_model = AveragedModel(model) if tc.swa_start_epoch is not None else None
        self.swa_scheduler = None
        self.amp_dtype = amp_dtype(self.device, tc)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.next_epoch, self.result, self.should_stop = 0, 0, None, False
        # mid-epoch progress (batches done, loss so far, loader RNG at the epoch's start): what a
        # stop between two batches saves, so a resumed run goes on from the next batch
        self.partial: dict | None = None
        self.stop_request: BaseException | None = None  # set by request_stop; raised between batches

    # ------------------------------------------------------------------ the loop
    def fit(self):
        self._call("before_train")
        while self.next_epoch < self.cfg.train.epochs and not self.should_stop:
            self.epoch = self.next_epoch
            self._call("before_epoch")
            start = time.perf_counter()
            train_loss, seen = self.train_one_epoch()
            seconds = time.perf_counter() - start
            self.result = self.evaluate(self.eval_model(), self.val_loader)
            self.result.train_loss, self.result.seconds = train_loss, seconds
            self.result.samples_per_s = seen / seconds
            self.result.lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
            self._call("after_validation")
            self.next_epoch += 1  # the epoch is complete: a checkpoint taken from here on resumes after it
            self._call("after_epoch")
            self._stop_if_requested()
        self._call("after_train")

    def request_stop(self, exc: BaseException) -> None:
        """Ask the loop to stop at the next batch boundary (or epoch end): hooks get on_stop (the
        resume checkpoint is written), then `exc` is raised. Safe to call from a signal handler."""
        self.stop_request = exc

    def _stop_if_requested(self):
        stop = self.stop_request is not None
        if self.world > 1 and collectives.any_rank(stop):  # every rank stops after the same batch
            stop = True
            if self.partial is not None:  # the saved progress counts all ranks' samples, 1/N on each
                seen = torch.tensor(self.partial["seen"], device=self.device)
                loss, seen = collectives.sum_over_ranks(self.partial["loss_sum"], seen)
                self.partial.update(loss_sum=(loss / self.world).to(self.partial["loss_sum"].dtype),
                                    seen=int(seen) // self.world)
        if stop:
            self._call("on_stop")
            raise self.stop_request or KeyboardInterrupt()

    def train_one_epoch(self) -> tuple[float, int]:
        self.model.train()
        set_epoch = getattr(self.train_loader.dataset, "set_epoch", None)
        if set_epoch:  # fresh jitter/augmentation draws each epoch, whichever worker loads a sample
            set_epoch(self.epoch)
        in_swa = self.in_swa()
        if in_swa and self.swa_scheduler is None:
            self.swa_scheduler = self._new_swa_scheduler()
        gens = loader_generators(self.train_loader)
        if self.partial is None:  # a fresh epoch
            self.partial = {"batches": 0, "loss_sum": torch.zeros((), device=self.device), "seen": 0,
                            "loader_rng": [g.get_state() for g in gens]}
            batches = self.train_loader
        else:  # resumed mid-epoch: the same order from the same generator states, less the batches done
            for g, state in zip(gens, self.partial["loader_rng"], strict=True):
                g.set_state(state)
            batches = skip_batches(self.train_loader, self.partial["batches"])
        total = self.partial["loss_sum"]  # summed on the device: no host sync per step
        for batch in batches:
            loss = self.run_step(self.to_device(batch))
            (self.swa_scheduler if in_swa else self.scheduler).step()
            n = len(batch["label"])
            total += loss.detach() * n
            self.partial["batches"] += 1
            self.partial["seen"] += n
            self._call("after_step")
            self._stop_if_requested()
        seen, self.partial = self.partial["seen"], None
        if self.world > 1:  # one collective per epoch: the loss over every rank's samples
            total, seen = collectives.sum_over_ranks(total, torch.tensor(seen, device=self.device))
            seen = int(seen)
            collectives.sync_buffers(self.model, average=False)  # one model on every rank for evaluation
        if in_swa:
            self.swa_model.update_parameters(self.model)
            if self.cfg.train.swa_use_for_eval and self.cfg.train.swa_update_bn:
                refresh_batchnorm(self.swa_model.module, self.train_loader, self.to_device)
                if self.world > 1:
                    collectives.sync_buffers(self.swa_model.module, average=True)
        return float(total) / max(seen, 1), seen

    def run_step(self, batch) -> torch.Tensor:
        tc = self.cfg.train
        if tc.mixup_prob and not self.in_swa() and self.mixup_rng.random() < tc.mixup_prob:
            batch = mix_batch(batch, self.mixup_rng, tc.mixup_alpha, tc.mixup_same_level)
        with self.autocast():
            out = self.step_model()(batch["image"], batch["level"])
        terms = self.loss_fn(out, batch)
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if tc.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    @torch.no_grad()
    def evaluate(self, model, loader, shard: bool = True) -> EpochResult:
        """Probabilities, labels and metrics over a loader, in loader order. Under --devices each rank
        evaluates its shard and all get the whole result (`shard=False`: this rank alone does it all)."""
        model.eval()
        sharded = shard and self.world > 1
        if sharded:
            loader = collectives.shard(loader)
        probs, labels, loss_sum = [], [], torch.zeros((), device=self.device)
        for batch in loader:
            batch = self.to_device(batch)
            with self.autocast():
                out = model(batch["image"], batch["level"])
            loss_sum += sum(self.loss_fn(out, batch).values()).detach() * len(batch["label"])
            probs.append(self.predict(out).float())
            labels.append(batch["label"])
        p, y = torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy()
        if sharded:
            p, y, loss = collectives.unshard(p, y, loss_sum.cpu().reshape(1).numpy())
            loss_sum = loss.sum()
        return EpochResult(self.epoch, math.nan, float(loss_sum) / len(y), self.score(y, p), p, y)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """Everything the loop needs to go on after its last completed epoch as if it never stopped:
        weights, optimiser, schedulers, scaler, SWA average and every random state it draws from."""
        swa_sched = self.swa_scheduler.state_dict() if self.swa_scheduler else None
        return {"epoch": self.epoch, "next_epoch": self.next_epoch, "should_stop": self.should_stop,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "swa_model": self.swa_model.state_dict() if self.swa_model else None,
                # SWALR keeps its anneal function in its state; the rebuilt scheduler has its own
                "swa_scheduler": {k: v for k, v in swa_sched.items() if not callable(v)} if swa_sched else None,
                "mixup_rng": self.mixup_rng.bit_generator.state, "rng": rng_states(),
                "loader_rng": [g.get_state() for g in loader_generators(self.train_loader)],
                "partial": dict(self.partial, loss_sum=self.partial["loss_sum"].clone()) if self.partial else None}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.next_epoch, self.should_stop = state["epoch"], state["next_epoch"], state["should_stop"]
        self.model.load_state_dict(state["model"])
        if state["swa_scheduler"] is not None:  # built first: building one steps the optimiser's LRs
            self.swa_scheduler = self._new_swa_scheduler()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.swa_scheduler is not None:
            self.swa_scheduler.load_state_dict(state["swa_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if state["swa_model"] is not None:
            self.swa_model.load_state_dict(state["swa_model"])
        self.mixup_rng.bit_generator.state = state["mixup_rng"]
        set_rng_states(state["rng"])
        for gen, gen_state in zip(loader_generators(self.train_loader), state["loader_rng"], strict=True):
            gen.set_state(gen_state)
        self.partial = state.get("partial")

    # ------------------------------------------------------------------ helpers
    def step_model(self) -> torch.nn.Module:
        """The model as the training step calls it: wrapped in DistributedDataParallel under --devices
        (rebuilt when a freeze changes which parameters train: DDP syncs only those it was built
        with) and torch.compile'd on CUDA when asked. Weights are shared with self.model."""
        key = tuple(p.requires_grad for p in self.model.parameters())
        if self._step_model is None or (self.world > 1 and key != self._step_model_key):
            model = self.model
            if self.world > 1:
                ids = [self.device.index] if self.device.type == "cuda" else None
                model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
            if self.cfg.train.compile and self.device.type == "cuda":
                model = torch.compile(model)
            self._step_model, self._step_model_key = model, key
        return self._step_model

    def _new_swa_scheduler(self) -> SWALR:
        tc = self.cfg.train
        return SWALR(self.optimizer, swa_lr=tc.swa_lr, anneal_epochs=tc.swa_anneal_batches, anneal_strategy="cos")

    def in_swa(self) -> bool:
        start = self.cfg.train.swa_start_epoch
        return start is not None and self.epoch >= start

    def eval_model(self) -> torch.nn.Module:
        """The averaged model during SWA when the variant used it (v5); otherwise the live model."""
        if self.in_swa() and self.cfg.train.swa_use_for_eval:
            return self.swa_model.module
        return self.model

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def to_device(self, batch):
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if "zero" in batch:  # a uint8 hand-off (on CUDA): normalised here, on the device
            batch["image"] = normalize_on_device(batch["image"], batch.pop("zero"), self.cfg.data)
        return batch

    def _call(self, point: str):
        for hook in self.hooks:
            getattr(hook, point)(self)
