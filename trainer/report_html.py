"""The bundle's report as one self-contained HTML page: ``BUNDLE/report/index.html``.

Everything is read back from what ``train`` already wrote (``manifest.json``,
``report/metrics.json``, ``split.json``, the confusion PNGs, an optional
``report/doctor.json``), so the page can be rebuilt at any time with
``python -m trainer.report_html BUNDLE`` without training again.

The page must open offline, from a USB stick or an e-mail attachment, years later:
every picture is an inline ``data:`` URI and there is no external CSS, JS or font.
All text goes through ``html.escape`` because class names come from folder names.
Each optional section (search, calibration, doctor, gallery...) is left out when its
data is missing: a report of a partial bundle is still a report.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.errors import SightwireError
from trainer.report_markup import (
    GENERIC_MAX_DEPTH,
    GENERIC_MAX_ITEMS,
    STYLE,
    data_uri,
    e,
    fixed,
    img,
    more_note,
    num,
    pct,
    render_any,
    section,
    table,
    title_case,
)

REPORT_DIR = "report"
INDEX = "index.html"
LOW_RECALL = 0.8  # recall under this is shown in red
RARE_SHARE = 0.5  # a class with fewer images than this share of the median class is "rare"
GALLERY_MAX = 60  # misclassified thumbnails shown (most confident mistakes first)
THUMB_PX = 128


# ----------------------------------------------------------------------------- inputs


class Inputs:
    """What the trainer left in the bundle, loaded once; missing parts are empty."""

    def __init__(self, bundle_dir: Path) -> None:
        self.dir = Path(bundle_dir)
        self.report_dir = self.dir / REPORT_DIR
        if not self.dir.is_dir():
            raise SightwireError(f"{self.dir} is not a bundle directory")
        metrics_path = self.report_dir / "metrics.json"
        if not metrics_path.is_file():
            raise SightwireError(
                f"{metrics_path} not found: the report is built from what `sightwire train` "
                "writes there"
            )
        self.metrics: dict[str, Any] = _read_json(metrics_path, required=True)
        if not isinstance(self.metrics, dict):
            raise SightwireError(f"{metrics_path} does not hold the trainer's metrics")
        self.manifest: dict[str, Any] = _as_dict(_read_json(self.dir / "manifest.json"))
        self.split: dict[str, Any] = _as_dict(_read_json(self.report_dir / "split.json"))
        self.doctor: Any = _read_json(self.report_dir / "doctor.json")
        labels = self.manifest.get("labels")
        if not labels:
            first = next(iter(self.results.values()), {})
            labels = list(_as_dict(first.get("per_class"))) or list(self.counts)
        self.labels: list[str] = [str(x) for x in labels]

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in numbers(self.dataset.get("counts")).items()}

    @property
    def dataset(self) -> dict[str, Any]:
        return _as_dict(self.metrics.get("dataset"))

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """Test results per variant, int8 (what the device runs) first."""
        test = _as_dict(self.metrics.get("test"))
        order = sorted(test, key=lambda v: (v != "int8", v != "float", v))
        return {v: test[v] for v in order if isinstance(test[v], dict)}

    def true_labels(self) -> list[str | None]:
        """True class of each evaluated file, from split.json, else from its folder."""
        known = {
            str(path): str(label)
            for side in ("train", "val", "test")
            for path, label in _pairs(self.split.get(side))
        }
        labels = set(self.labels)
        out: list[str | None] = []
        for rel in self.metrics.get("test_files", []):
            if rel in known:
                out.append(known[rel])
                continue
            folders = [p for p in Path(rel).parts[:-1] if p in labels]
            out.append(folders[-1] if folders else None)
        return out


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    """``[[path, label], ...]`` from split.json, skipping anything else."""
    if not isinstance(value, list):
        return []
    return [(p[0], p[1]) for p in value if isinstance(p, (list, tuple)) and len(p) == 2]


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def numbers(mapping: Any) -> dict[str, float]:
    """The numeric entries of a JSON object (anything else is ignored, not a crash)."""
    return {
        str(k): v
        for k, v in _as_dict(mapping).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _read_json(path: Path, required: bool = False) -> Any:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        if required:
            raise SightwireError(f"{path} is not readable JSON: {err}") from err
        return {}


# ----------------------------------------------------------------------------- pictures


def curves_png(history: dict[str, dict[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch, the stages one after the other on one axis.

    ``matplotlib.figure.Figure`` is used directly (no pyplot): no global state, no
    display backend, safe to call from the trainer's process.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stages = [(name, h) for name, h in history.items() if isinstance(h, dict) and h.get("loss")]
    if not stages:
        return None
    fig = Figure(figsize=(11, 3.4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, metric, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        start = 0
        for k, (name, h) in enumerate(stages):
            n = len(h.get("loss", []))
            xs = range(start + 1, start + n + 1)
            colour = f"C{k}"
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                ys = h.get(key)
                if ys:
                    where = "validation" if key.startswith("val_") else "train"
                    ax.plot(xs, ys[:n], style, color=colour, label=f"{name} {where}")
            if k:
                ax.axvline(start + 0.5, color="0.6", lw=0.8)
            start += n
        ax.set_title(title)
        ax.set_xlabel("epoch (stages one after the other)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_src(inputs: Inputs, variant: str, result: dict[str, Any]) -> str | None:
    """The trainer's PNG when there is one, else drawn again from the matrix."""
    path = inputs.report_dir / f"confusion_{variant}.png"
    if path.is_file():
        return data_uri(path.read_bytes())
    matrix = result.get("confusion_matrix")
    if not matrix:
        return None
    from trainer.evaluate import confusion_png

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.png"
        title = f"{variant} model, {inputs.metrics.get('evaluated_on', 'test')} split"
        confusion_png(matrix, inputs.labels, f"{title} (n={result.get('n', '?')})", out)
        return data_uri(out.read_bytes())


def thumbnail(path: Path) -> str | None:
    """A small JPEG data URI of an image file, or None when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return data_uri(buf.getvalue(), "image/jpeg")


# ----------------------------------------------------------------------------- sections


def header(inputs: Inputs, nav: list[tuple[str, str]]) -> str:
    m, man = inputs.metrics, inputs.manifest
    name = man.get("name") or inputs.dir.name
    trainer = _as_dict(man.get("trainer"))
    inp = _as_dict(man.get("input"))
    facts = [
        f"{len(inputs.labels)} classes",
        f"input {inp.get('width', '?')}×{inp.get('height', '?')}" if inp else "",
        f"{trainer.get('backbone', '')} α {trainer.get('alpha', '')}" if trainer else "",
        f"weights {trainer.get('weights')}" if trainer.get("weights") else "",
        f"created {man.get('created')}" if man.get("created") else "",
        f"sightwire {trainer.get('version')}" if trainer.get("version") else "",
    ]
    links = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in nav)
    cards = []
    res = inputs.results
    on = m.get("evaluated_on", "test")
    for variant in res:
        cards.append((pct(res[variant].get("accuracy")), f"{variant} {on} accuracy"))
    if "int8" in res and "float" in res:
        delta = _delta(res["int8"].get("accuracy"), res["float"].get("accuracy"))
        cards.append((delta, "int8 − float"))
    base = _as_dict(m.get("baseline_linear_head")).get("test_accuracy")
    if base is not None:
        cards.append((pct(base), "frozen linear head"))
    int8_size = model_sizes(inputs).get("int8")
    if int8_size:
        cards.append((f"{int8_size / 1e6:.2f} MB", "int8 model"))
    timings = numbers(m.get("timings_s"))
    if timings:
        cards.append((f"{sum(timings.values()):.0f} s", "training time"))
    card_html = "".join(f"<div class=card><b>{e(v)}</b><span>{e(t)}</span></div>" for v, t in cards)
    return (
        f"<header><h1>sightwire report: {e(name)}</h1>"
        f"<p>{e(' · '.join(f for f in facts if f))}</p><nav>{links}</nav></header>"
        f'<main><div class="cards">{card_html}</div>'
    )


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "—"
    return f"{(a - b) * 100:+.1f} pp"


def dataset_section(inputs: Inputs) -> str:
    ds = inputs.dataset
    counts = inputs.counts
    if not ds and not counts:
        return ""
    root = ds.get("root", "")
    sides = [s for s in ("train", "val", "test") if s in inputs.split]
    per_side = {s: _count_labels(_pairs(inputs.split[s])) for s in sides}
    rare = rare_classes(counts)
    rows = []
    for name in inputs.labels or list(counts):
        cells = [e(name), e(counts.get(name, "—"))] + [e(per_side[s].get(name, 0)) for s in sides]
        rows.append(cells + (["rare"] if name in rare else [""]))
    head = ["class", "images", *sides, ""]
    total = sum(counts.values())
    body = [
        f"<p>Folder <code>{e(root)}</code>: {total} images in {len(counts)} classes"
        + (
            " (split given by the dataset's own train/val/test folders)"
            if ds.get("user_split")
            else ""
        )
        + ".</p>",
        table(head, rows),
    ]
    body.append(_path_list("Skipped unreadable files", ds.get("unreadable"), root))
    body.append(_path_list("Ignored non-image files", ds.get("ignored"), root))
    dups = ds.get("cross_class_duplicates") or []
    if dups:
        items = "".join(
            "<li>" + ", ".join(f"<code>{e(_rel(p, root))}</code>" for p in group) + "</li>"
            for group in dups[:GENERIC_MAX_ITEMS]
        )
        more = more_note(len(dups))
        body.append(
            f"<h3>Identical files in different classes ({len(dups)})</h3><ul>{items}</ul>{more}"
        )
    else:
        body.append("<p class=note>No identical files were found in different classes.</p>")
    known = {"root", "counts", "unreadable", "ignored", "cross_class_duplicates", "user_split"}
    extra = {k: v for k, v in ds.items() if k not in known}
    if extra:
        body.append(render_any(extra))
    return section("dataset", "Dataset", "\n".join(b for b in body if b))


def _count_labels(pairs: list[tuple[Any, Any]]) -> dict[str, int]:
    return dict(Counter(str(label) for _, label in pairs))


def rare_classes(counts: dict[str, int]) -> set[str]:
    """Classes with fewer images than ``RARE_SHARE`` x the median class."""
    if len(counts) < 2:
        return set()
    values = sorted(counts.values())
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {name for name, n in counts.items() if n < RARE_SHARE * median}


def _rel(path: Any, root: str) -> str:
    try:
        return Path(str(path)).relative_to(root).as_posix() if root else str(path)
    except ValueError:
        return str(path)


def _path_list(title: str, entries: list | None, root: str) -> str:
    if not entries:
        return ""
    items = []
    for entry in entries[:GENERIC_MAX_ITEMS]:
        path, why = (entry[0], entry[1]) if isinstance(entry, (list, tuple)) else (entry, "")
        reason = f": {e(why)}" if why else ""
        items.append(f"<li><code>{e(_rel(path, root))}</code>{reason}</li>")
    return f"<h3>{e(title)} ({len(entries)})</h3><ul>{''.join(items)}</ul>{more_note(len(entries))}"


def split_section(inputs: Inputs) -> str:
    split = numbers(inputs.metrics.get("split"))
    if not split:
        return ""
    total = sum(split.values()) or 1
    rows = [[e(side), e(n), pct(n / total)] for side, n in split.items()]
    on = inputs.metrics.get("evaluated_on")
    seed = inputs.split.get("seed")
    notes = []
    if on:
        notes.append(f"Results below are on the <b>{e(on)}</b> split, never seen in training.")
    if seed is not None:
        notes.append(f"Split seed {e(seed)}; the file lists are in <code>report/split.json</code>.")
    return section("split", "Split", table(["side", "images", "share"], rows) + " ".join(notes))


def curves_section(inputs: Inputs) -> str:
    history = _as_dict(inputs.metrics.get("history"))
    png = curves_png(history)
    if png is None:
        return ""
    notes = []
    for name, h in history.items():
        if not isinstance(h, dict):
            continue
        n = len(h.get("loss", []))
        line = f"<b>{e(name)}</b>: {n} epochs"
        best = h.get("val_accuracy")
        if best:
            line += f", best validation accuracy {pct(max(best))}"
        reverted = h.get("reverted")
        if reverted:
            before, after = [*reverted, None, None][:2] if isinstance(reverted, list) else ("", "")
            line += (
                " — <span class=low>reverted</span>: it did not lower stage 1's validation "
                f"loss ({num(before)} → best {num(after)}), so the exported model is stage 1's"
            )
        notes.append(f"<li>{line}</li>")
    body = img(data_uri(png), "training curves: loss and accuracy per epoch")
    body += "<p class=note>Solid: training; dashed: validation. Grey lines separate stages.</p>"
    return section("curves", "Training curves", body + f"<ul>{''.join(notes)}</ul>")


def search_section(inputs: Inputs) -> str:
    search = inputs.metrics.get("search")
    if not isinstance(search, dict) or not search:
        return ""
    body = []
    trials = search.get("trials")
    best = search.get("best")
    if isinstance(trials, list) and trials and all(isinstance(t, dict) for t in trials):
        flat = [_flatten(t) for t in trials]
        cols = list(dict.fromkeys(k for row in flat for k in row))
        marks = ["best" if _is_best(t, best) else "" for t in trials]
        rows = [[render_any(row.get(c, ""), GENERIC_MAX_DEPTH) for c in cols] for row in flat]
        body.append(table([e(c) for c in cols], rows, marks))
    if best is not None:
        body.append("<h3>Best</h3>" + render_any(best))
    rest = {k: v for k, v in search.items() if k not in ("trials", "best")}
    if rest:
        body.append(render_any(rest))
    return section("search", "Hyper-parameter search", "\n".join(body))


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts (a trial's ``params``) become columns of their own."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            for sub, x in v.items():
                out[sub if sub not in row else f"{k}.{sub}"] = x
        else:
            out[k] = v
    return out


def _is_best(trial: dict[str, Any], best: Any) -> bool:
    """``best`` may be a trial record or only its parameters (KerasTuner's best values)."""
    if not isinstance(best, dict) or not best:
        return False
    if "trial" in best and "trial" in trial:
        return best["trial"] == trial["trial"]
    if "params" in best:
        return best["params"] == trial.get("params")
    return best == trial.get("params")


def models_section(inputs: Inputs) -> str:
    sizes = model_sizes(inputs)
    res = inputs.results
    if not sizes and not res:
        return ""
    models = {k: _as_dict(v) for k, v in _as_dict(inputs.manifest.get("models")).items()}
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
                pct(r.get("accuracy"), 2),
                pct(r.get("balanced_accuracy"), 2),
                pct(r.get("agreement_with_float"), 2) if "agreement_with_float" in r else "",
                f"<code>{e(str(models.get(v, {}).get('sha256', ''))[:12])}</code>",
            ]
        )
    head = ["model", "size", "input", "accuracy", "balanced acc.", "agrees with float", "sha256"]
    body = [table(head, rows)]
    if "int8" in res and "float" in res:
        acc = _delta(res["int8"].get("accuracy"), res["float"].get("accuracy"))
        bal = _delta(res["int8"].get("balanced_accuracy"), res["float"].get("balanced_accuracy"))
        ratio = (
            f", {sizes['int8'] / sizes['float']:.0%} of the float size"
            if sizes.get("int8") and sizes.get("float")
            else ""
        )
        body.append(
            f"<p>int8 vs float: accuracy {e(acc)}, balanced accuracy {e(bal)}{e(ratio)}.</p>"
        )
    body.append(baseline_html(inputs))
    body.append(cross_validation_html(inputs.metrics.get("cross_validation")))
    return section("models", "Models", "\n".join(b for b in body if b))


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


def model_sizes(inputs: Inputs) -> dict[str, int]:
    """Bytes per variant: the manifest's figure, else the file's size."""
    out: dict[str, int] = {}
    for variant, entry in _as_dict(inputs.manifest.get("models")).items():
        if not isinstance(entry, dict):
            continue
        size = entry.get("bytes")
        path = inputs.dir / str(entry.get("file", ""))
        if not isinstance(size, int) and entry.get("file") and path.is_file():
            size = path.stat().st_size
        if isinstance(size, int):
            out[variant] = size
    return out


def baseline_html(inputs: Inputs) -> str:
    base = _as_dict(inputs.metrics.get("baseline_linear_head"))
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
        delta = _delta(r.get("accuracy"), base.get("test_accuracy"))
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
        + "<p class=note>The baseline is what a frozen-feature tool (e.g. Teachable Machine) "
        "would give on the same split; fine-tuning must beat it to have earned its time.</p>"
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
    for name in inputs.labels:
        stats = [_as_dict(_as_dict(r.get("per_class")).get(name)) for r in res.values()]
        support = next((s.get("support") for s in stats if "support" in s), "—")
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
            "publishes <code>unknown</code> for a frame whose best score is below it.</p>"
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


def timings_section(inputs: Inputs) -> str:
    t = numbers(inputs.metrics.get("timings_s"))
    if not t:
        return ""
    total = sum(t.values()) or 1.0
    longest = max(t.values()) or 1.0
    rows = [
        [
            e(phase.replace("_", " ")),
            e(f"{s:.1f} s"),
            pct(s / total, 0),
            f'<div class="bar" style="width:{240 * s / longest:.0f}px"></div>',
        ]
        for phase, s in t.items()
    ]
    rows.append(["<b>total</b>", f"<b>{e(f'{total:.1f} s')}</b>", "", ""])
    return section("timings", "Time per phase", table(["phase", "time", "share", ""], rows))


def doctor_section(inputs: Inputs) -> str:
    """``report/doctor.json`` rendered generically: its structure may still change."""
    doc = inputs.doctor
    if not doc:
        return ""
    if isinstance(doc, dict) and isinstance(doc.get("sections"), list):
        rest = {k: v for k, v in doc.items() if k != "sections"}
        parts = [render_any(rest)] if rest else []
        parts += [render_any(s, 1) for s in doc["sections"]]
    elif isinstance(doc, dict):
        parts = [f"<h3>{e(title_case(k))}</h3>{render_any(v, 1)}" for k, v in doc.items()]
    else:
        parts = [render_any(doc)]
    return section("doctor", "Data doctor", "\n".join(parts))


def options_section(inputs: Inputs) -> str:
    opts = _as_dict(inputs.metrics.get("options"))
    fit = _as_dict(_as_dict(inputs.manifest.get("trainer")).get("fit"))
    merged = {**opts, **{f"fit.{k}": v for k, v in fit.items()}}
    if not merged:
        return ""
    rows = [[e(k), f"<code>{e(v)}</code>"] for k, v in merged.items()]
    return section(
        "options",
        "Training options",
        f"<details><summary>{len(rows)} settings</summary>{table(['option', 'value'], rows)}"
        "</details>",
    )


# ----------------------------------------------------------------------------- page

SECTIONS: list[tuple[str, str, Callable[[Inputs], str]]] = [
    # Results first, then where they come from.
    ("models", "Models", models_section),
    ("per-class", "Per class", per_class_section),
    ("confusion", "Confusion", confusion_section),
    ("gallery", "Mistakes", gallery_section),
    ("calibration", "Thresholds", calibration_section),
    ("doctor", "Data doctor", doctor_section),
    ("dataset", "Dataset", dataset_section),
    ("split", "Split", split_section),
    ("curves", "Training", curves_section),
    ("search", "Search", search_section),
    ("timings", "Timings", timings_section),
    ("options", "Options", options_section),
]


def render(inputs: Inputs) -> str:
    """The whole page as one string."""
    parts = [(anchor, title, build(inputs)) for anchor, title, build in SECTIONS]
    present = [(a, t, h) for a, t, h in parts if h]
    name = inputs.manifest.get("name") or inputs.dir.name
    return "\n".join(
        [
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>sightwire report: {e(name)}</title><style>{STYLE}</style></head><body>",
            header(inputs, [(a, t) for a, t, _ in present]),
            *(h for _, _, h in present),
            "</main></body></html>\n",
        ]
    )


def write_report(bundle_dir: Path) -> Path:
    """Build ``BUNDLE/report/index.html`` from the bundle's files; returns its path."""
    inputs = Inputs(Path(bundle_dir))
    page = render(inputs)
    out = inputs.report_dir / INDEX
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m trainer.report_html BUNDLE_DIR", file=sys.stderr)
        return 2
    try:
        print(write_report(Path(args[0])))
    except SightwireError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
