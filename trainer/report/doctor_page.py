"""The data doctor's part of the page: findings first, then the pictures that back them.

``report/doctor.json`` (format version 1, ``trainer.doctor.report``) holds every number;
the page holds what a maker acts on: each check's verdict, one sentence of why and what
to do, then near-duplicate pairs side by side, probable label errors as a gallery,
shortcut cues and learning curves as small charts, and where the model looks. Lists are
cut to what fits one screen (``SHOWN``); the rest stays in ``doctor.json``, as the page
says. A ``doctor.json`` of another format falls back to the generic renderer in
``trainer.report.provenance``.
"""

from __future__ import annotations

from typing import Any

from trainer.report.doctor_plots import curve_png, shortcuts_png
from trainer.report.inputs import as_dict
from trainer.report.markup import data_uri, e, img, pct

SHOWN = 8  # pairs, label errors and attribution images shown per list
CHECK_TITLES = {
    "data": "Photos per class",
    "duplicates": "Near-duplicates",
    "features": "Frozen features",
    "labels": "Label errors",
    "shortcuts": "Shortcuts",
    "curve": "More photos?",
    "attribution": "Where the model looks",
}
BADGES = {"warning": "warning", "note": "note", "ok": "fine"}
SIDE_WORDS = {"train": "train", "val": "validation", "test": "test"}


def is_structured(doc: Any) -> bool:
    """A ``doctor.json`` this module knows (format version 1)."""
    return isinstance(doc, dict) and doc.get("format_version") == 1


def doctor_body(doc: dict[str, Any]) -> str:
    """The section's HTML: verdict counts, findings table, then one block per check."""
    parts = [
        _findings(doc),
        _duplicates(as_dict(doc.get("duplicates"))),
        _label_errors(as_dict(doc.get("label_errors"))),
        _charts(as_dict(doc.get("shortcuts")), as_dict(doc.get("learning_curve"))),
        _attribution(as_dict(doc.get("attribution"))),
        "<p class=note>Every figure behind these findings is in <code>report/doctor.json</code>;"
        " <code>sightwire doctor DATA_DIR</code> runs the checks again on their own.</p>",
    ]
    return "\n".join(p for p in parts if p)


def headline(doc: Any) -> tuple[str, str] | None:
    """The header tile: ``("1 warning", "data doctor")`` or ``("all fine", ...)``."""
    if not is_structured(doc):
        return None
    counts = _severity_counts(doc)
    if counts["warning"]:
        return f"{counts['warning']} warning" + "s" * (counts["warning"] > 1), "data doctor"
    if counts["note"]:
        return f"{counts['note']} note" + "s" * (counts["note"] > 1), "data doctor"
    return "all fine", "data doctor"


def _severity_counts(doc: dict[str, Any]) -> dict[str, int]:
    counts = {"warning": 0, "note": 0, "ok": 0}
    for f in doc.get("findings") or []:
        if isinstance(f, dict) and f.get("severity") in counts:
            counts[f["severity"]] += 1
    return counts


def _findings(doc: dict[str, Any]) -> str:
    rows = []
    for f in doc.get("findings") or []:
        if not isinstance(f, dict):
            continue
        sev = str(f.get("severity", "note"))
        check = str(f.get("check", ""))
        what = e(_sentence(f.get("message", "")))
        if f.get("advice") and sev != "ok":
            what += f'<br><span class="todo">What to do: {e(_sentence(f["advice"]))}</span>'
        rows.append(
            f'<tr class="sev-{e(sev)}"><td><span class="badge {e(sev)}">'
            f"{e(BADGES.get(sev, sev))}</span></td>"
            f"<td>{e(CHECK_TITLES.get(check, check))}</td><td>{what}</td></tr>"
        )
    for check, why in as_dict(doc.get("skipped")).items():
        rows.append(
            f'<tr><td><span class="badge skip">not run</span></td>'
            f"<td>{e(CHECK_TITLES.get(check, check))}</td><td>{e(_sentence(why))}</td></tr>"
        )
    if not rows:
        return ""
    c = _severity_counts(doc)
    lead = (
        f"<p>{c['warning']} warning(s), {c['note']} note(s), {c['ok']} check(s) fine. "
        "Warnings first: each says why, and what to do.</p>"
    )
    return lead + f'<div class="wide"><table class="findings">{"".join(rows)}</table></div>'


def _sentence(text: Any) -> str:
    s = str(text).strip()
    return s[:1].upper() + s[1:] + ("" if s.endswith((".", "!", "?")) or not s else ".")


def _thumb(ref: Any, size: str = "") -> str:
    src = as_dict(ref).get("thumb")
    alt = str(as_dict(ref).get("path", "photo"))
    if isinstance(src, str) and src.startswith("data:image/"):
        return img(src, alt, f"thumb{size}")
    return f'<div class="noimg">{e("no thumbnail")}</div>'


def _path(ref: Any) -> str:
    return f"<code>{e(as_dict(ref).get('path', '?'))}</code>"


def _more(total: int, shown: int, what: str) -> str:
    if total <= shown:
        return ""
    return f"<p class=note>{total - shown} more {e(what)} in <code>report/doctor.json</code>.</p>"


def _duplicates(dup: dict[str, Any]) -> str:
    pairs = [p for p in dup.get("pairs") or [] if isinstance(p, dict)]
    if not pairs:
        return ""
    similar = sum(p.get("kind") == "similar" for p in pairs)
    title = f"Near-duplicates: {len(pairs) - similar} pair(s) of copies"
    if similar:
        title += f", {similar} of similar photos"
    figs = [_pair(p) for p in pairs[:SHOWN]]
    return (
        f"<h3>{e(title)}</h3>"
        "<p class=note>A copy on two sides of the split (red) lets the test score see "
        "photos it trained on. Pixels compare the small copies (1 = the same picture); "
        "backbone features alone also pair two different photos of one subject: such "
        "pairs are shown as similar, and neither grouped nor counted as leaks.</p>"
        f'<div class="gallery pairs">{"".join(figs)}</div>' + _more(len(pairs), SHOWN, "pairs")
    )


def _pair(p: dict[str, Any]) -> str:
    a, b = as_dict(p.get("a")), as_dict(p.get("b"))
    found = p.get("found_by") or []
    copy = p.get("kind") != "similar"
    if "pixels" in found and isinstance(p.get("pixel_detail"), (int, float)):
        sim = f"copy: pixels {p['pixel_detail']:.2f}"
    elif isinstance(p.get("feature_cosine"), (int, float)):
        what = "copy" if copy else "similar, not a copy"
        sim = f"{what}: features {p['feature_cosine']:.2f}"
    else:
        sim = "copy" if copy else "similar, not a copy"
    sides = p.get("sides")
    where = ""
    if isinstance(sides, list) and len(sides) == 2:
        words = " / ".join(SIDE_WORDS.get(str(s), str(s)) for s in sides)
        cls = "low" if p.get("straddles_split") and copy else "note"
        where = f'<br><span class="{cls}">{e(words)}</span>'
    across = ""
    if p.get("relation") == "across_classes":
        across = f'<br><span class="low">{e(a.get("label"))} vs {e(b.get("label"))}</span>'
    return (
        f'<figure class="pair"><div>{_thumb(a, " small")}{_thumb(b, " small")}</div>'
        f"<figcaption>{e(sim)}{where}{across}<br>{_path(a)}<br>{_path(b)}</figcaption></figure>"
    )


def _label_errors(lab: dict[str, Any]) -> str:
    issues = [i for i in lab.get("issues") or [] if isinstance(i, dict)]
    if not issues:
        return ""
    figs = []
    for x in issues[:SHOWN]:
        ref = as_dict(x.get("image"))
        given = str(x.get("given", ref.get("label", "?")))
        figs.append(
            f"<figure>{_thumb(ref)}<figcaption>in <code>{e(given)}/</code>, looks like "
            f"<code>{e(x.get('predicted', '?'))}</code> {pct(x.get('predicted_probability'), 0)}"
            f"<br>{_path(ref)}</figcaption></figure>"
        )
    return (
        f"<h3>Probable label errors: {len(issues)}</h3>"
        "<p class=note>Judged by a model that never saw the photo's own label. Move each "
        "to its right folder, or delete it if it is ambiguous.</p>"
        f'<div class="gallery">{"".join(figs)}</div>' + _more(len(issues), SHOWN, "photos")
    )


def _charts(short: dict[str, Any], curve: dict[str, Any]) -> str:
    cues = as_dict(short.get("cues"))
    classes = as_dict(curve.get("classes"))
    figs = []
    cue_png = shortcuts_png(cues) if cues else None
    if cue_png:
        figs.append(
            f'<figure class="half">{img(data_uri(cue_png), "shortcut cues against chance")}'
            "<figcaption>Shortcuts: what each cue alone predicts, with its 95% interval. "
            "A border close to the centre means the background gives the class away."
            "</figcaption></figure>"
        )
    curve_img = curve_png(classes) if classes else None
    if curve_img:
        figs.append(
            f'<figure class="half">{img(data_uri(curve_img), "learning curve per class")}'
            "<figcaption>More photos? Recall as each class gets more training photos: a "
            "line still climbing at the right wants more.</figcaption></figure>"
        )
    if not figs:
        return ""
    sentences = [
        f"<li><b>{e(name)}</b>: {e(c.get('sentence'))}</li>"
        for name, c in classes.items()
        if isinstance(c, dict) and c.get("sentence")
    ]
    listed = f"<ul class=compact>{''.join(sentences)}</ul>" if sentences else ""
    return f"<h3>Shortcuts and learning curve</h3><div class=pics>{''.join(figs)}</div>{listed}"


def _attribution(att: dict[str, Any]) -> str:
    classes = as_dict(att.get("classes"))
    entries = [
        (name, x)
        for name, c in classes.items()
        for x in as_dict(c).get("images") or []
        if isinstance(x, dict)
    ]
    if not entries:
        return ""
    figs = []
    for name, x in entries[:SHOWN]:
        src = x.get("overlay")
        pic = (
            img(src, f"where the model looks, {name}", "thumb")
            if isinstance(src, str) and src.startswith("data:image/")
            else _thumb(x.get("image"))
        )
        share = x.get("outside_share")
        if x.get("measurable") is False:
            looked = "not measurable: the score saturates"
        elif isinstance(share, (int, float)):
            looked = f"{pct(share, 0)} outside the centre"
        else:
            looked = "no patch changed the score"
        figs.append(
            f"<figure>{pic}<figcaption><code>{e(name)}</code> → {e(x.get('predicted', '?'))} "
            f"{pct(x.get('probability'), 0)}<br>{e(looked)}</figcaption></figure>"
        )
    uniform = att.get("uniform_share")
    even = f" (an even spread puts {pct(uniform, 0)} outside)" if uniform is not None else ""
    return (
        "<h3>Where the model looks</h3>"
        f"<p class=note>Red: the patches whose hiding lowers the "
        f"{e(att.get('measured_on') or att.get('variant', 'exported'))} model's logit margin "
        f"(its lead over the runner-up class) most{e(even)}.</p>"
        f'<div class="gallery">{"".join(figs)}</div>' + _more(len(entries), SHOWN, "images")
    )
