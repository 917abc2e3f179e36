"""Model construction: exact parameter counts per notebook version, groups, initialisations, forward/backward,
local-only backbone weights."""
import pytest
import timm.models._builder as timm_builder
import torch
from safetensors.torch import save_file

from harness.core.config import Config, DataConfig, ModelConfig
from harness.core.errors import UsageError
from harness.models.backbone import create_backbone
from harness.models.blocks import ClassifierHead
from harness.models.stack_model import slice_stem
from variants.v4 import build_model as build_v4
from variants.v5 import build_model as build_v5
from variants.v6 import build_model as build_v6
from variants.v7 import build_model as build_v7
from variants.v8 import build_model as build_v8
from variants.v9 import build_model as build_v9
from variants.v10 import build_v4_model as build_v10

PRIOR_BIAS = (2.0, -2.5, -3.0)
TINY = "test_efficientnet"
BUILDERS = {"v4": build_v4, "v5": build_v5, "v6": build_v6, "v7": build_v7, "v8": build_v8, "v9": build_v9,
            "v10": build_v10}

# Each notebook's model hyper-parameters (docs/variants.md §4.4-§10.4), as the variant files set them.
V4 = dict(proj_dim=512, seq_hidden=256, seq_layers=2, seq_dropout=0.4, attn_heads=4, level_dim=64,
          head_hidden=128, dropout=0.4, head_dropout=0.4, aux_hidden=64)
V5 = dict(proj_dim=256, seq_hidden=128, seq_layers=2, seq_dropout=0.4, attn_hidden=64, head_hidden=128,
          dropout=0.4, head_dropout=0.2)
NOTEBOOK_MODEL = {
    "v4": V4,
    "v5": V5,
    "v6": dict(V5, ordinal_bias=(-2.0, -2.95)),
    "v7": dict(head_hidden=256, dropout=0.3, head_dropout=0.15, ordinal_hidden=128, stem_side_scale=0.1),
    "v8": dict(level_dim=256, head_hidden=512, dropout=0.35, head_dropout=0.175, head_bias=PRIOR_BIAS),
    "v9": dict(proj_dim=512, seq_hidden=512, seq_layers=2, seq_dropout=0.3, attn_hidden=256, level_dim=256,
               head_hidden=512, dropout=0.35, head_dropout=0.175, head_bias=PRIOR_BIAS),
    "v10": V4,
}
# Small widths for fast forward/backward checks on timm's tiny test backbone.
TINY_MODEL = dict(backbone=TINY, proj_dim=16, seq_hidden=8, attn_hidden=8, attn_heads=2, level_dim=4,
                  head_hidden=8, aux_hidden=4, ordinal_hidden=8)

# Optimiser groups and their exact sizes with tf_efficientnetv2_s (docs/variants.md's computed counts).
BACKBONE = 20_177_488
GROUP_COUNTS = {
    "v4": {"backbone": BACKBONE, "feature_proj": 656_896, "lstm": 3_153_920, "attention": 1_050_624,
           "level_embedding": 320, "main_classifier": 75_395, "aux_binary": 37_058, "aux_severity": 37_058},
    "v5": {"backbone": BACKBONE, "feature_proj": 328_448, "gru": 592_896, "attn_pool": 16_513, "film": 2_560,
           "classifier": 33_795},
    "v6": {"backbone": BACKBONE, "feature_proj": 328_448, "gru": 592_896, "attn_pool": 16_513, "film": 2_560,
           "ordinal_features": 33_408, "ordinal_fc": 128, "ordinal_bias": 2, "ce_head": 387},
    "v7": {"stem": 1_512, "backbone_norm": 48, "backbone_rest": 20_176_792, "level_gamma": 6_400,
           "level_beta": 6_400, "classifier": 331_267, "ordinal_head": 164_226},
    "v8": {"backbone": BACKBONE, "aggregator": 7, "level_embed": 1_280, "classifier": 791_555},
    "v9": {"backbone": BACKBONE, "feature_proj": 655_872, "gru": 7_876_608, "attention": 262_657,
           "level_embed": 1_280, "classifier": 659_971},
}
GROUP_COUNTS["v10"] = GROUP_COUNTS["v4"]
TOTALS = {"v4": 25_188_759, "v5": 21_151_700, "v6": 21_151_830, "v7": 20_686_645, "v8": 20_970_330,
          "v9": 29_633_876, "v10": 25_188_759}
BACKBONE_GROUPS = {version: ("backbone",) for version in BUILDERS} | {"v7": ("backbone_norm", "backbone_rest")}
# Outputs beside 'logits' and their shapes for batch B, S slices.
EXTRA_OUTPUTS = {
    "v4": {"binary": "B2", "severity": "B2", "attention": "BS", "attention_matrix": "BSS"},
    "v5": {"attention": "BS"},
    "v6": {"ordinal": "B2", "attention": "BS"},
    "v7": {"ordinal": "B2"},
    "v8": {"slice_weights": "BS"},
    "v9": {"attention": "BS"},
}
EXTRA_OUTPUTS["v10"] = EXTRA_OUTPUTS["v4"]


def notebook_cfg(version: str, num_slices: int = 7, **model) -> Config:
    """The version's notebook model settings, random weights, with `model` overriding fields."""
    fields = dict(backbone="tf_efficientnetv2_s", pretrained=False) | NOTEBOOK_MODEL[version] | model
    return Config(data=DataConfig(num_slices=num_slices), model=ModelConfig(**fields))


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def full_models():
    """Every version at full size (tf_efficientnetv2_s), built once: ~1 s each."""
    torch.manual_seed(0)
    return {version: build(notebook_cfg(version)) for version, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {version: build(notebook_cfg(version, **TINY_MODEL)) for version, build in BUILDERS.items()}


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


@pytest.mark.parametrize("version", BUILDERS)
def test_parameter_counts(full_models, version):
    model = full_models[version]
    counts = {name: sum(p.numel() for p in params) for name, params in model.param_groups().items()}
    assert list(counts) == list(GROUP_COUNTS[version])  # the notebook's group names, in its order
    assert counts == GROUP_COUNTS[version]
    assert n_params(model) == TOTALS[version]


@pytest.mark.parametrize("version", BUILDERS)
def test_every_parameter_in_exactly_one_group(full_models, version):
    model = full_models[version]
    grouped = [id(p) for params in model.param_groups().values() for p in params]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert model.backbone_groups == BACKBONE_GROUPS[version]
    assert set(model.backbone_groups) <= set(model.param_groups())


def test_v10_is_v4():
    assert build_v10 is build_v4  # SpineModelV10 is v4's architecture; only training differs


def test_film_starts_as_identity(tiny_models):
    films = [tiny_models["v5"].film, tiny_models["v6"].film, tiny_models["v7"].film]
    for film in films:
        assert torch.all(film.gamma.weight == 1) and torch.all(film.beta.weight == 0)
    x = torch.randn(2, 16)
    assert torch.equal(tiny_models["v5"].film(x, torch.tensor([0, 4])), x)


def test_coral_head_init(tiny_models):
    heads = tiny_models["v6"].heads
    assert heads.ordinal_bias.tolist() == pytest.approx([-2.0, -2.95])
    assert heads.ordinal_fc.bias is None and heads.ordinal_fc.out_features == 1
    assert torch.sigmoid(heads.ordinal_bias).tolist() == pytest.approx([0.119, 0.050], abs=1e-3)


@pytest.mark.parametrize("version", ["v8", "v9"])
def test_head_bias_prior(tiny_models, version):
    head = tiny_models[version].classifier.eval()
    assert head[-1].bias.tolist() == list(PRIOR_BIAS)
    probs = torch.softmax(head(torch.zeros(1, head[0].normalized_shape[0])), dim=1)[0]
    assert probs.tolist() == pytest.approx([0.983, 0.011, 0.007], abs=0.01)  # not 88/7/5 % (§12 item 7)


def test_no_prior_keeps_torch_init(tiny_models):
    assert ClassifierHead(8, 4, 3, 0.0, 0.0)[-1].bias.abs().max() < 1
    assert tiny_models["v4"].heads.main_classifier[-1].bias.abs().max() < 1
    assert len(set(tiny_models["v4"].heads.main_classifier[-1].bias.tolist())) == 3


def test_v6_prior_bias_on_ce_head():
    model = build_v6(notebook_cfg("v6", **TINY_MODEL, head_bias=PRIOR_BIAS))
    assert model.heads.ce_head.bias.tolist() == list(PRIOR_BIAS)


@pytest.mark.parametrize("num_slices", [7, 5])
def test_slice_aggregator_centre(num_slices):
    model = build_v8(notebook_cfg("v8", num_slices, **TINY_MODEL))
    expected = [0.0] * num_slices
    expected[num_slices // 2] = 1.0
    assert model.aggregator.slice_logits.tolist() == expected
    weights = torch.softmax(model.aggregator.slice_logits, 0)
    if num_slices == 7:
        assert weights.tolist() == pytest.approx([0.115] * 3 + [0.312] + [0.115] * 3, abs=1e-3)


def test_v7_stem_from_pretrained_rgb_kernel(tiny_state, offline):
    state, d = tiny_state
    torch.manual_seed(1)  # different from the saved weights, so equality proves they were used
    cfg = notebook_cfg("v7", **TINY_MODEL, pretrained=True, weights_file=str(d / "w.safetensors"),
                       stem_side_scale=0.25)
    backbone = build_v7(cfg).backbone
    stem, rgb = backbone.conv_stem, state["conv_stem.weight"]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, stem.bias) == \
        (7, 24, (3, 3), (2, 2), (1, 1), None)
    assert torch.equal(stem.weight[:, 2:5], rgb)  # centre-1, centre, centre+1 = R, G, B
    side = 0.25 * rgb.mean(dim=1)
    for channel in (0, 1, 5, 6):
        assert torch.allclose(stem.weight[:, channel], side)
    # the stem BN and everything after it keep the loaded weights
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("conv_stem."))


def test_v7_stem_from_random_kernel():
    rgb = torch.nn.Conv2d(3, 24, 3, 2, 1, bias=False)
    stem = slice_stem(rgb, 5, 0.1)
    assert torch.equal(stem.weight[:, 1:4], rgb.weight)
    assert torch.allclose(stem.weight[:, 0], 0.1 * rgb.weight.mean(dim=1))
    assert torch.allclose(stem.weight[:, 4], 0.1 * rgb.weight.mean(dim=1))
    with pytest.raises(ValueError):
        slice_stem(rgb, 1, 0.1)


@pytest.mark.parametrize("version", BUILDERS)
def test_forward_backward_tiny(tiny_models, version):
    torch.manual_seed(0)
    model = tiny_models[version]
    b, s = 2, 7
    images = torch.rand(b, s, 32, 32) if version == "v7" else torch.randn(b, s, 3, 32, 32)
    level = torch.tensor([0, 4])
    with torch.no_grad():
        out = model.eval()(images, level)
    shapes = {"B2": (b, 2), "BS": (b, s), "BSS": (b, s, s)}
    assert {k: tuple(v.shape) for k, v in out.items()} == \
        {"logits": (b, 3)} | {k: shapes[v] for k, v in EXTRA_OUTPUTS[version].items()}
    for key, kind in EXTRA_OUTPUTS[version].items():
        if kind == "BS":  # per-slice weights: a distribution over the slices (v4's only without dropout)
            assert torch.allclose(out[key].sum(dim=1), torch.ones(b))
    model.train().zero_grad(set_to_none=True)
    loss = sum(value.float().square().mean() for value in model(images, level).values())
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad


def test_v4_attention_is_query_mean_of_mha_weights(tiny_models):
    model = tiny_models["v4"].eval()
    with torch.no_grad():
        out = model(torch.randn(2, 7, 3, 32, 32), torch.tensor([1, 2]))
    assert torch.allclose(out["attention_matrix"].sum(dim=2), torch.ones(2, 7))
    assert torch.allclose(out["attention"], out["attention_matrix"].mean(dim=1))


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


class _Payload:
    """Unpickling this would run code: it creates the file named by `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_weights_file_carrying_code_is_refused_unrun(tiny_state, offline, tmp_path):
    state, _ = tiny_state
    marker = tmp_path / "code-ran"
    torch.save(dict(state, evil=_Payload(marker)), tmp_path / "evil.pth")
    with pytest.raises(UsageError) as err:
        create_backbone(ModelConfig(backbone=TINY, pretrained=True, weights_file=str(tmp_path / "evil.pth")))
    assert "evil.pth" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_a_resume_checkpoint_carrying_code_is_refused_unrun(tmp_path):
    from harness.training.resume import load_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"format": 1, "identity": _Payload(marker)}, tmp_path / "last.pt")
    with pytest.raises(UsageError, match="not a readable harness checkpoint"):
        load_checkpoint(tmp_path / "last.pt")
    assert not marker.exists()
