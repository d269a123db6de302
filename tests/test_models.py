"""The study's models: shapes, parameter counts, float32, scaling identical to MobileNetV2's preprocess_input."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from catdog.models import build_model, parameter_counts, preprocessing, unfreeze_backbone
from catdog.study import compose_config
from conftest import CONF

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


def test_fine_tuning_unfreezes_the_top_of_the_backbone() -> None:
    model = model_for("transfer")
    unfreeze_backbone(model, from_layer=100)
    backbone = model.get_layer("net").get_layer("backbone")
    assert not any(layer.trainable for layer in backbone.layers[:100])
    assert any(layer.trainable for layer in backbone.layers[100:])
    assert parameter_counts(model)["params_trainable"] > TRANSFER_HEAD_PARAMS


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
