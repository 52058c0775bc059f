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
        "test_accuracy": {v: round(r["accuracy"], 4) for v, r in results.items()},
        "test_balanced_accuracy": {v: round(r["balanced_accuracy"], 4) for v, r in results.items()},
        "baseline_linear_head_test_accuracy": sections["baseline_linear_head"]["test_accuracy"],
        "train_seconds": round(sum(watch.phases.values()), 1),
    }
    calibration = sections.get("calibration")
    if calibration and calibration.get("mean_top_score") is not None:
        # The validation split's figures the device's drift (``stats.drift``) is set against.
        manifest["metrics"]["validation"] = {
            "below_threshold": round(1 - calibration["coverage_at_suggested"], 4),
            "mean_top_score": calibration["mean_top_score"],
        }
    save_manifest(opts.out, manifest)
    console.print(f"report: {write_report(opts.out)}")
    return report
