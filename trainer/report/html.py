"""The page: header, the sections in order, one self-contained HTML file.

Each section builder takes the bundle's ``Inputs`` and returns its HTML, or "" when the
bundle holds no data for it; ``render`` keeps the non-empty ones and links them from
the header.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.report.comparison import comparison_section
from trainer.report.doctor_page import headline
from trainer.report.inputs import Inputs, as_dict, numbers
from trainer.report.intervals import interval_text
from trainer.report.markup import STYLE, e, pct, valid_text
from trainer.report.provenance import (
    curves_section,
    dataset_section,
    doctor_section,
    options_section,
    search_section,
    split_section,
    timings_section,
)
from trainer.report.results import (
    calibration_section,
    confusion_section,
    gallery_section,
    model_sizes,
    models_section,
    per_class_section,
    points,
)

INDEX = "index.html"


def header(inputs: Inputs, nav: list[tuple[str, str]]) -> str:
    m, man = inputs.metrics, inputs.manifest
    name = man.get("name") or inputs.dir.name
    trainer = as_dict(man.get("trainer"))
    inp = as_dict(man.get("input"))
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
        spread = interval_text(res[variant])
        label = f"{variant} {on} accuracy" + (f" ({spread})" if spread else "")
        cards.append((pct(res[variant].get("accuracy")), label))
    if "int8" in res and "float" in res:
        delta = points(res["int8"].get("accuracy"), res["float"].get("accuracy"))
        cards.append((delta, "int8 − float"))
    base = as_dict(m.get("baseline_linear_head")).get("test_accuracy")
    if base is not None:
        random = as_dict(man.get("trainer")).get("weights") == "none"
        what = "linear head, random features" if random else "frozen linear head"
        cards.append((pct(base), what))
    int8_size = model_sizes(inputs).get("int8")
    if int8_size:
        cards.append((f"{int8_size / 1e6:.2f} MB", "int8 model"))
    timings = numbers(m.get("timings_s"))
    if timings:
        cards.append((f"{sum(timings.values()):.0f} s", "training time"))
    doctor_tile = headline(inputs.doctor)
    if doctor_tile:
        cards.append(doctor_tile)
    card_html = "".join(f"<div class=card><b>{e(v)}</b><span>{e(t)}</span></div>" for v, t in cards)
    return (
        f"<header><h1>sightwire report: {e(name)}</h1>"
        f"<p>{e(' · '.join(f for f in facts if f))}</p><nav>{links}</nav></header>"
        f'<main><div class="cards">{card_html}</div>'
    )


SECTIONS: list[tuple[str, str, Callable[[Inputs], str]]] = [
    # Results first, then where they come from.
    ("comparison", "Old vs new", comparison_section),  # train --baseline only
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
    tmp.write_text(valid_text(page), encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a page
    return out
