"""Each image of a split as the frozen ImageNet MobileNetV2's pooled features (1,280 numbers at alpha 1.0), computed
once per split from the decoded-image cache (`catdog.data.dataset`) and cached beside it in `data.cache_dir`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from catdog.common.errors import UserError
from catdog.common.files import atomic_path
from catdog.data.dataset import cache_file, configured_split
from catdog.data.manifests import Entry, read_manifest


class BackboneMissing(UserError):
    """The backbone's ImageNet weights are neither in Keras' cache nor downloadable."""

    kind = "model error"


def backbone(alpha: float, weights: str | None, image_size: int, seed: int) -> keras.Model:
    """MobileNetV2 without its top, average-pooled, behind the [-1, 1] scaling its ImageNet weights expect; random
    weights (`weights` None) are drawn from `seed`."""
    keras.utils.set_random_seed(seed)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False, weights=weights, pooling="avg"
        )
    except Exception as exc:  # Keras' get_file raises a bare Exception("URL fetch failure on ...")
        if weights != "imagenet":
            raise
        home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
        raise BackboneMissing(
            f"MobileNetV2's ImageNet weights at {image_size} px are not in {home}/models and could not be downloaded "
            f"({str(exc).strip().splitlines()[0]}); set KERAS_HOME to a folder whose models/ holds them (README, "
            "offline), or audit with random weights: audit.backbone.weights=null"
        ) from exc
    inputs = keras.Input((image_size, image_size, 3))
    scaled = keras.layers.Rescaling(scale=1 / 127.5, offset=-1.0)(inputs)
    return keras.Model(inputs, base(scaled, training=False), name="audit_backbone")


def embeddings_file(data: DictConfig, audit: DictConfig, name: str) -> Path:
    """The embeddings' cache file: the decoded images' cache name (manifest hash, decode recipe, size) with the
    backbone's settings, so another split, decode or backbone never reuses stale features."""
    decoded = cache_file(Path(data.cache_dir), Path(data.split_dir) / f"{name}.csv", audit.image_size)
    net = f"mobilenet_v2-{audit.backbone.alpha}-{audit.backbone.weights or 'random'}"
    return decoded.with_name(f"embeddings-{net}-{decoded.name}")


def embed_split(
    data: DictConfig, audit: DictConfig, name: str, net: Callable[[], keras.Model]
) -> tuple[list[Entry], np.ndarray]:
    """Split `name`'s manifest entries and their images' features, from the cache or computed over the decoded images
    with the backbone `net()` returns (built only when a split is not cached)."""
    entries = read_manifest(Path(data.split_dir) / f"{name}.csv")
    cached = embeddings_file(data, audit, name)
    if cached.is_file():
        with np.load(cached) as stored:
            return entries, stored["features"]
    images = configured_split(data, name, audit.image_size).images
    size = audit.batch_size
    batches = tqdm(range(0, len(images), size), desc=f"embed {name}", unit="batch", disable=None)
    features = np.concatenate([net().predict_on_batch(images[i : i + size].astype(np.float32)) for i in batches])
    with atomic_path(cached) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, features=features.astype(np.float32))
    return entries, features.astype(np.float32)
