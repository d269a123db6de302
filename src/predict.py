"""Label image files with the champion (or any model): `python src/predict.py photos/ cat.jpg out=preds.csv`.

Prints `path<TAB>label<TAB>probability` per image; exit code 1 when any image could not be read, 2 on a usage
or model error (one line, `CATDOG_DEBUG=1` shows its traceback). See `catdog.predict.label_files` for the options.
"""

import os
import sys

from catdog.common.console import quiet_console

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one progress bar: the images'

from catdog.predict.label_files import main  # noqa: E402

if __name__ == "__main__":
    quiet_console()  # TensorFlow's start-up banner, not predictions
    sys.exit(main(sys.argv[1:]))
