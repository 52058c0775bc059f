"""``train``: from a folder of photos to a verified bundle, one step after another.

prepare (scan + check → split → fit images to the model size → backbone features, once
per view) → linear baseline → search (optional) → stage 1 (head) → stage 2 (fine-tune)
→ export float + int8 → data doctor → evaluate both with the device runtime → manifest,
metrics, confusion matrices, HTML report.

Each step lives in its own module; this one only runs them in order and passes on what
one step hands the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from device.classifier import Classifier
from trainer import __version__, doctor
from trainer.baseline import linear_baseline
from trainer.calibrate import thresholds
from trainer.console import console
from trainer.crossval import cross_validate
from trainer.export import (
    KERAS_FILE,
    clear_bundle,
    representative_indices,
    to_tflite,
    write_bundle,
)
from trainer.fit import FitConfig
from trainer.metrics import finish_report
from trainer.model import assemble, cut_index, load_backbone
from trainer.options import Stopwatch, TrainOptions
from trainer.pooling import PoolingChoice, settle_pooling
from trainer.prepare import Prepared, prepare
from trainer.stages import Trained, fit_stages, stage1_speedup
from trainer.tables import fine_tune_verdict, print_results, print_summary


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run the whole chain; returns the written manifest."""
    keras.utils.set_random_seed(opts.fit.seed)
    watch = Stopwatch()
    search_cuts = None
    if opts.search_trials:
        # keras_tuner is imported only when a search is asked for.
        from trainer.search import candidate_cuts

        search_cuts = candidate_cuts(load_backbone(opts.input_size, opts.alpha, "none"))
    prep = prepare(opts, watch, search_cuts)
    prep, pooling = settle_pooling(prep, opts.max_pool, opts.fit.seed)
    console.print(pooling.line())
    watch.lap("choose_pooling")
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
    calibration = (
        thresholds(result.val_probs, prep.y["val"], prep.ds.classes, opts.target_precision)
        if len(prep.y["val"])
        else None
    )
    manifest = export_bundle(opts, prep, result, cfg, cut, views, calibration, watch, pooling)
    sections = {
        "pooling": pooling.to_dict(),
        "speed": stage1_speedup(prep, result, watch),
        "baseline_linear_head": baseline,
        "search": search_record,
        "cross_validation": folds,
        "calibration": calibration,
    }
    if opts.doctor:
        found = run_doctor(opts, prep)
        sections["doctor"] = {
            "worst": found.worst,
            "findings": [f.to_dict() for f in found.findings],
        }
        watch.lap("doctor")
    report = finish_report(opts, prep.ds, prep.parts, manifest, result.history, sections, watch)
    print_results(report)
    verdict = fine_tune_verdict(
        result.history.stages, result.kept_fine_tune, cfg.fine_tune_epochs, prep.scratch
    )
    print_summary(opts.out, verdict)
    if opts.baseline:  # old and new on the same test images; the verdict is the last line
        from trainer.compare import compare_with_baseline

        compare_with_baseline(opts, prep.ds, prep.parts)
    return manifest


def export_bundle(
    opts: TrainOptions,
    prep: Prepared,
    result: Trained,
    cfg: FitConfig,
    cut: int,
    views: int,
    calibration: dict[str, Any] | None,
    watch: Stopwatch,
    pooling: PoolingChoice,
) -> dict[str, Any]:
    """The trained model as a bundle: Keras file, float and int8 TFLite, manifest."""
    model = assemble(prep.backbone, result.head, prep.multiscale, prep.max_pool)
    opts.out.mkdir(parents=True, exist_ok=True)
    clear_bundle(opts.out)
    model.save(opts.out / KERAS_FILE)
    rep = prep.x["train"][representative_indices(prep.y["train"], opts.representative_count, 0)]
    console.print(f"exporting float and int8 TFLite ({len(rep)} representative images)")
    models, correction = to_tflite(model, rep, prep.spec, (prep.x["val"], prep.y["val"]))
    watch.lap("export")
    extra: dict[str, Any] = {
        "trainer": {
            "version": __version__,
            "backbone": "mobilenet_v2",
            "alpha": opts.alpha,
            "weights": opts.weights if opts.weights in ("imagenet", "none") else "file",
            "fine_tune_from": prep.backbone.layers[cut].name,
            "fine_tune_kept": result.kept_fine_tune,
            "multiscale": prep.multiscale,
            "max_pool": prep.max_pool,
            "max_pool_chosen_by": pooling.chosen_by,
            "fit": cfg.to_dict(),
            "augment_views": views,
            "int8_bias_correction": correction,
        },
        "split": "report/split.json",
    }
    if calibration:
        extra["threshold"] = calibration["suggested_threshold"]
    return write_bundle(
        opts.out,
        opts.name or Path(opts.data).resolve().name,
        prep.ds.classes,
        prep.spec,
        models,
        extra=extra,
    )


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
        images=prep.images,
        options=doctor.DoctorOptions(seed=opts.fit.seed, show_progress=opts.show_progress),
    )
    found.write(opts.out / "report" / "doctor.json")
    for line in found.summary_lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return found
