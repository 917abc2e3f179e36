"""Config: precedence, dotted overrides, YAML typing, and one-line errors naming the key."""
import pytest

from harness.core.errors import UsageError
from harness.core.overrides import apply_overrides, load_yaml, parse_set
from harness.core.registry import get_variant
from harness.core.run_config import build_config


def v9_config(**kw):
    args = dict(fold=0, profile="full", config_file=None, sets={}, data_dir=None) | kw
    return build_config(get_variant("v9"), **args)


def test_v9_defaults_are_the_notebook():
    cfg = v9_config()
    assert cfg.loss.class_weights == (1.0, 4.0, 6.0)
    assert (cfg.data.window_center, cfg.data.window_width, cfg.data.crop_radius) == (50.0, 350.0, 256)
    assert (cfg.train.lr_head, cfg.train.lr_backbone, cfg.train.swa_start_epoch) == (1e-4, 1e-5, 18)
    assert cfg.model.head_bias == (2.0, -2.5, -3.0)


def test_smoke_profile_shrinks_but_keeps_ratios():
    full, smoke = v9_config(), v9_config(profile="smoke")
    assert smoke.model.backbone == "test_efficientnet" and not smoke.model.pretrained
    assert smoke.data.crop_radius / smoke.data.img_size == full.data.crop_radius / full.data.img_size
    assert smoke.train.epochs < full.train.epochs
    assert smoke.model.seq_hidden == full.model.seq_hidden  # structure unchanged
    # random weights: one learning rate for all groups, no training augmentation (profiles.py)
    assert smoke.train.lr_head == smoke.train.lr_backbone == 1e-3
    assert smoke.data.augment == "none" and smoke.data.crop_jitter == 0 and full.data.augment == "v8"


def test_precedence_profile_then_file_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 5\n  batch_size: 4\n")
    cfg = v9_config(profile="smoke", config_file=str(f), sets={"train.epochs": 3})
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 4


def test_set_values_are_yaml_typed():
    sets = parse_set(["loss.class_weights=[1, 2, 4]", "train.grad_clip=null", "train.lr_head=3e-4", "train.amp=false"])
    cfg = apply_overrides(v9_config(), sets)
    assert cfg.loss.class_weights == (1.0, 2.0, 4.0)
    assert cfg.train.grad_clip is None and cfg.train.lr_head == 3e-4 and cfg.train.amp is False


@pytest.mark.parametrize("sets, needle", [
    ({"train.epoch": 3}, "did you mean train.epochs"),
    ({"nonsense": 1}, "unknown config key 'nonsense'"),
    ({"train.epochs": "many"}, "train.epochs expects int"),
    ({"train.epochs": True}, "train.epochs expects int"),
    ({"loss.class_weights": 4}, "loss.class_weights expects a list"),
    ({"loss.class_weights": [1, 2]}, "loss.class_weights needs 3"),
    ({"data.intensity": "hu"}, "data.intensity='hu' is not one of"),
    ({"data.augment": "v99"}, "data.augment='v99'"),
    ({"fold": 5}, "fold must be within 0-4"),
])
def test_bad_overrides_name_the_key(sets, needle):
    with pytest.raises(UsageError) as exc:
        apply_overrides(v9_config(), sets)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_parse_set_refuses_missing_equals():
    with pytest.raises(UsageError, match="key=value"):
        parse_set(["train.epochs"])


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UsageError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UsageError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")


def test_flat_roundtrip_covers_every_field():
    cfg = v9_config()
    flat = cfg.flat()
    assert flat["model.seq_hidden"] == 512 and flat["variant"] == "v9"
    assert apply_overrides(cfg, flat, "roundtrip") == cfg
