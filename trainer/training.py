"""``train``: from a folder of photos to a verified bundle, one step after another.

scan + check → split → fit images to the model size → backbone features (once per
view) → linear baseline → stage 1 (head) → stage 2 (fine-tune) → export float + int8 →
evaluate both with the device runtime → manifest, metrics, confusion matrices.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from device.bundle import load_bundle
from device.preprocess import InputSpec
from trainer import dataset as dsmod
from trainer.evaluate import confusion_png, evaluate_bundle
from trainer.export import (
    KERAS_FILE,
    clear_bundle,
    representative_indices,
    save_manifest,
    to_float_tflite,
    to_int8_tflite,
    write_bundle,
)
from trainer.features import Features, augmenter, extract
from trainer.fit import FitConfig, History, fine_tune, train_head
from trainer.model import assemble, cut_index, feature_extractor, load_backbone, split_backbone
from trainer.progress import console


@dataclass
class TrainOptions:
    data: Path
    out: Path
    name: str | None = None
    input_size: int = 224
    alpha: float = 1.0
    weights: str = "imagenet"
    fine_tune_layers: int = 20
    augment_copies: int = 3
    augment_strength: float = 1.0
    vertical_flip: bool = False
    crop: str = "none"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_per_class: int = 5
    representative_count: int = 300
    threads: int | None = None
    show_progress: bool = True
    fit: FitConfig = field(default_factory=FitConfig)


class Stopwatch:
    """Wall time of each phase, reported so users see where the minutes go."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(now - self._t, 2)
        self._t = now


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run the whole chain; returns the written manifest."""
    keras.utils.set_random_seed(opts.fit.seed)
    watch = Stopwatch()
    spec = InputSpec(width=opts.input_size, height=opts.input_size, crop=opts.crop)
    ds = dsmod.scan(opts.data, opts.min_per_class, spec, opts.show_progress)
    parts = dsmod.split(ds, opts.val_fraction, opts.test_fraction, opts.fit.seed)
    print_dataset(ds, parts)
    x = {side: dsmod.load_arrays(ds, idx, spec) for side, idx in parts.items()}
    y = {side: ds.labels[idx] for side, idx in parts.items()}
    watch.lap("read_images")

    backbone = load_backbone(opts.input_size, opts.alpha, opts.weights)
    scratch = opts.weights.lower() == "none"
    if scratch:
        # Random frozen features are worthless (they vanish with depth): train all but
        # the stem, with batch norm learning, and let validation pick the best epoch.
        # A small network from scratch grows over-confident (validation loss rises)
        # while it still learns (validation accuracy rises): watch the accuracy.
        opts.fit.fine_tune_patience = opts.fit.fine_tune_epochs
        opts.fit.monitor = "val_accuracy"
    cut = cut_index(backbone, len(backbone.layers) if scratch else opts.fine_tune_layers)
    _, top = split_backbone(backbone, cut)
    extractor = feature_extractor(backbone, cut)
    aug = augmenter(opts.augment_strength, opts.fit.seed, opts.vertical_flip)
    feats: dict[str, Features] = {
        "train": extract(
            extractor,
            x["train"],
            1 + opts.augment_copies,
            aug,
            label="backbone features: train",
            show_progress=opts.show_progress,
        ),
        "val": extract(
            extractor, x["val"], label="backbone features: val", show_progress=opts.show_progress
        ),
        "test": extract(
            extractor, x["test"], label="backbone features: test", show_progress=opts.show_progress
        ),
    }
    watch.lap("backbone_features")
    baseline = linear_baseline(feats, y, opts.fit.seed)
    watch.lap("linear_baseline")

    history = History()
    n_classes = len(ds.classes)
    console.print(f"[bold]stage 1[/]: head on frozen features ({feats['train'].pooled.shape})")
    head = train_head(
        feats["train"], y["train"], feats["val"], y["val"], n_classes, opts.fit, history
    )
    watch.lap("stage1_head")
    console.print(
        f"[bold]stage 2[/]: fine-tune the last {len(backbone.layers) - cut} backbone layers "
        f"(from {backbone.layers[cut].name}) at lr {opts.fit.fine_tune_lr:g}"
    )
    kept = fine_tune(
        top,
        head,
        feats["train"],
        y["train"],
        feats["val"],
        y["val"],
        n_classes,
        opts.fit,
        history,
        train_batch_norm=scratch,
    )
    watch.lap("stage2_fine_tune")
    if opts.fit.fine_tune_epochs > 0 and not kept:
        console.print("[yellow]fine-tuning did not lower the validation loss: kept stage 1[/]")

    model = assemble(backbone, head)
    opts.out.mkdir(parents=True, exist_ok=True)
    clear_bundle(opts.out)
    model.save(opts.out / KERAS_FILE)
    rep = x["train"][representative_indices(y["train"], opts.representative_count, 0)]
    console.print(f"exporting float and int8 TFLite ({len(rep)} representative images)")
    models = {"float": to_float_tflite(model), "int8": to_int8_tflite(model, rep, spec)}
    watch.lap("export")
    manifest = write_bundle(
        opts.out,
        opts.name or Path(opts.data).resolve().name,
        ds.classes,
        spec,
        models,
        extra={
            "trainer": {
                "version": manifest_version(),
                "backbone": "mobilenet_v2",
                "alpha": opts.alpha,
                "weights": opts.weights if opts.weights in ("imagenet", "none") else "file",
                "fine_tune_from": backbone.layers[cut].name,
                "fit": opts.fit.to_dict(),
                "augment_copies": opts.augment_copies,
            },
            "split": "report/split.json",
        },
    )
    report = finish_report(opts, ds, parts, manifest, history, baseline, watch)
    print_results(report)
    return manifest


def manifest_version() -> str:
    from trainer import __version__

    return __version__


def linear_baseline(feats: dict[str, Features], y: dict[str, np.ndarray], seed: int) -> dict:
    """What Teachable Machine does: logistic regression on frozen pooled features.

    The regularization is picked on the validation split; the fine-tuned model must
    beat this figure on the same test split to have earned its time.
    """
    best = None
    train, val = feats["train"].first_view().pooled, feats["val"].pooled
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit(train, y["train"])
        score = clf.score(val, y["val"]) if len(y["val"]) else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    test_acc = best[2].score(feats["test"].pooled, y["test"]) if len(y["test"]) else None
    return {
        "C": best[1],
        "val_accuracy": float(best[0]),
        "test_accuracy": None if test_acc is None else float(test_acc),
    }


def finish_report(
    opts: TrainOptions,
    ds: dsmod.Dataset,
    parts: dict[str, np.ndarray],
    manifest: dict[str, Any],
    history: History,
    baseline: dict,
    watch: Stopwatch,
) -> dict[str, Any]:
    """Evaluate the exported models on the test split and write report/ + manifest."""
    report_dir = opts.out / "report"
    report_dir.mkdir(exist_ok=True)
    dsmod.write_split(ds, parts, report_dir / "split.json", opts.fit.seed)
    test_idx = parts["test"] if len(parts["test"]) else parts["val"]
    paths = [ds.items[i].path for i in test_idx]
    names = [ds.classes[ds.items[i].label] for i in test_idx]
    results = evaluate_bundle(
        load_bundle(opts.out), paths, names, threads=opts.threads, show_progress=opts.show_progress
    )
    watch.lap("evaluate")
    for variant, res in results.items():
        confusion_png(
            res["confusion_matrix"],
            ds.classes,
            f"{variant} model, test split (n={res['n']})",
            report_dir / f"confusion_{variant}.png",
        )
    report = {
        "dataset": {
            "root": str(ds.root),
            "counts": ds.counts(),
            "unreadable": [[str(p), why] for p, why in ds.unreadable],
            "ignored": [str(p) for p in ds.ignored],
            "cross_class_duplicates": [[str(p) for p in g] for g in ds.cross_class_duplicates],
            "user_split": ds.user_split,
        },
        "split": {side: len(idx) for side, idx in parts.items()},
        "evaluated_on": "test" if len(parts["test"]) else "val",
        "test": results,
        "test_files": [ds.relative(ds.items[i]) for i in test_idx],
        "baseline_linear_head": baseline,
        "history": history.stages,
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "fit"
        },
        "timings_s": watch.phases,
    }
    (report_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    manifest["metrics"] = {
        "test_accuracy": {v: round(r["accuracy"], 4) for v, r in results.items()},
        "test_balanced_accuracy": {v: round(r["balanced_accuracy"], 4) for v, r in results.items()},
        "baseline_linear_head_test_accuracy": baseline["test_accuracy"],
        "train_seconds": round(sum(watch.phases.values()), 1),
    }
    save_manifest(opts.out, manifest)
    return report


def print_dataset(ds: dsmod.Dataset, parts: dict[str, np.ndarray]) -> None:
    table = Table(title=f"dataset {ds.root}")
    for col in ("class", "images", "train", "val", "test"):
        table.add_column(col, justify="right" if col != "class" else "left")
    labels = ds.labels
    for i, name in enumerate(ds.classes):
        row = [int(np.sum(labels[parts[s]] == i)) for s in ("train", "val", "test")]
        table.add_row(name, str(int(np.sum(labels == i))), *map(str, row))
    console.print(table)
    for path, why in ds.unreadable:
        console.print(f"[yellow]skipped unreadable image[/] {path}: {why}")
    if ds.ignored:
        shown = ", ".join(str(p.relative_to(ds.root)) for p in ds.ignored[:5])
        more = f" and {len(ds.ignored) - 5} more" if len(ds.ignored) > 5 else ""
        console.print(f"[yellow]ignored {len(ds.ignored)} non-image file(s)[/]: {shown}{more}")
    for group in ds.cross_class_duplicates:
        rel = ", ".join(str(p.relative_to(ds.root)) for p in group)
        console.print(f"[yellow]identical files in different classes[/]: {rel}")


def print_results(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['evaluated_on']} split results")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    table.add_column("balanced acc.", justify="right")
    table.add_column("worst class recall", justify="right")
    for variant, res in report["test"].items():
        worst = min(res["per_class"].items(), key=lambda kv: kv[1]["recall"])
        table.add_row(
            variant,
            f"{res['accuracy']:.2%}",
            f"{res['balanced_accuracy']:.2%}",
            f"{worst[0]} {worst[1]['recall']:.2f}",
        )
    base = report["baseline_linear_head"]["test_accuracy"]
    if base is not None:
        table.add_row("frozen linear head", f"{base:.2%}", "", "")
    console.print(table)
    t = report["timings_s"]
    console.print(
        "time: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in t.items())
        + f" (total {sum(t.values()):.0f}s)"
    )
