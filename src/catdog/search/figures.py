"""A search's figures, drawn by Optuna's matplotlib backend: the optimisation history, the importance of each
setting, and the objective against each setting (where the best settings lie)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.visualization import matplotlib as optuna_plots

from catdog.common import plots  # noqa: F401  (selects matplotlib's file-only backend before Optuna draws)

# Optuna's plots pass settings as strings to matplotlib, whose category axis then logs a notice per axis.
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
# Figure file → (the complete trials it needs, how it is drawn).
FIGURES: dict[str, tuple[int, Callable]] = {
    "optimization_history.png": (1, optuna_plots.plot_optimization_history),
    "param_importances.png": (2, optuna_plots.plot_param_importances),
    "best_settings.png": (1, optuna_plots.plot_slice),
}


def _figure(drawn: object) -> Figure:
    """The figure of what an Optuna plot returned (one Axes, or an array of them)."""
    return np.atleast_1d(drawn).flat[0].figure


def figures(study: optuna.Study) -> dict[str, Figure]:
    """Each figure the study's complete trials are enough for, by file name. A figure Optuna cannot draw yet (all
    objectives equal: no importance to share out) is left out, not an error of the search."""
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    drawn = {}
    for name, (needs, draw) in FIGURES.items():
        if complete < needs:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib's, about the axes of a one-point slice
            try:
                drawn[name] = _figure(draw(study))
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                warnings.warn(f"search figure {name} not drawn: {exc}", stacklevel=2)
    return drawn
