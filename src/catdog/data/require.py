"""What a command needs on disk before it starts: the data set and its split manifests, checked before TensorFlow
is imported so that a fresh checkout fails in a second with the command that fetches them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from catdog.common.errors import UserError


class DataMissing(UserError):
    """Data a command reads is not there yet: the message names the file or folder and the command that makes it."""

    kind = "data error"


GET_DATA = "`dvc repro split` (or `python src/download.py && python src/split.py`)"


def require_data(data: DictConfig, splits: Sequence[str]) -> None:
    """Refuse, before TensorFlow is imported, a run whose data set or split manifests (`<split_dir>/<name>.csv`,
    as `catdog.data.dataset` reads them) are not there: a fresh checkout has neither until `dvc repro split`."""
    needed = [(Path(data.dataset_dir), "the data set is not downloaded")]
    needed += [(Path(data.split_dir) / f"{name}.csv", f"no {name} manifest: the data is not split") for name in splits]
    for path, what in needed:
        if not path.exists():
            raise DataMissing(f"{path.absolute()} not found ({what}); fetch and split the data with {GET_DATA}")
