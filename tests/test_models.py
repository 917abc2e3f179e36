"""Model construction: exact v9 parameter counts, forward/backward, local-only backbone weights."""
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import timm.models._builder as timm_builder
from harness.config import ModelConfig
from harness.errors import UsageError
from harness.models.backbone import create_backbone
from harness.models.blocks import AttentionPool, ClassifierHead
from harness.models.slice_model import build_v9

V9_BIAS = (2.0, -2.5, -3.0)
TINY = "test_efficientnet"


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def v9_full():
    cfg = ModelConfig(backbone="tf_efficientnetv2_s", pretrained=False, head_bias=V9_BIAS)
    return build_v9(cfg)


@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    """A random test_efficientnet backbone and its weights saved in several local formats."""
    torch.manual_seed(0)
    model = create_backbone(ModelConfig(backbone=TINY, pretrained=False))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    d = tmp_path_factory.mktemp("weights")
    save_file(state, str(d / "w.safetensors"))
    torch.save(state, d / "w.pth")
    # a training checkpoint: wrapped, DataParallel prefix, with a 1000-class ImageNet head
    head = {"classifier.weight": torch.zeros(1000, model.num_features), "classifier.bias": torch.zeros(1000)}
    torch.save({"model": {f"module.{k}": v for k, v in (state | head).items()}, "epoch": 3}, d / "ckpt.bin")
    return state, d


def test_v9_parameter_counts(v9_full):
    groups = v9_full.param_groups()
    assert list(groups) == ["backbone", "feature_proj", "gru", "attention", "level_embed", "classifier"]
    counts = {name: sum(p.numel() for p in params) for name, params in groups.items()}
    assert counts == {"backbone": 20_177_488, "feature_proj": 655_872, "gru": 7_876_608,
                      "attention": 262_657, "level_embed": 1_280, "classifier": 659_971}
    assert n_params(v9_full) == 29_633_876


def test_v5_attention_pool_count():
    assert n_params(AttentionPool(256, 64)) == 16_513


def test_head_bias_prior(v9_full):
    head = v9_full.classifier.eval()
    assert head[-1].bias.tolist() == list(V9_BIAS)
    probs = torch.softmax(head(torch.zeros(1, 1280)), dim=1)[0]
    assert probs.tolist() == pytest.approx([0.983, 0.011, 0.007], abs=0.01)
    assert ClassifierHead(8, 4, 3, 0.0, 0.0)[-1].bias.abs().max() < 1  # None keeps torch's init


def test_forward_backward_tiny():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=TINY, pretrained=False, proj_dim=32, seq_hidden=16, attn_hidden=8,
                      level_dim=8, head_hidden=16, head_bias=V9_BIAS)
    model = build_v9(cfg).train()
    images = torch.randn(2, 7, 3, 64, 64)
    out = model(images, torch.tensor([0, 4]))
    assert out["logits"].shape == (2, 3) and out["attention"].shape == (2, 7)
    assert torch.allclose(out["attention"].sum(dim=1), torch.ones(2))
    loss = F.cross_entropy(out["logits"], torch.tensor([0, 2]))
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad


def test_pretrained_needs_weights_file():
    with pytest.raises(UsageError) as err:
        create_backbone(ModelConfig(backbone=TINY, pretrained=True, weights_file=None))
    msg = str(err.value)
    assert "model.weights_file" in msg and "\n" not in msg


def test_unknown_backbone():
    with pytest.raises(UsageError, match="model.backbone"):
        create_backbone(ModelConfig(backbone="no_such_net", pretrained=False))


@pytest.fixture
def offline(monkeypatch):
    """Make any remote fetch inside timm fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("timm tried to download")
    for name in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file"):
        monkeypatch.setattr(timm_builder, name, refuse)


@pytest.mark.parametrize("fname", ["w.safetensors", "w.pth", "ckpt.bin"])
def test_load_local_weights(tiny_state, offline, fname):
    state, d = tiny_state
    torch.manual_seed(1)  # a different random init, so equality proves the file was loaded
    model = create_backbone(ModelConfig(backbone=TINY, pretrained=True, weights_file=str(d / fname)))
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_wrong_keys_refused(tiny_state, offline, tmp_path):
    state, _ = tiny_state
    bad = {k.replace("conv_stem", "stem_conv"): v for k, v in state.items()}
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(UsageError) as err:
        create_backbone(ModelConfig(backbone=TINY, pretrained=True, weights_file=str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_wrong_shapes_and_unreadable_refused(tiny_state, offline, tmp_path):
    state, _ = tiny_state
    torch.save(dict(state, **{"conv_stem.weight": torch.zeros(4, 3, 3, 3)}), tmp_path / "shape.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a weights file")
    for name, why in (("shape.pth", "size mismatch for conv_stem.weight"), ("junk.safetensors", "header")):
        path = tmp_path / name
        with pytest.raises(UsageError) as err:
            create_backbone(ModelConfig(backbone=TINY, pretrained=True, weights_file=str(path)))
        msg = str(err.value)
        assert str(path) in msg and why in msg and "\n" not in msg
