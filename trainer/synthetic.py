"""Deterministic folder-per-class datasets of drawn shapes, for tests and the offline demo.

Each class is a shape (circle, square, triangle, cross, ...) drawn at a random place,
size and colour on a noisy background. ``background`` controls the one property the
data doctor must judge:

* ``"mixed"`` (default): every class gets backgrounds from the same palette, so only
  the shape tells the classes apart;
* ``"per_class"``: each class has its own background colour, a shortcut a model can
  learn instead of the shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
PALETTE = [(40, 40, 40), (90, 110, 130), (150, 150, 140), (60, 90, 60), (120, 80, 70)]


def draw_shape(shape: str, size: int, rng: np.random.Generator, background: tuple) -> Image.Image:
    """One image: noise over ``background``, the shape in a random bright colour."""
    noise = rng.normal(0, 12, (size, size, 3))
    base = np.clip(np.array(background, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r, 2)
    color = tuple(int(c) for c in rng.integers(170, 256, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    width = max(2, int(r / 3))
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    elif shape == "cross":
        draw.line((cx - r, cy - r, cx + r, cy + r), fill=color, width=width)
        draw.line((cx - r, cy + r, cx + r, cy - r), fill=color, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=width)
    elif shape == "bar":
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def make_dataset(
    root: str | Path,
    classes: int = 3,
    per_class: int = 20,
    size: int = 64,
    seed: int = 0,
    background: str = "mixed",
    fmt: str = "png",
) -> Path:
    """Write ``root/<shape>/<shape>_NNN.<fmt>`` and return ``root``."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 2..{len(SHAPES)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for ci, shape in enumerate(SHAPES[:classes]):
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            if background == "per_class":
                bg = PALETTE[ci % len(PALETTE)]
            elif background == "mixed":
                bg = PALETTE[int(rng.integers(len(PALETTE)))]
            else:
                raise ValueError(f"unknown background mode {background!r}")
            draw_shape(shape, size, rng, bg).save(folder / f"{shape}_{i:03d}.{fmt}")
    return root
