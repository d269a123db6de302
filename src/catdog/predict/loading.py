"""Which model a `model=` argument names, loaded as a predictor: a DataFrame of base64 images in, rows out.

`spec` is a registry URI (`models:/catdog@champion`, `models:/catdog/3`), a logged model or run URI of the
classifier pyfunc (`models:/m-…`, `runs:/<run id>/classifier`), an MLflow model folder, or a local `.keras` file
(wrapped in-process in the same `catdog.serve.classifier.ImageClassifier`, with the classes of conf's `data.classes` and the
image size of the model's input). A Keras-flavour MLflow model (what the compare stage logged before the pyfunc) is
wrapped the same way. Each refuses images over conf's `data.max_pixels`. A model that is not there fails before
TensorFlow is imported, in one line that says what was looked for and how to make one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from catdog.serve.schema import IMAGE_COLUMN
from catdog.settings.project import project_dir
from catdog.settings.run_files import Outputs
from catdog.tracking.connect import tracking_uri

SQLITE = "sqlite:///"
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
HOW_TO_MAKE_ONE = (
    "make one with `dvc repro` (its compare stage registers catdog@champion), or train with "
    "`python src/train.py variant=...` and register with `python src/compare.py`; or pass model=<URI or .keras file>"
)

Predictor = Callable[[pd.DataFrame], pd.DataFrame]


class ModelNotFound(RuntimeError):
    """The model named by `model=` cannot be found or is not an image classifier."""


def default_model(cfg: DictConfig) -> str:
    return f"models:/{cfg.tracking.registered_model}@{cfg.tracking.champion_alias}"


def study_champion(cfg: DictConfig) -> tuple[Path, Path, str]:
    """The study's champion as its files say (reports/compare.json: the variant and its best-validation seed):
    where compare.json is, the model file, and the champion in words; paths in the project (catdog.settings.project)."""
    root = project_dir()
    details = root / cfg.compare.details
    if not details.is_file():
        return details, details, ""
    chosen = json.loads(details.read_text(encoding="utf-8"))
    champion = chosen["champion"]
    seed = chosen["validation"][champion]["seed"]
    return details, root / Outputs.study(cfg.trainer, champion, seed).model, f"{champion} (seed {seed})"


def store_uri(cfg: DictConfig) -> str:
    """The tracking store ($MLFLOW_TRACKING_URI, else `tracking.uri`, else the repository's mlflow.db)."""
    return tracking_uri(cfg.tracking.uri)


def load_predictor(spec: str, cfg: DictConfig) -> Predictor:
    """A function from a DataFrame of base64 images (`image`) to label/probability/error rows, for `spec`."""
    path = Path(spec)
    if URI_SCHEME.match(spec) is None and not (path / "MLmodel").is_file():
        if path.suffix != ".keras" or not path.is_file():
            raise ModelNotFound(f"model={spec}: no such .keras file (or MLflow model folder); {HOW_TO_MAKE_ONE}")
        import keras

        from catdog.serve.classifier import ImageClassifier

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise ModelNotFound(f"model={spec}: could not load this .keras file ({first_line(exc)})") from exc
        return ImageClassifier.wrap(model, list(cfg.data.classes), cfg.data.max_pixels).predict_frame
    return load_logged(spec, cfg)


def load_logged(uri: str, cfg: DictConfig) -> Predictor:
    """An MLflow model: the classifier pyfunc as it is, a Keras-flavour model wrapped in an `ImageClassifier`."""
    import mlflow

    store = store_uri(cfg)
    where = f"model={uri} (tracking store {store})"
    tracked = uri.startswith(("models:/", "runs:/"))  # not a local folder or a plain artifact URI
    if tracked and store.startswith(SQLITE) and not Path(store[len(SQLITE) :]).is_file():
        raise ModelNotFound(f"{where}: the store does not exist, so it holds no model; {HOW_TO_MAKE_ONE}")
    if store.startswith(("http://", "https://")):
        from catdog.tracking.connect import check_reachable

        check_reachable(store, cfg.tracking.connect_timeout_s)
    mlflow.set_tracking_uri(store)
    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:
        raise ModelNotFound(f"{where}: not found ({first_line(exc)}); {HOW_TO_MAKE_ONE}") from exc
    inputs = info.signature.inputs.input_names() if info.signature and info.signature.inputs else []
    if "python_function" in info.flavors and inputs == [IMAGE_COLUMN]:
        # This project's pixel limit, where the model's config has the key (a classifier logged before it had
        # none, and serves with catdog.data.images.DEFAULT_MAX_PIXELS).
        logged = info.flavors["python_function"].get("config") or {}
        limit = {"max_pixels": cfg.data.max_pixels} if "max_pixels" in logged else None
        return mlflow.pyfunc.load_model(uri, model_config=limit).predict
    if "keras" in info.flavors:
        from catdog.serve.classifier import ImageClassifier

        model = mlflow.keras.load_model(uri)
        return ImageClassifier.wrap(model, list(cfg.data.classes), cfg.data.max_pixels).predict_frame
    flavors = "/".join(info.flavors)
    raise ModelNotFound(f"{where}: a {flavors} model without an `{IMAGE_COLUMN}` input, not an image classifier")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
