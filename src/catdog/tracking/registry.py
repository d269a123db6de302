"""A run's logged model, and the registry: which version is the champion and which a challenger."""

from __future__ import annotations

from importlib import metadata

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature
from omegaconf import DictConfig

from catdog.tracking.provenance import DVC_EXPERIMENT_TAG, source_tags

KERAS_MODEL = "model"
# The packages a logged model needs (catdog itself travels by import: serve it from this project's environment).
REQUIREMENTS = ("tensorflow", "keras", "mlflow", "numpy", "pandas")


def requirements() -> list[str]:
    """The pinned versions of REQUIREMENTS installed here, which every logged model carries."""
    return [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]


def log_model(model: keras.Model, example: np.ndarray) -> str:
    """Log the Keras model into the active run as an MLflow 3 logged model (the run's Model column and the
    experiment's Logged models view), with a signature for a batch of raw H×W×3 images; return its URI.

    No input example: mlflow 3.17 writes it before the model's folder exists (mlflow#16183). The pinned requirements
    are passed, so MLflow does not infer them by loading the model in a fresh Python (a TensorFlow start per run).
    """
    signature = infer_signature(example, keras.ops.convert_to_numpy(model(example, training=False)))
    return mlflow.keras.log_model(
        model, name=KERAS_MODEL, signature=signature, pip_requirements=requirements()
    ).model_uri


def is_release() -> bool:
    """A study on a committed state: not a DVC experiment, and no study input differs from the commit."""
    tags = source_tags()
    return DVC_EXPERIMENT_TAG not in tags and tags["git_dirty"] == "false"


def register(tracking: DictConfig, model_uri: str, tags: dict[str, str]) -> tuple[str, str]:
    """Register `model_uri` (a training run's logged model) with `tags`; point the champion alias at it for a
    release, the challenger alias otherwise. Return (version, alias)."""
    alias = tracking.champion_alias if is_release() else tracking.challenger_alias
    version = mlflow.register_model(model_uri, tracking.registered_model, tags=tags).version
    mlflow.MlflowClient().set_registered_model_alias(tracking.registered_model, alias, version)
    return version, alias
