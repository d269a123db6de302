"""A search from its composed config: check it, open (or resume) its Optuna study and MLflow parent run, run trials
until its budget is spent, and record it; or apply its best trial to params.yaml."""

from __future__ import annotations

from pathlib import Path

import optuna
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from catdog.common.processes import interrupt_on_stop
from catdog.data.require import require_data
from catdog.search.apply import apply_best, best_trial
from catdog.search.budget import OVERRIDES, Budget, recover
from catdog.search.launch import TrialFailed
from catdog.search.objective import Objective, Surplus
from catdog.search.settings import SearchError, check, check_params_keys, inherited, launcher, params_file
from catdog.search.space import overrides
from catdog.search.storage import (
    carry_over,
    is_journal,
    make_storage,
    one_process,
    open_study,
    same_as_before,
    setting_up,
    shared,
    shown,
    storage_url,
)
from catdog.search.tracking import Tracker
from catdog.settings.checks import validate
from catdog.settings.params import CONFIG_NAME, compose_config
from catdog.settings.project import conf_dir
from catdog.tracking.connect import connect, tracking_uri
from catdog.train.threads import study_threads


def compose_trial(train_args: list[str]) -> DictConfig:
    """The training config a trial's command composes (as `src/train.py` would, inside this Hydra app or not),
    checked: a value out of range is the search's mistake, found before anything trains."""
    args = [a for a in train_args if not a.startswith(("hydra/", "hydra."))]
    if GlobalHydra.instance().is_initialized():
        cfg = compose(CONFIG_NAME, overrides=args)
    else:
        cfg = compose_config(conf_dir(), args)
    validate(cfg)
    return cfg


def training_args(cfg: DictConfig, task: list[str], hydra: list[str]) -> list[str]:
    """What every trial's training command is given: the launcher, the variant, the search command's other
    overrides, the search's MLflow experiment (trials nest under its parent run there) and, unless the command
    sets one, the thread count `dvc repro` trains with here, so that every seed of every trial trains as the study's
    runs do (a thread count changes the numbers: docs/reproducibility.md)."""
    kept = inherited(task, cfg.search.space)
    threads = [] if any(o.startswith("trainer.threads=") for o in kept) else [f"trainer.threads={study_threads()}"]
    return [
        *launcher(hydra),
        f"variant={cfg.search.variant}",
        *kept,
        *threads,
        f"tracking.experiment={cfg.tracking.experiment}",
    ]


def search(cfg: DictConfig, task: list[str], hydra: list[str], folder: Path) -> optuna.Study:
    """Run the search `cfg.search` (the search command's `task` and `hydra` overrides), its trials' outputs in
    `folder`; return its study."""
    spec = cfg.search
    check(spec)
    check_params_keys(spec)
    interrupt_on_stop()  # a SIGTERM stops the trial's training too, and closes the MLflow runs as KILLED
    args = training_args(cfg, task, hydra)
    compose_trial(args)  # the settings every trial shares, checked before anything is opened
    require_data(cfg.data, ("train", "val"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the objective prints each trial's line
    url = storage_url(spec)
    with one_process(url, spec.name):
        with setting_up(url, spec.name):
            study, cut_short = resume(spec, url, inherited(task, spec.space))
            experiment = connect(
                tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s
            )
            tags = {"search": spec.name, "search_variant": spec.variant, "optuna_storage": shown(url)}
            tracker = Tracker.open(study, spec, experiment, tags | {"objective": objective_words(spec)})
            tracker.cut_short(study, cut_short)
        print(f"search {spec.name}: its record is {shown(url)} (Optuna storage)")
        budget = Budget(spec.n_trials)
        objective = Objective(spec, args, folder, lambda values: compose_trial([*args, *values]), tracker, budget)
        run_trials(study, objective, spec, tracker)
    return study


def resume(spec: DictConfig, url: str, inherited_overrides: list[str]) -> tuple[optuna.Study, list[int]]:
    """The search's study, new or resumed: what its objective means must be what it meant, and the trials a kill
    cut short are enqueued again (their numbers are returned with the study)."""
    storage = make_storage(spec, url)
    former = carry_over(spec, url, storage)
    if former:
        print(f"search {spec.name}: carried its trials over from {former} into {shown(url)}")
    study = open_study(spec, storage, url)
    same_as_before(study, {"variant": spec.variant, "seeds": list(spec.seeds), "inherited": inherited_overrides})
    interrupted = recover(study, one_process=not shared(url))
    if interrupted:
        print(f"search {spec.name}: trial {', '.join(map(str, interrupted))} was cut short; its settings run again")
    return study, interrupted


def run_trials(study: optuna.Study, objective: Objective, spec: DictConfig, tracker: Tracker) -> None:
    """Trials until the budget (trials, minutes) is spent; the parent run records the search after each and ends
    FINISHED, or KILLED when the search was stopped."""
    budget = objective.budget
    print(f"search {spec.name}: {budget.left(study)} of {spec.n_trials} trials to run")
    status = "KILLED"
    try:
        if budget.left(study):
            study.optimize(
                objective,
                timeout=spec.timeout_min * 60 if spec.timeout_min else None,
                catch=(TrialFailed, Surplus),
                callbacks=[budget, lambda s, _: tracker.summary(s)],
            )
        status = "FINISHED"
    finally:
        tracker.summary(study)
        tracker.close(status)


def objective_words(spec: DictConfig) -> str:
    return f"mean best val accuracy over seeds {', '.join(map(str, spec.seeds))} (never test)"


def apply(cfg: DictConfig) -> dict:
    """Write the search's best trial (the values it trained with) into params.yaml; return the changed keys' (old,
    new) values."""
    spec = cfg.search
    url = storage_url(spec)
    missing = f"no search {spec.name!r} in {shown(url)}; run it first (`python src/search.py hparams_search=...`)"
    if is_journal(url) and not Path(url).is_file():
        raise SearchError(missing)
    try:
        study = optuna.load_study(study_name=spec.name, storage=make_storage(spec, url))
    except KeyError:
        raise SearchError(missing) from None
    return apply_best(study, spec.variant, params_file(spec))


def best_line(study: optuna.Study) -> str:
    """The best trial so far in one line, with the command that applies it."""
    try:
        best = best_trial(study)
    except SearchError:
        return "no complete trial yet"
    settings = " ".join(overrides(best.user_attrs[OVERRIDES]))
    return (
        f"best trial {best.number}, mean best val accuracy {best.value:.4f}: {settings}; apply it to params.yaml "
        f"with `python src/search.py hparams_search=... search.apply=true`"
    )
