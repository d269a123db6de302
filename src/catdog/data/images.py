"""How an image file becomes a model's pixels: training (`catdog.data.dataset`), `predict.py` and the served model
(`catdog.serve.classifier`) all call `decode_image`, so a served image is exactly the image a model was trained on.

First the header (`catdog.data.image_header`): a file whose frames hold more than `max_pixels` pixels is refused before
TensorFlow allocates them. Then TensorFlow decodes it (JPEG, PNG, BMP, WebP, GIF's first frame; greyscale and RGBA
become RGB), turns it upright by its EXIF orientation as photo viewers and browsers do, and resizes it bilinearly to
a square, rounded and clipped to uint8. `DECODE_VERSION` names this recipe in the training cache's file names
(`catdog.data.dataset.cache_file`): bump it with any change to the pixels this module makes.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import tensorflow as tf

from catdog.data.image_header import Header, ImageError, read_header

# 1: TensorFlow's decode and a bilinear resize. 2: EXIF orientation applied before the resize.
DECODE_VERSION = 2
# The setting's default (conf/data/cats_and_dogs.yaml `data.max_pixels`): about a 7,700 x 5,200 photo; a classifier
# logged before the setting existed serves with it.
DEFAULT_MAX_PIXELS = 40_000_000
CHANNELS = 3
_TF_NOISE = re.compile(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def decode_image(data: bytes, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file's bytes as uint8 (image_size, image_size, 3), or an `ImageError` saying why not."""
    header = read_header(data)
    check_pixels(header, max_pixels)
    try:
        return _graph(image_size)(tf.constant(data), tf.constant(header.orientation, tf.int32)).numpy()
    except tf.errors.OpError as exc:  # a truncated or corrupt file the header did not give away
        lines = (exc.message or "").strip().splitlines()
        raise ImageError((_TF_NOISE.sub("", lines[0]) if lines else "") or "not a readable image") from exc


def check_pixels(header: Header, max_pixels: int) -> None:
    """Refuse an image whose frames hold more than `max_pixels` pixels, naming its size and the limit."""
    if header.pixels <= max_pixels:
        return
    frames = f"{header.frames} frames of " if header.frames > 1 else ""
    raise ImageError(
        f"{header.format} of {frames}{header.width} x {header.height} px ({header.pixels / 1e6:,.6g} megapixels) "
        f"is over the limit of {max_pixels / 1e6:,.6g} megapixels (max_pixels={max_pixels})"
    )


@functools.cache
def _graph(image_size: int) -> tf.types.experimental.PolymorphicFunction:
    """`decode_tensor` at `image_size`, traced once per process and size."""
    return tf.function(
        lambda contents, orientation: decode_tensor(contents, orientation, image_size),
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)],
    )


def decode_tensor(contents: tf.Tensor, orientation: tf.Tensor, image_size: int) -> tf.Tensor:
    """The TensorFlow half of `decode_image`: decode, turn upright, resize, round and clip to uint8."""
    image = tf.io.decode_image(contents, channels=CHANNELS, expand_animations=False)
    image = upright(image, orientation)
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """`image` (H, W, C) as EXIF orientation 1-8 says to show it (what PIL's `ImageOps.exif_transpose` does)."""

    def transpose(x: tf.Tensor) -> tf.Tensor:
        return tf.transpose(x, [1, 0, 2])

    branches = [
        lambda: image,  # 1: as stored
        lambda: tf.image.flip_left_right(image),  # 2: mirrored
        lambda: tf.image.rot90(image, 2),  # 3: upside down
        lambda: tf.image.flip_up_down(image),  # 4: mirrored upside down
        lambda: transpose(image),  # 5: mirrored, rotated
        lambda: tf.image.rot90(image, 3),  # 6: stored 90 degrees counter-clockwise (a portrait phone photo)
        lambda: tf.image.rot90(transpose(image), 2),  # 7: mirrored, rotated the other way
        lambda: tf.image.rot90(image, 1),  # 8: stored 90 degrees clockwise
    ]
    return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)
