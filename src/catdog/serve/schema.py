"""The classifier's request format, shared by the pyfunc, the loaders and predict.py without importing TensorFlow:
a DataFrame with one string column of base64-encoded image files."""

IMAGE_COLUMN = "image"
