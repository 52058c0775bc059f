"""Everything a run computes once: scan, split, decode, and the frozen backbone's features.

Training then works on cached features only (``trainer.stages``), so stage 1, every
search trial and every cross-validation fold cost seconds, not a backbone pass each.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import keras
import numpy as np

from device.preprocess import InputSpec
from trainer.dataset import Dataset, load_arrays, scan
from trainer.duplicates import copy_groups
from trainer.features import Features, augmenter, extract
from trainer.image_set import ImageSet, collect
from trainer.model import cache_cut, cut_index, feature_extractor, load_backbone
from trainer.options import Stopwatch, TrainOptions
from trainer.split import split
from trainer.tables import print_dataset


@dataclass
class Prepared:
    """Everything computed once per run: data, backbone, cached features."""

    ds: Dataset
    parts: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    spec: InputSpec
    backbone: keras.Model
    scratch: bool
    multiscale: bool
    max_pool: bool  # the head also reads the taps' spatial maximum (trainer.pooling)
    base_cut: int  # the layer whose input is cached: no fine-tuning cut or tap is below it
    feats: dict[str, Features]  # split -> features at base_cut
    pretrained: list[np.ndarray]  # backbone weights before any fine-tuning
    images: ImageSet | None = None  # the small copies made for the split (the doctor reuses them)

    @property
    def n_classes(self) -> int:
        return len(self.ds.classes)

    def last_layer(self) -> dict[str, np.ndarray]:
        """The backbone's own pooled features per split (the last columns of the taps):
        what a plain frozen-backbone classifier reads."""
        dim = int(self.backbone.output.shape[-1])
        return {side: f.pooled[:, -dim:] for side, f in self.feats.items()}


def prepare(opts: TrainOptions, watch: Stopwatch, cuts: list[int] | None = None) -> Prepared:
    """Scan, split, decode, and run the frozen backbone once per image and view.

    ``cuts``: the fine-tuning cuts a search may pick; the features are cached below the
    deepest of them.
    """
    spec = InputSpec(opts.input_size, opts.input_size, resize=opts.resize, crop=opts.crop)
    ds = scan(opts.data, opts.min_per_class, spec, opts.show_progress)
    # Near-duplicates by pixels (no network needed) before the split, so that copies of a
    # photo never land on both sides of it.
    # The groups are found on Pillow-bilinear pixels whatever the resize: the split of a
    # seed is then the same for every resize (trainer.study compares them on it).
    canonical = None if spec.resize == "bilinear" else replace(spec, resize="bilinear")
    images = collect(ds, show_progress=False, canonical=canonical)
    groups = copy_groups(ds, images.small)
    if opts.baseline:  # the old bundle's sides are kept, so both are tested fairly
        from trainer.resplit import split_after

        parts = split_after(
            ds, opts.baseline, opts.val_fraction, opts.test_fraction, opts.fit.seed, groups
        )
    else:
        parts = split(ds, opts.val_fraction, opts.test_fraction, opts.fit.seed, groups=groups)
    print_dataset(ds, parts)
    x = {side: load_arrays(ds, idx, spec) for side, idx in parts.items()}
    y = {side: ds.labels[idx] for side, idx in parts.items()}
    watch.lap("read_images")

    backbone = load_backbone(opts.input_size, opts.alpha, opts.weights)
    scratch = opts.weights.lower() == "none"
    # Maxima are cached when asked for, and when validation is to choose (trainer.pooling).
    max_pool = opts.multiscale and (opts.max_pool or (opts.max_pool is None and not scratch))
    if scratch:
        # Random frozen features are worthless (they vanish with depth): train all but
        # the stem, with batch norm learning, and let validation pick the best epoch.
        # A small network from scratch grows over-confident (validation loss rises)
        # while it still learns (validation accuracy rises): watch the accuracy.
        opts.fit.fine_tune_patience = opts.fit.fine_tune_epochs
        opts.fit.monitor = "val_accuracy"
        base = cut_index(backbone, len(backbone.layers))
    else:
        base = cache_cut(
            backbone,
            min(cuts or [cut_index(backbone, opts.fine_tune_layers)]),
            opts.multiscale,
            max_pool,
        )
    extractor = feature_extractor(backbone, base, opts.multiscale, max_pool)
    aug = augmenter(opts.augment_strength, opts.fit.seed, opts.vertical_flip)
    show = opts.show_progress
    feats = {
        "train": extract(
            extractor,
            x["train"],
            1 + opts.augment_copies,
            aug,
            label="backbone features: train",
            show_progress=show,
        ),
        "val": extract(extractor, x["val"], label="backbone features: val", show_progress=show),
        "test": extract(extractor, x["test"], label="backbone features: test", show_progress=show),
    }
    watch.lap("backbone_features")
    return Prepared(
        ds,
        parts,
        x,
        y,
        spec,
        backbone,
        scratch,
        opts.multiscale,
        max_pool,
        base,
        feats,
        backbone.get_weights(),
        images,
    )
