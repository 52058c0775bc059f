"""The figures of docs/training-figures.md, on the shared real datasets (slow: minutes each).

Each dataset is trained with the shared ImageNet weights at 224x224, defaults otherwise,
and the exported models are evaluated with the device runtime on the test split.
Promises checked: int8 within 1 point of float (2 on the magnetic tiles, see
``INT8_MARGIN``); on the magnetic tiles and the flowers the float model at least a point
above a frozen-backbone logistic-regression head on the last layer (the multi-scale head
measured +1.6 and +2.9 with the default ``--resize area``); on NEU, where that head is
already at 100%, no more than one test image below it (one image is 0.4 points: the
noise floor of a 270-image test set). And absolute floors, a little under the documented
figures for both models (NEU 100%, magnetic tiles 90.21% / 90.21%, flowers 95.19% /
95.19%, float / int8), because the relative claims alone would pass a preprocessing bug
that drags the model and the baseline down together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATASETS = {
    "neu_surface_defects": ["--vertical-flip"],
    "magnetic_tile_defects": ["--vertical-flip"],
    "oxford_flowers17": [],
}
MARGIN = {"neu_surface_defects": None, "magnetic_tile_defects": 0.01, "oxford_flowers17": 0.01}
# Test accuracy neither model may fall below, float or int8: the documented figures minus
# 2.0 to 3.2 points (4 to 7 test images), more than a split's noise, less than a bug's.
FLOOR = {"neu_surface_defects": 0.98, "magnetic_tile_defects": 0.88, "oxford_flowers17": 0.92}
# How far int8 may fall under float. The magnetic tiles' int8 - float moves run to run
# (training on CPU threads is not bit-reproducible) around the documented worst seeds
# (-1.60 with the averages, -0.99 with the maxima; one run of this test: -1.55, 3 of 194
# photos): within 1 point there is the open goal of docs/training-figures.md, not a
# promise this split keeps every run. 2 points still fails an export that breaks int8.
INT8_MARGIN = {"neu_surface_defects": 0.01, "magnetic_tile_defects": 0.02, "oxford_flowers17": 0.01}

pytestmark = pytest.mark.slow


# One whole training takes 250-470 s on 2 x86-64 cores (AMD EPYC), more with anything
# else running; the suite's 600 s guard is for hung tests, so these get 30 minutes.
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_train_on_real_data_keeps_its_promises(name, shared, imagenet_weights, tmp_path):
    data = shared / "datasets" / name
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    out = tmp_path / "bundle"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "train",
            str(data),
            "--out",
            str(out),
            "--weights",
            str(imagenet_weights),
            "--no-progress",
            *DATASETS[name],
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    test = metrics["test"]
    n = test["float"]["n"]
    float_acc, int8_acc = test["float"]["accuracy"], test["int8"]["accuracy"]
    baseline = metrics["baseline_linear_head"]["test_accuracy"]
    print(
        f"{name}: float {float_acc:.4f} int8 {int8_acc:.4f} baseline {baseline:.4f} n={n} "
        f"time {sum(metrics['timings_s'].values()):.0f}s"
    )
    assert int8_acc >= float_acc - INT8_MARGIN[name], f"int8 {int8_acc:.4f}, float {float_acc:.4f}"
    assert float_acc >= FLOOR[name], f"float {float_acc:.4f} below the floor {FLOOR[name]}"
    assert int8_acc >= FLOOR[name], f"int8 {int8_acc:.4f} below the floor {FLOOR[name]}"
    margin = MARGIN[name]
    assert float_acc >= (baseline - 1.0 / n - 1e-9 if margin is None else baseline + margin)
    assert Path(out / "report" / "index.html").stat().st_size > 10_000
