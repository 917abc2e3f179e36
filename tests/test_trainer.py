"""Trainer features on real models and real demo batches: LR schedule, backbone freeze by epoch,
SWA's use switch and BatchNorm refresh, mixup."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.data.dataset import SliceDataset
from harness.data.rsna import load_samples
from harness.losses import build_loss
from harness.training.hooks import BackboneFreeze
from harness.training.mixup import mix_batch
from harness.training.optim import backbone_groups, lr_multiplier
from harness.training.trainer import Trainer


def test_lr_multiplier_warmup_cosine_floor_and_first_step():
    assert lr_multiplier(0, 10, 100, 0.0) == 0.0  # the notebooks' first update has LR 0
    assert lr_multiplier(0, 10, 100, 0.0, first_step_zero=False) == pytest.approx(0.1)
    assert lr_multiplier(5, 10, 100, 0.0) == pytest.approx(0.5)
    assert lr_multiplier(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert lr_multiplier(55, 10, 100, 0.0) == pytest.approx(0.5)  # half way through the cosine
    assert lr_multiplier(100, 10, 100, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(100, 10, 100, 0.01) == pytest.approx(0.01)  # multiplicative floor


def _trainer(demo_root, variant="v9", **sets) -> Trainer:
    cfg = build_config(get_variant(variant), 0, "smoke", None, {"train.batch_size": 4} | sets, None)
    table = load_samples(demo_root)
    rows = np.arange(8)
    ds = SliceDataset(table, rows, cfg.data, True, "none", 0)
    loader = DataLoader(ds, batch_size=4)
    model = get_variant(variant).build_model(cfg)
    return Trainer(cfg, model, build_loss(cfg.loss), get_variant(variant).predict, loader, loader, [])


@pytest.mark.parametrize("variant", ["v8", "v7"])
def test_freeze_schedule_trains_the_backbone_groups_from_the_given_epoch(demo_root, variant):
    t = _trainer(demo_root, variant, **{"train.freeze_epochs": 2})
    groups, frozen = t.model.param_groups(), set(backbone_groups(t.model))
    hook = BackboneFreeze()
    for epoch, backbone_trains in [(0, False), (1, False), (2, True), (3, True)]:
        t.epoch = epoch
        hook.before_epoch(t)
        for name, params in groups.items():
            expected = backbone_trains if name in frozen else True
            assert all(p.requires_grad == expected for p in params), (epoch, name)
    t.epoch = 0
    hook.before_epoch(t)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train_one_epoch()  # frozen groups keep their weights, the rest moves
    names = {id(p): n for n, p in t.model.named_parameters()}
    for name, params in groups.items():
        moved = any(not torch.equal(before[names[id(p)]], p.detach()) for p in params)
        assert moved == (name not in frozen), name


@pytest.mark.parametrize("use", [True, False])
def test_swa_model_is_used_for_evaluation_only_when_switched_on(demo_root, use):
    t = _trainer(demo_root, **{"train.swa_start_epoch": 0, "train.swa_use_for_eval": use, "train.epochs": 2})
    t.epoch = 0
    t.train_one_epoch()
    assert (t.eval_model() is t.swa_model.module) == use
    assert (t.eval_model() is t.model) == (not use)


def test_swa_batchnorm_refresh_recomputes_the_averaged_models_statistics(demo_root):
    sets = {"train.swa_start_epoch": 0, "train.swa_use_for_eval": True, "train.epochs": 2}
    plain, refreshed = (_trainer(demo_root, **sets | {"train.swa_update_bn": flag}) for flag in (False, True))
    for t in (plain, refreshed):
        torch.manual_seed(0)
        t.epoch = 0
        t.train_one_epoch()
    bn = lambda m: [b.running_mean.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    # without the refresh the averaged copy carries the live model's statistics (what v5 did)
    assert all(torch.equal(a, b) for a, b in zip(bn(plain.swa_model.module), bn(plain.model)))
    assert not all(torch.equal(a, b) for a, b in zip(bn(refreshed.swa_model.module), bn(refreshed.model)))


def test_mixup_mixes_images_and_pairs_labels():
    rng = np.random.default_rng(0)
    image = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1, 1).expand(6, 7, 3, 2, 2).clone()
    batch = {"image": image, "label": torch.tensor([0, 1, 2, 0, 1, 2]), "level": torch.tensor([0, 0, 1, 1, 2, 2])}
    mixed = mix_batch(batch, np.random.default_rng(0), alpha=0.3, same_level=False)
    lam = float(mixed["lam"])
    perm = np.random.default_rng(0)
    perm.beta(0.3, 0.3)
    perm = perm.permutation(6)
    assert 0 <= lam <= 1
    assert torch.allclose(mixed["image"][:, 0, 0, 0, 0], lam * torch.arange(6.0) + (1 - lam) * torch.tensor(perm,
                                                                                                            dtype=torch.float32))
    assert torch.equal(mixed["label_b"], batch["label"][perm])
    assert torch.equal(mixed["level"], batch["level"])  # the level is not mixed (the notebooks' defect)
    same = mix_batch(batch, rng, alpha=0.3, same_level=True)
    partner = same["image"][:, 0, 0, 0, 0]
    lam = float(same["lam"])
    source = ((partner - lam * torch.arange(6.0)) / (1 - lam)).round().long()
    assert torch.equal(batch["level"][source], batch["level"])  # partners share the level


def test_gpu_switches_are_inert_on_cpu(demo_root):
    """AMP (either dtype), channels_last and torch.compile apply on CUDA only: on CPU a step with all of
    them on gives bit-identical weights to a step with all of them off."""
    moves = {"train.warmup_epochs": 0, "train.lr_first_step_zero": False}  # the first step changes the weights
    torch.manual_seed(0)
    on = _trainer(demo_root, **moves, **{"train.amp": True, "train.amp_dtype": "fp16", "train.channels_last": True,
                                         "train.compile": True})
    torch.manual_seed(0)
    off = _trainer(demo_root, **moves, **{"train.amp": False, "train.channels_last": False, "train.compile": False})
    before = {k: v.clone() for k, v in on.model.state_dict().items()}
    assert on.amp_dtype is None and not on.scaler.is_enabled()
    assert on.step_model() is on.model  # not compiled, not wrapped
    convs = [m.weight for m in on.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous() for w in convs)  # NCHW, as built
    batch = next(iter(on.train_loader))
    for t in (on, off):
        torch.manual_seed(0)  # the same dropout draws
        t.model.train()
        t.run_step(t.to_device(batch))
    for a, b in zip(on.model.state_dict().values(), off.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(before[k], v) for k, v in on.model.state_dict().items())


def test_loader_workers_see_each_new_epoch(demo_root):
    """Persistent loader workers keep their copy of the dataset across epochs: the epoch that decides
    the jitter and augmentation draws must still reach them."""
    cfg = build_config(get_variant("v9"), 0, "smoke", None, {"data.crop_jitter": 6}, None)
    ds = SliceDataset(load_samples(demo_root), np.arange(4), cfg.data, True, "none", 0)
    loader = DataLoader(ds, batch_size=4, num_workers=1, persistent_workers=True)
    images = []
    for epoch in (0, 1, 0):
        ds.set_epoch(epoch)
        images.append(next(iter(loader))["image"])
    assert torch.equal(images[0], images[2]) and not torch.equal(images[0], images[1])


def test_trainer_normalises_a_uint8_handoff_on_its_device(demo_root):
    t = _trainer(demo_root)
    table, rows = t.train_loader.dataset.table, np.arange(8)
    floats, uint8s = (SliceDataset(table, rows, t.cfg.data, True, "v8", 0, uint8=u) for u in (False, True))
    handoff = t.to_device(next(iter(DataLoader(uint8s, batch_size=4))))
    expected = t.to_device(next(iter(DataLoader(floats, batch_size=4))))
    assert set(handoff) == set(expected)  # the mask is used up
    assert torch.equal(handoff["image"], expected["image"])
