"""Report sections on where the results come from; they follow the results.

Dataset, split, training curves, hyper-parameter search, data doctor, time per phase,
training options.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from trainer.report.doctor_page import doctor_body, is_structured
from trainer.report.inputs import Inputs, as_dict, numbers, pairs, rare_classes
from trainer.report.markup import (
    GENERIC_MAX_DEPTH,
    GENERIC_MAX_ITEMS,
    data_uri,
    e,
    img,
    more_note,
    num,
    pct,
    render_any,
    section,
    table,
    title_case,
)
from trainer.report.pictures import curves_png


def dataset_section(inputs: Inputs) -> str:
    ds = inputs.dataset
    counts = inputs.counts
    if not ds and not counts:
        return ""
    root = ds.get("root", "")
    sides = [s for s in ("train", "val", "test") if s in inputs.split]
    per_side = {s: _count_labels(pairs(inputs.split[s])) for s in sides}
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
    body.append(
        _path_list(
            "Files not read as photos (not images, or beside the class folders)",
            ds.get("ignored"),
            root,
        )
    )
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
    history = as_dict(inputs.metrics.get("history"))
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
    """``report/doctor.json`` as findings (format version 1), any other shape generically."""
    doc = inputs.doctor
    if not doc:
        return ""
    if is_structured(doc):
        return section("doctor", "Data doctor", doctor_body(doc))
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
    opts = as_dict(inputs.metrics.get("options"))
    fit = as_dict(as_dict(inputs.manifest.get("trainer")).get("fit"))
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
