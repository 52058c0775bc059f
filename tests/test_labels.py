"""``labels.txt`` gives every reader the class names the model was trained with, whatever
the folders were called: ``0 good`` / ``1 bad`` are common folder names, and Teachable
Machine's ``0 cats`` numbering is read as numbering."""

from __future__ import annotations

import pytest

from device.bundle import BundleError, load_bundle, read_labels, write_bundle, write_labels
from device.classifier import Classifier
from device.preprocess import InputSpec


@pytest.mark.parametrize(
    "labels",
    [
        ["good", "bad"],
        ["0 good", "1 bad"],  # would read back as numbering: written numbered
        ["0 good", "bad"],  # not numbering: written as it is
        ["1 x", "0 y"],
        ["24 V relay", "12 V relay"],
        ["crème brûlée", "日本"],
    ],
)
def test_labels_read_back_as_written(tmp_path, labels):
    write_labels(tmp_path, labels)
    assert read_labels(tmp_path / "labels.txt") == labels


def test_teachable_machines_numbering_is_still_removed(tmp_path):
    (tmp_path / "labels.txt").write_text("0 cats\n1 dogs\n")
    assert read_labels(tmp_path / "labels.txt") == ["cats", "dogs"]


@pytest.mark.parametrize("name", [" crazing", "pitted ", "two\nlines"])
def test_a_name_that_cannot_be_one_line_is_refused_when_written(tmp_path, name):
    with pytest.raises(BundleError, match="cannot be written one per line"):
        write_labels(tmp_path, ["ok", name])


def test_a_bundle_of_numbered_folder_names_loads_and_classifies(tmp_path, model):
    """``sightwire train`` of folders ``0 background``, ``1 tench``, ...: the bundle it
    writes loads (labels.txt agrees with the manifest) and answers in those names."""
    reference = (model.parent / "labels.txt").read_text().splitlines()
    labels = [f"{i} {name}" for i, name in enumerate(reference)]
    write_bundle(
        tmp_path / "b", "numbered", labels, InputSpec(224, 224), {"int8": model.read_bytes()}
    )
    assert load_bundle(tmp_path / "b").labels == labels
    assert Classifier.open(tmp_path / "b", "int8").labels[1] == "1 tench, Tinca tinca"


def test_two_labels_files_beside_a_bare_model_are_named(tmp_path, model):
    """Which one belongs to the model is the user's to say; "labels.txt not found" was
    wrong: there were two."""
    (tmp_path / "m.tflite").write_bytes(model.read_bytes())
    for name in ("old_labels.txt", "new_labels.txt"):
        (tmp_path / name).write_text("a\nb\n")
    with pytest.raises(BundleError, match=r"2 labels files .*new_labels.txt, old_labels.txt"):
        load_bundle(tmp_path / "m.tflite")


def test_a_bundles_labels_file_naming_a_class_twice_is_refused_naming_it(tmp_path, model):
    """Was ``labels.txt disagrees with the labels in manifest.json``: true, but not why."""
    root = tmp_path / "b"
    write_bundle(root, "b", ["cat", "dog"], InputSpec(224, 224), {"int8": model.read_bytes()})
    (root / "labels.txt").write_text("cat\ncat\n")
    with pytest.raises(BundleError) as err:
        load_bundle(root)
    assert str(err.value) == (
        f'{root / "labels.txt"}: "cat" is both class 0 and class 1: '
        "each class needs a name of its own"
    )
