"""Show that the loop helps: NEU steel photos, a field shift, the daemon keeps, a script
labels through ``Labeller``, ``train --baseline`` retrains (``trainer.learn_loop``).

Three NEU classes, 30 photos each to train on; 30 more per class under the line's light
(darker, a warm cast, a little blur) replayed through the real daemon with ``[keep]`` on;
30 more per class under that light held out of every step. The retrained bundle must do
better on the held-out field photos and no worse on the old bundle's test split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.learn_loop import run, table


@pytest.mark.slow
def test_labelled_field_frames_lift_field_accuracy_and_keep_the_old_test_accuracy(
    shared: Path, imagenet_weights: Path, tmp_path: Path
):
    figures = run(shared / "datasets" / "neu_surface_defects", tmp_path, str(imagenet_weights))
    print("\n" + table(figures))
    assert figures["kept"] > 0 and figures["labelled"] == figures["kept"]
    hold = figures["hold_accuracy"]
    assert hold["new"] > hold["old"]
    old_test = figures["old_test_accuracy"]
    assert old_test["new"] >= old_test["old"]
    assert figures["exit_status"] == 0 and figures["verdict"].startswith("accepted: ")
