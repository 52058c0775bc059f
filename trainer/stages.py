"""The two training stages, on cached backbone features.

Stage 1 trains the classification head on frozen features; stage 2 fine-tunes the top
of the backbone with the head, and is kept only if it lowers the validation loss
(``trainer.fit``). Every caller trains through ``fit_stages``: the final model, each
search trial (``trainer.search``) and each cross-validation fold (``trainer.crossval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from trainer.console import console
from trainer.fit import FitConfig, History, fine_tune, train_head
from trainer.model import split_backbone
from trainer.options import Stopwatch
from trainer.prepare import Prepared


@dataclass
class Trained:
    """A trained head and its validation figures; the fine-tuned backbone is in
    ``prep.backbone`` (its weights change in place)."""

    head: keras.Sequential
    cut: int
    kept_fine_tune: bool
    history: History
    val_probs: np.ndarray
    val_loss: float
    val_accuracy: float


def fit_stages(
    prep: Prepared,
    cfg: FitConfig,
    cut: int,
    views: int,
    train_items: np.ndarray | None = None,
    val_items: np.ndarray | None = None,
    quiet: bool = False,
) -> Trained:
    """Stage 1 then stage 2 from the pretrained backbone, on cached features.

    Stage 2 trains the layers from ``cut`` up; those between the cache and the cut run
    frozen. ``train_items``/``val_items`` select images of the train split
    (cross-validation); by default the train and validation splits are used.
    """
    prep.backbone.set_weights(prep.pretrained)
    _, top = split_backbone(prep.backbone, prep.base_cut, prep.multiscale, prep.max_pool)
    frozen = prep.backbone.layers[prep.base_cut : cut]
    feats = prep.feats
    train, y_train = feats["train"].with_views(views), prep.y["train"]
    val, y_val = feats["val"], prep.y["val"]
    if train_items is not None and val_items is not None:
        val = feats["train"].first_view().take(val_items)
        y_val = prep.y["train"][val_items]
        train, y_train = train.take(train_items), y_train[train_items]
    history = History()
    verbose = 0 if quiet else None
    if not quiet:
        console.print(f"[bold]stage 1[/]: head on frozen features ({train.pooled.shape})")
    head = train_head(train, y_train, val, y_val, prep.n_classes, cfg, history, verbose=verbose)
    if not quiet:
        stage1 = history.stages["head"]
        lr = stage1.get("logistic_regression")
        console.print(
            f"stage 1: {len(stage1['loss'])} epochs, best val loss {min(stage1['val_loss']):.4f}"
            + (f"; logistic regression (C={lr[0]:g}) was better: {lr[1]:.4f}" if lr else "")
        )
    if not quiet:
        console.print(
            f"[bold]stage 2[/]: fine-tune the last {len(prep.backbone.layers) - cut} backbone "
            f"layers (from {prep.backbone.layers[cut].name}) at lr {cfg.fine_tune_lr:g}"
        )
    kept = fine_tune(
        top,
        head,
        train,
        y_train,
        val,
        y_val,
        prep.n_classes,
        cfg,
        history,
        verbose=verbose,
        train_batch_norm=prep.scratch,
        frozen=frozen,
    )
    probs = (
        np.concatenate(
            [
                keras.ops.convert_to_numpy(head(top(val.cut[i : i + 128]), training=False))
                for i in range(0, max(len(val.cut), 1), 128)
            ]
        )
        if len(val.cut)
        else np.zeros((0, prep.n_classes), np.float32)
    )
    loss = (
        float(keras.losses.sparse_categorical_crossentropy(y_val, probs).numpy().mean())
        if len(y_val)
        else float("nan")
    )
    acc = float(np.mean(probs.argmax(1) == y_val)) if len(y_val) else float("nan")
    return Trained(head, cut, kept, history, probs, loss, acc)


def stage1_speedup(prep: Prepared, result: Trained, watch: Stopwatch) -> dict[str, Any]:
    """Cached-feature stage 1 against the same epochs run end to end through the backbone.

    End to end, every epoch would push every training view through the whole frozen
    backbone; the estimate uses the backbone throughput measured while caching.
    """
    feats = prep.feats
    passes = sum(len(f.pooled) for f in feats.values())
    rate = passes / max(watch.phases.get("backbone_features", 0.0), 1e-9)
    epochs = len(result.history.stages.get("head", {}).get("loss", []))
    per_epoch = len(feats["train"].pooled)
    end_to_end = epochs * per_epoch / rate
    cached = watch.phases.get("backbone_features", 0.0) + watch.phases.get("final_training", 0.0)
    return {
        "backbone_images_per_s": round(rate, 1),
        "stage1_epochs": epochs,
        "stage1_end_to_end_estimate_s": round(end_to_end, 1),
        "features_plus_training_s": round(cached, 1),
        "speedup": round(end_to_end / cached, 1) if cached else None,
    }
