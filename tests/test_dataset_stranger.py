"""The files a maker's folder-per-class dataset really holds, read by the trainer.

Phone photos turned by EXIF, 16-bit PNGs, HEIC next to JPEG, what a Mac or Windows drops
into every folder, folders that are links, file names that are not UTF-8: each is read as
the device reads it, or said in one line, and the rest of the dataset is still used.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.images import load_image
from device.preprocess import InputSpec
from trainer.dataset import DatasetError, scan
from trainer.image_set import collect, file_info, small_copy
from trainer.report import thumbnail, write_report
from trainer.synthetic import make_dataset
from trainer.tables import print_dataset

ORIENTATION = 0x0112


def sightwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )


def phone_photo(path: Path, orientation: int = 6, size: tuple[int, int] = (96, 48)) -> Path:
    """A landscape-stored JPEG whose EXIF says how to turn it, as a phone writes a
    portrait photo: a bright block at the stored top left, so the turn shows."""
    rgb = np.full((size[1], size[0], 3), 40, np.uint8)
    rgb[: size[1] // 2, : size[0] // 3] = (250, 200, 20)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    return path


def non_utf8_name(folder: Path, stem: bytes, suffix: str) -> Path:
    """``folder/<stem>.<suffix>`` whose name holds bytes that are not UTF-8 (Latin-1's
    é, as a zip from an old Windows machine unpacks); skips where the system refuses one."""
    raw = os.fsencode(folder) + b"/" + stem + suffix.encode()
    try:
        with open(raw, "wb"):
            pass
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    return Path(os.fsdecode(raw))


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", classes=3, per_class=6, size=32)


# -- phone photos turned by EXIF: every reader sees them upright, as the device does ------


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_file_facts_give_the_size_of_the_upright_photo(tmp_path: Path, orientation: int):
    """The doctor's aspect-ratio cue reads these: a class shot in portrait on a phone is
    stored landscape, but the model sees it portrait."""
    info = file_info(phone_photo(tmp_path / "p.jpg", orientation))
    assert (info.width, info.height) == load_image(tmp_path / "p.jpg").shape[1::-1] == (48, 96)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_small_copy_of_a_file_is_the_upright_photo(tmp_path: Path, orientation: int):
    """``doctor --weights none`` makes its near-duplicate and shortcut copies from the file:
    they must be the photo as training and the device see it, not as it is stored."""
    path = phone_photo(tmp_path / "p.jpg", orientation)
    from_file = small_copy(path).astype(int)
    upright = small_copy(load_image(path)).astype(int)
    assert np.abs(from_file - upright).mean() < 2


def test_doctor_and_train_find_a_phone_photo_and_its_upright_copy_alike(shapes: Path):
    """A photo, and the same photo saved upright by an editor (EXIF gone), are copies: the
    doctor's small copies without a backbone match the ones training makes."""
    phone_photo(shapes / "circle" / "phone.jpg", 6, (64, 32))
    upright = Image.fromarray(load_image(shapes / "circle" / "phone.jpg"))
    upright.save(shapes / "circle" / "edited.jpg", quality=95)
    plain = scan(shapes, 2, show_progress=False)  # doctor --weights none
    fitted = scan(shapes, 2, InputSpec(96, 96), show_progress=False)  # train
    small = {}
    for name, ds in (("plain", plain), ("fitted", fitted)):
        copies = collect(ds, show_progress=False).small
        small[name] = {it.path.name: copies[i].astype(int) for i, it in enumerate(ds.items)}
    for name in ("phone.jpg", "edited.jpg"):
        assert np.abs(small["plain"][name] - small["fitted"][name]).mean() < 4
    assert np.abs(small["plain"]["phone.jpg"] - small["plain"]["edited.jpg"]).mean() < 4


# -- the report shows the photo the model saw ----------------------------------------------


def decoded_thumbnail(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def test_a_16_bit_png_thumbnail_is_not_white(tmp_path: Path):
    """A machine-vision camera's 16-bit grey PNG: the model sees mid-grey (65535 -> 255);
    Pillow's own conversion to RGB clips it all to white."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    thumb = decoded_thumbnail(thumbnail(tmp_path / "g16.png"))
    assert abs(thumb.mean() - load_image(tmp_path / "g16.png").mean()) < 3


def test_a_phone_photo_thumbnail_is_upright(tmp_path: Path):
    thumb = decoded_thumbnail(thumbnail(phone_photo(tmp_path / "p.jpg", 6)))
    assert thumb.shape[:2] == (96, 48)


def test_a_file_name_that_is_not_utf8_does_not_stop_the_report(tmp_path: Path):
    """``bad\\xe9.jpg`` in the dataset reached the page as a lone surrogate, which UTF-8 cannot
    encode: the report failed with a traceback after the whole training."""
    data = make_dataset(tmp_path / "data", classes=2, per_class=5, size=32)
    broken = non_utf8_name(data / "circle", b"caf\xe9", ".jpg")  # empty: unreadable
    ds = scan(data, show_progress=False)
    assert [p for p, _ in ds.unreadable] == [broken]
    bundle = tmp_path / "bundle"
    (bundle / "report").mkdir(parents=True)
    record = {
        "dataset": {
            "root": str(data),
            "counts": ds.counts(),
            "unreadable": [[str(p), why] for p, why in ds.unreadable],
            "ignored": [str(p) for p in ds.ignored],
        }
    }
    (bundle / "report" / "metrics.json").write_text(json.dumps(record))
    page = write_report(bundle).read_text(encoding="utf-8")
    assert "caf\ufffd.jpg" in page


@pytest.mark.slow
def test_train_with_a_non_utf8_file_name_and_a_phone_photo_writes_its_bundle(tmp_path: Path):
    data = make_dataset(tmp_path / "data", classes=3, per_class=8, size=48, seed=2)
    good = (data / "circle" / "circle_000.png").read_bytes()
    non_utf8_name(data / "circle", b"caf\xe9", ".png").write_bytes(good)
    non_utf8_name(data / "square", b"bro\xe9ken", ".jpg")  # empty: listed on the page
    phone_photo(data / "square" / "IMG_0001.JPG", 6)
    out = tmp_path / "bundle"
    proc = sightwire(
        *("train", str(data), "--out", str(out), "--weights", "none", "--input-size", "96"),
        *("--alpha", "0.35", "--head-epochs", "2", "--fine-tune-epochs", "1"),
        *("--augment-copies", "0", "--representative", "10", "--no-progress", "--no-doctor"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "bro\ufffdken.jpg" in (out / "report" / "index.html").read_text(encoding="utf-8")
    assert json.loads((out / "report" / "metrics.json").read_text())["dataset"]["counts"] == {
        "circle": 9,
        "square": 9,
        "triangle": 8,
    }


# -- what else is in the folder -------------------------------------------------------------


def heic(path: Path) -> Path:
    """The start of an iPhone's HEIC file (no decoder here reads one)."""
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    return path


def test_a_class_of_heic_photos_says_why_it_has_none(shapes: Path):
    phone = shapes / "iphone"
    phone.mkdir()
    for i in range(4):
        heic(phone / f"IMG_{i:04d}.HEIC")
    with pytest.raises(DatasetError) as caught:
        scan(shapes, show_progress=False)
    message = str(caught.value)
    assert "'iphone' has 0" in message
    assert ".heic 4" in message and "JPEG or PNG" in message


def test_doctor_names_photos_it_left_out_in_one_line_each(shapes: Path):
    heic(shapes / "circle" / "IMG_0001.HEIC")
    (shapes / "square" / "shot.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(40))
    proc = sightwire("doctor", str(shapes), "--weights", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "format not read" in line]
    assert len(lines) == 1, proc.stdout
    assert "2 photo(s)" in lines[0] and ".heic 1" in lines[0] and ".avif 1" in lines[0]


def test_what_a_mac_or_windows_leaves_in_a_folder_is_neither_read_nor_listed(shapes: Path):
    """``.DS_Store``, AppleDouble ``._a.jpg`` (a Mac on a FAT stick), ``Thumbs.db``: listed as
    ignored files, they crowded the user's own files out of the one line that lists them."""
    circle = shapes / "circle"
    (circle / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (circle / "._circle_000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    (circle / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (shapes / "square" / "desktop.ini").write_text("[.ShellClassInfo]")
    (shapes / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (circle / "notes.txt").write_text("shot on Tuesday")
    ds = scan(shapes, show_progress=False)
    assert [p.name for p in ds.ignored] == ["notes.txt"]
    assert ds.unreadable == []
    assert ds.counts() == {"circle": 6, "square": 6, "triangle": 6}


def test_a_linked_sub_folder_of_a_class_is_read(shapes: Path, tmp_path: Path):
    """A class folder that is a link was read; a linked folder inside one was dropped
    without a word. A link back up (a loop) is read once, and a link to nothing is said."""
    more = make_dataset(tmp_path / "elsewhere", classes=2, per_class=3, size=32, seed=5)
    (shapes / "circle" / "from_phone").symlink_to(more / "circle")
    (shapes / "circle" / "loop").symlink_to(shapes / "circle")
    (shapes / "square" / "gone.png").symlink_to(tmp_path / "deleted.png")
    ds = scan(shapes, show_progress=False)
    assert ds.counts() == {"circle": 9, "square": 6, "triangle": 6}
    assert [(p.name, why) for p, why in ds.unreadable] == [
        ("gone.png", f"a link to nothing ({tmp_path / 'deleted.png'})")
    ]


def test_a_class_folder_name_that_is_not_utf8_is_said_so(shapes: Path):
    raw = os.fsencode(shapes) + b"/caf\xe9"
    try:
        os.mkdir(raw)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    for i in range(5):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(os.fsdecode(raw + b"/%d.png" % i))
    proc = sightwire("doctor", str(shapes), "--weights", "none", "--no-progress")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "sightwire doctor: error: class folder 'caf\\xe9': its name is not UTF-8 (written by "
        "another system's encoding); rename the folder"
    ]


# -- what is read: every format a maker's folder holds, the rest of the dataset kept --------


def test_every_readable_kind_of_photo_is_read_and_broken_ones_listed(shapes: Path):
    red = shapes / "circle"
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    photo.save(red / "UPPER.JPG")
    photo.save(red / "upper.JPEG")
    photo.convert("CMYK").save(red / "cmyk.jpg")
    photo.convert("P").save(red / "palette.png", transparency=0)
    photo.convert("RGBA").save(red / "rgba.png")
    photo.save(red / "w.webp")
    photo.resize((8, 8)).save(red / "tiny.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)).save(red / "g16.png")
    (red / "2024" / "june").mkdir(parents=True)
    photo.save(red / "2024" / "june" / "nested.jpg")
    photo.save(red / "with space ü ñ 🌼.jpg")
    (red / "zero.jpg").write_bytes(b"")
    whole = (red / "UPPER.JPG").read_bytes()
    (red / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    ds = scan(shapes, show_progress=False)
    assert sorted(p.name for p, _ in ds.unreadable) == ["truncated.jpg", "zero.jpg"]
    assert ds.counts()["circle"] == 6 + 10
    assert all("\n" not in why for _, why in ds.unreadable)


def test_file_names_with_brackets_are_printed_as_they_are(shapes: Path, capsys):
    """``[red]`` in a file name is text, not the terminal library's markup."""
    (shapes / "circle" / "[red]broken.jpg").write_bytes(b"not a jpeg")
    (shapes / "circle" / "[b]notes.txt").write_text("x")
    ds = scan(shapes, show_progress=False)
    every = np.arange(len(ds.items))
    print_dataset(ds, {"train": every, "val": every, "test": every})
    err = "".join(capsys.readouterr().err.split())  # rich wraps long lines anywhere
    assert "circle/[red]broken.jpg:cannotdecode" in err, err
    assert "circle/[b]notes.txt" in err, err


def test_tiff_and_gif_photos_are_read_as_the_device_reads_them(shapes: Path):
    """A machine-vision camera saves TIFF (8 or 16-bit grey, several pages, compressed);
    a phone's share sheet may give GIF. Both were named "not read" and left out."""
    tiles = shapes / "tile"
    tiles.mkdir()
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    Image.fromarray(grey).save(tiles / "a.tif", compression="tiff_lzw")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tiles / "b.TIFF")
    pages = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (200, 10)]
    pages[0].save(tiles / "c.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tiles / "d.gif", save_all=True, append_images=pages[1:])
    Image.fromarray(grey).save(tiles / "e.tiff")
    ds = scan(shapes, show_progress=False)
    read = sorted(item.path.name for item in ds.items if item.path.parent == tiles)
    assert read == ["a.tif", "b.TIFF", "c.tif", "d.gif", "e.tiff"]
    assert ds.unreadable == [] and ds.ignored == []
    assert np.array_equal(load_image(tiles / "a.tif")[:, :, 0], grey)
    assert np.array_equal(load_image(tiles / "b.TIFF")[:, :, 1], grey)  # 16 bits scaled
    assert int(load_image(tiles / "c.tif").mean()) == 200  # the first page
    assert abs(int(load_image(tiles / "d.gif").mean()) - 200) <= 2  # the first frame
