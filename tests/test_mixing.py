"""Runs that mix two variants (`harness run A --take B:factors`): what the mix takes, and the mixes refused."""
from __future__ import annotations

import itertools

import pytest
import torch

from harness.core.errors import UsageError
from harness.core.factors import BY_NAME, differences
from harness.core.mixing import LOSS_NEEDS, PREDICTION_READS, MixError, mix, mix_name
from harness.core.registry import get_variant, list_variants
from harness.losses import LOSSES, build_loss
from harness.models import predictions
from tests.conftest import harness_cli

SHIPPED = [v for v in list_variants() if v.startswith("v") and v[1:].isdigit()]
SINGLE = [(a, b, f) for a, b in itertools.permutations(SHIPPED, 2)
          for f in differences(get_variant(a), get_variant(b))[0]]


@pytest.mark.parametrize("a,b,factor", SINGLE, ids=[f"{a}+{b}:{f}" for a, b, f in SINGLE])
def test_a_mix_takes_exactly_its_factors_keys_or_is_refused_for_a_coupling(a, b, factor):
    va, vb = get_variant(a), get_variant(b)
    try:
        mixed = mix(va, vb, (factor,))
    except MixError as exc:  # only the loss/model coupling refuses a single factor of shipped variants
        assert factor in ("loss", "model") and exc.needs == (({"loss", "model"} - {factor}).pop(),)
        return
    cfg, fa, fb = mixed.defaults().flat(), va.defaults().flat(), vb.defaults().flat()
    taken = set(BY_NAME[factor].keys)
    assert cfg["variant"] == mixed.name == mix_name(a, b, (factor,))
    assert all(cfg[k] == (fb[k] if k in taken else fa[k]) for k in cfg if k != "variant")
    model = vb if factor == "model" else va
    assert (mixed.model_builder, mixed.prediction, mixed.outputs) == (model.model_builder, model.prediction,
                                                                      model.outputs)
    assert mixed.parts == {"base": a, "donor": b, "factors": (factor,)}


def test_mix_names_resolve_through_the_registry_in_declared_factor_order():
    v = get_variant("v4+v9:loss,sampling")
    assert v.name == "v4+v9:sampling,loss" and get_variant(v.name) is v
    cfg = v.defaults()
    assert cfg.loss.name == "weighted_ce" and cfg.data.sampler == "shuffle" and cfg.data.intensity == "minmax"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_loss_table_is_what_each_loss_reads(name):
    """Every loss runs on exactly the outputs LOSS_NEEDS names, and fails without any one of them."""
    from harness.core.config import LossConfig

    loss = build_loss(LossConfig(name=name))
    batch = {"label": torch.tensor([0, 1, 2, 1])}
    full = {"logits": torch.randn(4, 3), "ordinal": torch.randn(4, 2)}
    needed = {k: full[k] for k in LOSS_NEEDS[name]}
    assert all(torch.isfinite(t) for t in loss(needed, batch).values())
    for left_out in LOSS_NEEDS[name]:
        with pytest.raises(KeyError):
            loss({k: v for k, v in needed.items() if k != left_out}, batch)


@pytest.mark.parametrize("path", sorted(PREDICTION_READS))
def test_the_prediction_table_is_what_each_rule_reads(path):
    rule = getattr(predictions, path.rpartition(":")[2])
    full = {"logits": torch.randn(4, 3), "ordinal": torch.randn(4, 2)}
    assert rule({k: full[k] for k in PREDICTION_READS[path]}).shape == (4, 3)
    for left_out in PREDICTION_READS[path]:
        with pytest.raises(KeyError):
            rule({k: v for k, v in full.items() if k != left_out})


@pytest.mark.parametrize("take,words", [
    ("v6:loss", "loss coral_ce needs the model output 'ordinal', which v9's model does not have"),
    ("v6:model", "v6's prediction rule coral_probs reads the 'ordinal' head, which loss weighted_ce does not train"),
    ("v7:loss", "take model too"),
    ("v8:sampling", "v9 and v8 have the same sampling (nothing to take)"),
    ("v9:loss", "a variant takes factors from another variant, not from itself"),
    ("v4:lose", "unknown factor 'lose' (did you mean loss?)"),
    ("v4", "expected VARIANT:FACTOR[,FACTOR...]"),
    ("v99:loss", "unknown variant 'v99'"),
    ("v4:loss,loss", "a factor is named twice"),
])
def test_take_refusals_are_one_line_and_leave_nothing(workdir, take, words):
    res = harness_cli("run", "v9", "--take", take, "--set", "train.epochs=1", cwd=workdir)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and words in res.stderr, res.stderr
    assert not (workdir / "mlruns").exists() and not (workdir / ".harness").exists()


def test_a_mix_of_mixes_and_a_reserved_name_are_refused():
    with pytest.raises(UsageError, match="not mixes"):
        mix(get_variant("v4+v9:loss"), get_variant("v10"), ("loss",))
    from harness.core.registry import register_variant

    with pytest.raises(ValueError, match="kept for mixes"):
        register_variant("my+variant", "x", build_model="m:f")
