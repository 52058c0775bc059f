"""The tables ``train`` prints: the dataset and its split, then the results and the
closing summary (what was kept, where the files are)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Table

from trainer.console import console
from trainer.dataset import CONVERT, UNREAD_PHOTO_SUFFIXES, Dataset, unread_photos_text


def print_dataset(ds: Dataset, parts: dict[str, np.ndarray]) -> None:
    table = Table(title=f"dataset {ds.root}")
    for col in ("class", "images", "train", "val", "test"):
        table.add_column(col, justify="right" if col != "class" else "left")
    labels = ds.labels
    for i, name in enumerate(ds.classes):
        row = [int(np.sum(labels[parts[s]] == i)) for s in ("train", "val", "test")]
        table.add_row(name, str(int(np.sum(labels == i))), *map(str, row))
    console.print(table)
    for side, why in (
        ("val", "early stopping and every choice made on validation leave it out"),
        ("test", "its accuracy is not measured"),
    ):
        names = [n for i, n in enumerate(ds.classes) if not np.any(labels[parts[side]] == i)]
        if names:
            where = f"; add some to {side}/{names[0]}" if ds.user_split else ""
            console.print(
                f"[yellow]no {side} photos of[/] {escape(', '.join(names))}: {why}{where}",
                highlight=False,
            )
    for path, why in ds.unreadable:
        console.print(f"[yellow]skipped unreadable image[/] {escape(f'{path}: {why}')}")
    photos = unread_photos_text(ds.ignored, ds.root)
    if photos:  # an iPhone's HEIC: photos, yet not read
        console.print(f"[yellow]{escape(photos)}[/]: {CONVERT}", highlight=False)
    others = [p for p in ds.ignored if p.suffix.lower() not in UNREAD_PHOTO_SUFFIXES]
    if others:
        shown = ", ".join(str(p.relative_to(ds.root)) for p in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        what = "file(s) not read as photos (not images, or beside the class folders)"
        console.print(f"[yellow]ignored {len(others)} {what}[/]: {escape(shown)}{more}")
    for group in ds.cross_class_duplicates:
        rel = ", ".join(str(p.relative_to(ds.root)) for p in group)
        console.print(f"[yellow]identical files in different classes[/]: {escape(rel)}")


def print_results(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['evaluated_on']} split results")
    table.add_column("model")
    table.add_column("accuracy", justify="right")
    table.add_column("balanced acc.", justify="right")
    table.add_column("worst class recall", justify="right")
    table.add_column("same label as float", justify="right")  # int8's price, in one number
    for variant, res in report["test"].items():
        worst = min(res["per_class"].items(), key=lambda kv: kv[1]["recall"])
        agree = res.get("agreement_with_float")
        table.add_row(
            variant,
            f"{res['accuracy']:.2%}",
            f"{res['balanced_accuracy']:.2%}",
            f"{worst[0]} {worst[1]['recall']:.2f}",
            f"{agree:.1%}" if agree is not None else "",
        )
    base = report["baseline_linear_head"]["test_accuracy"]
    if base is not None:
        bal = report["baseline_linear_head"].get("test_balanced_accuracy")
        table.add_row("frozen linear head", f"{base:.2%}", f"{bal:.2%}" if bal else "", "", "")
    console.print(table)
    line = threshold_line(report.get("calibration"))
    if line:
        console.print(line, highlight=False)
    t = report["timings_s"]
    console.print(
        "time: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in t.items())
        + f" (total {sum(t.values()):.0f}s)"
    )


def threshold_line(cal: dict[str, Any] | None) -> str | None:
    """The ``uncertain`` threshold the bundle got, and what it costs on validation; in
    yellow when no score kept the target precision (the threshold is then a default)."""
    if not cal or "suggested_threshold" not in cal:
        return None
    target = cal["target_precision"]
    unsure = 1 - cal["coverage_at_suggested"]
    text = (
        f"threshold {cal['suggested_threshold']:g}: {unsure:.0%} of validation photos "
        "would be published as uncertain"
    )
    if cal.get("global_threshold") is None:
        return (
            f"[yellow]{text}; no score kept {target:.0%} precision on validation, so this "
            "is a default: more photos, or a lower --target-precision[/]"
        )
    return f"{text} (the lowest that keeps {target:.0%} precision there)"


def fine_tune_verdict(
    history: dict[str, dict[str, list[float]]], kept: bool, epochs: int, scratch: bool
) -> str:
    """One sentence: whether stage 2 (fine-tuning) is in the bundle, and why.

    Fine-tuning is kept only when it lowers stage 1's validation loss
    (``trainer.fit.fine_tune``); a backbone trained from scratch always keeps it."""
    if epochs <= 0:
        return "fine-tuning: off (--fine-tune-layers 0): the bundle is stage 1's head"
    if scratch:
        return "fine-tuning: kept (--weights none: the whole backbone is trained)"
    ft = history.get("fine_tune", {})
    before = (ft.get("stage1_val_loss") or ft.get("reverted") or [None])[0]
    best = min(ft["val_loss"]) if ft.get("val_loss") else None
    n = len(ft.get("loss", []))
    losses = (
        f" (validation loss {before:.4f} after stage 1, best {best:.4f} in {n} epochs)"
        if before is not None and best is not None
        else ""
    )
    if kept:
        return f"fine-tuning: kept, it lowered the validation loss{losses}"
    return (
        f"fine-tuning: not kept, it did not lower the validation loss{losses}; "
        "the bundle uses stage 1's head on the frozen backbone"
    )


def print_summary(out: Path, verdict: str) -> None:
    """The last lines of ``train``: what was kept and where to look."""
    console.print(verdict, highlight=False)
    console.print(f"bundle: {out}", highlight=False, soft_wrap=True)
    console.print(f"report: {Path(out) / 'report' / 'index.html'}", highlight=False, soft_wrap=True)
