"""The trained model as MLflow serves it: the classifier pyfunc (`classifier`, logged as code from
`classifier_code`) and its request format (`schema`). Training logs it, `mlflow models serve` and `predict.py` run
it. Imports `catdog.common`, `catdog.data` and `catdog.tracking`."""
