"""The study's models: shapes, parameter counts, float32, scaling identical to MobileNetV2's preprocess_input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import CONF

from catdog.settings.params import compose_config
from catdog.train.models import build_model, parameter_counts, preprocessing, unfreeze_backbone

STUDY_SIZE = 160
# Conv 3x3x3x32 + Conv 3x3x32x32 + Dense(38*38*32 -> 64) + Dense(64 -> 2), at 160x160.
CNN_PARAMS = (3 * 3 * 3 * 32 + 32) + (3 * 3 * 32 * 32 + 32) + (38 * 38 * 32 * 64 + 64) + (64 * 2 + 2)
TRANSFER_HEAD_PARAMS = 377_986
MOBILENET_V2_PARAMS = 2_257_984


def model_for(variant: str) -> keras.Model:
    overrides = [f"variant={variant}", f"trainer.image_size={STUDY_SIZE}"]
    overrides += ["model.net.weights=null"] if variant == "transfer" else []
    return build_model(compose_config(CONF, overrides), num_classes=2)


@pytest.mark.parametrize("variant", ["baseline", "augmented", "scaled"])
def test_cnn_variants_have_the_study_shape(variant: str) -> None:
    model = model_for(variant)
    counts = parameter_counts(model)
    assert counts == {"params_trainable": CNN_PARAMS, "params_non_trainable": 0, "params_total": CNN_PARAMS}
    assert model.output_shape == (None, 2)
    assert all(w.dtype == "float32" for w in model.weights)
    names = {layer.name for layer in model.layers}
    assert ("augmentation" in names) == (variant != "baseline")
    assert ("scale_to_unit_range" in names) == (variant == "scaled")


def test_transfer_trains_only_its_head() -> None:
    model = model_for("transfer")
    counts = parameter_counts(model)
    assert counts["params_trainable"] == TRANSFER_HEAD_PARAMS
    assert counts["params_non_trainable"] == MOBILENET_V2_PARAMS
    assert model.output_shape == (None, 2)


@pytest.mark.slow
def test_fine_tuning_unfreezes_the_top_of_the_backbone() -> None:
    model = model_for("transfer")
    unfreeze_backbone(model, from_layer=100)
    backbone = model.get_layer("net").get_layer("backbone")
    assert not any(layer.trainable for layer in backbone.layers[:100])
    assert any(layer.trainable for layer in backbone.layers[100:])
    assert parameter_counts(model)["params_trainable"] > TRANSFER_HEAD_PARAMS


@pytest.mark.slow
def test_fine_tuning_keeps_the_backbone_in_inference_mode() -> None:
    model = model_for("transfer")
    unfreeze_backbone(model, from_layer=100)
    inputs = keras.Input((STUDY_SIZE, STUDY_SIZE, 3))
    features = keras.Model(inputs, model.get_layer("net").get_layer("backbone")(inputs, training=False))
    images = np.random.default_rng(2).uniform(-1, 1, (4, STUDY_SIZE, STUDY_SIZE, 3)).astype("float32")
    training, inference = (keras.ops.convert_to_numpy(features(images, training=mode)) for mode in (True, False))
    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-5)


def test_scaling_equals_mobilenet_v2_preprocess_input() -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(preprocessing("mobilenet_v2")(pixels))
    reference = keras.applications.mobilenet_v2.preprocess_input(pixels.copy())
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6)
    assert ours.min() >= -1 and ours.max() <= 1
    assert preprocessing("none") is None


def test_augmentation_changes_images_in_training_only() -> None:
    model = model_for("augmented")
    layer = model.get_layer("augmentation")
    image = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(image, training=False)), image)
    assert not np.allclose(keras.ops.convert_to_numpy(layer(image, training=True)), image)


def two_dots(size: int) -> np.ndarray:
    """A black image with a red dot right of its centre and a green one above it, each 2x2 pixels.

    The green dot sits on the vertical axis, which a horizontal flip leaves in place: its angle about the centre
    gives the rotation. The red one changes sides under the flip: the turn from red to green changes sign.
    """
    image = np.zeros((size, size, 3), dtype="float32")
    middle, offset = size // 2 - 1, size // 6
    image[middle : middle + 2, middle + offset : middle + offset + 2, 0] = 255.0
    image[middle - offset : middle - offset + 2, middle : middle + 2, 1] = 255.0
    return image


def dot_angles(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the angle about the centre of the red and of the green dot's centroid, both within a central
    disc that the rotation fills from inside the image, so that its reflected border cannot pull a centroid."""
    size = images.shape[1]
    centre = (size - 1) / 2
    y, x = np.mgrid[:size, :size] - centre
    inside = np.hypot(x, y) < size / 3

    def angle(channel: np.ndarray) -> np.ndarray:
        weights = channel * inside
        return np.arctan2((weights * -y).sum((1, 2)), (weights * x).sum((1, 2)))

    return angle(images[..., 0]), angle(images[..., 1])


def test_flip_and_rotation_draw_independent_random_numbers() -> None:
    size, copies = 64, 400
    cfg = compose_config(CONF, ["variant=augmented", f"trainer.image_size={size}"])
    layer = build_model(cfg, num_classes=2).get_layer("augmentation")
    images = np.repeat(two_dots(size)[None], copies, axis=0)
    red, green = dot_angles(keras.ops.convert_to_numpy(layer(images, training=True)))
    turn = np.angle(np.exp(1j * (green - red)))  # red to green, in (-pi, pi]: +pi/2 unflipped, -pi/2 flipped
    rotation = np.angle(np.exp(1j * (green - np.pi / 2)))
    assert np.all(np.abs(np.abs(turn) - np.pi / 2) < 0.2), "the dots must stay a quarter turn apart"
    flipped, positive = turn < 0, rotation > 0
    # Flip p=0.5; rotation uniform in (-0.3, 0.2) of a turn: positive (one way or the other) 40% or 60% of the time.
    assert 0.3 < flipped.mean() < 0.7
    assert 0.3 < positive.mean() < 0.7
    phi = np.corrcoef(flipped, positive)[0, 1]
    assert abs(phi) < 0.2, f"flip and rotation are correlated: phi={phi:.2f}"


def test_augmentation_computes_in_float32_under_bfloat16_while_the_net_does_not() -> None:
    """CPUs rotate bfloat16 images in scalar code; the conv casts the float32 pixels itself (issue 27)."""
    from catdog.train.precision import policy

    with policy("bfloat16"):
        model = build_model(compose_config(CONF, ["variant=augmented", "trainer.image_size=32"]), num_classes=2)
    assert {layer.compute_dtype for layer in model.get_layer("augmentation").layers} == {"float32"}
    first_conv = next(layer for layer in model.get_layer("net").layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.compute_dtype == "bfloat16"
