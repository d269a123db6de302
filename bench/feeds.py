"""The benchmark's three input pipelines, each repeating forever, and how many images a number of steps covers.

project: the project's cached uint8 split served by `catdog.data.dataset.batches`. reference: the original study's
`image_dataset_from_directory`, decoding the JPEGs every epoch. bound: one float32 batch already in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from plan import ROOT

from catdog.data.dataset import Split, batches, load_split
from catdog.data.require import require_data

PIPELINES = ("project", "reference", "bound")


@dataclass(frozen=True)
class Feed:
    """An input pipeline repeating forever, and how many images one pass over it holds."""

    dataset: tf.data.Dataset
    images_per_pass: int


def data_path(cfg: DictConfig, key: str) -> Path:
    """A configured data path, taken relative to the repository root."""
    return ROOT / cfg.data[key]


def check_data(cfg: DictConfig) -> None:
    """Refuse, in one line and before any child process starts, a benchmark without the data set or the train
    split it reads (under the repository root)."""
    paths = {key: str(data_path(cfg, key)) for key in ("dataset_dir", "split_dir")}
    require_data(OmegaConf.create(paths), ("train",))


def train_split(cfg: DictConfig) -> Split:
    """The train split through the project's decode-once cache."""
    manifest, classes, size = data_path(cfg, "split_dir") / "train.csv", list(cfg.data.classes), cfg.trainer.image_size
    return load_split(manifest, data_path(cfg, "dataset_dir"), classes, size, data_path(cfg, "cache_dir"))


def feeds(cfg: DictConfig, split: Split) -> dict[str, Feed]:
    """The three input pipelines of one variant, keyed by `PIPELINES`."""
    size, batch = cfg.trainer.image_size, cfg.trainer.batch_size
    reference = keras.utils.image_dataset_from_directory(
        data_path(cfg, "dataset_dir") / cfg.data.train_folder,
        image_size=(size, size),
        batch_size=batch,
        seed=cfg.seed,
        verbose=False,
    )
    one_batch = (split.images[:batch].astype("float32"), split.labels[:batch])
    return {
        "project": Feed(batches(split, batch, shuffle=True, seed=cfg.seed).repeat(), len(split.labels)),
        "reference": Feed(reference.repeat(), len(reference.file_paths)),
        "bound": Feed(tf.data.Dataset.from_tensors(one_batch).repeat(), batch),
    }


def images_seen(steps: int, images_per_pass: int, batch_size: int) -> int:
    """Images in the first `steps` batches of repeated passes whose last batch may be short."""
    passes, rest = divmod(steps, math.ceil(images_per_pass / batch_size))
    return passes * images_per_pass + rest * batch_size
