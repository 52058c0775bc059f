"""Camera-sized frames for the loop: photos fitted to the size, or synthetic scenes.

The loop replays a few distinct frames at camera resolution, stored the way the frames
it stands for arrive: JPEG files (a recording, decoded per read), BMP files (a file read,
no decoding) or arrays in memory (a camera's driver handing over a raw buffer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from device.images import load_image


def synthetic_scene(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like frame: gradient, soft shapes, sensor noise (JPEG-decodes like one)."""
    w, h = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, w)[None, :, None]
    base = (a * (1 - ramp) + b * ramp) * np.ones((h, 1, 1))
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20, w // 3)), y0 + int(rng.integers(h // 20, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.5))


def make_frames(
    folder: Path,
    size: tuple[int, int],
    count: int,
    photos: Sequence[Path] = (),
    seed: int = 0,
    frame_format: str = "jpg",
) -> list[Path]:
    """``count`` frames of exactly ``size``: ``photos`` cropped/resized to it when given,
    else synthetic scenes; mild noise, then JPEG quality 90 like a camera's JPEGs, or
    uncompressed BMP (``frame_format="bmp"`` or ``"raw"``) for lossless frames."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: list[Path] = []
    for i in range(count):
        if photos:
            photo = Image.fromarray(load_image(photos[i % len(photos)]))
            img = ImageOps.fit(photo, size, Image.BILINEAR)
        else:
            img = synthetic_scene(size, rng)
        pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 2.5, (size[1], size[0], 3))
        frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        # raw frames are kept as BMP files (lossless) and loaded into memory once
        path = folder / f"frame_{i:03d}.{'bmp' if frame_format == 'raw' else frame_format}"
        if frame_format == "jpg":
            frame.save(path, "JPEG", quality=90)
        else:
            frame.save(path, "BMP")
        made.append(path)
    return made


class MemorySource:
    """Decoded frames replayed from memory, a fresh copy per read: what a camera costs
    the capture thread (picamera2's ``capture_array`` and OpenCV's ``read`` both hand
    over a new array), without the file reading and decoding of a folder source."""

    paced = True

    def __init__(self, frames: Sequence[np.ndarray]):
        self.frames = list(frames)
        self.name = f"memory ({len(self.frames)} frames)"
        self._index = 0

    def open(self) -> None:
        self._index = 0

    def read(self) -> np.ndarray:
        frame = self.frames[self._index % len(self.frames)]
        self._index += 1
        return frame.copy()

    def close(self) -> None:
        pass


def pick_photos(paths: Sequence[Path], count: int) -> list[Path]:
    """Up to ``count`` files spread evenly over a (class-sorted) list."""
    if not paths:
        return []
    step = max(1, len(paths) // count)
    return list(paths[::step][:count])
