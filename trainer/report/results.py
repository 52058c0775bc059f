"""Report sections on what the model achieved; they come first on the page.

Models (size, accuracy, int8 against float, the linear baseline, cross-validation), per
class, confusion matrices, the misclassified images, calibrated thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.report.inputs import RARE_SHARE, Inputs, as_dict, rare_classes
from trainer.report.intervals import FEW_TEST_PHOTOS, interval_text
from trainer.report.markup import e, fixed, img, num, pct, render_any, section, table
from trainer.report.pictures import confusion_src, thumbnail

LOW_RECALL = 0.8  # recall under this is shown in red
GALLERY_MAX = 60  # misclassified thumbnails shown (most confident mistakes first)


def points(a: Any, b: Any) -> str:
    """``a - b`` in percentage points ("+1.5 pp"), or a dash when either is missing."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "—"
    return f"{(a - b) * 100:+.1f} pp"


def model_sizes(inputs: Inputs) -> dict[str, int]:
    """Bytes per variant: the manifest's figure, else the file's size."""
    out: dict[str, int] = {}
    for variant, entry in as_dict(inputs.manifest.get("models")).items():
        if not isinstance(entry, dict):
            continue
        size = entry.get("bytes")
        path = inputs.dir / str(entry.get("file", ""))
        if not isinstance(size, int) and entry.get("file") and path.is_file():
            size = path.stat().st_size
        if isinstance(size, int):
            out[variant] = size
    return out


def export_note(inputs: Inputs) -> str:
    """What ``sightwire export`` changed (``metrics.json`` ``export``), or "" when it never ran."""
    record = as_dict(inputs.metrics.get("export"))
    if not record:
        return ""
    n = record.get("representative")
    images = f" with {e(n)} calibration images" if isinstance(n, int) else ""
    return (
        f"<p class=note>Re-exported by <code>sightwire export</code> at {e(record.get('at', '?'))}"
        f"{images}: the models, their accuracy, confusion matrices, mistakes and thresholds "
        "here are the new models'; the training curves, timings, linear baseline and data "
        "doctor are of the training run.</p>"
    )


def models_section(inputs: Inputs) -> str:
    sizes = model_sizes(inputs)
    res = inputs.results
    if not sizes and not res:
        return ""
    models = {k: as_dict(v) for k, v in as_dict(inputs.manifest.get("models")).items()}
    variants = list(dict.fromkeys([*res, *sizes]))
    rows = []
    for v in variants:
        r = res.get(v, {})
        size = sizes.get(v)
        rows.append(
            [
                e(v),
                e(f"{size / 1e6:.2f} MB") if size else "—",
                e(models.get(v, {}).get("input_dtype", "")),
                pct(r.get("accuracy"), 2) + _spread(r),
                pct(r.get("balanced_accuracy"), 2),
                pct(r.get("agreement_with_float"), 2) if "agreement_with_float" in r else "",
                f"<code>{e(str(models.get(v, {}).get('sha256', ''))[:12])}</code>",
            ]
        )
    head = ["model", "size", "input", "accuracy", "balanced acc.", "agrees with float", "sha256"]
    body = [table(head, rows), export_note(inputs)]
    if "int8" in res and "float" in res:
        acc = points(res["int8"].get("accuracy"), res["float"].get("accuracy"))
        bal = points(res["int8"].get("balanced_accuracy"), res["float"].get("balanced_accuracy"))
        ratio = (
            f", {sizes['int8'] / sizes['float']:.0%} of the float size"
            if sizes.get("int8") and sizes.get("float")
            else ""
        )
        body.append(
            f"<p>int8 vs float: accuracy {e(acc)}, balanced accuracy {e(bal)}{e(ratio)}.</p>"
        )
    body.append(
        "<p class=note>Under each accuracy: the range the true figure lies in with 95% "
        "confidence (Wilson interval) given this many test photos; a small test split "
        "cannot tell two models apart by a few points.</p>"
    )
    body.append(baseline_html(inputs))
    body.append(pooling_html(inputs.metrics.get("pooling")))
    body.append(cross_validation_html(inputs.metrics.get("cross_validation")))
    return section("models", "Models", "\n".join(b for b in body if b))


def _spread(result: dict[str, Any]) -> str:
    text = interval_text(result)
    return f"<br><span class=note>{e(text)}</span>" if text else ""


def pooling_html(pooling: Any) -> str:
    """What the head reads and who decided (``trainer.pooling``): a user comparing two
    bundles sees why one reads the spatial maxima and the other does not."""
    p = as_dict(pooling)
    if "max_pool" not in p:
        return ""
    what = "the taps' averages and spatial maxima" if p["max_pool"] else "the taps' averages"
    loss = as_dict(p.get("val_loss"))
    avg, both = loss.get("averages"), loss.get("averages+maxima")
    if isinstance(avg, (int, float)) and isinstance(both, (int, float)):
        why = (
            f"chosen on validation: the logistic head's log loss {both:.4f} with the maxima, "
            f"{avg:.4f} without"
        )
    else:
        why = str(p.get("chosen_by", "?"))
    return f"<p>The head reads {e(what)} ({e(why)}).</p>"


def cross_validation_html(cv: Any) -> str:
    """K-fold accuracy on the training split: how much the figure above could move."""
    if not cv:
        return ""
    if isinstance(cv, dict) and isinstance(cv.get("mean"), (int, float)):
        folds = cv.get("accuracy") or []
        each = ", ".join(pct(x) for x in folds if isinstance(x, (int, float)))
        spread = f" ± {pct(cv['std'])}" if isinstance(cv.get("std"), (int, float)) else ""
        return (
            f"<h3>Cross-validation</h3><p>{e(cv.get('folds', len(folds)))} folds over the "
            f"training split: accuracy {pct(cv['mean'])}{spread}"
            + (f" <span class=note>(folds: {each})</span>" if each else "")
            + "</p>"
        )
    return "<h3>Cross-validation</h3>" + render_any(cv)


def baseline_html(inputs: Inputs) -> str:
    base = as_dict(inputs.metrics.get("baseline_linear_head"))
    if not base:
        return ""
    res = inputs.results
    rows = [
        [
            e(f"frozen backbone + logistic regression (C={base.get('C', '?')})"),
            pct(base.get("val_accuracy")),
            pct(base.get("test_accuracy")),
            "",
        ]
    ]
    for v, r in res.items():
        delta = points(r.get("accuracy"), base.get("test_accuracy"))
        cls = "good" if delta.startswith("+") else "low"
        cls = "" if delta in ("—", "+0.0 pp", "-0.0 pp") else cls
        rows.append(
            [
                e(f"fine-tuned, {v}"),
                "",
                pct(r.get("accuracy")),
                f'<span class="{cls}">{e(delta)}</span>',
            ]
        )
    head = ["model", "val accuracy", f"{e(inputs.metrics.get('evaluated_on', 'test'))} accuracy"]
    return (
        "<h3>Fine-tuned model vs the frozen linear-head baseline</h3>"
        + table([*head, "vs baseline"], rows)
        + f"<p class=note>{e(baseline_meaning(inputs))}</p>"
    )


def baseline_meaning(inputs: Inputs) -> str:
    """What the linear baseline stands for: it depends on the backbone's weights."""
    weights = as_dict(inputs.manifest.get("trainer")).get("weights")
    if weights == "none":
        return (
            "Trained with --weights none: the backbone started from random weights, so this "
            "baseline is a logistic regression on random features, a floor that shows what "
            "training the whole network gained. It is not what a frozen-feature tool such as "
            "Teachable Machine would give: those start from ImageNet weights and would "
            "usually do much better on photos."
        )
    return (
        "The baseline is what a frozen-feature tool (e.g. Teachable Machine) would give on "
        "the same split; fine-tuning must beat it to have earned its time."
    )


def confusion_section(inputs: Inputs) -> str:
    figs = []
    for variant, result in inputs.results.items():
        src = confusion_src(inputs, variant, result)
        if src:
            figs.append(
                f'<figure class="half">{img(src, f"confusion matrix, {variant} model")}'
                f"<figcaption>{e(variant)}: rows true, columns predicted</figcaption></figure>"
            )
    if not figs:
        return ""
    return section("confusion", "Confusion matrices", f'<div class="pics">{"".join(figs)}</div>')


def per_class_section(inputs: Inputs) -> str:
    res = inputs.results
    if not res:
        return ""
    rare = rare_classes(inputs.counts)
    head = ["class", "support"]
    for v in res:
        head += [f"{e(v)} precision", f"{e(v)} recall", f"{e(v)} F1"]
    rows, marks = [], []
    flagged = []
    supports: dict[str, Any] = {}
    for name in inputs.labels:
        stats = [as_dict(as_dict(r.get("per_class")).get(name)) for r in res.values()]
        support = next((s.get("support") for s in stats if "support" in s), "—")
        supports[name] = support
        label = e(name) + (" <span class=note>(rare)</span>" if name in rare else "")
        row = [label, e(support)]
        low = False
        for s in stats:
            recall = s.get("recall")
            bad = isinstance(recall, (int, float)) and recall < LOW_RECALL
            low = low or bad
            cell = f'<span class="low">{fixed(recall)}</span>' if bad else fixed(recall)
            row += [fixed(s.get("precision")), cell, fixed(s.get("f1"))]
        rows.append(row)
        marks.append("warn" if low and name in rare else "")
        if low and name in rare:
            flagged.append(name)
    body = table(head, rows, marks)
    body += (
        f"<p class=note>Recall under {LOW_RECALL:.0%} in red; a class is rare with fewer than "
        f"{RARE_SHARE:.0%} of the median class's images. Rows in red: rare classes the model "
        "misses — more photos of them are the first thing to try.</p>"
    )
    if flagged:
        body += f"<p class=low>Rare and missed: {e(', '.join(flagged))}</p>"
    few = [
        (name, support)
        for name, support in supports.items()
        if isinstance(support, int) and support < FEW_TEST_PHOTOS
    ]
    if few:
        listed = ", ".join(f"{name} ({n})" for name, n in few)
        body += (
            f"<p class=low>Too few test photos to trust these figures for: {e(listed)}. "
            f"With under {FEW_TEST_PHOTOS} test photos one photo moves recall by "
            f"{1 / max(1, min(n for _, n in few)):.0%} or more; add photos or judge the "
            "class on more data (cross-validation, --folds).</p>"
        )
    return section("per-class", "Per-class precision, recall, F1", body)


def gallery_section(inputs: Inputs) -> str:
    """Misclassified evaluation images, most confident mistakes first."""
    res = inputs.results
    files = inputs.metrics.get("test_files") or []
    if not res or not files:
        return ""
    truth = inputs.true_labels()
    wrong: list[tuple[int, float, int]] = []  # (variants wrong, best wrong score, index)
    for i, label in enumerate(truth):
        misses = 0
        score = 0.0
        for r in res.values():
            preds, scores = r.get("predictions") or [], r.get("scores") or []
            if i < len(preds) and label is not None and _label(inputs, preds[i]) != label:
                misses += 1
                score = max(score, float(scores[i]) if i < len(scores) else 0.0)
        if misses:
            wrong.append((misses, score, i))
    if not wrong:
        return section(
            "gallery",
            "Misclassified images",
            "<p class=good>No evaluation image was misclassified.</p>",
        )
    wrong.sort(key=lambda t: (-t[0], -t[1], t[2]))
    root = Path(str(inputs.dataset.get("root", "")))
    reachable = bool(str(root)) and root.is_dir()
    cut = f"; the {GALLERY_MAX} most confident are shown" if len(wrong) > GALLERY_MAX else ""
    body = [
        f"<p>{len(wrong)} of {len(files)} evaluation images misclassified by at least one "
        f"model{cut}.</p>"
    ]
    if not reachable:
        body.append(
            f"<p class=note>The dataset folder <code>{e(root)}</code> is not reachable from "
            "here: no thumbnails, file names only.</p>"
        )
    figs = []
    for _, _, i in wrong[:GALLERY_MAX]:
        rel = files[i]
        src = thumbnail(root / rel) if reachable else None
        pic = img(src, rel, "") if src else f'<div class="noimg">{e("no image")}</div>'
        lines = [f"<b>{e(truth[i])}</b> (true)"]
        for v, r in res.items():
            preds, scores = r.get("predictions") or [], r.get("scores") or []
            if i >= len(preds):
                continue
            p, s = preds[i], scores[i] if i < len(scores) else None
            mark = "low" if _label(inputs, p) != truth[i] else "good"
            lines.append(f'{e(v)}: <span class="{mark}">{e(_label(inputs, p))}</span> {num(s)}')
        lines.append(f'<span class="note">{e(rel)}</span>')
        figs.append(f"<figure>{pic}<figcaption>{'<br>'.join(lines)}</figcaption></figure>")
    body.append(f'<div class="gallery">{"".join(figs)}</div>')
    return section("gallery", "Misclassified images", "\n".join(body))


def _label(inputs: Inputs, index: Any) -> str:
    try:
        return inputs.labels[int(index)]
    except (ValueError, TypeError, IndexError):
        return str(index)


def calibration_section(inputs: Inputs) -> str:
    cal = inputs.metrics.get("calibration")
    threshold = _find_threshold(inputs.manifest)
    if not cal and threshold is None:
        return ""
    body = []
    if threshold is not None:
        body.append(
            f"<p>Threshold written to the manifest: <b>{num(threshold)}</b>. The device "
            "publishes <code>uncertain</code> (its <code>unknown_label</code>) for a frame "
            "whose best score is below it.</p>"
        )
    if isinstance(cal, dict) and cal:
        body.append(_calibration_html(cal))
    elif cal:
        body.append(render_any(cal))
    return section("calibration", "Calibrated thresholds", "\n".join(body))


def _calibration_html(cal: dict[str, Any]) -> str:
    """The trainer's calibration record (``trainer.calibrate.thresholds``), known keys
    in words, the rest rendered generically."""
    known = {
        "target_precision",
        "n",
        "global_threshold",
        "suggested_threshold",
        "coverage_at_suggested",
        "per_class",
    }
    facts = []
    if "target_precision" in cal:
        n = f" (n={e(cal['n'])})" if "n" in cal else ""
        facts.append(f"Target precision {pct(cal['target_precision'], 0)} on validation data{n}.")
    if "global_threshold" in cal:
        t = cal["global_threshold"]
        facts.append(
            "No threshold reaches the target on validation data."
            if t is None
            else f"Lowest threshold that keeps it: {num(t)}."
        )
    if "suggested_threshold" in cal:
        cover = cal.get("coverage_at_suggested")
        kept = (
            f", which still labels {pct(cover)} of validation images" if cover is not None else ""
        )
        facts.append(f"Suggested: <b>{num(cal['suggested_threshold'])}</b>{kept}.")
    out = [f"<p>{' '.join(facts)}</p>"] if facts else []
    per_class = cal.get("per_class")
    if isinstance(per_class, dict) and per_class:
        out.append(
            "<h3>Per class</h3><p class=note>Lowest score at which that class's predictions "
            "keep the target precision; coverage is the share of them still labelled.</p>"
        )
        out.append(render_any(per_class))
    rest = {k: v for k, v in cal.items() if k not in known}
    if rest:
        out.append(render_any(rest))
    return "\n".join(out)


def _find_threshold(manifest: dict[str, Any]) -> Any:
    """``threshold`` at the manifest's top level or one level down (its place may move)."""
    if isinstance(manifest.get("threshold"), (int, float)):
        return manifest["threshold"]
    for value in manifest.values():
        if isinstance(value, dict) and isinstance(value.get("threshold"), (int, float)):
            return value["threshold"]
    return None
