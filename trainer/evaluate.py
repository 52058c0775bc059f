"""Evaluate exported models with the device's own code, on image files.

Nothing here touches Keras: each image is decoded, fitted and quantized by
``device.classifier.Classifier`` exactly as on the Pi, so the accuracy in the report is
the accuracy of what runs on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from device.bundle import Bundle
from device.classifier import Classifier
from device.errors import SightwireError
from device.preprocess import load_image
from trainer.progress import bar


def predict_files(clf: Classifier, paths: Sequence[Path], show_progress: bool = True) -> np.ndarray:
    """Probabilities (N x classes) for image files, through the device's code path."""
    probs = np.zeros((len(paths), len(clf.labels)), dtype=np.float32)
    with bar(f"evaluating {clf.variant}", len(paths), show_progress) as advance:
        for i, path in enumerate(paths):
            probs[i] = clf.classify(load_image(path))
            advance()
    return probs


def metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion matrix."""
    y_pred = probs.argmax(axis=1)
    k = len(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(k), zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=range(k)).tolist(),
    }


def evaluate_bundle(
    bundle: Bundle,
    paths: Sequence[Path],
    class_names: Sequence[str],
    variants: Sequence[str] | None = None,
    threads: int | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Metrics per model variant on labelled files (``class_names[i]`` is file i's class)."""
    index = {name: i for i, name in enumerate(bundle.labels)}
    unknown = sorted(set(class_names) - set(index))
    if unknown:
        raise SightwireError(
            f"classes not in the bundle's labels: {', '.join(unknown)} "
            f"(bundle knows: {', '.join(bundle.labels)})"
        )
    y_true = np.array([index[c] for c in class_names], dtype=np.int64)
    results: dict[str, dict[str, Any]] = {}
    for variant in variants or [v for v in ("float", "int8") if v in bundle.models]:
        clf = Classifier.open(bundle, variant, threads)
        probs = predict_files(clf, paths, show_progress)
        results[variant] = metrics(y_true, probs, bundle.labels)
        results[variant]["predictions"] = probs.argmax(axis=1).tolist()
        results[variant]["scores"] = probs.max(axis=1).round(4).tolist()
    if "float" in results and "int8" in results:
        agree = np.mean(
            np.array(results["float"]["predictions"]) == np.array(results["int8"]["predictions"])
        )
        results["int8"]["agreement_with_float"] = float(agree)
    return results


def confusion_png(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    """A confusion-matrix picture (counts, true rows x predicted columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=labels).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
