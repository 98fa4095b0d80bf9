"""Model builders. Every model follows one contract:

input  (N, 48, 48, 1) float, raw grayscale pixel values 0-255;
output (N, 7) softmax probabilities in ``EMOTIONS`` order.

Scaling and (for MobileNetV2) resizing/grey-to-RGB happen inside the graph, so training,
evaluation, the service and the CLI all feed the same raw faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers

from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.preprocessing import MODEL_INPUT_SHAPE

ARCHITECTURES = ("vgg", "mobilenetv2")


def build_model(architecture: str, **options: Any) -> keras.Model:
    """Build an untrained model by name ('vgg' or 'mobilenetv2') with its options from params."""
    if architecture == "vgg":
        return build_vgg(**options)
    if architecture == "mobilenetv2":
        return build_mobilenetv2(**options)
    raise ValueError(f"model.architecture is {architecture!r}: expected one of {ARCHITECTURES}")


def build_vgg(
    widths: tuple[int, ...] | list[int] = (32, 64, 128, 256),
    convs_per_block: int = 2,
    dense_units: int = 256,
    dropout: float = 0.4,
    name: str = "emotion_vgg",
    **_: Any,
) -> keras.Model:
    """VGG-style CNN for 48x48 grayscale: conv-BN-ReLU blocks, each halving the resolution.

    Narrow early blocks keep the cost per image low enough to train on a 2-core CPU.
    """
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="face")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for block, width in enumerate(widths):
        for conv in range(convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"b{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"b{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"b{block}_pool")(x)
    return keras.Model(inputs, classifier_head(x, dense_units, dropout), name=name)


def classifier_head(features, dense_units: int, dropout: float):
    """Flatten, dropout, dense-BN-ReLU, dropout, softmax over the seven emotions (float32 even in bf16)."""
    x = layers.Flatten(name="flatten")(features)
    x = layers.Dropout(dropout, name="dropout_features")(x)
    x = layers.Dense(dense_units, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.ReLU(name="dense_relu")(x)
    x = layers.Dropout(dropout, name="dropout_dense")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="emotion")(x)


def build_mobilenetv2(
    input_size: int = 96,
    weights: str | None = "none",
    alpha: float = 1.0,
    dropout: float = 0.3,
    trainable_backbone: bool = True,
    name: str = "emotion_mobilenetv2",
    **_: Any,
) -> keras.Model:
    """MobileNetV2 transfer learning (the seed's reference architecture).

    ``weights``: 'imagenet' (downloads from the internet on first use), 'none' (random
    initialisation) or a path to a local weights file for the backbone without its top
    (e.g. one saved with ``backbone.save_weights('mobilenetv2.weights.h5')``).
    """
    backbone_weights, weights_file = resolve_backbone_weights(weights)
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="face")
    x = layers.Resizing(input_size, input_size, name="resize")(inputs)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)  # MobileNetV2 expects [-1, 1]
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3),
        include_top=False,
        weights=backbone_weights,
        alpha=alpha,
        pooling="avg",
    )
    if weights_file is not None:
        backbone.load_weights(weights_file)
    backbone.trainable = trainable_backbone
    x = backbone(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(inputs, outputs, name=name)


def resolve_backbone_weights(weights: str | None) -> tuple[str | None, Path | None]:
    """Map the ``model.weights`` param to (keras ``weights=`` argument, local file to load)."""
    if weights in (None, "none", "None", ""):
        return None, None
    if weights == "imagenet":
        return "imagenet", None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights is {weights!r}: expected 'imagenet', 'none' or the path of an existing "
            f"weights file (no file at {path.resolve()})"
        )
    return None, path


def load_model(path: str | Path) -> keras.Model:
    """Load a saved ``.keras`` model for inference."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    return keras.models.load_model(path, compile=False)
