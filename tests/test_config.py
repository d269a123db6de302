"""Config: every option composes, bad values are refused early, params.yaml and dvc.yaml agree with conf/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import CONF, REPO, all_runs, run_entry, without_tensorflow
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from catdog.settings.checks import ConfigError, validate
from catdog.settings.params import compose_config, composed_files
from catdog.settings.project import project_root

GROUPS = ["data", "model", "augment", "optimizer", "trainer", "tracking", "variant"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_config(CONF, [f"{group}={option}"])
    validate(cfg)
    if group == "variant":
        assert cfg.name == option


@pytest.mark.parametrize(
    "variant,model,augment,preprocess",
    [
        ("baseline", "cnn", False, "none"),
        ("augmented", "cnn", True, "none"),
        ("scaled", "cnn", True, "mobilenet_v2"),
        ("transfer", "transfer", True, "mobilenet_v2"),
    ],
)
def test_variants_are_compositions_of_the_groups(variant, model, augment, preprocess) -> None:
    cfg = compose_config(CONF, [f"variant={variant}"])
    assert (cfg.model.name, cfg.augment.enabled, cfg.model.preprocess) == (model, augment, preprocess)


def test_command_line_overrides_beat_the_variant() -> None:
    cfg = compose_config(CONF, ["variant=transfer", "trainer.epochs=3", "augment=off"])
    assert cfg.trainer.epochs == 3 and not cfg.augment.enabled and cfg.model.name == "transfer"


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("trainer.epochs=-1", "trainer.epochs", "an integer >= 1"),
        ("trainer.image_size=big", "trainer.image_size", "an integer >= 32"),
        ("data.split_seed=-1", "data.split_seed", "an integer >= 0"),
        ("data.test_fraction=1.5", "data.test_fraction", "a number strictly between 0 and 1"),
        ("data.test_fraction=0", "data.test_fraction", "a number strictly between 0 and 1"),
        ("optimizer.learning_rate=-0.1", "optimizer.learning_rate", "a number > 0"),
        ("model.preprocess=zscore", "model.preprocess", "one of none, mobilenet_v2"),
        ("trainer.lr_schedule=step", "trainer.lr_schedule", "one of constant, cosine"),
        ("trainer.steps_per_execution=0", "trainer.steps_per_execution", "an integer >= 1"),
        ("trainer.ema_momentum=1", "trainer.ema_momentum", "a number in [0, 1); 0 turns averaging off"),
        ("data.content_sha256=7ecc68776f75", "data.content_sha256", "64 hex digits, or null (no check)"),
        ("data.archive_sha256=069e974fc04c", "data.archive_sha256", "64 hex digits, or null (no check)"),
        ("data.max_pixels=0", "data.max_pixels", "an integer >= 1"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override: str, key: str, allowed: str) -> None:
    cfg = compose_config(CONF, [override])
    with pytest.raises(ConfigError, match=re.escape(key) + r": got .*; expected " + re.escape(allowed)):
        validate(cfg)


def test_unknown_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(CONF, ["variant=fancy"])
    message = str(err.value)
    assert "fancy" in message
    assert all(v in message for v in ("baseline", "augmented", "scaled", "transfer"))


def test_train_refuses_bad_config_before_reading_data_or_opening_a_run(tmp_path: Path, isolated_mlflow) -> None:
    fresh = tmp_path / "fresh"  # tmp_path holds this test's store (isolated_mlflow)
    fresh.mkdir()
    result = run_entry("train.py", "variant=baseline", "trainer.epochs=0", cwd=fresh)
    assert result.returncode != 0
    assert "trainer.epochs: got 0; expected an integer >= 1" in result.stderr
    assert list(fresh.iterdir()) == []  # no data, no store, no Hydra run folder
    assert all_runs() == []


def test_a_bad_value_fails_in_one_line_before_tensorflow_is_imported(tmp_path: Path) -> None:
    env = without_tensorflow(os.environ, tmp_path, "tensorflow was imported before the config was checked")
    for script in ("train.py", "compare.py"):
        result = run_entry(script, "variant=baseline", "trainer.epochs=0", cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == ["config error: trainer.epochs: got 0; expected an integer >= 1"]
    full = run_entry("train.py", "trainer.epochs=0", cwd=tmp_path, env={**env, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_early_stopping_has_no_monitor_setting_to_ignore() -> None:
    """Early stopping and the saved model follow val accuracy; a `monitor` key that nothing read is gone."""
    with pytest.raises(ConfigCompositionException, match="monitor"):
        compose_config(CONF, ["trainer.early_stopping.monitor=val_loss"])


def test_train_refuses_unknown_variant_with_hydra_message(tmp_path: Path) -> None:
    result = run_entry("train.py", "variant=fancy", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'variant/fancy'" in result.stderr
    assert "baseline" in result.stderr


def leaves(node: dict, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf of a nested dict."""
    keys = []
    for key, value in node.items():
        keys += leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def test_every_study_setting_is_read_from_params_yaml() -> None:
    """params.yaml is the one source of the study's settings: conf/ refers to each key, copies none."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    root = compose_config(CONF)
    assert list(params["variants"]) == params["study"]["variants"] == list(root.study.variants)
    assert OmegaConf.to_container(root, resolve=False)["seed"] == "${params:study.seeds.0}"
    shared = [k for k in leaves(params) if not k.startswith("variants.")]
    assert sorted(shared) == ["data.exclude", "data.split_seed", "data.test_fraction", "study.seeds", "study.variants"]
    for variant, knobs in params["variants"].items():
        raw = OmegaConf.to_container(compose_config(CONF, [f"variant={variant}"]), resolve=False)
        for key in shared + leaves(knobs):
            source = key if key in shared else f"variants.{variant}.{key}"
            node = raw
            for part in key.split("."):
                node = node[part]
            assert node == f"${{params:{source}}}", f"variant={variant}: {key} is {node!r}, not read from params.yaml"


def test_a_missing_study_setting_names_params_yaml_and_the_key(tmp_path: Path, monkeypatch) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["variants"]["scaled"]["trainer"]["epochs"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=r"params.yaml: no `variants.scaled.trainer.epochs`"):
        _ = compose_config(CONF, ["variant=scaled"]).trainer.epochs


def test_an_edit_to_params_yaml_reaches_the_next_composition(tmp_path: Path, monkeypatch) -> None:
    """params.yaml is read once per version of the file, not once per process: an edit of the same length (a value
    changed in place) is seen by the next composition in the same process."""
    text = (REPO / "params.yaml").read_text()
    epochs = yaml.safe_load(text)["variants"]["baseline"]["trainer"]["epochs"]
    params = tmp_path / "params.yaml"
    params.write_text(text)
    monkeypatch.chdir(tmp_path)
    assert compose_config(CONF, ["variant=baseline"]).trainer.epochs == epochs
    edited = text.replace(f"epochs: {epochs}", f"epochs: {epochs + 1}", 1)
    assert edited != text and len(edited) == len(text), "the study's baseline epochs should not end in 9 for this"
    params.write_text(edited)
    later = params.stat().st_mtime_ns + 1_000_000_000  # a later edit, whatever the file system's clock resolution
    os.utime(params, ns=(later, later))
    assert compose_config(CONF, ["variant=baseline"]).trainer.epochs == epochs + 1


def test_stages_name_the_params_they_read() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    train = stages["train"]
    assert train["matrix"] == {"variant": "${study.variants}", "seed": "${study.seeds}"}
    assert train["cmd"] == "python src/train.py variant=${item.variant} seed=${item.seed} trainer.outputs=study"
    # Not study.seeds: adding a seed must not retrain the others (each stage's seed is in its command).
    assert set(train["params"]) == {"variants.${item.variant}"}
    assert set(stages["split"]["params"]) == {"data.split_seed", "data.test_fraction", "data.exclude"}, (
        "the training seed must not reach the split"
    )
    assert stages["compare"]["params"] == stages["report"]["params"] == ["study"]


def conf_deps(deps: list[str], item: dict | None = None, key: str = "") -> set[Path]:
    """The conf/ files among a stage's deps, with `${key}` and `${item.*}` filled in."""
    found = set()
    for dep in deps:
        if dep.startswith("conf"):
            dep = dep.replace("${key}", key)
            for name, value in (item or {}).items():
                dep = dep.replace(f"${{item.{name}}}", value)
            found.add(REPO / dep)
    return found


def test_each_train_stage_depends_on_the_config_files_its_variant_composes_and_no_others() -> None:
    """Every file the variant composes; besides, only group files another study variant composes (a matrix stage
    cannot look its variant's groups up: DVC has no nested ${})."""
    train = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    variants = list(compose_config(CONF).study.variants)
    composed = {v: {CONF.parent / p for p in composed_files(CONF, [f"variant={v}"])} for v in variants}
    for variant in variants:
        deps = conf_deps(train["deps"], {"variant": variant})
        assert composed[variant] <= deps, variant
        assert deps - composed[variant] <= set().union(*composed.values()) - {CONF / "variant" / f"{variant}.yaml"}
        assert not any(CONF / "variant" / f"{other}.yaml" in deps for other in variants if other != variant)


@pytest.mark.parametrize("stage", ["download", "split", "compare", "report"])
def test_other_stages_depend_on_config_files_they_compose(stage: str) -> None:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    found = conf_deps(deps)
    assert CONF / "config.yaml" in found and CONF / "data" / "cats_and_dogs.yaml" in found
    assert found <= {CONF.parent / p for p in composed_files(CONF)}


def test_top_level_plots_and_compare_cover_every_variant_and_seed() -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    variants = list(compose_config(CONF).study.variants)
    for plot in spec["plots"]:
        (definition,) = plot.values()
        assert sorted(definition["y"]) == sorted(f"plots/compare/history/{v}.csv" for v in variants)
    train = spec["stages"]["train"]
    assert train["outs"] == [
        "models/${item.variant}-${item.seed}",
        {"records/train/${item.variant}-${item.seed}.json": {"cache": False}},
    ]
    assert list(train["metrics"][0]) == ["metrics/train/${item.variant}-${item.seed}.json"]
    assert list(train["plots"][0]) == ["plots/train/${item.variant}-${item.seed}"]
    # The folders that hold every train@ stage's outputs, whichever seeds the study has.
    assert {"models", "plots/train", "metrics/train", "records/train"} <= set(spec["stages"]["compare"]["deps"])
    report = spec["stages"]["report"]
    read = {"models", "plots/train", "metrics/train", "records/train", "reports/compare.json", "plots/compare"}
    assert read <= set(report["deps"])
    assert report["outs"] == [{"reports/study.html": {"cache": False}}], "a committed copy needs cache: false"


@pytest.mark.parametrize("seeds", ["[]", "[1,1]", "[-1]", "[a]"])
def test_study_seeds_must_be_distinct_non_negative_integers(seeds: str) -> None:
    with pytest.raises(ConfigError, match=r"study.seeds: got .*; expected a non-empty list of distinct integers >= 0"):
        validate(compose_config(CONF, [f"study.seeds={seeds}"]))


def test_project_root_inside_a_dvc_temporary_experiment(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    temp_exp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
    (temp_exp / "src").mkdir(parents=True)
    (temp_exp / "dvc.yaml").write_text("stages: {}\n")
    assert project_root(temp_exp / "src") == tmp_path
    assert project_root(tmp_path) == tmp_path


def test_cached_features_need_augmentation_off() -> None:
    with pytest.raises(ConfigError, match="model.cache_features: .*need augment=off"):
        validate(compose_config(CONF, ["variant=transfer", "model.cache_features=true"]))
    validate(compose_config(CONF, ["variant=transfer", "augment=off", "model.cache_features=true"]))
