"""Study specs: the shipped studies, validation errors naming file and key, suggestions, overrides,
trial 0's parameters, the reproduce command, and Optuna on a real PostgreSQL server."""
import shlex
from pathlib import Path

import optuna
import pytest
import yaml

from harness.core.cells import parse_folds
from harness.core.errors import UsageError
from harness.core.overrides import apply_overrides, parse_set
from harness.core.registry import get_variant
from harness.core.run_config import build_config
from harness.tuning.space import (
    ParamSpec,
    StudySpec,
    build_pruner,
    build_sampler,
    default_params,
    reproduce_command,
    suggest,
    to_overrides,
)
from harness.tuning.spec import check_spec, load_spec, spec_from_dict

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SHIPPED = sorted(STUDIES.glob("*.yaml"))


def minimal(**changes) -> dict:
    spec = {"name": "s", "variant": "v9", "trials": 5,
            "space": {"loss.class_weights[1]": {"type": "float", "low": 1.0, "high": 10.0}}}
    return {k: v for k, v in (spec | changes).items() if v is not ...}


def defaults_after_fixed(spec: StudySpec):
    return apply_overrides(get_variant(spec.variant).defaults(), spec.fixed)


# ----------------------------------------------------------------------------- shipped studies

def test_the_four_studies_ship():
    assert [p.name for p in SHIPPED] == ["v4_focal_weights.yaml", "v9_class_weights.yaml",
                                         "v9_class_weights_folds.yaml", "v9_learning_rates.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_study_loads_and_trial_0_is_the_defaults(path):
    spec = load_spec(path)
    assert spec.name == path.stem and spec.trials >= 1 and spec.direction == "maximize"
    assert spec.metric == "best/balanced_accuracy" and spec.sampler_kwargs["seed"] == 42
    assert f"harness tune studies/{path.name}" in path.read_text()  # the header says how to run it
    base = defaults_after_fixed(spec)
    params = check_spec(spec, get_variant(spec.variant).defaults())
    assert params == default_params(spec, get_variant(spec.variant).defaults())
    # applying trial 0's parameters changes nothing: it is the variant's defaults (after fixed)
    assert apply_overrides(base, to_overrides(params, base)) == base
    assert isinstance(build_sampler(spec), optuna.samplers.TPESampler)
    assert isinstance(build_pruner(spec), optuna.pruners.MedianPruner)


def test_v9_class_weights_study():
    spec = load_spec(STUDIES / "v9_class_weights.yaml")
    assert spec.space == (
        ParamSpec("loss.class_weights[1]", "loss.class_weights", 1, "float", low=1.0, high=10.0),
        ParamSpec("loss.class_weights[2]", "loss.class_weights", 2, "float", low=1.0, high=12.0))
    assert default_params(spec, get_variant("v9").defaults()) == {"loss.class_weights[1]": 4.0,
                                                                  "loss.class_weights[2]": 6.0}


def test_v9_class_weights_folds_study_is_v9_class_weights_on_three_folds():
    folds, one = load_spec(STUDIES / "v9_class_weights_folds.yaml"), load_spec(STUDIES / "v9_class_weights.yaml")
    assert folds.folds == (0, 1, 2) and one.folds == (0,) and one.fold == 0
    assert folds.space == one.space and folds.fixed == one.fixed
    assert folds.pruner_kwargs["n_warmup_steps"] == 0  # steps are folds: a warm-up of 3 would never prune


def test_v4_study_fixes_the_rule_and_starts_from_the_illustrative_weights():
    spec = load_spec(STUDIES / "v4_focal_weights.yaml")
    assert get_variant("v4").defaults().loss.class_weight_rule == "inverse_sqrt"
    assert spec.fixed == {"loss.class_weight_rule": "fixed", "loss.class_weights": (0.35, 1.19, 1.46)}
    assert default_params(spec, get_variant("v4").defaults()) == {
        "loss.gamma": 2.5, "loss.class_weights[0]": 0.35, "loss.class_weights[1]": 1.19, "loss.class_weights[2]": 1.46}


def test_v9_learning_rate_study_is_log_scaled_and_reads_1e_5():
    spec = load_spec(STUDIES / "v9_learning_rates.yaml")
    lr_head = spec.space[0]
    assert (lr_head.key, lr_head.low, lr_head.high, lr_head.log) == ("train.lr_head", 1e-5, 1e-3, True)
    assert all(p.log for p in spec.space)
    assert default_params(spec, get_variant("v9").defaults()) == {
        "train.lr_head": 1e-4, "train.lr_backbone": 1e-5, "train.wd_head": 0.01, "train.wd_backbone": 0.03}


def test_yaml_1e_minus_5_bounds_are_floats():
    spec = spec_from_dict(minimal(space={"train.lr_head": {"type": "float", "low": "1e-5", "high": "1e-3",
                                                           "log": True}}), "s.yaml")
    assert (spec.space[0].low, spec.space[0].high) == (1e-5, 1e-3)


# ----------------------------------------------------------------------------- engine helpers

def test_to_overrides_fills_the_other_tuple_entries_from_base():
    v9 = get_variant("v9").defaults()
    assert to_overrides({"loss.class_weights[1]": 5.0}, v9) == {"loss.class_weights": (1.0, 5.0, 6.0)}
    assert to_overrides({"loss.class_weights[1]": 5.0, "loss.class_weights[2]": 9.0, "train.lr_head": 3e-4}, v9) == {
        "loss.class_weights": (1.0, 5.0, 9.0), "train.lr_head": 3e-4}


@pytest.mark.parametrize("params, needle", [
    ({"loss.class_weights[3]": 1.0}, "index 3 is out of range; loss.class_weights has 3 entries"),
    ({"train.lr_head[0]": 1.0}, "train.lr_head is not a list-valued key"),
    ({"loss.class_weigths[0]": 1.0}, "did you mean loss.class_weights"),
])
def test_to_overrides_refuses_bad_indexed_keys(params, needle):
    with pytest.raises(UsageError, match=needle):
        to_overrides(params, get_variant("v9").defaults())


def test_suggest_asks_for_every_entry_under_the_spec_key():
    spec = spec_from_dict(minimal(space={
        "loss.class_weights[1]": {"type": "float", "low": 1.0, "high": 10.0},
        "train.lr_head": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "model.seq_layers": {"type": "int", "low": 1, "high": 3},
        "loss.name": {"type": "categorical", "choices": ["weighted_ce", "focal"]}}), "s.yaml")
    params = {"loss.class_weights[1]": 7.5, "train.lr_head": 2e-4, "model.seq_layers": 3, "loss.name": "focal"}
    trial = optuna.trial.FixedTrial(params)
    assert suggest(trial, spec) == params
    D = optuna.distributions
    assert trial.distributions == {  # the bounds, scale and choices reached Optuna
        "loss.class_weights[1]": D.FloatDistribution(1.0, 10.0),
        "train.lr_head": D.FloatDistribution(1e-5, 1e-3, log=True),
        "model.seq_layers": D.IntDistribution(1, 3),
        "loss.name": D.CategoricalDistribution(["weighted_ce", "focal"])}


def test_default_params_follows_fixed():
    spec = spec_from_dict(minimal(fixed={"loss.class_weights": [1, 2, 3]}), "s.yaml")
    assert default_params(spec, get_variant("v9").defaults()) == {"loss.class_weights[1]": 2.0}
    nested_indexed = spec_from_dict(minimal(fixed={"loss": {"class_weights[1]": 9}}), "s.yaml")
    assert nested_indexed.fixed == {"loss.class_weights": (1.0, 9.0, 6.0)}
    assert default_params(nested_indexed, get_variant("v9").defaults()) == {"loss.class_weights[1]": 9.0}


def test_reproduce_command_round_trips_through_set():
    spec = load_spec(STUDIES / "v4_focal_weights.yaml")
    params = {"loss.gamma": 1.25, "loss.class_weights[0]": 0.2, "loss.class_weights[1]": 3.5,
              "loss.class_weights[2]": 1.0e-5}
    base = build_config(get_variant("v4"), 0, "smoke", None, dict(spec.fixed), None)
    expected = apply_overrides(base, to_overrides(params, base))
    words = shlex.split(reproduce_command(spec, params, "smoke"))
    assert words[:7] == ["harness", "run", "v4", "--fold", "0", "--profile", "smoke"]
    sets = [w for prev, w in zip(words, words[1:]) if prev == "--set"]
    assert "loss.class_weights=[0.2,3.5,1.0e-05]" in sets
    rebuilt = build_config(get_variant("v4"), 0, "smoke", None, parse_set(sets), None)
    assert rebuilt == expected and rebuilt.loss.class_weights == (0.2, 3.5, 1e-5)
    assert rebuilt.loss.class_weight_rule == "fixed" and rebuilt.loss.gamma == 1.25
    # extra --set of the tune command line ride along, before the trial's own values
    with_sets = shlex.split(reproduce_command(spec, params, "smoke", sets={"train.epochs": 3}))
    assert "train.epochs=3" in with_sets and with_sets[-1].startswith("loss.gamma=")


# ----------------------------------------------------------------------------- folds

def test_fold_and_folds():
    one = spec_from_dict(minimal(fold=2), "s.yaml")
    assert one.folds == (2,) and one.fold == 2
    assert spec_from_dict(minimal(folds=[2]), "s.yaml") == one  # one fold either way: the same study
    assert spec_from_dict(minimal(), "s.yaml").folds == (0,)  # neither: fold 0, as before
    assert spec_from_dict(minimal(folds=[3, 0, 1]), "s.yaml").folds == (3, 0, 1)  # trained in this order
    assert spec_from_dict(minimal(folds="all"), "s.yaml").folds == (0, 1, 2, 3, 4)
    # `all` follows a fixed data.num_folds
    assert spec_from_dict(minimal(folds="all", fixed={"data.num_folds": 3}), "s.yaml").folds == (0, 1, 2)
    # with several folds a step is a fold: a warm-up leaving one fold to prune at is fine
    spec_from_dict(minimal(folds=[0, 1, 2], pruner={"name": "median", "n_warmup_steps": 1}), "s.yaml")
    # one fold: steps are epochs, as before (the shipped studies warm up for 3)
    spec_from_dict(minimal(folds=[1], pruner={"name": "median", "n_warmup_steps": 3}), "s.yaml")


def test_check_spec_checks_every_fold_against_the_run_config():
    spec = spec_from_dict(minimal(folds=[0, 4]), "study.yaml")
    base = build_config(get_variant("v9"), 0, "smoke", None, {"data.num_folds": 3}, None)  # e.g. --set
    with pytest.raises(UsageError, match=r"^study.yaml: folds: fold must be within 0-2, got 4$"):
        check_spec(spec, base)


def test_reproduce_command_of_several_folds_trains_them_as_a_matrix():
    spec = spec_from_dict(minimal(folds=[0, 2]), "s.yaml")
    words = shlex.split(reproduce_command(spec, {"loss.class_weights[1]": 5.0}, "smoke"))
    assert words[:7] == ["harness", "run", "v9", "--fold", "0,2", "--profile", "smoke"]
    assert parse_folds(words[4], 5) == [0, 2]


# ----------------------------------------------------------------------------- errors

FLOAT = {"type": "float", "low": 1.0, "high": 10.0}
BAD_SPECS = [
    (dict(trails=5), "unknown key 'trails' (did you mean trials?)"),
    (dict(name=...), "'name' is required"),
    (dict(variant=...), "'variant' is required"),
    (dict(variant="v99"), "variant: unknown variant 'v99' (did you mean v9?)"),
    (dict(fold=7), "fold: fold must be within 0-4"),
    (dict(trials=0), "trials must be an integer >= 1, got 0"),
    (dict(timeout=-1), "timeout must be a positive number"),
    (dict(objective={"metric": "best/balanced_accuracy", "direction": "up"}), "objective.direction must be maximize"),
    (dict(objective={"metrc": "x"}), "objective: unknown key 'metrc' (did you mean metric?)"),
    (dict(sampler={"name": "tpee"}), "sampler.name 'tpee' is unknown (did you mean tpe?)"),
    (dict(sampler={"name": "tpe", "sed": 1}), "sampler tpe: unknown argument 'sed' (did you mean seed?)"),
    (dict(pruner={"name": "meadian"}), "pruner.name 'meadian' is unknown (did you mean median?)"),
    (dict(pruner={"name": "percentile"}), "pruner percentile: "),  # its required percentile is missing
    (dict(pruner={"name": "threshold", "lower": "high"}), "pruner threshold: "),  # Optuna's own value check
    (dict(fixed={"train.epoch": 8}), "fixed: unknown config key 'train.epoch' (did you mean train.epochs?)"),
    (dict(fixed={"train.epochs": "many"}), "fixed: train.epochs expects int"),
    (dict(fixed={"fold": 1}), "fixed: fold cannot be set here"),
    (dict(fold=1, folds=[0, 1]), "fold and folds: give one"),
    (dict(folds=[0, 7]), "folds: fold must be within 0-4, got 7"),
    (dict(folds=[1, 1]), "folds names a fold twice: [1, 1]"),
    (dict(folds=[]), "folds expects a non-empty list of fold indices or 'all'"),
    (dict(folds=3), "folds expects a non-empty list of fold indices or 'all', got 3 (one fold: fold: N)"),
    (dict(folds="every"), "folds expects a non-empty list of fold indices or 'all', got 'every'"),
    (dict(folds=[0, True]), "folds expects a non-empty list"),
    (dict(fold=[0, 1]), "fold expects an integer, got [0, 1]"),
    (dict(folds=[0, 1, 2], pruner={"name": "median", "n_warmup_steps": 3}),
     "pruner median: n_warmup_steps 3 never prunes a trial on 3 folds"),
    (dict(folds=[0, 1], pruner={"name": "threshold", "lower": 0.5, "n_warmup_steps": 1}),
     "pruner threshold: n_warmup_steps 1 never prunes a trial on 2 folds"),
    (dict(space={}), "space is required"),
    (dict(space={"loss.clas_weights[1]": FLOAT}), "space: unknown config key 'loss.clas_weights' "
                                                  "(did you mean loss.class_weights?)"),
    (dict(space={"train.lr_hed": FLOAT}), "unknown config key 'train.lr_hed' (did you mean train.lr_head?)"),
    (dict(space={"loss.class_weights[3]": FLOAT}), "loss.class_weights[3]: index 3 is out of range"),
    (dict(space={"loss.class_weights[x]": FLOAT}), "write a tuple entry as key[index]"),
    (dict(space={"loss.gamma": {"type": "float", "low": 3.0, "high": 1.0}}), "loss.gamma: low must be below high"),
    (dict(space={"train.lr_head": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}),
     "train.lr_head: log scale needs low > 0"),
    (dict(space={"train.lr_head": {"type": "float", "low": "tiny", "high": 1e-3}}),
     "train.lr_head: low expects a number"),
    (dict(space={"model.seq_layers": {"type": "int", "low": 1.5, "high": 3}}),
     "model.seq_layers: low expects an integer"),
    (dict(space={"model.seq_layers": {"type": "float", "low": 1.0, "high": 3.0}}), "model.seq_layers expects int"),
    (dict(space={"loss.name": {"type": "categorical", "choices": []}}), "loss.name: choices must be a non-empty list"),
    (dict(space={"loss.name": {"type": "categorical", "choices": ["weighted_ce"], "low": 1}}),
     "loss.name: unknown categorical field 'low'"),
    (dict(space={"loss.gamma": {"type": "flaot", "low": 1.0, "high": 2.0}}), "loss.gamma: type must be one of"),
    (dict(space={"loss.gamma": {"type": "float", "low": 0.5, "high": 4.0, "logg": True}}),
     "unknown float field 'logg' (did you mean log?)"),
    (dict(fixed={"train.epochs": 8}, space={"train.epochs": {"type": "int", "low": 4, "high": 30}}),
     "train.epochs is both in fixed and in space"),
]


@pytest.mark.parametrize("changes, needle", BAD_SPECS, ids=[n for _, n in BAD_SPECS])
def test_bad_spec_is_one_line_naming_file_and_key(tmp_path, changes, needle):
    path = tmp_path / "bad_study.yaml"
    path.write_text(yaml.safe_dump(minimal(**changes), sort_keys=False))
    with pytest.raises(UsageError) as exc:
        load_spec(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and needle in msg, msg


CHECKED_AGAINST_V9 = [
    (dict(space={"data.intensity": {"type": "categorical", "choices": ["fixed_window", "hu"]}}),
     "space data.intensity: data.intensity='hu' is not one of"),
    (dict(fixed={"loss.class_weights": [1, -4, 6]}), "fixed: loss.class_weights needs 3 non-negative values"),
    (dict(space={"train.epochs": {"type": "int", "low": 1, "high": 30}}),
     "space train.epochs: train.warmup_epochs must be within [0, train.epochs]"),
    # trial 0 is the defaults: a space that excludes them is refused
    (dict(space={"loss.class_weights[1]": {"type": "float", "low": 5.0, "high": 10.0}}),
     "space loss.class_weights[1]: the default 4.0 is outside [5.0, 10.0]"),
    (dict(space={"loss.name": {"type": "categorical", "choices": ["focal"]}}),
     "space loss.name: the default 'weighted_ce' is not among the choices"),
]


@pytest.mark.parametrize("changes, needle", CHECKED_AGAINST_V9, ids=[n for _, n in CHECKED_AGAINST_V9])
def test_check_spec_against_the_run_config_is_one_line_naming_file_and_key(changes, needle):
    spec = spec_from_dict(minimal(**changes), "study.yaml")  # loads: these depend on the run config
    with pytest.raises(UsageError) as exc:
        check_spec(spec, get_variant("v9").defaults())
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("study.yaml: ") and needle in msg, msg


def test_profile_dependent_fixed_loads_and_is_checked_against_the_profile():
    # smoke scales warmup (2 of 25 epochs -> 0.64 of 8), so one epoch is valid there, not under full
    spec = spec_from_dict(minimal(fixed={"train.epochs": 1}), "study.yaml")
    smoke = build_config(get_variant("v9"), 0, "smoke", None, {}, None)
    assert check_spec(spec, smoke) == {"loss.class_weights[1]": 4.0}
    with pytest.raises(UsageError, match="study.yaml: fixed: train.warmup_epochs must be within"):
        check_spec(spec, get_variant("v9").defaults())


def test_unreadable_or_invalid_spec_file(tmp_path):
    with pytest.raises(UsageError, match="nope.yaml: No such file"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UsageError, match=r"broken.yaml: not valid YAML \("):
        load_spec(tmp_path / "broken.yaml")


# ----------------------------------------------------------------------------- PostgreSQL storage

def test_optuna_study_on_a_real_postgres_server(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.create_study(storage=storage, study_name="pg", direction="maximize")
    for x in (0.25, 0.75):
        study.enqueue_trial({"x": x})
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
    again = optuna.load_study(study_name="pg", storage=optuna.storages.RDBStorage(postgres_url))
    assert [(t.params, t.value) for t in again.trials] == [({"x": 0.25}, 0.25), ({"x": 0.75}, 0.75)]
    assert again.best_params == {"x": 0.75}
