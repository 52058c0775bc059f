"""Is the retrained bundle better than the one on the line? (``train --baseline OLD``)

A retrained model can win on the new field images and quietly lose a class it used to
catch. So the old and the new bundle are scored on the same test images, neither
trained on (the old bundle's test split, kept by ``trainer.resplit``, plus the test
share of the images that came since, the field images among them), with the device's
code path and int8 model (``trainer.evaluate``). The new one is called better only when
its overall accuracy is not lower **and** no class's recall fell by more than
``--max-recall-drop``. The verdict goes into ``report/metrics.json`` (``comparison``),
the report (``trainer.report.comparison``) and the exit status (``REFUSED``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.bundle import load_bundle
from device.errors import SightwireError, UsageError
from device.labelled import list_labelled
from device.review.labelling import field_images
from trainer.console import console
from trainer.dataset import Dataset
from trainer.evaluate import evaluate_bundle
from trainer.report import write_report
from trainer.resplit import old_sides

if TYPE_CHECKING:  # trainer.options imports Keras: not before the checks
    from trainer.options import TrainOptions

REFUSED = 3  # exit status: trained and exported, but not better than the baseline
SLACK = 1e-9  # float noise is not a drop


def _scores(truth: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy and per-class recall/precision/support: what the verdict reads."""
    per_class = {}
    for k, name in enumerate(labels):
        support, said = int(np.sum(truth == k)), int(np.sum(pred == k))
        hits = int(np.sum((truth == k) & (pred == k)))
        per_class[name] = {
            "recall": round(hits / support, 4) if support else 0.0,
            "precision": round(hits / said, 4) if said else 0.0,
            "support": support,
        }
    accuracy = round(float(np.mean(truth == pred)), 4) if len(truth) else 0.0
    return {"n": len(truth), "accuracy": accuracy, "per_class": per_class}


def judge(
    y_true: Sequence[int],
    old_pred: Sequence[int],
    new_pred: Sequence[int],
    labels: list[str],
    max_recall_drop: float = 0.05,
) -> dict[str, Any]:
    """The verdict on predictions of the same images: accepted, and why not.

    Refused when the new overall accuracy is lower, or when a class present in the
    images lost more recall than ``max_recall_drop`` (0.05 = 5 points).
    """
    truth = np.asarray(y_true, dtype=np.int64)
    if not len(truth):
        return {"accepted": False, "reasons": ["no test images to compare on"]}
    old = _scores(truth, np.asarray(old_pred, dtype=np.int64), labels)
    new = _scores(truth, np.asarray(new_pred, dtype=np.int64), labels)
    reasons = []
    if new["accuracy"] < old["accuracy"] - SLACK:
        reasons.append(f"overall accuracy fell from {old['accuracy']:.1%} to {new['accuracy']:.1%}")
    for name in labels:
        before, after = old["per_class"][name], new["per_class"][name]
        if before["support"] and before["recall"] - after["recall"] > max_recall_drop + SLACK:
            reasons.append(
                f"{name} recall fell from {before['recall']:.1%} to {after['recall']:.1%} "
                f"(more than {max_recall_drop * 100:g} points)"
            )
    return {"accepted": not reasons, "reasons": reasons, "old": old, "new": new}


def check_baseline(bundle: Path, data: Path, max_recall_drop: float) -> None:
    """Before any training: the old bundle opens, recorded its split, knows every class."""
    if not 0 <= max_recall_drop <= 1:
        raise UsageError(f"--max-recall-drop must be 0..1, got {max_recall_drop:g}")
    old = load_bundle(bundle)
    old_sides(bundle)
    _, names = list_labelled(data)
    unknown = sorted(set(names) - set(old.labels))
    if unknown:
        raise SightwireError(
            f"--baseline {bundle}: it does not know the class(es) {', '.join(unknown)}; "
            "a bundle can only be compared on classes it has"
        )


def _variant(old: Any, new: Any) -> str:
    for variant in ("int8", "float"):
        if variant in old.models and variant in new.models:
            return variant
    raise SightwireError("the old and the new bundle share no model variant to compare")


def compare_with_baseline(
    opts: TrainOptions, ds: Dataset, parts: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Score both bundles on the run's test split, judge, record in metrics.json and the
    report, print the verdict line; returns the ``comparison`` block."""
    assert opts.baseline is not None
    data, out, baseline, max_recall_drop = opts.data, opts.out, opts.baseline, opts.max_recall_drop
    threads, show_progress = opts.threads, opts.show_progress
    old_bundle, new_bundle = load_bundle(baseline), load_bundle(out)
    variant = _variant(old_bundle, new_bundle)
    idx = parts["test"]
    files = [ds.relative(ds.items[i]) for i in idx]
    paths = [ds.items[i].path for i in idx]
    names = [ds.classes[ds.items[i].label] for i in idx]
    labels = new_bundle.labels
    preds = {}
    for who, bundle in (("old", old_bundle), ("new", new_bundle)):
        if not paths:
            preds[who] = []
            continue
        res = evaluate_bundle(bundle, paths, names, [variant], threads, show_progress)
        # the old bundle's class indices, mapped onto the new bundle's label order
        preds[who] = [labels.index(bundle.labels[p]) for p in res[variant]["predictions"]]
    truth = [labels.index(n) for n in names]
    field = set(field_images(Path(data)))
    old_test = {f for f, side in old_sides(baseline).items() if side == "test"}
    subsets = {
        "all": [True] * len(files),
        "old_test": [f in old_test for f in files],
        "field": [f in field for f in files],
    }
    sets = {}
    y, old_p, new_p = (np.asarray(v, dtype=np.int64) for v in (truth, preds["old"], preds["new"]))
    for name, mask in subsets.items():
        m = np.asarray(mask, dtype=bool)
        part = judge(y[m], old_p[m], new_p[m], labels, max_recall_drop)
        sets[name] = {"n": int(m.sum()), "old": part.get("old"), "new": part.get("new")}
    verdict = judge(truth, preds["old"], preds["new"], labels, max_recall_drop)
    block = {
        "baseline": str(baseline),
        "baseline_name": Path(baseline).resolve().name,  # the folder: old and new share a name
        "variant": variant,
        "max_recall_drop": max_recall_drop,
        "accepted": verdict["accepted"],
        "reasons": verdict["reasons"],
        "sets": sets,
        "files": files,
        "field_files": [f for f in files if f in field],
        "truth": truth,
        "old_predictions": preds["old"],
        "new_predictions": preds["new"],
        "field_images_in_dataset": len(field),
    }
    path = out / "report" / "metrics.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    report["comparison"] = block
    path.write_text(json.dumps(report, indent=1))
    write_report(out)
    console.print(verdict_line(block), highlight=False, markup=False, soft_wrap=True)
    return block


def verdict_line(block: dict[str, Any]) -> str:
    """The last line of ``train --baseline``: accepted or not, and why."""
    sets = block.get("sets") or {}
    every = sets.get("all") or {}
    old, new = every.get("old") or {}, every.get("new") or {}
    figures = (
        f"{old.get('accuracy', 0):.1%} → {new.get('accuracy', 0):.1%} on {every.get('n', 0)} "
        f"test images ({(sets.get('field') or {}).get('n', 0)} from the field)"
    )
    if block.get("accepted"):
        before, after = old.get("accuracy", 0), new.get("accuracy", 0)
        how = "better than" if after > before + SLACK else "as good as"
        line = f"accepted: {how} {block.get('baseline_name')} ({figures})"
        if not (sets.get("field") or {}).get("n"):  # nothing from the line was tested
            line += "; no photo from the field was in the test split"
        return line
    why = "; ".join(block.get("reasons") or ["no verdict"])
    return f"not accepted: {why} ({figures}); keep {block.get('baseline_name')} on the line"


def exit_status(out: Path) -> int:
    """0 when ``out``'s comparison accepted it, ``REFUSED`` when not."""
    report = json.loads((Path(out) / "report" / "metrics.json").read_text(encoding="utf-8"))
    return 0 if (report.get("comparison") or {}).get("accepted") else REFUSED
