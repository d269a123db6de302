"""The trained Keras model as an MLflow pyfunc: base64 image files in, class names and probabilities out.

Input: a DataFrame with one string column `image`, each cell the base64 of an image file (JPEG, PNG, BMP, GIF's
first frame, WebP; greyscale and RGBA become RGB, EXIF orientation is applied). Each image is decoded and resized
exactly as training decoded its images (`catdog.data.images.decode_image`), and one whose header gives more than the model
config's `max_pixels` is refused before it is decoded. Output: one row per input row, `label` (a class name),
`probability` (the softmax probability of that label) and `error` (empty, or why the row's image could not be
read; its label is then empty and its probability 0). A bad row never fails the others.

`max_pixels` is logged with the model (`data.max_pixels`); a server can set another without logging the model again:
`MLFLOW_PYFUNC_INFERENCE_CONFIG='{"max_pixels": 20000000}' mlflow models serve ...`.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from catdog.data.image_header import ImageError
from catdog.data.images import CHANNELS, DEFAULT_MAX_PIXELS, decode_image
from catdog.serve.schema import IMAGE_COLUMN
from catdog.tracking.registry import requirements

KERAS_ARTIFACT = "keras_model"
MODEL_BATCH = 64
MODEL_CODE = Path(__file__).with_name("classifier_code.py")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability"), ColSpec("string", "error")]),
)


def image_size_of(model: keras.Model) -> int:
    """The square input size the model was built for."""
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None:
        raise ValueError(f"model {model.name!r}: expected square image input (None, N, N, 3), got {shape}")
    return int(shape[1])


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_base64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ImageError(f"expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"not valid base64 ({exc})") from exc


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc: `classes`, `image_size` and `max_pixels` come from the logged model's config, the Keras model
    from its artifact; `ImageClassifier.wrap` builds one in-process around a Keras model already loaded."""

    def __init__(self) -> None:
        self.model: keras.Model | None = None
        self.classes: list[str] = []
        self.image_size = 0
        self.max_pixels = DEFAULT_MAX_PIXELS

    @classmethod
    def wrap(cls, model: keras.Model, classes: list[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageClassifier:
        """An in-process classifier around `model`, the same code the logged pyfunc runs."""
        classifier = cls()
        classifier._setup(model, list(classes), image_size_of(model), max_pixels)
        return classifier

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        config = context.model_config or {}
        model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        if int(config["image_size"]) != image_size_of(model):
            size = image_size_of(model)
            raise ValueError(f"model config: image_size {config['image_size']}, but the Keras model takes {size} px")
        max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))  # absent from a model logged before it
        self._setup(model, list(config["classes"]), int(config["image_size"]), max_pixels)

    def _setup(self, model: keras.Model, classes: list[str], image_size: int, max_pixels: int) -> None:
        outputs = int(model.output_shape[-1])
        if outputs != len(classes):
            raise ValueError(f"model {model.name!r} has {outputs} outputs but {len(classes)} classes {classes}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels {max_pixels}: expected an integer >= 1")
        self.model, self.classes, self.image_size, self.max_pixels = model, classes, image_size, max_pixels

    def decode(self, data: bytes) -> np.ndarray:
        """One image file's bytes as the uint8 (size, size, 3) array training would have made of it."""
        return decode_image(data, self.image_size, self.max_pixels)

    def classify(self, images: list[bytes | ImageError]) -> pd.DataFrame:
        """One row per image file's bytes (or the `ImageError` saying why a row has none), in order."""
        count = len(images)
        labels, probabilities, errors = [""] * count, np.zeros(count), [""] * count
        decoded: dict[int, np.ndarray] = {}
        for row, data in enumerate(images):
            try:
                if isinstance(data, ImageError):
                    raise data
                decoded[row] = self.decode(data)
            except ImageError as exc:
                errors[row] = str(exc)
        rows = list(decoded)
        for start in range(0, len(rows), MODEL_BATCH):
            chunk = rows[start : start + MODEL_BATCH]
            batch = np.stack([decoded[r] for r in chunk]).astype(np.float32)
            probs = softmax(np.asarray(self.model.predict_on_batch(batch), dtype=np.float64))
            for r, p in zip(chunk, probs, strict=True):
                best = int(np.argmax(p))
                labels[r], probabilities[r] = self.classes[best], float(p[best])
        return pd.DataFrame({"label": labels, "probability": probabilities, "error": errors})

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`predict` without an MLflow context: what `predict.py` calls on a classifier it wrapped itself."""
        return self.predict(None, frame)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise ValueError(f"expected a DataFrame with a string column {IMAGE_COLUMN!r} of base64 image files")
        images: list[bytes | Exception] = []
        for cell in model_input[IMAGE_COLUMN]:
            try:
                images.append(from_base64(cell))
            except ImageError as exc:
                images.append(exc)
        return self.classify(images)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def example_png() -> bytes:
    """A small grey PNG: the logged input example, which MLflow also turns into a sample `/invocations` body."""
    return tf.io.encode_png(tf.fill([8, 8, CHANNELS], tf.constant(128, tf.uint8))).numpy()


def _save_pyfunc(*, validate_serving_input: bool, **kwargs: object) -> None:
    """`mlflow.pyfunc.save_model`, as the flavor `Model.log` saves with; `validate_serving_input` is for `Model.log`."""
    mlflow.pyfunc.save_model(**kwargs)


# mlflow.pyfunc.log_model is `Model.log` with this flavor, except that it cannot pass `validate_serving_input=False`:
# MLflow 3.17 then loads the logged pyfunc back (the Keras model) and predicts the input example only to log a
# warning if that fails (4.2 s of transfer's 5.4 s log). tests/test_predict.py serves the example instead.
PYFUNC_FLAVOR = SimpleNamespace(save_model=_save_pyfunc)


def log_classifier(
    model: keras.Model,
    classes: list[str],
    name: str = "classifier",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    saved: Path | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log `model` as an `ImageClassifier` pyfunc into the active run (an MLflow 3 logged model, `models:/m-…`),
    with its signature and serving input example, its classes, image size and pixel limit in the model config, and
    the Keras model as an artifact: `saved`, a .keras file of this very model (the study's models/<run>/model.keras)
    where the caller has one, else `model` saved afresh.

    The pyfunc is logged as code (`classifier_code.py`), not pickled: loading it imports `catdog.serve.classifier`, so it is
    served from this project's environment (`mlflow models serve --env-manager local`).
    """
    ImageClassifier.wrap(model, classes, max_pixels)  # refuse a model whose outputs do not match the classes now
    with tempfile.TemporaryDirectory() as tmp:
        if saved is None:
            saved = Path(tmp) / "model.keras"
            model.save(saved)
        return mlflow.models.Model.log(
            artifact_path=None,
            name=name,
            flavor=PYFUNC_FLAVOR,
            flavor_name="pyfunc.ModelFromCode",  # as mlflow.pyfunc.log_model names a model logged from code
            python_model=str(MODEL_CODE),
            artifacts={KERAS_ARTIFACT: str(saved)},
            model_config={"classes": list(classes), "image_size": image_size_of(model), "max_pixels": max_pixels},
            signature=SIGNATURE,
            input_example=pd.DataFrame({IMAGE_COLUMN: [to_base64(example_png())]}),
            pip_requirements=requirements(),
            validate_serving_input=False,
        )
