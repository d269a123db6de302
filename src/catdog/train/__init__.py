"""One training run: the models (`models`), the fit loop and its phases (`fit`), per-epoch checkpoints and early
stopping that survive a kill (`checkpoints`), precision and thread pools (`precision`, `threads`), the MLflow run
(`run_log`), what a finished run leaves behind (`outputs`), and the run itself (`run`). Imports the layers below
it: `common`, `settings`, `data`, `tracking`, `serve`."""
