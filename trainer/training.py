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
from sklearn.metrics import balanced_accuracy_score

from device.bundle import load_bundle
from device.classifier import Classifier
from device.preprocess import InputSpec
from trainer import dataset as dsmod
from trainer import doctor
from trainer.calibrate import thresholds
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
from trainer.model import (
    assemble,
    cache_cut,
    cut_index,
    feature_extractor,
    load_backbone,
    split_backbone,
)
from trainer.progress import console
from trainer.report_html import write_report


@dataclass
class TrainOptions:
    data: Path
    out: Path
    name: str | None = None
    input_size: int = 224
    alpha: float = 1.0
    weights: str = "imagenet"
    fine_tune_layers: int = 20
    multiscale: bool = True
    augment_copies: int = 3
    augment_strength: float = 1.0
    vertical_flip: bool = False
    crop: str = "none"
    resize: str = "bilinear"  # Pillow; "area-bilinear" costs the device a tenth of the CPU
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_per_class: int = 5
    representative_count: int = 1000
    threads: int | None = None
    search_trials: int = 0
    search_minutes: float | None = None
    folds: int = 0
    target_precision: float = 0.95
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


@dataclass
class Prepared:
    """Everything computed once per run: data, backbone, cached features."""

    ds: dsmod.Dataset
    parts: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    spec: InputSpec
    backbone: keras.Model
    scratch: bool
    multiscale: bool
    base_cut: int  # the layer whose input is cached: no fine-tuning cut or tap is below it
    feats: dict[str, Features]  # split -> features at base_cut
    pretrained: list[np.ndarray]  # backbone weights before any fine-tuning
    pre_doctor: doctor.DoctorReport | None = None  # the pixel pass made before the split

    @property
    def n_classes(self) -> int:
        return len(self.ds.classes)

    def last_layer(self) -> dict[str, np.ndarray]:
        """The backbone's own pooled features per split (the last columns of the taps):
        what a plain frozen-backbone classifier reads."""
        dim = int(self.backbone.output.shape[-1])
        return {side: f.pooled[:, -dim:] for side, f in self.feats.items()}


@dataclass
class Trained:
    head: keras.Sequential
    cut: int
    kept_fine_tune: bool
    history: History
    val_probs: np.ndarray
    val_loss: float
    val_accuracy: float


def prepare(opts: TrainOptions, watch: Stopwatch, cuts: list[int] | None = None) -> Prepared:
    """Scan, split, decode, and run the frozen backbone once per image and view."""
    spec = InputSpec(opts.input_size, opts.input_size, resize=opts.resize, crop=opts.crop)
    ds = dsmod.scan(opts.data, opts.min_per_class, spec, opts.show_progress)
    # Near-duplicates by pixels (no network needed) before the split, so that copies of a
    # photo never land on both sides of it.
    pre = doctor.diagnose(ds, checks=("duplicates",), thumbnails=False)
    groups = dsmod.duplicate_groups(ds, extra=pre.near_duplicate_groups())
    parts = dsmod.split(ds, opts.val_fraction, opts.test_fraction, opts.fit.seed, groups=groups)
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
        base = cut_index(backbone, len(backbone.layers))
    else:
        base = cache_cut(
            backbone, min(cuts or [cut_index(backbone, opts.fine_tune_layers)]), opts.multiscale
        )
    extractor = feature_extractor(backbone, base, opts.multiscale)
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
        base,
        feats,
        backbone.get_weights(),
        pre,
    )


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
    _, top = split_backbone(prep.backbone, prep.base_cut, prep.multiscale)
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
    head = train_head(train, y_train, val, y_val, prep.n_classes, cfg, history, verbose=0)
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


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run the whole chain; returns the written manifest."""
    keras.utils.set_random_seed(opts.fit.seed)
    watch = Stopwatch()
    search_cuts = None
    if opts.search_trials:
        from trainer.search import candidate_cuts

        search_cuts = candidate_cuts(load_backbone(opts.input_size, opts.alpha, "none"))
    prep = prepare(opts, watch, search_cuts)
    baseline = linear_baseline(prep.last_layer(), prep.y, opts.fit.seed)
    watch.lap("linear_baseline")
    cfg, views = opts.fit, 1 + opts.augment_copies
    cut = prep.base_cut if prep.scratch else cut_index(prep.backbone, opts.fine_tune_layers)
    search_record, best = None, None
    if opts.search_trials:
        from trainer.search import run_search

        search_record, best = run_search(prep, opts, watch)
        cfg, cut, views = best.settings
    folds = cross_validate(prep, cfg, cut, views, opts.folds) if opts.folds > 1 else None
    if folds:
        watch.lap("cross_validation")
    if best is not None:
        result = best.trained  # the searched model itself (see trainer.search)
        prep.backbone.set_weights(best.backbone_weights)
    else:
        result = fit_stages(prep, cfg, cut, views)
        watch.lap("final_training")
    if cfg.fine_tune_epochs > 0 and not result.kept_fine_tune and not prep.scratch:
        console.print("[yellow]fine-tuning did not lower the validation loss: kept stage 1[/]")
    calibration = (
        thresholds(result.val_probs, prep.y["val"], prep.ds.classes, opts.target_precision)
        if len(prep.y["val"])
        else None
    )

    model = assemble(prep.backbone, result.head, prep.multiscale)
    opts.out.mkdir(parents=True, exist_ok=True)
    clear_bundle(opts.out)
    model.save(opts.out / KERAS_FILE)
    rep = prep.x["train"][representative_indices(prep.y["train"], opts.representative_count, 0)]
    console.print(f"exporting float and int8 TFLite ({len(rep)} representative images)")
    models = {"float": to_float_tflite(model), "int8": to_int8_tflite(model, rep, prep.spec)}
    watch.lap("export")
    extra: dict[str, Any] = {
        "trainer": {
            "version": manifest_version(),
            "backbone": "mobilenet_v2",
            "alpha": opts.alpha,
            "weights": opts.weights if opts.weights in ("imagenet", "none") else "file",
            "fine_tune_from": prep.backbone.layers[cut].name,
            "fine_tune_kept": result.kept_fine_tune,
            "multiscale": prep.multiscale,
            "fit": cfg.to_dict(),
            "augment_views": views,
        },
        "split": "report/split.json",
    }
    if calibration:
        extra["threshold"] = calibration["suggested_threshold"]
    manifest = write_bundle(
        opts.out,
        opts.name or Path(opts.data).resolve().name,
        prep.ds.classes,
        prep.spec,
        models,
        extra=extra,
    )
    sections = {
        "speed": stage1_speedup(prep, result, watch),
        "baseline_linear_head": baseline,
        "search": search_record,
        "cross_validation": folds,
        "calibration": calibration,
    }
    found = run_doctor(opts, prep)
    sections["doctor"] = {"worst": found.worst, "findings": [f.to_dict() for f in found.findings]}
    watch.lap("doctor")
    report = finish_report(opts, prep.ds, prep.parts, manifest, result.history, sections, watch)
    print_results(report)
    return manifest


def run_doctor(opts: TrainOptions, prep: Prepared) -> doctor.DoctorReport:
    """The data doctor on this run's data, features, split and exported int8 model."""
    pooled = None
    if not prep.scratch:  # random-backbone features say nothing about the photos
        pooled = doctor.item_order(prep.parts, prep.last_layer())
    found = doctor.diagnose(
        prep.ds,
        pooled,
        prep.parts,
        classifier=Classifier.open(opts.out, "int8", opts.threads),
        images=prep.pre_doctor.images if prep.pre_doctor else None,
        seed=opts.fit.seed,
        show_progress=opts.show_progress,
    )
    found.write(opts.out / "report" / "doctor.json")
    for line in found.summary_lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return found


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


def cross_validate(prep: Prepared, cfg: FitConfig, cut: int, views: int, k: int) -> dict[str, Any]:
    """K stratified folds over the training split (test untouched): mean and spread."""
    from sklearn.model_selection import StratifiedKFold

    y = prep.y["train"]
    k = max(2, min(k, int(np.bincount(y).min())))
    scores = []
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.seed)
    for i, (tr, te) in enumerate(folds.split(np.zeros(len(y)), y)):
        r = fit_stages(prep, cfg, cut, views, train_items=tr, val_items=te, quiet=True)
        scores.append(r.val_accuracy)
        console.print(f"fold {i + 1}/{k}: accuracy {r.val_accuracy:.2%}")
    record = {
        "folds": k,
        "accuracy": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
    }
    console.print(f"cross-validation: {record['mean']:.2%} ± {record['std']:.2%} over {k} folds")
    return record


def manifest_version() -> str:
    from trainer import __version__

    return __version__


def linear_baseline(feats: dict[str, np.ndarray], y: dict[str, np.ndarray], seed: int) -> dict:
    """What Teachable Machine does: logistic regression on frozen pooled features.

    The regularization is picked on the validation split; the fine-tuned model must
    beat this figure on the same test split to have earned its time.
    """
    best = None
    n_train = len(y["train"])
    train, val = feats["train"][:n_train], feats["val"]  # view 0: the photos as taken
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit(train, y["train"])
        score = clf.score(val, y["val"]) if len(y["val"]) else 0.0
        if best is None or score > best[0]:
            best = (score, c, clf)
    assert best is not None
    test_acc = best[2].score(feats["test"], y["test"]) if len(y["test"]) else None
    test_bal = (
        balanced_accuracy_score(y["test"], best[2].predict(feats["test"]))
        if len(y["test"])
        else None
    )
    return {
        "C": best[1],
        "val_accuracy": float(best[0]),
        "test_accuracy": None if test_acc is None else float(test_acc),
        "test_balanced_accuracy": None if test_bal is None else float(test_bal),
    }


def finish_report(
    opts: TrainOptions,
    ds: dsmod.Dataset,
    parts: dict[str, np.ndarray],
    manifest: dict[str, Any],
    history: History,
    sections: dict[str, Any],
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
        **{k: v for k, v in sections.items() if v is not None},
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
        "baseline_linear_head_test_accuracy": sections["baseline_linear_head"]["test_accuracy"],
        "train_seconds": round(sum(watch.phases.values()), 1),
    }
    save_manifest(opts.out, manifest)
    console.print(f"report: {write_report(opts.out)}")
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
        bal = report["baseline_linear_head"].get("test_balanced_accuracy")
        table.add_row("frozen linear head", f"{base:.2%}", f"{bal:.2%}" if bal else "", "")
    console.print(table)
    t = report["timings_s"]
    console.print(
        "time: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in t.items())
        + f" (total {sum(t.values()):.0f}s)"
    )
