"""Grad-CAM (Selvaraju et al., 2017): where a saved study model looked when it scored a class.

The heatmap is the ReLU of the target feature maps weighted by the spatially averaged gradient of the class's
logit with respect to them, scaled to [0, 1] per image and placed on the input where each feature's receptive
field is centred (a plain resize would shift it: the CNN's unpadded convolutions make 32 px into 13 cells two
pixels apart, starting 3.5 px in, not 32/13 apart from the corner; measured, the peak then missed half the
patches it should have hit). The gradients come from
TensorFlow's GradientTape through the model's own layers. The target is the last convolution of the net: for the
CNN variants its last Conv2D, for `transfer` the output of MobileNetV2's last convolution block (the frozen
backbone's `out_relu`), not the small head's convolutions over it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from catdog.train.models import NET

Stage = Callable[[tf.Tensor], tf.Tensor]


def _chain(layers: list[keras.layers.Layer]) -> Stage:
    def run(x: tf.Tensor) -> tf.Tensor:
        for layer in layers:
            x = layer(x, training=False)
        return x

    return run


def target_layer(net: keras.Model) -> keras.layers.Layer:
    """The net's last layer that is a convolution or a nested model (the backbone) giving 4-D feature maps."""
    for layer in reversed(net.layers):
        if isinstance(layer, (keras.layers.Conv2D, keras.Model)) and len(layer.output.shape) == 4:
            return layer
    raise ValueError(f"{net.name}: no convolution or backbone with 2-D feature maps to explain")


@dataclass(frozen=True)
class Split:
    """A study model cut at its Grad-CAM target."""

    to_features: Stage  # raw images → the target's feature maps
    to_logits: Stage  # feature maps → logits
    target: str
    stride: int  # input pixels between neighbouring feature cells


def total_stride(layers: list[keras.layers.Layer]) -> int:
    """The product of the strides of `layers` (convolutions and pooling), nested models included."""
    stride = 1
    for layer in layers:
        if isinstance(layer, keras.Model):
            stride *= total_stride(layer.layers)
        elif getattr(layer, "strides", None):
            stride *= int(layer.strides[0])
    return stride


def split_at_target(model: keras.Model) -> Split:
    """A study model cut at its target: its augmentation (an identity at inference) and scaling, then its net,
    which is a chain of layers."""
    net = model.get_layer(NET)
    outer = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if outer[-1] is not net:
        raise ValueError(f"{model.name}: expected the net as the model's last layer, found {outer[-1].name}")
    inner = [layer for layer in net.layers if not isinstance(layer, keras.layers.InputLayer)]
    target = target_layer(net)
    before = outer[:-1] + inner[: inner.index(target) + 1]
    return Split(_chain(before), _chain(inner[len(before) - len(outer) + 1 :]), target.name, total_stride(before))


def place(cells: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `size` input pixels along an axis of `cells` feature cells: the two cells to interpolate
    between and the weight of the second, with cell i centred at stride * i + offset, the grid centred on the
    input (exact for unpadded layers, within a few pixels for padded ones)."""
    offset = (size - 1 - stride * (cells - 1)) / 2
    u = np.clip((np.arange(size) - offset) / stride, 0, cells - 1)
    low = np.floor(u).astype(int)
    return low, np.minimum(low + 1, cells - 1), (u - low).astype(np.float32)


def to_input(cams: np.ndarray, shape: tuple[int, int], stride: int) -> np.ndarray:
    """Feature-grid heatmaps (n, h, w) interpolated onto the input's (n, height, width)."""
    low, high, f = place(cams.shape[1], shape[0], stride)
    rows = cams[:, low, :] * (1 - f)[None, :, None] + cams[:, high, :] * f[None, :, None]
    low, high, f = place(cams.shape[2], shape[1], stride)
    return rows[:, :, low] * (1 - f)[None, None, :] + rows[:, :, high] * f[None, None, :]


def gradcam(
    model: keras.Model, images: np.ndarray, class_index: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps in [0, 1] of shape (n, height, width) for `images` (n, height, width, 3; raw pixels, as the model
    takes them), each for `class_index` (default: the model's predicted class); and the logits."""
    cut = split_at_target(model)
    x = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        features = cut.to_features(x)
        tape.watch(features)
        logits = tf.cast(cut.to_logits(features), tf.float32)
        chosen = tf.argmax(logits, axis=-1) if class_index is None else tf.convert_to_tensor(class_index, tf.int64)
        score = tf.gather(logits, chosen, axis=1, batch_dims=1)
    grads = tf.cast(tape.gradient(score, features), tf.float32)
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True)).numpy()
    return to_input(cam, images.shape[1:3], cut.stride), logits.numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (uint8 or 0..255 floats) under the heatmap in matplotlib's `jet` colours, as uint8."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heatmap)[..., :3] * 255.0
    blended = (1 - alpha) * np.asarray(image, np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)
