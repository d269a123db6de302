"""The study's Keras models; preprocessing and augmentation live inside them, so a saved model takes raw images."""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from catdog.common.errors import UserError

CHANNELS = 3
BACKBONE = "backbone"
HEAD = "head"
NET = "net"
SCALE = "scale_to_unit_range"
# The input sizes Keras has MobileNetV2 ImageNet weights for.
MOBILENET_SIZES = (96, 128, 160, 192, 224)


def augmentation(cfg: DictConfig, seed: int) -> keras.Sequential:
    """RandomFlip + RandomRotation, active in training only, each with its own seed from `layer_seeds`.

    Both compute in float32 whatever the run's precision: under mixed_bfloat16 they would otherwise rotate in
    bfloat16, which CPUs compute in scalar code (1.19x the float32 time for a batch of 32 at 96 px, issue 27), for
    pixels the next layer casts to bfloat16 anyway. In a float32 run this changes nothing.
    """
    flip_seed, rotation_seed = layer_seeds(seed, 2)
    return keras.Sequential(
        [
            keras.layers.RandomFlip(cfg.flip, seed=flip_seed, dtype="float32"),
            keras.layers.RandomRotation(factor=tuple(cfg.rotation), seed=rotation_seed, dtype="float32"),
        ],
        name="augmentation",
    )


def layer_seeds(seed: int, count: int) -> list[int]:
    """`count` seeds derived from the run's `seed` by NumPy's SeedSequence: the same for the same seed, distinct from
    one another and from other runs' (seed and seed + 1 would give the next run's first stream to this one's second).

    Two random layers given one seed draw the same numbers, so every flipped image would also turn the same way.
    """
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


def preprocessing(kind: str) -> keras.layers.Layer | None:
    """`mobilenet_v2`: pixels 0..255 to [-1, 1], exactly `mobilenet_v2.preprocess_input`; `none`: no layer."""
    if kind == "mobilenet_v2":
        return keras.layers.Rescaling(scale=1 / 127.5, offset=-1.0, name=SCALE)
    return None


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    filters: int,
    kernel_size: int,
    dense_units: int,
    dropout: float,
) -> keras.Model:
    """Conv → MaxPool → Conv → MaxPool → Flatten → Dropout → Dense → logits."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, kernel_size, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(filters, kernel_size, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=NET)


def transfer_head(
    input_shape: tuple[int, ...], num_classes: int, filters: int, kernel_size: int, conv_dropout: float, dropout: float
) -> keras.Model:
    """The study's head over backbone features: Conv ×2 → GlobalMaxPool → Dropout → Flatten → Dropout → logits."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    x = keras.layers.Dropout(conv_dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=HEAD)


def build_transfer(
    input_shape: tuple[int, int, int],
    num_classes: int,
    alpha: float,
    weights: str | None,
    filters: int,
    kernel_size: int,
    conv_dropout: float,
    dropout: float,
) -> keras.Model:
    """Frozen MobileNetV2 (run in inference mode) under the study's head."""
    try:
        base = keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha, include_top=False, weights=weights)
    except Exception as exc:  # Keras' get_file raises a bare Exception("URL fetch failure on ...")
        cached = imagenet_weights_file(alpha, input_shape[0])
        if weights != "imagenet" or cached.is_file():
            raise
        raise WeightsMissing(
            f"ImageNet weights for MobileNetV2 at {input_shape[0]} px not found: Keras looked for {cached} and could "
            f"not download it ({str(exc).strip().splitlines()[0]}); set KERAS_HOME to a folder whose models/ holds "
            "that file, or allow the download (or train on random weights: model.net.weights=null)"
        ) from exc
    backbone = keras.Model(base.input, base.output, name=BACKBONE)
    backbone.trainable = False
    head = transfer_head(tuple(backbone.output.shape[1:]), num_classes, filters, kernel_size, conv_dropout, dropout)
    inputs = keras.Input(input_shape)
    features = backbone(inputs, training=False)
    return keras.Model(inputs, head(features), name=NET)


class WeightsMissing(UserError):
    """The backbone's pretrained weights are neither in Keras' cache nor downloadable."""

    kind = "model error"


def imagenet_weights_file(alpha: float, size: int) -> Path:
    """Where Keras keeps MobileNetV2's ImageNet weights without the top (`$KERAS_HOME/models/`, else
    `~/.keras/models/`); one file per input size it has weights for, the 224 px ones for any other size."""
    rows = size if size in MOBILENET_SIZES else 224
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return home / "models" / f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def build_model(cfg: DictConfig, num_classes: int) -> keras.Model:
    """Raw image → [augmentation] → [scaling] → the configured net → logits."""
    size = cfg.trainer.image_size
    inputs = keras.Input((size, size, CHANNELS), name="image")
    x = inputs
    if cfg.augment.enabled:
        x = augmentation(cfg.augment, cfg.seed)(x)
    scale = preprocessing(cfg.model.preprocess)
    if scale is not None:
        x = scale(x)
    try:
        net = instantiate(cfg.model.net, input_shape=(size, size, CHANNELS), num_classes=num_classes)
    except InstantiationException as exc:  # Hydra wraps what the builder raised: a user's mistake stays one
        if isinstance(exc.__cause__, UserError):
            raise exc.__cause__  # noqa: B904 (its own cause, the builder's failure, is kept)
        raise
    # A sweep job's name holds its overrides (`=`, `,`), which Keras refuses in a model's name.
    return keras.Model(inputs, net(x), name=re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name))


def unfreeze_backbone(model: keras.Model, from_layer: int) -> None:
    """Make the backbone's layers from `from_layer` on trainable, except batch norm.

    Keras 3 passes the outer `training=True` through a nested model despite `training=False` at its call, so a
    trainable BatchNormalization would normalise with batch statistics; a frozen one always uses its moving ones.
    """
    backbone = model.get_layer(NET).get_layer(BACKBONE)
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= from_layer and not isinstance(layer, keras.layers.BatchNormalization)


def frozen_parts(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(raw image → backbone features, head) of a transfer model: new models over the model's own layers.

    The head is a new model rather than the nested one, so that compiling it for training leaves nothing inside
    `model`: Keras saves an optimizer once, under the first owner it meets, and that must be `model` itself.
    """
    net = model.get_layer(NET)
    scale = [layer for layer in model.layers if layer.name == SCALE]
    extractor = keras.Sequential([keras.Input(model.input_shape[1:]), *scale, net.get_layer(BACKBONE)])
    head = net.get_layer(HEAD)
    return extractor, keras.Model(head.input, head.output, name=f"{HEAD}_alone")


def parameter_counts(model: keras.Model) -> dict[str, int]:
    trainable = sum(keras.ops.size(w) for w in model.trainable_weights)
    frozen = sum(keras.ops.size(w) for w in model.non_trainable_weights)
    return {
        "params_trainable": int(trainable),
        "params_non_trainable": int(frozen),
        "params_total": int(trainable + frozen),
    }
