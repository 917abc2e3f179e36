"""A third-party variant found through the `harness.variants` entry-point group, listed and run.

The plugin is a real distribution on sys.path (a module plus its .dist-info with entry_points.txt),
which is what `pip install` leaves behind, so discovery goes through importlib.metadata unchanged.
"""
import json

from conftest import harness_cli, install_plugin
from mlflow import MlflowClient

PLUGIN = '''
"""A third-party variant: v9 with other class weights."""
import dataclasses

from variants.v9 import build_model as build_v9
from harness.core.registry import get_variant, register_variant


@register_variant("v9_reweighted", "third-party: v9 with class weights [1, 2, 3]", build_model=build_v9)
def v9_reweighted():
    cfg = get_variant("v9").defaults()
    return dataclasses.replace(cfg, variant="v9_reweighted",
                               loss=dataclasses.replace(cfg.loss, class_weights=(1.0, 2.0, 3.0)))
'''


def test_a_plugin_variant_is_listed_and_runs(demo_root, tmp_path):
    env = install_plugin(tmp_path / "site", "rsna_plugin_example", PLUGIN, ["v9_reweighted"])
    listed = harness_cli("variants", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["v9_reweighted"]["parameters"] == rows["v9"]["parameters"]
    assert rows["v9_reweighted"]["module"] == "rsna_plugin_example"

    res = harness_cli("run", "v9_reweighted", "--data-dir", str(demo_root), "--profile", "smoke",
                      "--set", "train.epochs=1", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rsna-spinal_canal_stenosis").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["harness.variant"] == "v9_reweighted"
    assert run.data.params["loss.class_weights"] == "(1.0, 2.0, 3.0)"


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    res = harness_cli("run", "v9_reweighted", cwd=tmp_path)
    assert res.returncode == 2 and "unknown variant 'v9_reweighted'" in res.stderr
