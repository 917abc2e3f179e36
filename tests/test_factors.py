"""`harness diff`: every config key has one place, and the difference between every pair of shipped variants
is grouped into factors with nothing lost, nothing counted twice."""
from __future__ import annotations

import itertools
import json

import pytest

from harness.core.config import Config
from harness.core.factors import BUILDER, BY_NAME, FACTORS, NAMES, SETUP, as_dict, differences, factor_of
from harness.core.registry import get_variant, list_variants
from tests.conftest import harness_cli

SHIPPED = [v for v in list_variants() if v.startswith("v") and v[1:].isdigit()]
PAIRS = list(itertools.permutations(SHIPPED, 2))


def test_every_config_key_is_in_exactly_one_factor_or_the_setup():
    keys = set(Config().flat())
    placed = [k for f in FACTORS for k in f.keys] + list(SETUP)
    assert len(placed) == len(set(placed)), "a key is in two places"
    unplaced = {k for k in keys if not k.startswith("alarms.")} - set(placed)
    assert not unplaced, f"give these keys a factor in harness/core/factors.py (or SETUP): {sorted(unplaced)}"
    assert set(placed) <= keys, sorted(set(placed) - keys)
    for f in FACTORS:
        assert set(f.coupled) <= set(f.keys)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_diff_groups_every_difference_once(a, b):
    va, vb = get_variant(a), get_variant(b)
    flat_a, flat_b = va.defaults().flat(), vb.defaults().flat()
    expected = {k for k in flat_a if k != "variant" and flat_a[k] != flat_b[k]}
    changed, setup = differences(va, vb)
    keys = [c.key for cs in changed.values() for c in cs if c.key not in ("builder", "prediction")]
    assert sorted(keys + [c.key for c in setup]) == sorted(expected)
    for name, changes in changed.items():
        for c in changes:
            assert c.key in ("builder", "prediction") and name == "model" or factor_of(c.key) == name
            if c.key in flat_a:
                assert (c.a, c.b) == (flat_a[c.key], flat_b[c.key])
    assert list(changed) == [n for n in NAMES if n in changed]  # the declared order
    builder_differs = get_variant(a).model_builder != get_variant(b).model_builder
    assert (BUILDER in [c.key for c in changed.get("model", [])]) == builder_differs
    # the other direction is the same difference, sides swapped
    back, _ = differences(vb, va)
    assert {n: [(c.key, c.b, c.a) for c in cs] for n, cs in back.items()} == \
        {n: [(c.key, c.a, c.b) for c in cs] for n, cs in changed.items()}


def test_v7s_stacked_channels_are_coupled_to_its_model():
    result = as_dict(get_variant("v9"), get_variant("v7"))
    model = next(f for f in result["factors"] if f["name"] == "model")
    channels = next(c for c in model["changes"] if c["key"] == "data.channels")
    assert (channels["a"], channels["b"]) == ("grey3", "stack") and "stem" in channels["coupled"]
    assert factor_of("data.channels") == "model" and "data.channels" in BY_NAME["model"].coupled


def test_v4_to_v10_is_the_three_factors_the_notebook_changed():
    """docs/variants.md §10: v10 is v4 with a strong augmentation without alpha_affine, focal alpha [1, 2, 4],
    gradient clipping and an LR floor; the same model (v4's builder) and data otherwise."""
    changed, setup = differences(get_variant("v4"), get_variant("v10"))
    assert list(changed) == ["augmentation", "loss", "optimiser"]
    assert {c.key for c in changed["optimiser"]} == {"train.grad_clip", "train.lr_floor"}
    assert not setup


def test_diff_cli_text_and_json(workdir):
    res = harness_cli("diff", "v4", "v9", "--json", cwd=workdir)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [f["name"] for f in out["factors"]] == list(NAMES)  # v4 and v9 differ in every factor
    loss = next(f for f in out["factors"] if f["name"] == "loss")
    name = next(c for c in loss["changes"] if c["key"] == "loss.name")
    assert (name["a"], name["b"]) == ("focal", "weighted_ce") and name["doc"].startswith("Loss function")
    text = harness_cli("diff", "v4", "v10", cwd=workdir)
    assert text.returncode == 0, text.stderr
    assert "3 of 9 factors differ" in text.stdout and "train.grad_clip  None -> 1.0" in text.stdout
    bad = harness_cli("diff", "v4", "v99", cwd=workdir)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown variant 'v99'" in bad.stderr
