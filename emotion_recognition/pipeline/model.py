"""Model builders. Every model follows one contract:

input  (N, 48, 48, 1) float, raw grayscale pixel values 0-255;
output (N, 7) softmax probabilities in ``EMOTIONS`` order.

Scaling and (for MobileNetV2) resizing/grey-to-RGB happen inside the graph, so training,
evaluation, the service and the CLI all feed the same raw faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import keras
from keras import layers

from emotion_recognition.labels import NUM_CLASSES
from emotion_recognition.pipeline.params import ModelParams
from emotion_recognition.preprocessing import MODEL_INPUT_SHAPE

ARCHITECTURES = get_args(ModelParams.model_fields["architecture"].annotation)


def build_model(params: ModelParams) -> keras.Model:
    """An untrained model of ``params.architecture``, shaped by the other ``model`` params."""
    return {"vgg": build_vgg, "mobilenetv2": build_mobilenetv2}[params.architecture](params)


def build_vgg(params: ModelParams, name: str = "emotion_vgg") -> keras.Model:
    """VGG-style CNN for 48x48 grayscale: conv-BN-ReLU blocks, each halving the resolution.

    Narrow early blocks keep the cost per image low enough to train on a 2-core CPU.
    """
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="face")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for block, width in enumerate(params.widths):
        for conv in range(params.convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"b{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"b{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"b{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(name=f"b{block}_pool")(x)
    return keras.Model(inputs, classifier_head(x, params.dense_units, params.dropout), name=name)


def classifier_head(features, dense_units: int, dropout: float):
    """Flatten, dropout, dense-BN-ReLU, dropout, softmax over the seven emotions (float32 even in bf16)."""
    x = layers.Flatten(name="flatten")(features)
    x = layers.Dropout(dropout, name="dropout_features")(x)
    x = layers.Dense(dense_units, use_bias=False, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.ReLU(name="dense_relu")(x)
    x = layers.Dropout(dropout, name="dropout_dense")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="emotion")(x)


def build_mobilenetv2(params: ModelParams, name: str = "emotion_mobilenetv2") -> keras.Model:
    """MobileNetV2 transfer learning (the seed's reference architecture).

    ``params.weights``: 'imagenet' (downloads from the internet on first use), 'none' (random
    initialisation) or a path to a local weights file for the backbone without its top
    (e.g. one saved with ``backbone.save_weights('mobilenetv2.weights.h5')``).
    """
    input_size = params.input_size
    backbone_weights, weights_file = resolve_backbone_weights(params.weights)
    inputs = keras.Input(MODEL_INPUT_SHAPE, name="face")
    x = layers.Resizing(input_size, input_size, name="resize")(inputs)
    x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)  # MobileNetV2 expects [-1, 1]
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3),
        include_top=False,
        weights=backbone_weights,
        alpha=params.alpha,
        pooling="avg",
    )
    if weights_file is not None:
        backbone.load_weights(weights_file)
    x = backbone(x)
    x = layers.Dropout(params.dropout, name="dropout")(x)
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

