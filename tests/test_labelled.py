"""Labelled folders as `evaluate` and `bench --data` read them: the errors a stranger meets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from device.errors import SightwireError
from device.labelled import check_classes, list_labelled


def test_images_left_in_the_folder_itself_are_pointed_at(tmp_path: Path):
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(SightwireError) as caught:
        list_labelled(tmp_path, "photos")
    assert str(caught.value) == (
        "photos: no images in class folders (DATA/<class>/*.jpg); its 2 image(s) lie in the "
        "folder itself: put each in a sub-folder named for its class"
    )


def test_an_empty_folder_says_only_that_it_has_no_class_folders(tmp_path: Path):
    with pytest.raises(
        SightwireError, match=r"no images in class folders \(DATA/<class>/\*\.jpg\)$"
    ):
        list_labelled(tmp_path)


def test_a_class_folder_named_in_another_case_is_said_so():
    with pytest.raises(SightwireError) as caught:
        check_classes(["Circle", "square", "blob"], ["circle", "square"])
    message = str(caught.value)
    assert message.startswith("classes not in the bundle's labels: Circle, blob ")
    assert message.endswith("; names are case-sensitive: Circle is circle")


def test_unknown_classes_without_a_case_match_get_no_hint():
    with pytest.raises(SightwireError) as caught:
        check_classes(["blob"], ["circle", "square"])
    assert "case" not in str(caught.value)
