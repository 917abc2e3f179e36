"""A new notebook version as an out-of-tree package: no edit under harness/ (nor variants/) is needed.

`rsna_v11` is written to a temporary folder at test time (a module plus its .dist-info, what `pip
install` leaves behind; see tests/test_plugins.py) and registers variant v11 through the
`harness.variants` entry-point group. It brings everything a notebook version brings:
- its own model, assembled in its `build_model(cfg)` from the shared blocks and imported lazily: v9's
  plain-Linear projection and attention pooling, but a bidirectional LSTM instead of the GRU and FiLM level
  conditioning instead of the concatenated level embedding (no bundled variant has this combination);
- its own augmentation recipe, `data.augment="rsna_v11:train_augment"` (`function(api) -> Recipe`), which
  leaves a marker file when the dataset builds it and when it first augments a sample;
- its config, derived from `get_variant("v9").defaults()` with `dataclasses.replace`.

The real `harness` command then lists it, trains it (1 smoke epoch), compares it with v9 and tunes it
(2 trials), all in one working folder with the plugin on PYTHONPATH; and no file of the harness package
mentions v11, so none of that came from an edit there.
"""
import json
import re
from pathlib import Path

import optuna
import pytest
from conftest import harness_cli, install_plugin
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

import harness

RECIPE = "rsna_v11:train_augment"
MARKER_ENV = "RSNA_V11_MARKER"

PLUGIN = '''
"""v11, out of tree: v9's config and trunk shape, a BiLSTM, attention pooling, FiLM level conditioning,
and its own augmentation recipe."""
import dataclasses
import os

from harness.core.registry import get_variant, register_variant

MARKER_ENV = "RSNA_V11_MARKER"


def _mark(line):
    """Append a line to the marker file the test names (nothing when it names none)."""
    path = os.environ.get(MARKER_ENV)
    if path:
        with open(path, "a") as f:
            f.write(line + "\\n")


def train_augment(api="1.x"):
    """v11's own training recipe: mild geometry and contrast, plus a pass-through that notes its first call."""
    import albumentations as A
    import cv2

    from harness.data.albu_compat import Recipe, shift_scale_rotate

    _mark(f"built api={api}")
    seen = []

    def note_first_call(image, **kwargs):
        if not seen:
            seen.append(True)
            _mark(f"applied shape={tuple(image.shape)}")
        return image

    return Recipe([
        shift_scale_rotate(0.05, 0.08, 6, p=0.5, border_mode=cv2.BORDER_CONSTANT, api=api),
        A.RandomGamma(gamma_limit=(85, 115), p=0.5),
        A.Lambda(image=note_first_call, p=1.0),
    ])


def build_model(cfg):
    """Backbone -> Linear proj -> BiLSTM -> tanh attention pool -> FiLM on the level -> MLP head."""
    from harness.models.blocks import AttentionPool, FiLM
    from harness.models.slice_model import NUM_LEVELS, SliceSequenceModel, classifier_head, recurrent_trunk

    m = cfg.model
    trunk, width = recurrent_trunk(m, "lstm", mlp_proj=False)
    return SliceSequenceModel(
        **trunk,
        pool=AttentionPool(width, m.attn_hidden),
        level=FiLM(NUM_LEVELS, width),
        head=classifier_head(m, width),
        names=dict(proj="feature_proj", sequence="lstm", pool="attention", level="film", head="classifier"),
    )


@register_variant("v11", "out of tree: BiLSTM 2x512 + attention pool + FiLM, v9's schedule, own augmentation",
                  build_model=build_model)
def v11():
    cfg = get_variant("v9").defaults()
    return dataclasses.replace(cfg, variant="v11", data=dataclasses.replace(cfg.data, augment="rsna_v11:train_augment"))
'''

SPEC = """
name: v11_study
variant: v11
fold: 0
objective: {metric: best/balanced_accuracy, direction: maximize}
trials: 2
sampler: {name: random, seed: 11}
pruner: {name: none}
fixed:
  train.epochs: 1
  train.warmup_epochs: 0.5
  data.num_workers: 0
  data.tta: [none]
  data.augment: rsna_v11:train_augment
space:
  loss.class_weights[1]: {type: float, low: 1.0, high: 8.0}
"""

# The smoke profile sets data.augment=none for every variant (harness/core/profiles.py: no augmentation
# in minutes-long runs from random weights); `--set` puts the variant's own recipe back, as the profile says.
SMOKE_RUN = ("--fold", "0", "--profile", "smoke", "--set", "train.epochs=1", "--set", f"data.augment={RECIPE}")


def _ok(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The working folder (its own mlruns/ and .harness/) and the environment that puts rsna_v11 on
    PYTHONPATH and names the recipe's marker file."""
    root = tmp_path_factory.mktemp("out_of_tree")
    env = install_plugin(root / "site", "rsna_v11", PLUGIN, ["v11"])
    cwd = root / "work"
    cwd.mkdir()
    marker = root / "recipe_marker.txt"
    env[MARKER_ENV] = str(marker)
    return cwd, env, marker


def _client(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


def _runs(cwd: Path, query: str) -> list:
    client = _client(cwd)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, query)


def _train(variant, demo_root, plugin):
    cwd, env, marker = plugin
    marker.unlink(missing_ok=True)
    res = _ok(harness_cli("run", variant, "--data-dir", str(demo_root), *SMOKE_RUN, cwd=cwd, env=env))
    (run,) = _runs(cwd, f"tags.`harness.variant` = '{variant}' and tags.`harness.kind` = 'training'")
    return res, run, (marker.read_text().splitlines() if marker.exists() else [])


@pytest.fixture(scope="module")
def v11_run(demo_root, plugin):
    return _train("v11", demo_root, plugin)


@pytest.fixture(scope="module")
def v9_run(demo_root, plugin, v11_run):
    return _train("v9", demo_root, plugin)


def test_nothing_under_harness_mentions_v11():
    package = Path(harness.__file__).parent
    sources = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(sources) > 50  # the whole package was searched, not an empty folder
    word = re.compile(r"\b(v11|rsna_v11)\b")
    mentions = [str(p.relative_to(package)) for p in sources if word.search(p.read_text(errors="replace"))]
    assert mentions == []


def test_without_the_plugin_v11_is_unknown(tmp_path):
    res = harness_cli("run", "v11", cwd=tmp_path)
    assert res.returncode == 2 and "unknown variant 'v11'" in res.stderr


@pytest.mark.slow
def test_v11_is_listed_with_its_module_and_its_own_model(plugin):
    cwd, env, _ = plugin
    res = _ok(harness_cli("variants", "--json", cwd=cwd, env=env))
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    v11, v9 = rows["v11"], rows["v9"]
    assert v11["module"] == "rsna_v11" and v9["module"] == "variants.v9"
    assert v11["parameters"] > 0 and v11["parameters"] != v9["parameters"]
    assert v11["architecture"] == "backbone -> feature_proj -> lstm -> attention -> film -> classifier"
    assert v11["backbone"] == v9["backbone"]  # the config is v9's


@pytest.mark.slow
def test_v11_trains_with_its_own_recipe(v11_run):
    res, run, marks = v11_run
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.variant"] == "v11"
    assert run.data.params["data.augment"] == RECIPE
    assert run.data.params["loss.class_weights"] == "(1.0, 4.0, 6.0)"  # v9's, kept by dataclasses.replace
    # the training process built the variant's recipe (1.x semantics) and augmented samples with it
    assert "built api=1.x" in marks and any(m.startswith("applied shape=") for m in marks), marks


@pytest.mark.slow
def test_compare_v9_with_v11(v9_run, v11_run, plugin):
    cwd, env, _ = plugin
    assert v9_run[1].info.status == "FINISHED"
    res = _ok(harness_cli("compare", "v9", "v11", "--fold", "0", "--json", cwd=cwd, env=env))
    report = json.loads(res.stdout)
    assert [s["variant"] for s in report["variants"]] == ["v9", "v11"] and report["baseline"] == "v9"
    assert [r["variant"] for r in report["against_baseline"]] == ["v11"]
    by_name = {s["variant"]: s for s in report["variants"]}
    assert by_name["v11"]["parameters"] != by_name["v9"]["parameters"] > 0


@pytest.mark.slow
def test_tune_v11_two_trials(demo_root, plugin):
    cwd, env, _ = plugin
    spec = cwd / "v11_study.yaml"
    spec.write_text(SPEC)
    _ok(harness_cli("tune", str(spec), "--data-dir", str(demo_root), "--profile", "smoke", cwd=cwd, env=env))
    storage = JournalStorage(JournalFileBackend(str(spec.with_suffix(".journal"))))
    trials = optuna.load_study(study_name="v11_study", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[0].params == {"loss.class_weights[1]": 4.0}  # trial 0: v11's (v9's) default
    children = _runs(cwd, "tags.`harness.kind` = 'trial' and tags.`harness.variant` = 'v11'")
    assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    for run in children:
        assert run.info.status == "FINISHED" and run.data.params["data.augment"] == RECIPE
