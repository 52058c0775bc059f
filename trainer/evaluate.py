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
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from device.bundle import Bundle
from device.errors import SightwireError
from device.labelled import (
    Scored,
    agreement,
    check_classes,
    classify_files,
    list_labelled,
    open_classifiers,
)
from trainer.console import bar
from trainer.plotting import quiet_missing_glyphs, short_label


def metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion matrix."""
    k = len(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(k), zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=range(k))
    return {
        "n": len(y_true),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "balanced_accuracy": balanced_accuracy(matrix),
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        },
        "confusion_matrix": matrix.tolist(),
    }


def balanced_accuracy(matrix: np.ndarray) -> float:
    """The mean recall over the classes that have photos (rows of the confusion matrix,
    true x predicted): ``sklearn.metrics.balanced_accuracy_score``'s figure, without its
    warning when the models predict a class the folder has no photos of."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def _default_variants(bundle: Bundle, variants: Sequence[str] | None) -> list[str]:
    return list(variants or [v for v in ("float", "int8") if v in bundle.models])


def _score(
    bundle: Bundle,
    paths: Sequence[Path],
    class_names: Sequence[str],
    variants: Sequence[str] | None,
    threads: int | None,
    show_progress: bool,
    skip_unreadable: bool,
) -> Scored:
    """Every variant on every file, through ``device.labelled`` (the code ``bench`` uses)."""
    check_classes(class_names, bundle.labels)
    chosen = _default_variants(bundle, variants)
    classifiers = open_classifiers(bundle, chosen, threads)
    with bar(f"evaluating {', '.join(chosen)}", len(paths), show_progress) as advance:
        return classify_files(
            classifiers, paths, class_names, skip_unreadable=skip_unreadable, advance=advance
        )


def results_of(scored: Scored, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Metrics per variant, with each file's prediction and top score, and int8's
    agreement with float (the same figure ``bench --data`` records)."""
    y_true = scored.truth(labels)
    results: dict[str, dict[str, Any]] = {}
    for variant, predictions in scored.predictions.items():
        results[variant] = metrics(y_true, np.array(predictions, dtype=np.int64), labels)
        results[variant]["predictions"] = list(predictions)
        scores = np.array(scored.scores[variant], dtype=np.float32)
        results[variant]["scores"] = scores.round(4).tolist()
    if "float" in results and "int8" in results:
        results["int8"]["agreement_with_float"] = agreement(
            scored.predictions["float"], scored.predictions["int8"]
        )
    return results


def evaluate_bundle(
    bundle: Bundle,
    paths: Sequence[Path],
    class_names: Sequence[str],
    variants: Sequence[str] | None = None,
    threads: int | None = None,
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Metrics per model variant on labelled files (``class_names[i]`` is file i's class).

    The files were checked by a dataset scan: one that does not decode now raises.
    """
    scored = _score(bundle, paths, class_names, variants, threads, show_progress, False)
    return results_of(scored, bundle.labels)


def evaluate_folder(
    bundle: Bundle,
    data: Path,
    variants: Sequence[str] | None = None,
    threads: int | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], Scored]:
    """Metrics per variant on a labelled folder ``data/<class>/*`` read as ``bench --data``
    reads it; files that do not decode are left out and listed in ``Scored.unreadable``."""
    paths, names = list_labelled(data)
    scored = _score(bundle, paths, names, variants, threads, show_progress, True)
    if not scored.files:
        raise SightwireError(f"{Path(data).expanduser()}: none of the images can be decoded")
    return results_of(scored, bundle.labels), scored


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str) -> Any:
    """A confusion-matrix figure (counts, true rows x predicted columns) whose margins fit
    its labels: names over ``LABEL_CHARS`` characters shortened with an ellipsis, the
    figure the matrix plus the room its longest label, the axis titles and the title take.
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    side = max(2.5, 0.55 * len(labels))  # the matrix, inches a side
    fig = Figure(figsize=(side + 4, side + 4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ConfusionMatrixDisplay(np.array(matrix), display_labels=[short_label(x) for x in labels]).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45
    )
    for tick in ax.get_xticklabels():  # each name ends under its column
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    ax.set_title(textwrap.fill(title, 60))
    pad = 0.15
    for _ in range(2):  # measured as drawn; the second pass settles the rotated names
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
        with quiet_missing_glyphs():
            canvas.draw()
        inner, outer = ax.get_window_extent(), ax.get_tightbbox(canvas.get_renderer())
        dpi = fig.dpi
        left, right = (inner.x0 - outer.x0) / dpi + pad, (outer.x1 - inner.x1) / dpi + pad
        bottom, top = (inner.y0 - outer.y0) / dpi + pad, (outer.y1 - inner.y1) / dpi + pad
        width, height = left + side + right, bottom + side + top
        fig.set_size_inches(width, height)
        fig.subplots_adjust(
            left=left / width,
            right=1 - right / width,
            bottom=bottom / height,
            top=1 - top / height,
        )
    return fig


def confusion_png(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    """``confusion_figure`` as a PNG file (a glyph its font lacks is drawn as a box,
    without a warning: the class's name is whole in the report beside it)."""
    with quiet_missing_glyphs():
        confusion_figure(matrix, labels, title).savefig(path, dpi=100)
