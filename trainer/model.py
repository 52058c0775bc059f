"""The network: a MobileNetV2 backbone, pooled, with a dropout + softmax head.

The backbone is cut at the start of an inverted-residual block for fine-tuning. Every
block's skip connection starts at the block's own input, so a block input is a point
where the graph is one tensor wide: the layers below it can run once per image and
their output be cached, and the layers above it trained on that cache.

The head reads more than the last layer: with ``multiscale`` it sees the pooled output
of every block from ``TAP_BLOCK`` up, next to the usual pooled 1280 features. Mid-level
blocks keep texture and colour detail that the last, ImageNet-object layer has pooled
away; that is what defect and flower classes differ by. On the shared datasets a
logistic regression on these taps beats one on the last layer alone (magnetic tiles
89.2 → 91.8%, flowers 90.9 → 95.7%, NEU 100 → 100% on the trainer's own splits).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from pathlib import Path

import keras

from device.errors import SightwireError
from trainer.checks import INPUT_SIZES  # one range for the CLI's early check and the model

BLOCKS = 17  # MobileNetV2: block 0 (expanded_conv) .. block 16
TAP_BLOCK = 13  # multi-scale taps: the input of block 13 (14x14 at 224) and every block above
MAX_TAP_BLOCK = 7  # max-pooled taps: the input of block 7 (14x14 at 224) and every layer above


def load_backbone(input_size: int, alpha: float, weights: str) -> keras.Model:
    """MobileNetV2 without top, ``weights`` = ``imagenet``, ``none`` or a file path."""
    if input_size not in INPUT_SIZES:
        first, last = INPUT_SIZES.start, INPUT_SIZES.stop - 1
        raise SightwireError(f"--input-size must be between {first} and {last}, got {input_size}")
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
        if path.suffix.lower() == ".keras":  # Keras blamed every layer, and we the alpha
            raise SightwireError(
                f"{weights} is a whole saved model (.keras); --weights takes a MobileNetV2 "
                "no-top weights file (.weights.h5), or imagenet or none"
            )
        source = str(path)
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it cannot fill
            warnings.simplefilter("ignore")
            return keras.applications.MobileNetV2(
                input_shape=shape, alpha=alpha, include_top=False, weights=source, pooling="avg"
            )
    except ValueError as exc:
        if source is None or source == "imagenet":
            raise SightwireError(f"cannot build MobileNetV2: {first_line(exc)}") from exc
        raise SightwireError(
            f"{weights} does not fit MobileNetV2 with --alpha {alpha:g} ({first_line(exc)}); "
            "a weights file is made for one alpha: pass the --alpha it was made for "
            "(or the file holds another network's weights)"
        ) from exc
    except Exception as exc:  # the download: URLError, HTTPError, OSError, ...
        if source != "imagenet":
            raise SightwireError(f"cannot load weights from {weights}: {exc}") from exc
        raise SightwireError(
            f"could not download the ImageNet weights ({type(exc).__name__}: {exc}); "
            "pass --weights PATH to a local MobileNetV2 no-top .weights.h5 file"
        ) from exc


def first_line(exc: Exception, limit: int = 160) -> str:
    """Keras' load errors list every layer's weights: the first sentence says it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def tap_start(backbone: keras.Model, block: int = TAP_BLOCK) -> int:
    """Layer index of the first multi-scale tap (the start of ``block``)."""
    return block_starts(backbone)[block - 1]


def tap_tensors(backbone: keras.Model, block: int) -> list[keras.KerasTensor]:
    """The input of ``block``, of every later block and of the last 1x1 conv."""
    first = tap_start(backbone, block)
    taps = [backbone.layers[i].input for i in block_starts(backbone) if i >= first]
    taps.append(backbone.get_layer("Conv_1").input)
    return taps


def pooled_features(
    backbone: keras.Model, multiscale: bool, max_pool: bool = False
) -> keras.KerasTensor:
    """What the head reads, one vector (``pooled_parts`` joined); the backbone's own
    1280 features are its last columns."""
    parts = pooled_parts(backbone, multiscale, max_pool)
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="with_max")(parts)


def pooled_parts(
    backbone: keras.Model, multiscale: bool, max_pool: bool = False
) -> list[keras.KerasTensor]:
    """What the head reads, in parts: the backbone's pooled output; or with
    ``multiscale`` the pooled input of block ``TAP_BLOCK``, of every later block and of
    the last 1x1 conv, concatenated before it; with ``max_pool`` first one part per tap
    for its spatial maximum, from the input of block ``MAX_TAP_BLOCK`` up to the input of
    the last 1x1 conv (the maximum of that conv's own 1280 outputs was the noisiest part
    in int8 and is left out: int8 fell 2 points under float on a split with it).

    Why maxima: a defect a few pixels wide lights up a few cells of a 14x14 map, and an
    average over all 196 cells dilutes it into the texture around it; the maximum keeps
    it whole. Why parts: int8 makes every input of a concatenation share one scale, and
    the converter carries that scale back through REDUCE_MAX into the backbone's own
    maps, so one joined vector of maxima (up to ~35) and averages (up to ~6) coarsened
    every tap to a third of its resolution. ``assemble`` gives each part its own head.
    """
    if not multiscale:
        return [backbone.output]
    pooled = [
        keras.layers.GlobalAveragePooling2D(name=f"tap_{i}_pool")(t)
        for i, t in enumerate(tap_tensors(backbone, TAP_BLOCK))
    ]
    # Two concatenations, not one of six inputs: XNNPACK takes a concatenation of at most
    # five, and a sixth split the int8 model into two delegated parts with the
    # concatenation run outside them, between. The same values, in the same order.
    joined = keras.layers.Concatenate(name="taps")(pooled)
    averages = keras.layers.Concatenate(name="multiscale")([joined, backbone.output])
    if not max_pool:
        return [averages]
    maps = tap_tensors(backbone, MAX_TAP_BLOCK)
    return [*(max_pooled(t, f"tap_{i}_max") for i, t in enumerate(maps)), averages]


def max_pooled(tensor: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Spatial maximum: one REDUCE_MAX, which XNNPACK and the Edge TPU (runtime 14+) both
    run. A full-size MaxPooling2D would need a reshape after it that TFLite turns into
    shape arithmetic, splitting the int8 graph into two XNNPACK parts."""
    return keras.layers.GlobalMaxPooling2D(name=name)(tensor)


def cache_cut(backbone: keras.Model, cut: int, multiscale: bool, max_pool: bool = False) -> int:
    """Where features are cached: the fine-tuning cut, or lower to reach every tap."""
    if not multiscale:
        return cut
    return min(cut, tap_start(backbone, MAX_TAP_BLOCK if max_pool else TAP_BLOCK))


def split_backbone(
    backbone: keras.Model, cache: int, multiscale: bool = False, max_pool: bool = False
) -> tuple[keras.Model, keras.Model]:
    """(bottom, top): bottom maps images to the cached tensor, top maps it to what the
    head reads. Layers of ``top`` below the fine-tuning cut stay frozen (``set_trainable_top``).
    """
    cut_tensor = backbone.layers[cache].input
    bottom = keras.Model(backbone.input, cut_tensor, name="frozen_bottom")
    features = pooled_features(backbone, multiscale, max_pool)
    top = keras.Model(cut_tensor, features, name="trainable_top")
    return bottom, top


def feature_extractor(
    backbone: keras.Model, cache: int, multiscale: bool = False, max_pool: bool = False
) -> keras.Model:
    """Normalized image → [cached tensor, pooled features], in one forward pass."""
    features = pooled_features(backbone, multiscale, max_pool)
    return keras.Model(backbone.input, [backbone.layers[cache].input, features])


def make_head(n_classes: int, dropout: float, name: str = "head") -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Dropout(dropout),
            keras.layers.Dense(n_classes, activation="softmax", name="probs"),
        ],
        name=name,
    )


def set_trainable_top(
    top: keras.Model,
    trainable: bool,
    batch_norm: bool = False,
    frozen: Collection[keras.layers.Layer] = (),
) -> None:
    """Unfreeze the top part, keeping every BatchNormalization in inference mode.

    The shared weights have batch norm folded into the convolutions; even with real
    statistics, re-estimating them on a few dozen photos per class would wreck them.
    (Keras 3 runs a BatchNormalization layer with ``trainable=False`` in inference mode.)
    ``batch_norm=True`` is only for a network trained from scratch: its statistics must
    be learned, fast (momentum 0.9), as a random network's activations vanish without.
    ``frozen`` layers stay frozen: the blocks between the cache and the fine-tuning cut,
    which the multi-scale taps need but fine-tuning does not touch.
    """
    top.trainable = trainable
    frozen_ids = {id(layer) for layer in frozen}
    for layer in top.layers:
        if id(layer) in frozen_ids:
            layer.trainable = False
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable and batch_norm
            if batch_norm:
                layer.momentum = 0.9


def assemble(
    backbone: keras.Model, head: keras.Model, multiscale: bool = False, max_pool: bool = False
) -> keras.Model:
    """The exported network: normalized image in [-1, 1] → class probabilities."""
    parts = pooled_parts(backbone, multiscale, max_pool)
    inputs = keras.Input(backbone.input.shape[1:], name="image")
    if len(parts) == 1:
        features = keras.Model(backbone.input, parts[0], name="backbone")
        outputs = head(features(inputs, training=False), training=False)
    else:
        features = keras.Model(backbone.input, parts, name="backbone")
        outputs = split_head(head, list(features(inputs, training=False)))
    return keras.Model(inputs, outputs, name="sightwire_classifier")


def split_head(head: keras.Model, parts: list[keras.KerasTensor]) -> keras.KerasTensor:
    """The trained head as one dense layer per part of its input, logits added, then
    softmax: the same function as the head on the joined parts (its kernel cut by rows),
    but each part keeps its own int8 scale (``pooled_parts``). The bias sits on the last
    part's layer, the one ``trainer.int8_bias`` corrects."""
    kernel, bias = head.get_layer("probs").get_weights()
    logits, start = [], 0
    for k, part in enumerate(parts):
        width, last = int(part.shape[-1]), k == len(parts) - 1
        dense = keras.layers.Dense(kernel.shape[1], use_bias=last, name=f"logits_{k}")
        logits.append(dense(part))
        dense.set_weights([kernel[start : start + width], *([bias] if last else [])])
        start += width
    summed = keras.layers.Add(name="logits")(logits)
    return keras.layers.Activation("softmax", name="probs")(summed)
