"""Label image files with a trained classifier: `python src/predict.py PATH... [model=URI] [out=F] [batch_size=N]`.

Paths are files (read whatever their name) and folders (their .jpg/.jpeg/.png/.bmp/.gif/.webp files, recursively,
sorted). `model=` takes what `catdog.predict.loading.load_predictor` does; the default is the registry's champion, else
the study's champion from its files (reports/compare.json and its model file). Each
image gets one printed line, `path<TAB>label<TAB>probability`, or `path<TAB>error: why`; `out=` also writes the
table as CSV or JSON. TensorFlow is imported only once the arguments are known to be good.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from catdog.common.errors import UserError, reports_user_errors
from catdog.common.files import write_text
from catdog.predict.loading import ModelNotFound, Predictor, default_model, load_predictor, store_uri, study_champion
from catdog.serve.schema import IMAGE_COLUMN
from catdog.settings.params import compose_config
from catdog.settings.project import conf_dir

USAGE = "usage: python src/predict.py PATH... [model=URI|FILE.keras] [out=preds.csv|preds.json] [batch_size=N]"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
OUT_SUFFIXES = (".csv", ".json")
DEFAULT_BATCH = 32
COLUMNS = ("path", "label", "probability", "error")


class PredictError(UserError):
    """The model cannot be used: not found, not loadable, not an image classifier."""

    kind = "predict"
    exit_code = 2


class UsageError(PredictError, ValueError):
    """The command line is wrong: an unknown option, a bad value, a path that is not there, no images."""

    def line(self) -> str:
        return f"{super().line()}; {USAGE}"


@dataclass(frozen=True)
class Args:
    paths: list[Path]
    model: str | None = None
    out: Path | None = None
    batch_size: int = DEFAULT_BATCH


def parse_args(argv: list[str]) -> Args:
    """Paths, and `key=value` options for the keys model, out and batch_size."""
    paths, options = [], {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in ("model", "out", "batch_size"):
            options[key] = value
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}")
        else:
            paths.append(Path(arg))
    if not paths:
        raise UsageError("no image files or folders given")
    out = Path(options["out"]) if options.get("out") else None
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise UsageError(f"out={out}: expected a file ending in {' or '.join(OUT_SUFFIXES)}")
    batch = options.get("batch_size", str(DEFAULT_BATCH))
    if not batch.isdigit() or int(batch) < 1:
        raise UsageError(f"batch_size={batch}: expected an integer >= 1")
    return Args(paths, options.get("model") or None, out, int(batch))


def image_files(paths: list[Path]) -> tuple[list[Path], bool]:
    """Files as given, and each folder's images (recursively, sorted); whether any folder was given."""
    files, folders = [], False
    for path in paths:
        if path.is_dir():
            folders = True
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files, folders


def project_config() -> DictConfig:
    """The project's composed config (conf/), for `data.classes` and the `tracking` settings."""
    return compose_config(conf_dir())


def predict_files(files: list[Path], predictor: Predictor, batch_size: int, progress: bool = False) -> list[dict]:
    """One row (path, label, probability, error) per file, in order; an unreadable file gets its error."""
    rows: list[dict] = []
    with tqdm(total=len(files), unit="img", desc="predict", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            encoded, read_errors = [], {}
            for path in chunk:
                try:
                    encoded.append(base64.b64encode(path.read_bytes()).decode("ascii"))
                except OSError as exc:
                    read_errors[path] = f"cannot read: {exc.strerror or exc}"
            frame = predictor(pd.DataFrame({IMAGE_COLUMN: encoded})) if encoded else pd.DataFrame()
            results = iter(frame.to_dict("records"))
            for path in chunk:
                failed = {"label": "", "probability": 0.0, "error": read_errors.get(path)}
                rows.append({"path": str(path), **(failed if path in read_errors else next(results))})
            bar.update(len(chunk))
    return rows


def line(row: dict) -> str:
    if row["error"]:
        return f"{row['path']}\terror: {row['error']}"
    return f"{row['path']}\t{row['label']}\t{row['probability']:.4f}"


def write_rows(out: Path, rows: list[dict]) -> None:
    """The rows as CSV or JSON (by `out`'s suffix), written atomically; a failed row's probability is empty."""
    table = [{**r, "probability": None if r["error"] else float(r["probability"])} for r in rows]
    if out.suffix.lower() == ".json":
        write_text(out, json.dumps(table, indent=2) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_text(out, buffer.getvalue())


def find_predictor(spec: str | None, cfg: DictConfig) -> Predictor:
    """`load_predictor` for `spec`; without one, the registry's champion where the tracking store has it, else the
    study's champion from its files (a pulled study in a clone with its own store), said on stderr. A model it
    cannot find is a `PredictError` that says what is missing."""
    try:
        return load_predictor(spec or default_model(cfg), cfg)
    except ModelNotFound as exc:
        if spec:
            raise PredictError(str(exc)) from exc
    details, model, champion = study_champion(cfg)
    registered = f"{default_model(cfg)} is not in the tracking store {store_uri(cfg)}"
    if not champion:
        raise PredictError(
            f"no model to use: {registered}, and {details} is not there (the study's compare stage writes it: "
            "`dvc repro`, or `dvc pull` a study); or pass model=<URI or .keras file>"
        )
    if not model.is_file():
        raise PredictError(
            f"no model to use: {registered}, and the study's champion {champion} has no model file {model} "
            "(`dvc pull` fetches it, or `dvc repro` trains it); or pass model=<URI or .keras file>"
        )
    print(f"predict: {registered}; using the study's champion {champion}, {model}", file=sys.stderr)
    try:
        return load_predictor(str(model), cfg)
    except ModelNotFound as exc:
        raise PredictError(str(exc)) from exc


@reports_user_errors
def main(argv: list[str]) -> int:
    """Exit code 0 when every image got a label, 1 when any could not be read; a usage or model error is reported in
    one line with exit code 2 (a tracking server that does not answer: 1)."""
    args = parse_args(argv)
    files, folders = image_files(args.paths)
    cfg = project_config()
    predictor = find_predictor(args.model, cfg)
    rows = predict_files(files, predictor, args.batch_size, progress=folders)
    for row in rows:
        print(line(row))
    if args.out is not None:
        write_rows(args.out, rows)
    failed = sum(1 for r in rows if r["error"])
    if failed:
        print(f"predict: {failed} of {len(rows)} images could not be read", file=sys.stderr)
    return 1 if failed else 0
