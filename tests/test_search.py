"""The hyperparameter search: its configs, what a trial draws, how trials end and count, how a killed search
resumes, the best trial applied to params.yaml, and dead runs named in MLflow, the leaderboard and the report. The
slow tests run real searches (Optuna, MLflow, `src/train.py --multirun`) on the tiny generated data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import optuna
import pytest
import yaml
from conftest import CONF, REPO, make_dataset, split_tiny, tiny_config
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState, create_trial
from PIL import Image

from catdog.common.intervals import accuracy_interval
from catdog.common.machine import fingerprint
from catdog.compare.leaderboard import MAJORITY, leaderboard
from catdog.compare.over_seeds import test_summary as summed_over_seeds
from catdog.compare.over_seeds import validation_summary
from catdog.compare.statistics import score
from catdog.report.html import page
from catdog.report.sections import leaderboard as leaderboard_section
from catdog.search import objective as objective_module
from catdog.search.apply import apply_best
from catdog.search.budget import Budget, counted, recover
from catdog.search.launch import SeedResult, TrialFailed, command, read_result
from catdog.search.objective import Objective
from catdog.search.settings import SearchError, check, check_params_keys, inherited, launcher
from catdog.search.space import overrides, suggest
from catdog.search.storage import make_storage, one_process, open_study
from catdog.search.tracking import Tracker
from catdog.settings.params import compose_config
from catdog.tracking.connect import connect
from catdog.train.dead_runs import did_not_learn, majority_interval

SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))


def search_config(*overrides: str, variant: str = "baseline") -> DictConfig:
    """The config `python src/search.py hparams_search=<variant> <overrides>` composes."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[f"hparams_search={variant}", *overrides])


# ---- configs and settings -------------------------------------------------------------------------------------


def test_the_search_process_never_imports_tensorflow(tmp_path: Path) -> None:
    """The search only launches and watches its trainings: its modules load without TensorFlow (5 s of CPU and the
    library's start-up lines in the search's console otherwise)."""
    env = conftest.without_tensorflow(os.environ, tmp_path, "the search imported TensorFlow")
    env["PYTHONPATH"] += os.pathsep + str(REPO / "src")
    done = subprocess.run(
        [sys.executable, "-c", "import catdog.search.run"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("variant", SEARCHES)
def test_each_search_opens_with_its_usage_and_searches_only_the_variants_params(variant: str) -> None:
    lines = (CONF / "hparams_search" / f"{variant}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"  # Hydra reads the package from the first line
    assert lines[1].startswith("# ") and f"src/search.py hparams_search={variant}" in "\n".join(lines[:5])
    cfg = search_config(variant=variant)
    check(cfg.search)
    check_params_keys(cfg.search)
    assert cfg.search.variant == cfg.name == variant and cfg.search.name == variant
    assert len(cfg.search.seeds) >= 3 and cfg.search.min_seeds >= 3
    assert {s.key for s in cfg.search.space.values()} >= {"optimizer.learning_rate", "trainer.early_stopping.patience"}
    # Its budget is its own, not the root config's defaults (conf/search.yaml's _self_ comes before the search).
    own = yaml.safe_load((CONF / "hparams_search" / f"{variant}.yaml").read_text())["search"]
    assert (cfg.search.n_trials, cfg.search.timeout_min) == (own["n_trials"], own["timeout_min"])
    assert search_config("search.n_trials=3", variant=variant).search.n_trials == 3  # the command line still wins


def test_bad_search_settings_are_refused_naming_each_key() -> None:
    cfg = search_config(
        "search.seeds=[1,1]",
        "search.n_trials=0",
        "search.space.learning_rate.low=0",
        "search.space.dropout.type=uniform",
    )
    with pytest.raises(SearchError) as err:
        check(cfg.search)
    lines = str(err.value).splitlines()
    assert "search.seeds: got [1, 1]; expected distinct integers >= 0" in lines
    assert "search.seeds: got 2 seeds; a mean over seeds needs at least 3 (search.min_seeds)" in lines
    assert "search.n_trials: got 0; expected an integer >= 1" in lines
    assert "search.space.learning_rate.low: got 0; a log scale needs low > 0" in lines
    assert "search.space.dropout.type: got 'uniform'; expected one of float, int, categorical" in lines


def test_a_searched_key_must_be_a_setting_of_the_variant_in_params_yaml() -> None:
    cfg = search_config("+search.space.filters={key:model.net.filters,type:int,low:16,high:64}")
    with pytest.raises(SearchError, match=r"no variants\.baseline\.model\.net\.filters; a search may only vary"):
        check_params_keys(cfg.search)


def test_trials_inherit_the_search_commands_training_overrides_and_launcher() -> None:
    space = search_config().search.space
    task = ["hparams_search=baseline", "search.n_trials=3", "trainer.epochs=1", "seed=3", "name=x", "+trainer.y=1"]
    assert inherited(task, space) == ["trainer.epochs=1", "+trainer.y=1"]
    with pytest.raises(SearchError, match=r"optimizer.learning_rate=0.001: searched by search.space"):
        inherited(["optimizer.learning_rate=0.001"], space)
    hydra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.run.dir=x", "hydra.mode=MULTIRUN"]
    assert launcher(hydra) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def test_a_launch_runs_its_seeds_as_one_sweep_through_the_launcher(tmp_path: Path) -> None:
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "variant=baseline"]
    argv = command(joblib, [42, 1], tmp_path)
    assert argv[argv.index(str(REPO / "src" / "train.py")) + 1] == "--multirun"
    assert "seed=choice(42,1)" in argv and f"hydra.sweep.dir={tmp_path}" in argv and "hydra.launcher.n_jobs=2" in argv
    lone = command(joblib, [2], tmp_path)  # the third seed on two cores gets both
    assert "hydra.launcher.n_jobs=1" in lone and "hydra.launcher.n_jobs=2" not in lone and "seed=choice(2)" in lone
    assert not any("n_jobs" in a for a in command(["variant=baseline"], [2], tmp_path))


def test_a_trials_values_are_rounded_and_compose_back_exactly() -> None:
    drawn = {"learning_rate": 0.000421937, "lr_schedule": "cosine", "ema_momentum": 0.0, "patience": 7}
    drawn |= {"batch_size": 16, "dropout": 0.30000000000000004}
    values = suggest(optuna.trial.FixedTrial(drawn), search_config().search.space)
    assert values == {
        "optimizer.learning_rate": 0.00042,
        "trainer.lr_schedule": "cosine",
        "trainer.ema_momentum": 0.0,
        "trainer.early_stopping.patience": 7,
        "trainer.batch_size": 16,
        "model.net.dropout": 0.3,
    }
    cfg = compose_config(CONF, ["variant=baseline", *overrides(values)])
    for key, value in values.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value and type(node) is type(value), key


# ---- dead runs --------------------------------------------------------------------------------------------------


def test_a_dead_run_never_rose_above_the_majority_class_interval_for_its_whole_patience() -> None:
    interval = majority_interval(np.array([0, 0, 1]), np.array([0] * 4 + [1] * 4))
    assert interval == accuracy_interval(4, 8) and interval[0] < 0.5 < interval[1]
    assert did_not_learn([0.5, 0.5, 0.5], 2, (0.45, 0.55))
    assert did_not_learn([0.5, 0.4], None, (0.45, 0.55))  # no early stopping: the whole run
    assert not did_not_learn([0.5, 0.5], 5, (0.45, 0.55))  # stopped before its patience was spent
    assert not did_not_learn([0.5, 0.6, 0.5], 2, (0.45, 0.55))  # it left the interval once


def seed_rows() -> tuple[dict, dict]:
    """A compared baseline over seeds 1 and 2, seed 2's run dead, and the majority-class guess."""
    labels, classes = np.array([0, 0, 1, 1]), ["cats", "dogs"]
    runs = {1: score(np.array([0, 0, 1, 1]), labels, classes), 2: score(np.zeros(4, int), labels, classes)}
    rows = {"baseline": summed_over_seeds({s: r | {"loss": 0.5} for s, r in runs.items()}, 1)}
    rows[MAJORITY] = score(np.zeros(4, int), labels, classes) | {"loss": None}
    val = {
        1: {"best_val_accuracy": 0.9, "best_val_loss": 0.3, "best_epoch": 2, "did_not_learn": False},
        2: {"best_val_accuracy": 0.5, "best_val_loss": 0.69, "best_epoch": 1, "did_not_learn": True},
    }
    return rows, {"baseline": validation_summary(val)}


def test_the_leaderboard_and_the_report_flag_a_run_that_did_not_learn(tmp_path: Path) -> None:
    rows, val = seed_rows()
    assert val["baseline"]["did_not_learn"] == [2]
    ranked = sorted(rows.items(), key=lambda item: -item[1]["accuracy"])
    board = leaderboard(ranked, [], 4, "v", "baseline", val, [1, 2])
    row = next(line for line in board.splitlines() if line.startswith("| 1 |"))
    assert "| baseline † |" in row and row.endswith("| 100.0% | 50.0% † |")
    assert (
        "† Did not learn (val accuracy never rose above the majority-class interval for its whole patience): "
        "baseline seed 2" in board
    )
    figure = tmp_path / "test_accuracy.png"
    Image.new("RGB", (4, 4)).save(figure)
    details = {"champion": "baseline", "n_test": 4, "models": rows, "validation": val, "seeds": [1, 2]}
    html = page("t", "s", [leaderboard_section(details, figure)])
    assert "baseline †" in html and "50.0% †" in html and "Did not learn" in html


# ---- trials: how they end and count -----------------------------------------------------------------------------


def run_objective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, results, pruner: optuna.pruners.BasePruner | None = None
) -> tuple[optuna.Study, list]:
    """One trial of the baseline search over seeds 42, 1, 2 (one per launch), with `results(seeds)` standing in for
    the training runs; real Optuna (in memory) and MLflow."""
    spec = search_config("search.seeds_at_once=1").search
    launched: list[list[int]] = []

    def fake_launch(args: list[str], checkpoints: dict, trial_dir: Path, watch, poll_s: float) -> dict:
        launched.append(list(checkpoints))
        done = results(list(checkpoints))
        watch(done, {})
        return done

    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.set_user_attr("seeds", list(spec.seeds))
    tracker = Tracker.open(study, spec, connect(os.environ["MLFLOW_TRACKING_URI"], "catdog-search", 5), {})
    compose = lambda values: compose_config(CONF, ["variant=baseline", *values])  # noqa: E731
    objective = Objective(spec, ["variant=baseline"], tmp_path, compose, tracker, Budget(spec.n_trials))
    monkeypatch.setattr(objective_module, "launch", fake_launch)
    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    return study, launched


def child_run(trial: optuna.trial.FrozenTrial):
    return MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])


def test_a_complete_trial_scores_the_mean_best_val_accuracy_over_its_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accuracy = {42: 0.7, 1: 0.8, 2: 0.75}
    study, launched = run_objective(
        tmp_path, monkeypatch, lambda seeds: {s: SeedResult(s, accuracy[s], False, None) for s in seeds}
    )
    (trial,) = study.trials
    assert launched == [[42], [1], [2]]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.75)
    assert trial.user_attrs["outcome"] == "complete" and counted(study) == [trial]
    run = child_run(trial)
    assert run.info.status == "FINISHED" and run.data.metrics["objective"] == pytest.approx(0.75)
    assert {k: v for k, v in run.data.metrics.items() if "seed" in k} == {
        f"best_val_accuracy_seed_{s}": a for s, a in accuracy.items()
    }
    assert run.data.tags["did_not_learn"] == "false" and set(run.data.params) == set(trial.user_attrs["overrides"])


def test_a_seed_that_did_not_learn_ends_its_trial_as_a_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    study, launched = run_objective(
        tmp_path, monkeypatch, lambda seeds: {s: SeedResult(s, 0.5, True, None) for s in seeds}
    )
    (trial,) = study.trials
    (said,) = [text for text in capsys.readouterr().out.splitlines() if text.startswith("trial 0 ")]
    assert said.startswith("trial 0 did_not_learn: ") and said.endswith(
        "; seeds 42: 0.5000 (did not learn); mean 0.5000; 0.0 min"
    )
    assert launched == [[42]]  # seeds 1 and 2 never trained
    assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "did_not_learn"
    assert trial.user_attrs["did_not_learn"] == [42] and counted(study) == [trial]
    assert trial.intermediate_values == {1: 0.5}  # the sampler still sees how low its settings scored
    assert trial.user_attrs["seed_42"]["did_not_learn"] is True
    run = child_run(trial)
    assert run.data.tags["did_not_learn"] == "true" and run.data.tags["outcome"] == "did_not_learn"
    assert "objective" not in run.data.metrics


def test_the_pruner_stops_a_trial_between_launches_and_a_failed_command_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    low = lambda seeds: {s: SeedResult(s, 0.55, False, None) for s in seeds}  # noqa: E731
    study, launched = run_objective(tmp_path, monkeypatch, low, pruner=optuna.pruners.ThresholdPruner(lower=0.6))
    assert launched == [[42]] and study.trials[0].state == TrialState.PRUNED
    assert study.trials[0].user_attrs["outcome"] == "pruned"

    def crash(seeds: list[int]) -> dict:
        raise TrialFailed("seeds 42: src/train.py exited with 1 (training error: the loss became non-finite)")

    study, _ = run_objective(tmp_path, monkeypatch, crash)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["outcome"] == "failed" and counted(study) == [trial]
    run = child_run(trial)
    assert run.info.status == "FAILED" and "non-finite" in run.data.tags["failure_reason"]


# ---- storage: budget, resume, one search at a time ----------------------------------------------------------------


def test_a_killed_searchs_running_trial_is_rerun_and_finished_ones_are_not(tmp_path: Path) -> None:
    url = str(tmp_path / "searches" / "baseline" / "journal.log")
    spec = search_config(f"search.storage={url}").search
    study = open_study(spec, make_storage(spec, url), url)
    finished = study.ask()
    finished.suggest_float("x", 0, 1)
    finished.set_user_attr("outcome", "complete")
    study.tell(finished, 0.7)
    failed = study.ask()
    failed.set_user_attr("outcome", "failed")
    study.tell(failed, state=TrialState.FAIL)
    cut_short = study.ask()
    x = cut_short.suggest_float("x", 0, 1)  # left running, as a kill leaves it
    assert recover(study, one_process=True) == [2] and recover(study, one_process=True) == []
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    rerun = study.trials[3]
    assert rerun.system_attrs["fixed_params"] == {"x": x} and rerun.user_attrs["retry_of"] == 2
    assert [t.number for t in counted(study)] == [0, 1] and Budget(3).left(study) == 1
    held = pytest.raises(SearchError, match="search 'baseline' is already running")
    with one_process(url, "baseline"), held, one_process(url, "baseline"):
        pass


def study_with_trials(tmp_path: Path, name: str, trials: list[tuple[float, dict]]) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name=name, direction="maximize")
    study.set_user_attr("seeds", [42, 1, 2])
    for value, values in trials:
        study.add_trial(create_trial(value=value, user_attrs={"overrides": values, "outcome": "complete"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"overrides": {"trainer.batch_size": 64}}))
    return study


def test_applying_the_best_trial_changes_exactly_its_keys_and_keeps_every_comment(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    before = params.read_text().splitlines()
    committed = OmegaConf.create(yaml.safe_load(params.read_text())).variants.baseline

    def now(key: str):
        return OmegaConf.select(committed, key)

    best = {"optimizer.learning_rate": now("optimizer.learning_rate") * 2, "model.net.dropout": 0.0}
    best |= {
        "trainer.lr_schedule": "cosine",
        "trainer.ema_momentum": 0.0,
        "trainer.batch_size": now("trainer.batch_size"),
    }
    study = study_with_trials(tmp_path, "baseline", [(0.70, {"optimizer.learning_rate": 0.001}), (0.74, best)])
    changed = apply_best(study, "baseline", params)
    note = "  # search baseline, trial 1: mean best val accuracy 0.7400 over seeds 42, 1, 2"
    expected = {f"variants.baseline.{key}": (now(key), value) for key, value in best.items() if now(key) != value}
    assert len(expected) == 4 and changed == expected  # the batch size was already the committed one
    after = params.read_text().splitlines()
    assert len(after) == len(before)
    differ = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert len(differ) == len(expected)
    for old, new in differ:
        key, _ = old.split(":", 1)
        assert new.startswith(f"{key}: ") and new.endswith(note), new
    assert [line for line in after if line.lstrip().startswith("#")] == [
        line for line in before if line.lstrip().startswith("#")
    ]
    loaded = compose_config(CONF, ["variant=baseline"])  # conf/ is untouched; this reads the repository's params
    assert loaded.optimizer.learning_rate == now("optimizer.learning_rate")
    assert apply_best(study, "baseline", params) == {} and params.read_text().splitlines() == after
    # A later search's note replaces the earlier one on the lines it changes; the others keep theirs.
    notes = params.read_text().count("# search ")
    later = study_with_trials(tmp_path, "baseline-2", [(0.76, {"optimizer.learning_rate": 0.0005})])
    assert list(apply_best(later, "baseline", params)) == ["variants.baseline.optimizer.learning_rate"]
    text = params.read_text()
    assert "learning_rate: 0.0005  # search baseline-2, trial 0:" in text and text.count("# search ") == notes
    assert text.count("# search baseline, trial 1:") == len(expected) - 1


def test_applying_a_search_without_a_complete_trial_is_refused(tmp_path: Path) -> None:
    study = study_with_trials(tmp_path, "baseline", [])
    with pytest.raises(SearchError, match="search 'baseline' has no complete trial yet"):
        apply_best(study, "baseline", tmp_path / "params.yaml")


# ---- real searches on the tiny data ---------------------------------------------------------------------------


@pytest.fixture
def signal_free_data(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny data set with cats and dogs of the same colour: nothing to learn."""
    monkeypatch.setattr(conftest, "CLASS_COLOURS", {"cats": (128, 128, 128), "dogs": (128, 128, 128)})
    split_tiny(make_dataset(workdir / "data" / "raw"), workdir / "data" / "split")
    return workdir


@pytest.mark.slow
def test_a_run_that_cannot_learn_is_tagged_and_flagged(signal_free_data: Path) -> None:
    """Trained for real on data with nothing to learn: tagged in MLflow, flagged on the leaderboard, and read by the
    search as a seed that did not learn (which fails its trial: test_a_seed_that_did_not_learn_ends_its_trial_...)."""
    from catdog.compare.stage import compare
    from catdog.train.run import train

    frozen = ("optimizer.learning_rate=1e-12", "trainer.early_stopping.patience=1")
    metrics = train(tiny_config("baseline", *frozen, "trainer.epochs=2"))
    assert metrics["did_not_learn"] == 1 and metrics["best_val_accuracy"] == 0.5
    job = signal_free_data / "job"  # the run's metrics where a trial's seed job writes them
    job.mkdir()
    shutil.copyfile(signal_free_data / "metrics" / "train" / "baseline-42.json", job / "metrics.json")
    assert read_result(job, 42) is None  # not finished before its record, the run's last file, is written
    shutil.copyfile(signal_free_data / "records" / "train" / "baseline-42.json", job / "run.json")
    read = read_result(job, 42)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("catdog-study").experiment_id])
    assert (read.seed, read.best_val_accuracy, read.did_not_learn, read.epochs) == (42, 0.5, True, 2)
    assert (read.run_id, read.machine) == (run.info.run_id, run.data.tags["machine_id"])
    assert run.data.tags["did_not_learn"] == "true"
    # The run names its machine in MLflow and in its record: the fingerprint of this machine, its threads, float32.
    record = json.loads((signal_free_data / "records" / "train" / "baseline-42.json").read_text())
    machine = record["machine"]
    assert run.data.tags["machine_id"] == machine["id"] and "machine_fingerprint" not in record["tags"]
    assert (machine["threads"], machine["precision"]) == (int(run.data.tags["tf_threads"]), "float32")
    here = fingerprint(machine["threads"], "float32")
    assert {k: machine[k] for k in ("family", "model", "flags", "tensorflow")} == {
        k: here[k] for k in ("family", "model", "flags", "tensorflow")
    }
    details = compare(tiny_config("baseline", "study.variants=[baseline]"))
    assert details["validation"]["baseline"]["did_not_learn"] == [42]
    board = (signal_free_data / "reports" / "leaderboard.md").read_text()
    assert "| baseline † |" in board and "† Did not learn" in board and "baseline seed 42" in board
