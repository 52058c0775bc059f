"""``train --search``: real KerasTuner trials on cached features, the best one exported.

Drawn shapes at 96x96 with the shared ImageNet weights (the convolution weights do not
depend on the input size): three short trials, about a minute on 2 cores. A second run
gives the search a deadline it passes during its first trial (``--search-minutes``) and
cross-validates the chosen settings (``--folds``), with one fine-tuning epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.classifier import Classifier
from device.images import load_image
from trainer.synthetic import make_dataset


@pytest.fixture(scope="module")
def searched(tmp_path_factory, imagenet_weights: Path) -> Path:
    root = tmp_path_factory.mktemp("search")
    data = make_dataset(root / "data", classes=3, per_class=30, size=64, seed=2)
    out = root / "bundle"
    args = [
        *("train", str(data), "--out", str(out), "--weights", str(imagenet_weights)),
        *("--input-size", "96", "--search", "3", "--head-epochs", "30"),
        *("--fine-tune-epochs", "3", "--augment-copies", "1", "--representative", "40"),
        "--no-progress",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_every_trial_is_recorded_and_the_lowest_validation_loss_wins(searched: Path):
    search = json.loads((searched / "report" / "metrics.json").read_text())["search"]
    trials = search["trials"]
    assert len(trials) == 3
    assert {"head_lr", "fine_tune_lr", "dropout", "fine_tune_blocks"} <= set(trials[0]["params"])
    best = min(trials, key=lambda t: t["val_loss"])
    assert search["best_trial"] == best["trial"]
    assert search["best"] == best["params"]


def test_the_first_trial_is_trains_own_settings(searched: Path):
    """So the search never ends worse on validation than plain ``train``: KerasTuner's
    first trial took each range's lower bound (lr 3e-4 and 1e-5, no dropout, one block)."""
    from trainer.model import cut_index, load_backbone
    from trainer.options import TrainOptions
    from trainer.search import FINE_TUNE_BLOCKS, candidate_cuts

    backbone = load_backbone(96, 1.0, "none")
    blocks = FINE_TUNE_BLOCKS[candidate_cuts(backbone).index(cut_index(backbone, 20))]
    defaults = TrainOptions(Path("d"), Path("o"))
    assert defaults.fine_tune_layers == 20
    first = json.loads((searched / "report" / "metrics.json").read_text())["search"]["trials"][0]
    assert first["params"] == {
        "head_lr": defaults.fit.head_lr,
        "dropout": defaults.fit.dropout,
        "fine_tune_lr": defaults.fit.fine_tune_lr,
        "fine_tune_blocks": blocks,
        "augment_views": 2,  # --augment-copies 1
    }


def test_the_exported_model_is_the_best_trial_itself(searched: Path):
    """Its validation accuracy through the device runtime is the one the trial scored
    (a retrained copy would drift: CPU training is not bit-reproducible)."""
    search = json.loads((searched / "report" / "metrics.json").read_text())["search"]
    best = search["trials"][search["best_trial"] - 1]
    split = json.loads((searched / "report" / "split.json").read_text())
    root = Path(split["dataset"])
    clf = Classifier.open(searched, "float")
    labels = clf.labels
    hits = [
        labels[int(np.argmax(clf.classify(load_image(root / rel))))] == name
        for rel, name in split["val"]
    ]
    assert len(hits) >= 10
    assert abs(np.mean(hits) - best["val_accuracy"]) <= 1 / len(hits) + 1e-9


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, imagenet_weights: Path) -> Path:
    """Up to 4 trials, but a deadline of 0.001 minutes; then 3-fold cross-validation."""
    root = tmp_path_factory.mktemp("bounded")
    data = make_dataset(root / "data", classes=3, per_class=30, size=64, seed=3)
    out = root / "bundle"
    args = [
        *("train", str(data), "--out", str(out), "--weights", str(imagenet_weights)),
        *("--input-size", "96", "--search", "4", "--search-minutes", "0.001"),
        *("--folds", "3", "--head-epochs", "30", "--fine-tune-epochs", "1"),
        *("--augment-copies", "1", "--representative", "40", "--no-progress"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow  # a second search run (~65 s of setup)
def test_search_minutes_lets_no_trial_start_after_the_deadline(bounded: Path):
    """The deadline (60 ms) passes during the first trial: that one is finished and
    kept, no second one starts, and its model is the one exported."""
    search = json.loads((bounded / "report" / "metrics.json").read_text())["search"]
    assert len(search["trials"]) == 1
    assert search["best_trial"] == 1 and search["best"] == search["trials"][0]["params"]
    assert search["trials"][0]["seconds"] > 0.06


@pytest.mark.slow  # a second search run (~65 s of setup)
def test_folds_cross_validate_the_training_split_and_record_each_fold(bounded: Path):
    metrics = json.loads((bounded / "report" / "metrics.json").read_text())
    cv = metrics["cross_validation"]
    assert cv["folds"] == 3 and len(cv["accuracy"]) == 3
    assert cv["mean"] == pytest.approx(np.mean(cv["accuracy"]))
    assert cv["std"] == pytest.approx(np.std(cv["accuracy"]))
    # ImageNet features tell drawn circles, squares and triangles apart (chance: 1/3).
    assert cv["mean"] > 0.6, cv
    html = (bounded / "report" / "index.html").read_text()
    assert "Cross-validation" in html and "3 folds" in html
