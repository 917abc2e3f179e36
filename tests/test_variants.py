"""Every registered variant, tested for free: parametrised over the registry (like timm's model
tests), so a new variant file is covered without new test code."""
import json

import numpy as np
import pytest
import torch
from conftest import harness_cli
from mlflow import MlflowClient

from harness.core.registry import get_variant, list_variants
from harness.core.run_config import build_config
from harness.data.dataset import SliceDataset
from harness.data.rsna import load_samples
from harness.losses import build_loss

VARIANTS = list_variants()
# docs/variants.md §4-§10, computed from the notebooks' classes with random weights
NOTEBOOK_PARAMETERS = {"v4": 25_188_759, "v5": 21_151_700, "v6": 21_151_830, "v7": 20_686_645,
                       "v8": 20_970_330, "v9": 29_633_876, "v10": 25_188_759}


def test_the_seven_notebook_versions_are_registered():
    assert set(NOTEBOOK_PARAMETERS) <= set(VARIANTS)
    assert VARIANTS[:7] == ["v4", "v5", "v6", "v7", "v8", "v9", "v10"]  # natural order


def test_variants_json_reports_the_notebook_parameter_counts(workdir):
    res = harness_cli("variants", "--json", cwd=workdir)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    for name, count in NOTEBOOK_PARAMETERS.items():
        assert rows[name]["parameters"] == count, name
        assert rows[name]["description"] and rows[name]["architecture"].startswith(("backbone", "stem"))
        assert sum(rows[name]["groups"].values()) == count


def _smoke(name, **sets):
    return build_config(get_variant(name), 0, "smoke", None, sets, None)


def _batch(demo_root, cfg, n=4):
    """A real batch of the variant's data pipeline holding every class (aux and ordinal terms need them)."""
    table = load_samples(demo_root, cfg.data.condition)
    labels = table.samples["label"].to_numpy()
    rows = [int(np.flatnonzero(labels == c)[0]) for c in (0, 1, 2)] + [int(np.flatnonzero(labels == 0)[1])]
    ds = SliceDataset(table, rows[:n], cfg.data, True, cfg.data.augment, 0)
    return torch.utils.data.default_collate([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_on_the_smoke_profile(demo_root, name):
    variant, cfg = get_variant(name), _smoke(name)
    torch.manual_seed(0)
    model = variant.build_model(cfg).train()
    batch = _batch(demo_root, cfg)
    out = model(batch["image"], batch["level"])
    assert out["logits"].shape == (4, 3)
    # the outputs a mix checks its loss and prediction rule against (harness.core.mixing) are the model's
    assert set(variant.outputs) <= set(out)
    assert {"binary", "severity", "ordinal"} & set(out) <= set(variant.outputs)
    terms = build_loss(cfg.loss, (1.0, 2.0, 3.0))(out, batch)
    loss = sum(terms.values())
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    # every trainable parameter is reached by the loss (a softmax-invariant bias, such as the last
    # bias of an attention score, gets an exactly zero gradient: reached, but nothing to learn)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum()]
    assert all(n.endswith("score.2.bias") for n in zero), zero
    probs = variant.predict({k: v.detach() for k, v in out.items()})
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    groups = model.param_groups()
    assert sum(len(p) for p in groups.values()) == len(list(model.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_one_epoch_smoke_run_is_finished_in_mlflow(demo_root, tmp_path, name):
    res = harness_cli("run", name, "--data-dir", str(demo_root), "--profile", "smoke", "--set", "train.epochs=1",
                      "--set", "train.freeze_epochs=0", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rsna-spinal_canal_stenosis")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["harness.variant"] == name
    assert 0 <= run.data.metrics["best/balanced_accuracy"] <= 1
    expected_tta = get_variant(name).defaults().data.tta != ("none",)
    assert ("tta/balanced_accuracy" in run.data.metrics) == expected_tta
