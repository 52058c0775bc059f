"""The last step of ``train``: evaluate the exported bundle, write ``report/`` and the metrics.

The exported TFLite models are evaluated on the test split through the device's own
runtime (``trainer.evaluate``), so the figures are those of what ships. Everything the
run measured goes into ``report/metrics.json``; the headline figures also into the
manifest; the HTML report (``trainer.report``) is built from these files.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from device.bundle import load_bundle, save_manifest
from trainer.console import console
from trainer.dataset import Dataset
from trainer.evaluate import confusion_png, evaluate_bundle
from trainer.fit import History
from trainer.options import Stopwatch, TrainOptions
from trainer.report import write_report
from trainer.split import write_split


def finish_report(
    opts: TrainOptions,
    ds: Dataset,
    parts: dict[str, np.ndarray],
    manifest: dict[str, Any],
    history: History,
    sections: dict[str, Any],
    watch: Stopwatch,
) -> dict[str, Any]:
    """Evaluate the exported models on the test split and write report/ + manifest."""
    report_dir = opts.out / "report"
    report_dir.mkdir(exist_ok=True)
    write_split(ds, parts, report_dir / "split.json", opts.fit.seed)
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
            "root": str(Path(ds.root).absolute()),
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
        **headline_figures(results),
        "baseline_linear_head_test_accuracy": sections["baseline_linear_head"]["test_accuracy"],
        "train_seconds": round(sum(watch.phases.values()), 1),
    }
    validation = validation_figures(sections.get("calibration"))
    if validation:
        manifest["metrics"]["validation"] = validation
    save_manifest(opts.out, manifest)
    console.print(f"report: {write_report(opts.out)}")
    return report


def headline_figures(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The manifest's headline figures of the evaluated models."""
    return {
        "test_accuracy": {v: round(r["accuracy"], 4) for v, r in results.items()},
        "test_balanced_accuracy": {v: round(r["balanced_accuracy"], 4) for v, r in results.items()},
    }


def validation_figures(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validation split's figures the device's drift (``stats.drift``) is set against,
    from a calibration record (``trainer.calibrate.thresholds``), or None without one."""
    if not calibration or calibration.get("mean_top_score") is None:
        return None
    return {
        "below_threshold": round(1 - calibration["coverage_at_suggested"], 4),
        "mean_top_score": calibration["mean_top_score"],
    }


def refresh_after_export(
    out: Path,
    manifest: dict[str, Any],
    results: dict[str, dict[str, Any]],
    evaluated_on: str,
    test_files: list[str],
    calibration: dict[str, Any] | None,
    record: dict[str, Any],
) -> Path | None:
    """After ``sightwire export`` wrote new models: every figure of the manifest and of
    ``report/`` that described the old ones is made again from the new ones, or removed.

    ``results``: the new models on the split the trainer evaluated (``evaluated_on``);
    ``calibration``: the validation split's thresholds of the Keras model the models were
    made from. The manifest's test figures, drift baseline (``metrics.validation``) and
    threshold follow them; ``report/metrics.json`` gets the new results, calibration and
    ``export`` (``record``), the confusion PNGs are drawn again and the page rebuilt.
    What only training measured (curves, timings, the linear baseline, the data doctor)
    is left as it was: it is still true of the training run. Returns the page, or None
    when ``report/metrics.json`` is missing (the stale pictures and page are removed then).
    """
    figures = manifest.setdefault("metrics", {})
    for key in ("test_accuracy", "test_balanced_accuracy", "validation"):
        figures.pop(key, None)
    if results:
        figures.update(headline_figures(results))
    validation = validation_figures(calibration)
    if validation and calibration:
        figures["validation"] = validation
        manifest["threshold"] = calibration["suggested_threshold"]
    if not figures:
        manifest.pop("metrics")
    save_manifest(out, manifest)
    report_dir = out / "report"
    for png in report_dir.glob("confusion_*.png"):
        png.unlink()
    path = report_dir / "metrics.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(report, dict)
    except (OSError, ValueError, AssertionError):
        (report_dir / "index.html").unlink(missing_ok=True)
        console.print(
            f"no readable {path}: the report's page and pictures of the old models were "
            "removed, not made again"
        )
        return None
    report.update(test=results, test_files=test_files, evaluated_on=evaluated_on, export=record)
    report.pop("calibration", None)
    if calibration:
        report["calibration"] = calibration
    path.write_text(json.dumps(report, indent=1))
    for variant, res in results.items():
        confusion_png(
            res["confusion_matrix"],
            manifest["labels"],
            f"{variant} model, {evaluated_on} split (n={res['n']})",
            report_dir / f"confusion_{variant}.png",
        )
    return write_report(out)
