"""Hyperparameter search over a variant's training settings, scored by the mean best val accuracy over training
seeds (never test), with Optuna driving the project's own Hydra composition and launchers.

`python src/search.py hparams_search=<variant>` (conf/search.yaml, conf/hparams_search/) runs one; each trial trains
the study's seeds through `src/train.py --multirun` and the configured launcher. The modules: settings (the search's
config, checked), space (what a trial tries), launch (a trial's seeds as training runs), storage (the Optuna study,
its budget and resume), tracking and figures (MLflow), objective (one trial), run (the search), apply (the best trial
into params.yaml).
"""
