"""The head's pooling chosen on validation (``trainer.pooling``): maxima are kept where
they carry what the classes differ by, dropped where they only add inputs, and dropping
them leaves exactly the averages-only features."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from trainer.features import Features
from trainer.model import cache_cut, feature_extractor, load_backbone
from trainer.pooling import average_columns, settle_pooling, without_maxima
from trainer.prepare import Prepared


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(96, 0.35, "none")


def _prepared(backbone, signal_in: str, seed: int = 0) -> Prepared:
    """Cached features of a three-class problem whose labels show only in the maxima'
    columns or only in the averages' (the rest: noise of the same spread)."""
    rng = np.random.default_rng(seed)
    keep = average_columns(SimpleNamespace(backbone=backbone, multiscale=True))
    width = keep + 600  # 600 maxima columns in front of the averages, as pooled_parts
    y = {side: np.repeat(np.arange(3), n) for side, n in (("train", 40), ("val", 15))}
    feats = {}
    for side, labels in y.items():
        pooled = rng.normal(0, 1, (len(labels), width)).astype(np.float32)
        cols = slice(0, 8) if signal_in == "maxima" else slice(width - 8, width)
        pooled[:, cols] += 1.2 * np.eye(3)[labels].repeat(3, axis=1)[:, :8]
        feats[side] = Features(np.zeros((len(labels), 1), np.float32), pooled, 1)
    feats["test"] = feats["val"]
    y["test"] = y["val"]
    ds = SimpleNamespace(classes=["a", "b", "c"])
    return Prepared(ds, {}, {}, y, None, backbone, False, True, True, 0, feats, [])


def test_maxima_are_kept_where_the_classes_differ_only_in_them(backbone):
    prep, choice = settle_pooling(_prepared(backbone, "maxima"), None, 0)
    assert choice.max_pool and prep.max_pool and choice.chosen_by == "validation"
    assert choice.val_loss["averages+maxima"] < 0.95 * choice.val_loss["averages"]
    assert "chosen on validation" in choice.line() and "--no-max-pool" in choice.line()


def test_maxima_are_dropped_where_they_only_add_inputs(backbone):
    prep, choice = settle_pooling(_prepared(backbone, "averages"), None, 0)
    assert not choice.max_pool and not prep.max_pool
    assert prep.feats["train"].pooled.shape[1] == average_columns(prep)
    assert "--max-pool to overrule" in choice.line()


def test_the_option_overrules_validation(backbone):
    prep, choice = settle_pooling(_prepared(backbone, "averages"), True, 0)
    assert prep.max_pool and choice.max_pool and choice.chosen_by == "--max-pool"
    assert choice.val_loss is None


def test_a_validation_split_of_one_class_cannot_choose(backbone):
    prep = _prepared(backbone, "maxima")
    prep.y["val"] = np.zeros_like(prep.y["val"])
    prep, choice = settle_pooling(prep, None, 0)
    assert not prep.max_pool and choice.chosen_by.startswith("default")


def test_dropping_the_maxima_leaves_the_averages_only_features(backbone):
    """The columns kept are the ones an averages-only network computes, in its order."""
    images = np.random.default_rng(1).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    cache = cache_cut(backbone, len(backbone.layers) - 1, True, True)
    _, both = feature_extractor(backbone, cache, True, True).predict_on_batch(images)
    _, plain = feature_extractor(backbone, cache, True, False).predict_on_batch(images)
    feats = {"train": Features(np.zeros((2, 1), np.float32), both, 1)}
    prep = Prepared(
        SimpleNamespace(classes=["a", "b"]), {}, {}, {}, None, backbone, False, True, True,
        cache, feats, [],
    )  # fmt: skip
    assert both.shape[1] > plain.shape[1]
    np.testing.assert_array_equal(without_maxima(prep).feats["train"].pooled, plain)
