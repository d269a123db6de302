"""Images decoded once per split into a cache keyed by the manifest's hash and the decode recipe, then served by
tf.data."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig
from tqdm import tqdm

from catdog.common.errors import UserError
from catdog.common.files import atomic_path, sha256_file
from catdog.data import images
from catdog.data.manifests import read_manifest


@dataclass(frozen=True)
class Split:
    """One split in memory: uint8 images (N, H, W, 3) or features, int32 class indices, and manifest paths."""

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]


def cache_file(cache_dir: Path, manifest: Path, image_size: int) -> Path:
    """The cache file name carries the manifest's hash, so a new split never reuses a stale cache, and the decode
    recipe (`catdog.data.images.DECODE_VERSION`, TensorFlow's version for its decoders), so a change to how images are
    decoded never serves the old pixels."""
    decode = f"decode{images.DECODE_VERSION}-tf{tf.__version__}"
    return cache_dir / f"{manifest.stem}-{sha256_file(manifest)[:16]}-{decode}-{image_size}px.npz"


class UnreadableImage(UserError):
    """A listed image of the data set cannot be decoded, or is over the pixel limit."""

    kind = "data error"


def decode_images(
    files: list[str], image_size: int, desc: str, max_pixels: int = images.DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and resize `files` (`catdog.data.images.decode_image`) on a thread per core, with a progress bar."""
    out = np.empty((len(files), image_size, image_size, images.CHANNELS), dtype=np.uint8)

    def decode(row: int) -> None:
        try:
            out[row] = images.decode_image(Path(files[row]).read_bytes(), image_size, max_pixels)
        except images.ImageError as exc:
            raise UnreadableImage(
                f"{files[row]}: {exc}; remove it from the data set (or raise data.max_pixels), then run "
                "`dvc repro split` again"
            ) from exc

    with (
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
        tqdm(total=len(files), desc=desc, unit="img", disable=None) as bar,
    ):
        try:
            for _ in pool.map(decode, range(len(files))):
                bar.update(1)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the first failure ends the decode: no waiting for the others
            raise
    return out


def load_split(
    manifest: Path,
    dataset_dir: Path,
    classes: list[str],
    image_size: int,
    cache_dir: Path,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
) -> Split:
    """The split named by `manifest`, decoded from the cache or, the first time, from the JPEGs."""
    entries = read_manifest(manifest)
    unknown = sorted({e.label for e in entries} - set(classes))
    if unknown:
        raise ValueError(f"{manifest}: labels {unknown} are not among the configured classes {classes}")
    labels = np.array([classes.index(e.label) for e in entries], dtype=np.int32)
    paths = tuple(e.path for e in entries)
    cache = cache_file(cache_dir, manifest, image_size)
    if cache.is_file():
        with np.load(cache) as stored:
            return Split(stored["images"], labels, paths)
    files = [str(dataset_dir / p) for p in paths]
    pixels = decode_images(files, image_size, desc=f"decode {manifest.stem}", max_pixels=max_pixels)
    with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, images=pixels)
    return Split(pixels, labels, paths)


def configured_split(data: DictConfig, name: str, image_size: int) -> Split:
    """`load_split` for split `name` (train, val or test) at the paths of the `data` config group."""
    manifest = Path(data.split_dir) / f"{name}.csv"
    where = (Path(data.dataset_dir), list(data.classes), image_size, Path(data.cache_dir))
    return load_split(manifest, *where, max_pixels=data.max_pixels)


class EpochClock(keras.callbacks.Callback):
    """The epoch `fit` is in, in a variable that shuffled `batches` read: set as each epoch begins.

    Keras numbers epochs from `initial_epoch`, so a resumed fit sets the epoch the interrupted one would have.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.assign(epoch)


def batches(
    split: Split, batch_size: int, *, shuffle: bool, seed: int, epoch: tf.Variable | int = 0
) -> tf.data.Dataset:
    """Float32 image batches with labels; shuffling permutes indices, never copies images into a buffer.

    Shuffled, a pass over the dataset serves `epoch`'s order (an `EpochClock`'s variable, or a fixed number): a
    pure function of (seed, epoch), whatever this process iterated before, so a resumed run sees the orders the
    uninterrupted one saw. Each batch maps its positions to indices through `index_shuffle`'s permutation.
    """
    images = tf.constant(split.images)
    labels = tf.constant(split.labels)
    ds = tf.data.Dataset.range(len(split.labels)).batch(batch_size)
    if shuffle:
        ds = ds.map(lambda positions: epoch_order(positions, len(split.labels), seed, epoch))
    ds = ds.map(lambda idx: (tf.cast(tf.gather(images, idx), tf.float32), tf.gather(labels, idx)))
    return ds.with_options(untuned())


def epoch_order(positions: tf.Tensor, size: int, seed: int, epoch: tf.Variable | int) -> tf.Tensor:
    """The indices at `positions` in epoch `epoch`'s permutation of `range(size)`, the one keyed by (seed, epoch)."""
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.index_shuffle(positions, seed=key, max_index=size - 1)


def untuned() -> tf.data.Options:
    """tf.data options with the autotuner off (`batches` adds no prefetch thread either): a gather and a cast
    leave nothing to tune or overlap.

    On a 2-core CPU the autotuner's thread competes with the training step's own two threads: of 28 benchmark
    fits with it, 9 ran at about two thirds of the usual rate; of 17 without it, none did.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def features(extractor: keras.Model, split: Split, batch_size: int) -> Split:
    """The split with each image replaced by `extractor`'s output, computed once."""
    out = extractor.predict(batches(split, batch_size, shuffle=False, seed=0), verbose=0)
    return Split(out, split.labels, split.paths)
