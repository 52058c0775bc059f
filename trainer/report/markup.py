"""HTML building blocks of the training report: escaping, number formats, tables, the
page's style, and any JSON value as HTML.

``trainer.report.html`` lays out the sections a bundle has; this module knows nothing about
bundles. Its generic renderer (``render_any``) shows data whose shape nobody has fixed
yet (a new doctor check, a search trial's extra fields) without breaking or swelling
the page, so a new figure in ``metrics.json`` or ``doctor.json`` reaches the report
without new code.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from typing import Any

GENERIC_MAX_ITEMS = 40  # list items shown by the generic renderer, per list
GENERIC_MAX_DEPTH = 6
_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#1d232a;background:#f4f6f8;margin:0}
main{max-width:1120px;margin:0 auto;padding:16px 24px 48px}
header{background:#1f3a56;color:#fff;padding:18px 24px}
header h1{margin:0 0 4px;font-size:24px}header p{margin:0;opacity:.85}
nav{font-size:13px;margin:10px 0 0}nav a{color:#cfe3f7;margin-right:12px}
section{background:#fff;border:1px solid #dde3e9;border-radius:8px;padding:12px 20px 16px;
 margin:16px 0}
h2{font-size:18px;margin:4px 0 10px;color:#1f3a56}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
.wide{overflow-x:auto;max-width:100%}
th,td{border-bottom:1px solid #e4e8ec;padding:3px 10px;text-align:right;vertical-align:top}
th{background:#eef2f6;font-weight:600}th:first-child,td:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0}
.card{background:#f7f9fb;border:1px solid #dde3e9;border-radius:6px;padding:8px 14px;
 min-width:130px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#5b6670}
.low{color:#b3261e;font-weight:600}.warn td{background:#fdecea}.best td{background:#e6f4ea}
.good{color:#1e7b34;font-weight:600}.note{color:#5b6670;font-size:13px}
.bar{background:#4f86b8;height:10px;border-radius:2px}
.pics{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.pics figure{margin:0}.pics figure.half{flex:1 1 380px;max-width:540px}
.pics figcaption{font-size:12px;color:#5b6670;text-align:center}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
.gallery figure{margin:0;width:170px;font-size:12px;line-height:1.3}
.gallery img,.thumb{border:1px solid #ccd3da;border-radius:3px;max-width:128px;max-height:128px}
.noimg{width:128px;height:64px;background:#eef2f6;color:#5b6670;display:flex;
 align-items:center;justify-content:center;font-size:11px}
img.plot{max-width:100%}code{font-size:12px}dl{margin:4px 0}dt{font-weight:600}
dd{margin:0 0 6px 16px}details summary{cursor:pointer;color:#1f3a56}
section,.card,td,figcaption{overflow-wrap:anywhere}
table.findings td{text-align:left;padding:5px 10px}.todo{color:#3d4852}
table.findings td:nth-child(2){white-space:nowrap}
.badge{display:inline-block;min-width:58px;text-align:center;border-radius:10px;
 padding:1px 8px;font-size:12px;font-weight:600;color:#fff;background:#5b6670}
.badge.warning{background:#b3261e}.badge.note{background:#c77700}.badge.ok{background:#1e7b34}
.badge.skip{background:#8a949e}
.gallery figure.pair{width:210px}.pair div{display:flex;gap:4px}
.thumb.small{max-width:100px;max-height:100px}ul.compact{margin:4px 0;padding-left:20px}
"""


# A lone surrogate: how Python holds a file name's bytes that are not UTF-8 (``bad\xff.jpg``
# read from disk is ``'bad\udcff.jpg'``); UTF-8 cannot encode one, so the page would not save.
_SURROGATES = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate as U+FFFD (�), as a terminal shows it."""
    return _SURROGATES.sub("\ufffd", text)


def e(value: Any) -> str:
    """Escaped text; every string that reaches the page goes through here (a file name's
    bytes that are not UTF-8 as U+FFFD)."""
    return html.escape(valid_text(str(value)), quote=True)


def pct(x: Any, digits: int = 1) -> str:
    return "—" if not isinstance(x, (int, float)) else f"{x:.{digits}%}"


def num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, float):
        return e(x)
    return e(f"{x:.4g}")


def fixed(x: Any) -> str:
    """Scores in 0..1 with three decimals, so a column of them lines up."""
    return "—" if not isinstance(x, (int, float)) else f"{x:.3f}"


def data_uri(png_or_jpeg: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png_or_jpeg).decode('ascii')}"


def img(src: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{e(src)}" alt="{e(alt)}">'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{e(title)}</h2>\n{body}\n</section>'


def table(head: list[str], rows: Iterable[list[str]], row_classes: list[str] | None = None) -> str:
    """A table whose cells are already HTML (callers escape their text), in a wrapper that
    scrolls it sideways inside its card when it is wider (a phone: 390 px)."""
    out = ['<div class="wide"><table>']
    if any(head):  # key/value tables go without a header row
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and row_classes[i] else ""
        attr = f' class="{cls}"' if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "\n".join([*out, "</table></div>"])


def more_note(n: int) -> str:
    return f"<p class=note>… and {n - GENERIC_MAX_ITEMS} more</p>" if n > GENERIC_MAX_ITEMS else ""


def title_case(key: Any) -> str:
    return str(key).replace("_", " ").strip().capitalize()


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_image(v: Any) -> bool:
    return isinstance(v, str) and len(v) < 2_000_000 and bool(_DATA_URI.match(v))


def render_any(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: tolerant of shapes nobody has decided yet.

    Data URIs of images become ``<img>``; lists of flat records become tables; a dict
    of flat records becomes a table keyed by the dict's keys (per-class figures);
    ``title``/``name`` keys become headings. Long lists are cut, deep nesting is shown
    as JSON text, so a surprising doctor.json can never break or swell the page.
    """
    if _is_image(value):
        return img(value, "thumbnail", "thumb")
    if _scalar(value):
        return num(value) if value is not None else "—"
    if depth >= GENERIC_MAX_DEPTH:
        return f"<code>{e(json.dumps(value)[:300])}</code>"
    if isinstance(value, list):
        return _render_list(value, depth)
    if isinstance(value, dict):
        return _render_dict(value, depth)
    return e(value)


def _render_list(value: list, depth: int) -> str:
    if not value:
        return "<span class=note>none</span>"
    shown, more = value[:GENERIC_MAX_ITEMS], more_note(len(value))
    if all(_is_image(v) for v in shown):
        return f'<div class="pics">{"".join(img(v, "thumbnail", "thumb") for v in shown)}</div>'
    if all(_scalar(v) for v in shown) and not any(
        isinstance(v, str) and len(v) > 40 for v in shown
    ):
        return ", ".join(num(v) for v in shown) + more
    if all(isinstance(v, dict) and all(_flat(x) for x in v.values()) for v in shown):
        cols = list(dict.fromkeys(k for row in shown for k in row))
        rows = [[render_any(row.get(c, ""), depth + 1) for c in cols] for row in shown]
        return table([e(c) for c in cols], rows) + more
    items = "".join(f"<li>{render_any(v, depth + 1)}</li>" for v in shown)
    return f"<ul>{items}</ul>{more}"


def _flat(v: Any) -> bool:
    """A value fit for one table cell."""
    return (
        _scalar(v)
        or _is_image(v)
        or (isinstance(v, list) and len(v) <= 8 and all(_scalar(x) or _is_image(x) for x in v))
    )


def _render_dict(value: dict, depth: int) -> str:
    if not value:
        return "<span class=note>none</span>"
    values = list(value.values())
    if all(isinstance(v, dict) and v and all(_flat(x) for x in v.values()) for v in values):
        cols = list(dict.fromkeys(k for v in values for k in v))
        rows = [
            [e(k)] + [render_any(v.get(c, ""), depth + 1) for c in cols] for k, v in value.items()
        ]
        return table(["", *[e(c) for c in cols]], rows)
    out = []
    title = next((value[k] for k in ("title", "name") if isinstance(value.get(k), str)), None)
    if title is not None:
        out.append(f"<h3>{e(title)}</h3>")
    rest = {k: v for k, v in value.items() if not (k in ("title", "name") and v == title)}
    if all(_flat(v) for v in rest.values()) and not any(
        isinstance(v, str) and len(v) > 80 and not _is_image(v) for v in rest.values()
    ):
        rows = [[e(title_case(k)), render_any(v, depth + 1)] for k, v in rest.items()]
        out.append(table(["", ""], rows) if rows else "")
        return "".join(out)
    items = []
    for k, v in rest.items():
        if isinstance(v, str) and not _is_image(v):
            items.append(f"<dt>{e(title_case(k))}</dt><dd>{e(v)}</dd>")
        else:
            items.append(f"<dt>{e(title_case(k))}</dt><dd>{render_any(v, depth + 1)}</dd>")
    out.append(f"<dl>{''.join(items)}</dl>")
    return "".join(out)
