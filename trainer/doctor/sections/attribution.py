"""``attribution``: where the exported model looks, per class, as occlusion maps.

The maps are measured on the bundle's float model when it has one (its output keeps
the runner-up's probability, so the logit margin does not saturate; see
``trainer.doctor.attribution``) and the int8 model's prediction is reported beside them.
An image whose margin cannot be measured is said to be so, never read as "looks at
the centre".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device.classifier import Classifier
from device.images import load_image
from trainer.dataset import Dataset
from trainer.doctor.attribution import (
    attribution,
    measurable,
    outside_share,
    uniform_share,
)
from trainer.doctor.options import DoctorOptions
from trainer.doctor.report import Finding, short_list
from trainer.doctor.thumbnails import Thumbnails, heat_overlay_uri


def attribution_section(
    ds: Dataset,
    classifier: Classifier,
    opts: DoctorOptions,
    thumbs: Thumbnails,
    border_warning: bool,
) -> tuple[dict[str, Any], list[Finding]]:
    """Occlusion maps of ``opts.attribution_per_class`` random photos per class.

    ``border_warning`` (the shortcut check warned about the border) turns a model that
    looks outside the centre from a note into a warning: it has learnt the background.
    """
    per_class, grid, centre_fraction = opts.attribution_per_class, opts.grid, opts.centre_fraction
    rng = np.random.default_rng(opts.seed)
    labels = ds.labels
    uniform = uniform_share(centre_fraction)
    scorer = measuring_model(classifier)
    classes: dict[str, Any] = {}
    unmeasurable = 0
    for c, name in enumerate(ds.classes):
        members = np.flatnonzero(labels == c)
        chosen = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        entries = []
        for i in chosen.tolist():
            rgb = load_image(ds.items[i].path)
            predicted, probability = classifier.top_k(classifier.classify(rgb), 1)[0]
            target = scorer.labels.index(predicted)
            ok = measurable(scorer.classify(rgb), target)
            heat = attribution(scorer, rgb, grid, target) if ok else np.zeros((grid, grid))
            share = outside_share(heat, centre_fraction) if ok else float("nan")
            unmeasurable += not ok
            entries.append(
                {
                    "image": thumbs.ref(i),
                    "predicted": predicted,
                    "probability": round(probability, 4),
                    "measurable": ok,
                    "outside_share": round(share, 4),
                    "heat": np.round(heat.astype(np.float64), 4).tolist(),
                    "overlay": heat_overlay_uri(rgb, heat) if thumbs.enabled and ok else None,
                }
            )
        shares = [e["outside_share"] for e in entries if np.isfinite(e["outside_share"])]
        classes[name] = {
            "outside_share": round(float(np.mean(shares)), 4) if shares else None,
            "n": len(entries),
            "images": entries,
        }
    section = {
        "variant": classifier.variant,
        "measured_on": scorer.variant,
        "scale": "logit margin: log p(class) - log p(runner-up)",
        "unmeasurable": unmeasurable,
        "grid": grid,
        "centre_fraction": centre_fraction,
        "uniform_share": round(uniform, 4),
        "classes": classes,
    }
    outward = {
        n: v["outside_share"]
        for n, v in classes.items()
        if v["outside_share"] is not None and v["outside_share"] > uniform + 0.1
    }
    if outward:
        finding = Finding(
            "attribution",
            "warning" if border_warning else "note",
            f"the model looks mostly outside the central {centre_fraction:.0%} of the image "
            f"for: {short_list(f'{n} ({s:.2f})' for n, s in outward.items())} "
            f"(a uniform spread gives {uniform:.2f})",
            "fine when objects sit off-centre or fill the frame; with a border shortcut it "
            "means the model learnt the background",
        )
    else:
        shares = [v["outside_share"] for v in classes.values() if v["outside_share"] is not None]
        if not shares:
            total = sum(v["n"] for v in classes.values())
            why = (
                f"the {scorer.variant} model's score saturates on {unmeasurable} of {total} "
                "photos (no runner-up class left to lose ground to)"
                if unmeasurable
                else "hiding any one patch did not lower the score"
            )
            return section, [
                Finding(
                    "attribution",
                    "note",
                    f"where the model looks is not measurable: {why}",
                    "nothing to fix in the data; a bundle with its float model measures it",
                )
            ]
        mean = f"{np.mean(shares):.2f}"
        finding = Finding(
            "attribution",
            "ok",
            f"the model looks at the centre as much as or more than the edges (outside share "
            f"{mean}, uniform {uniform:.2f})",
        )
    return section, [finding]


def measuring_model(classifier: Classifier) -> Classifier:
    """The bundle's float model when it has one (its scores do not saturate), else itself."""
    if classifier.variant == "float" or "float" not in classifier.bundle.models:
        return classifier
    return Classifier.open(classifier.bundle, "float")
