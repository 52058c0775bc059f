"""The network: a MobileNetV2 backbone, pooled, with a dropout + softmax head.

The backbone is cut at the start of an inverted-residual block for fine-tuning. Every
block's skip connection starts at the block's own input, so a block input is a point
where the graph is one tensor wide: the layers below it can run once per image and
their output be cached, and the layers above it trained on that cache.
"""

from __future__ import annotations

from pathlib import Path

import keras

from device.errors import SightwireError

BLOCKS = 17  # MobileNetV2: block 0 (expanded_conv) .. block 16
INPUT_SIZES = range(96, 225)


def load_backbone(input_size: int, alpha: float, weights: str) -> keras.Model:
    """MobileNetV2 without top, ``weights`` = ``imagenet``, ``none`` or a file path."""
    if input_size not in INPUT_SIZES:
        raise SightwireError(f"--input-size must be between 96 and 224, got {input_size}")
    shape = (input_size, input_size, 3)
    kind = weights.lower()
    if kind == "none":
        source = None
    elif kind == "imagenet":
        source = "imagenet"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SightwireError(f"weights file not found: {path}")
        source = str(path)
    try:
        return keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=source, pooling="avg"
        )
    except ValueError as exc:
        raise SightwireError(f"cannot build MobileNetV2 with these weights: {exc}") from exc
    except Exception as exc:  # the download: URLError, HTTPError, OSError, ...
        if source != "imagenet":
            raise SightwireError(f"cannot load weights from {weights}: {exc}") from exc
        raise SightwireError(
            f"could not download the ImageNet weights ({type(exc).__name__}: {exc}); "
            "pass --weights PATH to a local MobileNetV2 no-top .weights.h5 file"
        ) from exc


def block_starts(backbone: keras.Model) -> list[int]:
    """Layer indices where each block (1..16) begins; block 16 is the last."""
    names = [layer.name for layer in backbone.layers]
    return [names.index(f"block_{b}_expand") for b in range(1, BLOCKS)]


def cut_index(backbone: keras.Model, fine_tune_layers: int) -> int:
    """The first trainable layer: the block start that unfreezes at least N layers.

    N counts backbone layers from the end (Keras' usual ``layers[-N:]``), rounded up
    to a whole block so that the cut is a valid cache point.
    """
    n_layers = len(backbone.layers)
    wanted = n_layers - max(1, fine_tune_layers)
    starts = [i for i in block_starts(backbone) if i <= wanted]
    return max(starts) if starts else block_starts(backbone)[0]


def split_backbone(backbone: keras.Model, cut: int) -> tuple[keras.Model, keras.Model]:
    """(bottom, top): bottom maps images to the cut tensor, top maps it to pooled features."""
    cut_tensor = backbone.layers[cut].input
    bottom = keras.Model(backbone.input, cut_tensor, name="frozen_bottom")
    top = keras.Model(cut_tensor, backbone.output, name="trainable_top")
    return bottom, top


def feature_extractor(backbone: keras.Model, cut: int) -> keras.Model:
    """Normalized image → [cut tensor, pooled features], in one forward pass."""
    return keras.Model(backbone.input, [backbone.layers[cut].input, backbone.output])


def make_head(n_classes: int, dropout: float, name: str = "head") -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Dropout(dropout),
            keras.layers.Dense(n_classes, activation="softmax", name="probs"),
        ],
        name=name,
    )


def set_trainable_top(top: keras.Model, trainable: bool, batch_norm: bool = False) -> None:
    """Unfreeze the top part, keeping every BatchNormalization in inference mode.

    The shared weights have batch norm folded into the convolutions; even with real
    statistics, re-estimating them on a few dozen photos per class would wreck them.
    (Keras 3 runs a BatchNormalization layer with ``trainable=False`` in inference mode.)
    ``batch_norm=True`` is only for a network trained from scratch: its statistics must
    be learned, fast (momentum 0.9), as a random network's activations vanish without.
    """
    top.trainable = trainable
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable and batch_norm
            if batch_norm:
                layer.momentum = 0.9


def assemble(backbone: keras.Model, head: keras.Model) -> keras.Model:
    """The exported network: normalized image in [-1, 1] → class probabilities."""
    inputs = keras.Input(backbone.input.shape[1:], name="image")
    outputs = head(backbone(inputs, training=False), training=False)
    return keras.Model(inputs, outputs, name="sightwire_classifier")
