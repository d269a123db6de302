"""The classifier pyfunc's model code (MLflow "models from code"): `log_classifier` logs this file, and MLflow runs
it when the model loads, instead of unpickling an object. Not meant to be imported."""

import mlflow

from catdog.serve.classifier import ImageClassifier

mlflow.models.set_model(ImageClassifier())
