"""One file, one set of model pixels: the trainer's arrays equal what the daemon feeds.

The trainer builds its arrays with ``trainer.dataset`` (``scan`` keeps the fitted pixels,
``load_arrays`` decodes again when it has none); the daemon's folder source decodes the
file in the capture thread and the pipeline fits it there. Any speed-up on one side only
(scaled JPEG decoding, another resize) would make the model see pixels on the device that
it was never trained on; these tests compare the two paths bit for bit on real files:
JPEGs at camera size, a JPEG stored sideways with an EXIF orientation, grey, RGBA and
palette images, one smaller than the model. The lookup table that turns pixels into the
input tensor is checked the same way: OpenCV's ``LUT`` where installed, ``np.take``
otherwise, the same values.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from device.bench import make_frames
from device.capture import Frame
from device.classifier import Classifier
from device.config import Config, ModelConfig, MqttConfig, SourceConfig
from device.errors import ImageError
from device.images import load_image, opencv_decode
from device.pipeline import Pipeline
from device.preprocess import (
    AREA,
    AREA_BILINEAR,
    InputSpec,
    Preprocessor,
    fit_frame,
    load_fitted,
    lookup_table,
)
from device.timing import INDEX
from tests.conftest import imagenet_labels
from trainer.dataset import load_arrays, scan

MODEL = "mobilenet_v1_0.25_128_quant.tflite"  # 128x128 uint8 in, 1001 out
REFERENCE_MODEL = "tf2_mobilenet_v2_1.0_224_ptq.tflite"  # 224x224
SIZE = 128
EXIF_ORIENTATION = 0x0112


def _bundle(root: Path, reference: Path, crop: str, resize: str = AREA_BILINEAR) -> Path:
    """The reference model as a bundle whose manifest asks for ``crop`` and ``resize``."""
    root.mkdir()
    shutil.copy(reference / MODEL, root / "model_int8.tflite")
    labels = imagenet_labels(reference)
    spec = InputSpec(width=SIZE, height=SIZE, crop=crop, resize=resize)
    sha = hashlib.sha256((root / "model_int8.tflite").read_bytes()).hexdigest()
    manifest = {
        "format_version": 1,
        "name": f"parity-{crop}",
        "labels": labels,
        "input": spec.to_manifest(),
        "models": {"int8": {"file": "model_int8.tflite", "sha256": sha}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory, reference) -> Path:
    """A dataset folder ``cls/`` of awkward real files, plus a second class for ``scan``."""
    root = tmp_path_factory.mktemp("parity")
    cls = root / "cls"
    make_frames(cls, (640, 480), 2)  # frame_000.jpg, frame_001.jpg: camera-size JPEGs
    make_frames(root / "wide", (1280, 720), 1)
    shutil.move(root / "wide" / "frame_000.jpg", cls / "frame_720p.jpg")
    (root / "wide").rmdir()
    shutil.copy(reference / "parrot.jpg", cls / "parrot.jpg")  # 512x929, portrait
    photo = Image.open(reference / "parrot.jpg").convert("RGB")
    # Stored sideways with "rotate 90° clockwise to view" (6), as phones write them.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(cls / "sideways.jpg", exif=exif, quality=92)
    photo.convert("L").save(cls / "grey.jpg", quality=90)
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(cls / "alpha.png")
    photo.convert("P").save(cls / "palette.png")
    photo.resize((100, 80)).save(cls / "small.jpg", quality=90)  # smaller than the model
    shutil.copy(reference / "cat.bmp", cls / "cat.bmp")
    other = root / "other"
    other.mkdir()
    shutil.copy(reference / "grace_hopper.bmp", other / "grace.bmp")
    return root


def _fitted_by_hand(path: Path, spec: InputSpec) -> np.ndarray:
    """The model pixels the manifest's contract (device/preprocess.py) asks for, written
    out here without the product's resize code, so that a change to it cannot agree with
    itself: Pillow's upright RGB pixels; the centred square when ``crop`` asks for it;
    then, for ``area`` and ``area-bilinear``, 2x2 means (rounded half up, an odd last row
    or column dropped) while the image is at least twice the model's size both ways, then
    exact area weights (``area``, shrinking) or OpenCV's bilinear to the size; for the
    Pillow modes, Pillow's resize of the crop box."""
    assert spec.crop == "none" or spec.width == spec.height  # the cases of this file
    rgb = _pillow_rgb(path)
    h, w = rgb.shape[:2]
    box = (0, 0, w, h)
    if spec.crop == "center":
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    if spec.resize not in (AREA, AREA_BILINEAR):
        with Image.open(path) as img:
            upright = Image.fromarray(rgb) if img.mode == "I;16" else img
            upright = ImageOps.exif_transpose(upright).convert("RGB")
            if upright.size == (spec.width, spec.height):
                return np.asarray(upright)
            resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[spec.resize]
            return np.asarray(upright.resize((spec.width, spec.height), resample, box=box))
    pixels = rgb[box[1] : box[3], box[0] : box[2]].astype(np.uint16)
    while pixels.shape[1] >= 2 * spec.width and pixels.shape[0] >= 2 * spec.height:
        even = pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2]
        quads = even[0::2, 0::2] + even[1::2, 0::2] + even[0::2, 1::2] + even[1::2, 1::2]
        pixels = (quads + 2) // 4
    if pixels.shape[:2] == (spec.height, spec.width):
        return pixels.astype(np.uint8)
    if spec.resize == AREA and (pixels.shape[0] > spec.height or pixels.shape[1] > spec.width):
        rows = _area_weights(pixels.shape[0], spec.height)
        cols = _area_weights(pixels.shape[1], spec.width)
        # Rows, then columns: two products (one three-operand einsum loops over all four
        # sizes at once, a minute per image).
        mixed = np.einsum("ij,jkc->ikc", rows, pixels.astype(np.float64))
        mixed = np.einsum("ikc,lk->ilc", mixed, cols)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    pixels = pixels.astype(np.uint8)
    return cv2.resize(pixels, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): each output pixel's share of every input pixel, by overlap."""
    scale = n_in / n_out
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(lo), min(int(np.ceil(hi)), n_in)):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
    return weights / scale


def _assert_contract(device: np.ndarray, by_hand: np.ndarray, spec: InputSpec, name: str):
    """Equal, but for ``area``'s fractional weights, where float sums may round one grey
    level apart from OpenCV's fixed-point ones."""
    if spec.resize == AREA:
        diff = np.abs(device.astype(int) - by_hand)
        assert diff.max() <= 1 and diff.mean() < 0.05, name
    else:
        np.testing.assert_array_equal(device, by_hand, err_msg=name)


def _trainer_arrays(root: Path, spec: InputSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per file of ``cls/``: (pixels kept by ``scan``, pixels ``load_arrays`` decodes)."""
    ds = scan(root, min_per_class=1, spec=spec, show_progress=False)
    assert not ds.unreadable
    mine = [i for i, it in enumerate(ds.items) if it.path.parent.name == "cls"]
    kept = {ds.items[i].path.name: ds.items[i].pixels for i in mine}
    for it in ds.items:
        it.pixels = None  # load_arrays decodes the files again
    decoded = load_arrays(ds, np.array(mine), spec)
    return {
        ds.items[i].path.name: (kept[ds.items[i].path.name], decoded[k]) for k, i in enumerate(mine)
    }


def _daemon_frames(folder: Path, bundle: Path) -> tuple[Pipeline, list[Frame]]:
    """Frames as the pipeline's capture thread makes them, file by file: the configured
    folder source read through the pipeline's own source wrapper, then the pipeline's
    own preparation (fit, then convert; the worker invokes exactly that tensor)."""
    config = Config(
        model=ModelConfig(path=bundle, variant="int8", threads=1),
        source=SourceConfig(kind="folder", path=folder, fps=1000.0),
        mqtt=MqttConfig(enabled=False),
    )
    pipe = Pipeline(config)
    frames = []
    for seq in range(len(list(folder.iterdir()))):
        image = pipe.source.read()
        assert image is not None
        frame = Frame(image, seq, 0.0, 0.0)
        pipe._prepare(frame)
        frames.append(frame)
    pipe.source.close()
    return pipe, frames


@pytest.mark.parametrize("resize", [AREA, AREA_BILINEAR, "bilinear"])
@pytest.mark.parametrize("crop", ["none", "center"])
def test_a_file_gives_the_model_the_same_pixels_in_training_and_in_the_daemon(
    images, reference, tmp_path, crop, resize
):
    bundle = _bundle(tmp_path / "bundle", reference, crop, resize)
    spec = InputSpec(width=SIZE, height=SIZE, crop=crop, resize=resize)
    trainer = _trainer_arrays(images, spec)
    names = sorted(p.name for p in (images / "cls").iterdir())
    assert sorted(trainer) == names
    pipe, frames = _daemon_frames(images / "cls", bundle)
    pre = pipe.classifier.preprocess
    for name, frame in zip(names, frames, strict=True):
        kept, decoded = trainer[name]
        device = frame.fitted
        assert device is not None and frame.prepared_by is pre, name
        assert device.shape == (SIZE, SIZE, 3) and device.dtype == np.uint8, name
        np.testing.assert_array_equal(kept, device, err_msg=name)
        np.testing.assert_array_equal(decoded, device, err_msg=name)
        # Both sides share fit_frame: the contract itself, computed apart, checks it.
        _assert_contract(device, _fitted_by_hand(images / "cls" / name, spec), spec, name)
        # The tensor the worker will invoke is the trainer's pixels through the table.
        np.testing.assert_array_equal(frame.tensor, pre.from_fitted(decoded), err_msg=name)
        # The daemon's frame is the whole, upright image (snapshots and ROIs use it).
        whole = load_image(images / "cls" / name)
        np.testing.assert_array_equal(frame.image, whole, err_msg=name)
    sideways = frames[names.index("sideways.jpg")].image
    assert sideways.shape[:2] == (929, 512)  # turned upright by its EXIF orientation
    assert pre.spec.resize == resize  # the manifest's resize is the one the daemon uses


def test_scaled_jpeg_decoding_would_change_the_pixels(images):
    """Why the test above matters: libjpeg's DCT-scaled decoding (PIL ``draft``), the
    obvious speed-up for JPEG frames, gives other model pixels than a full decode, so it
    could never be used on one side only."""
    spec = InputSpec(width=SIZE, height=SIZE)
    path = images / "cls" / "frame_000.jpg"
    with Image.open(path) as img:
        img.draft("RGB", (SIZE, SIZE))
        assert img.size == (320, 240)  # decoded at half scale
        scaled = fit_frame(img.convert("RGB"), spec)
    assert not np.array_equal(scaled, load_fitted(path, spec))


@pytest.mark.parametrize("resize", [AREA, AREA_BILINEAR, "bilinear"])
@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_load_fitted_equals_fit_frame_of_load_image(tmp_path, reference, mode, resize):
    photo = Image.open(reference / "parrot.jpg").convert("RGB").resize((300, 200))
    img = photo.convert(mode)
    if mode == "I;16":  # a 16-bit grey PNG using its whole range: the grey photo x 257
        wide = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(wide)
        assert img.mode == "I;16"
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    img.save(path)
    specs = (
        InputSpec(96, 64, resize=resize),
        InputSpec(64, 64, crop="center", resize=resize),
        InputSpec(300, 200, resize=resize),
        InputSpec(40, 30, resize=resize),  # two halvings (to 75x50), then bilinear
    )
    for spec in specs:
        expected = fit_frame(load_image(path), spec)
        got = load_fitted(path, spec)
        assert got.shape == (spec.height, spec.width, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
        _assert_contract(got, _fitted_by_hand(path, spec), spec, str(spec))


def _detail(dtype: type, scale: float, zero_point: int) -> dict:
    """The two fields of an interpreter's input details that ``Preprocessor`` reads."""
    return {"dtype": dtype, "quantization": (scale, zero_point)}


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [
        (np.uint8, 0.007720107678323984, 125),  # an input range calibrated on grey tiles
        (np.uint8, 0.0078125, 128),  # Coral's models
        (np.int8, 0.0078125, 0),
        (np.float32, 0.0, 0),
        (np.int16, 0.001, 0),
    ],
)
def test_opencv_lookup_equals_numpy_lookup(dtype, scale, zero_point):
    spec = InputSpec(224, 224)
    pre = Preprocessor(spec, _detail(dtype, scale, zero_point))
    assert pre._lut is cv2.LUT and not pre.identity
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    frame[0, :, 0] = np.arange(224)  # every value appears
    frame[1, :32, 0] = np.arange(224, 256)
    fast = pre.from_fitted(frame)
    view = np.pad(frame, ((1, 1), (2, 2), (0, 0)))[1:-1, 2:-2]  # a ROI: not contiguous
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(pre.from_fitted(view), fast)
    pre._lut = None  # the path of a device without OpenCV
    slow = pre.from_fitted(frame)
    assert fast.shape == slow.shape == (1, 224, 224, 3)
    assert fast.dtype == slow.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(slow[0], lookup_table(spec, dtype, (scale, zero_point))[frame])
    batch = pre.from_fitted(np.stack([frame, frame[::-1]]))  # N frames: one np.take
    assert batch.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(batch[0], slow[0])


def test_an_identity_table_costs_no_lookup():
    """A uint8 model that takes raw pixels (mean 0, std 1, unquantized) gets the frame."""
    pre = Preprocessor(InputSpec(8, 8, mean=0.0, std=1.0), _detail(np.uint8, 0.0, 0))
    assert pre.identity
    frame = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    tensor = pre.from_fitted(frame)
    assert tensor.shape == (1, 8, 8, 3) and np.shares_memory(tensor, frame)
    np.testing.assert_array_equal(tensor[0], frame)
    # Coral's input grid (1/128 around 128) is not the pixel grid: it needs the table.
    assert not Preprocessor(InputSpec(8, 8), _detail(np.uint8, 0.0078125, 128)).identity


def test_the_trainers_int8_input_takes_pixels_as_they_are():
    """The trainer's int8 input (scale 2/255 as float32, zero point 127) puts every grey
    level exactly half a step between two codes. Rounded one way throughout, the table is
    the identity; ``np.round`` on float32's scale kept 0..127 and moved 128..255 down one,
    so mid-grey 127 and 128 shared a code."""
    spec = InputSpec(224, 224)  # mean 127.5, std 127.5
    table = lookup_table(spec, np.uint8, (0.007843137718737125, 127))
    np.testing.assert_array_equal(table, np.arange(256))
    assert Preprocessor(spec, _detail(np.uint8, 0.007843137718737125, 127)).identity


def test_a_frame_prepared_for_the_previous_model_is_prepared_again(images, reference, tmp_path):
    """The capture thread prepares a frame for the model loaded at that moment; after a
    reload to a model of another size the worker fits and converts it again itself."""
    pipe, frames = _daemon_frames(images / "cls", _bundle(tmp_path / "b", reference, "none"))
    old = frames[0]
    assert old.tensor is not None and old.tensor.shape == (1, SIZE, SIZE, 3)
    new = Classifier.open(reference / REFERENCE_MODEL)  # 224x224
    pipe.commands.use_model(new, "reloaded")
    expected = new.classify(old.image)
    np.testing.assert_array_equal(pipe.inference.infer(old), expected)
    assert pipe.timings.row[INDEX["fit"]] > 0 and pipe.timings.row[INDEX["convert"]] > 0
    fresh = Frame(old.image, 1, 0.0, 0.0)
    pipe._prepare(fresh)  # for the new model now
    assert fresh.prepared_by is new.preprocess and fresh.tensor.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(pipe.inference.infer(fresh), expected)


def test_area_bilinear_averages_every_pixel_of_a_large_frame(reference):
    """Antialiased like Pillow's resize: a fine pattern that point sampling would alias
    (bilinear straight from 640x480 reads only some columns) averages to grey; and on a
    real photo it stays within a few grey levels of Pillow's bilinear."""
    stripes = np.zeros((480, 640, 3), dtype=np.uint8)
    stripes[:, 1::2] = 255  # one-pixel columns: black, white, black...
    area = fit_frame(stripes, InputSpec(224, 224, resize=AREA_BILINEAR))
    assert abs(float(area.mean()) - 127.5) < 2 and area.std() < 2
    point = cv2.resize(stripes, (224, 224), interpolation=cv2.INTER_LINEAR)
    assert point.std() > 30  # what skipping the halving would feed the model
    photo = load_image(reference / "parrot.jpg")  # 512x929: one halving, then bilinear
    ours = fit_frame(photo, InputSpec(224, 224, resize=AREA_BILINEAR)).astype(int)
    pillow = fit_frame(photo, InputSpec(224, 224, resize="bilinear")).astype(int)
    assert np.abs(ours - pillow).mean() < 4


def test_area_counts_every_pixel_where_area_bilinear_skips_some(reference):
    """Why ``area`` and not ``area-bilinear``: after the halvings, a last shrink of 1x-2x
    (320x240 → 224x224, a 500x375 photo → 224x224) by bilinear interpolation reads some
    pixels and skips others, so fine detail aliases; area weights count each pixel.
    On photos ``area`` stays closer to Pillow's antialiased bilinear."""
    stripes = np.zeros((240, 320, 3), dtype=np.uint8)
    stripes[:, 1::2] = 255
    # Pillow's wider triangle smooths most (std 21), area's box less (41), interpolation
    # keeps most of the black-and-white stripes (73)
    area = fit_frame(stripes, InputSpec(224, 224, resize=AREA))
    skipped = fit_frame(stripes, InputSpec(224, 224, resize=AREA_BILINEAR))
    assert 1.5 * area.std() < skipped.std()
    photo = load_image(reference / "parrot.jpg")
    for size in ((300, 400), (200, 150)):  # last step 1.3x and 1.7x
        small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        pillow = fit_frame(small, InputSpec(112, 112, resize="bilinear")).astype(int)
        gaps = [
            np.abs(fit_frame(small, InputSpec(112, 112, resize=r)).astype(int) - pillow).mean()
            for r in (AREA, AREA_BILINEAR)
        ]
        assert gaps[0] < gaps[1], size


def test_unknown_resize_or_crop_is_refused_not_replaced():
    """A bundle from a newer trainer with a resize this daemon does not know must not be
    fed other pixels silently: the manifest is refused with the field named."""
    with pytest.raises(ValueError, match=r"input\.resize 'lanczos'"):
        InputSpec.from_manifest({"width": 8, "height": 8, "resize": "lanczos"})
    with pytest.raises(ValueError, match=r"input\.crop 'left'"):
        InputSpec(8, 8, crop="left")
    assert InputSpec.from_manifest({"width": 8, "height": 8}).resize == "bilinear"


def test_a_bundle_that_needs_opencv_names_it_when_it_is_missing(images, reference, tmp_path):
    """Without OpenCV (imports of cv2 blocked in a fresh interpreter) an area-bilinear
    bundle fails at load with one line saying what to install; a Pillow one still runs."""
    area = _bundle(tmp_path / "area", reference, "none")
    pillow = _bundle(tmp_path / "pillow", reference, "none", "bilinear")
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "import numpy as np\n"
        "from device.classifier import Classifier\n"
        "from device.errors import SightwireError\n"
        "try:\n"
        f"    Classifier.open({str(area)!r})\n"
        "except SightwireError as exc:\n"
        "    print('ERROR', exc)\n"
        f"pillow = Classifier.open({str(pillow)!r})\n"
        "print('OK', pillow.classify(np.zeros((480, 640, 3), np.uint8)).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        "ERROR this model's input.resize is 'area-bilinear', which needs OpenCV: pip install"
        in out.stdout
    )
    assert "OK (1001,)" in out.stdout


def _pillow_rgb(path: Path) -> np.ndarray:
    """The file as Pillow alone decodes it, EXIF rotation applied."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode == "I;16":  # 16 bits to 8: 65535 is white (Pillow's convert clips)
            grey = (np.asarray(img, np.uint32) * 255 + 32767) // 65535
            return np.repeat(grey[..., None], 3, 2).astype(np.uint8)
        return np.asarray(img.convert("RGB"))


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path, reference):
    """A machine-vision camera's 16-bit PNG: 65535 is white. Pillow's own conversion to
    RGB clips everything over 255 to white, which gave the model a blank image."""
    grey = np.asarray(Image.open(reference / "parrot.jpg").convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    rgb = load_image(tmp_path / "wide.png")
    np.testing.assert_array_equal(rgb, np.repeat(grey[..., None], 3, 2))
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ImageError, match=r"float\.tiff: a 32-bit floating-point image"):
        load_image(tmp_path / "float.tiff")


def test_opencv_decodes_jpeg_and_bmp_files_to_pillows_pixels(images):
    """``load_image`` hands JPEG and BMP files to OpenCV (a quarter of Pillow's CPU at camera
    size): the pixels must be Pillow's, EXIF rotation and grey JPEGs included, or a model
    trained where OpenCV is missing would see other pixels on the device."""
    taken = []
    for path in [*sorted((images / "cls").iterdir()), images / "other" / "grace.bmp"]:
        fast = opencv_decode(path)
        if path.suffix in (".jpg", ".bmp"):
            assert fast is not None, path.name  # the fast path is really the one used
            taken.append(path.name)
            np.testing.assert_array_equal(fast, _pillow_rgb(path), err_msg=path.name)
        else:
            assert fast is None, path.name  # PNGs stay with Pillow
        np.testing.assert_array_equal(load_image(path), _pillow_rgb(path), err_msg=path.name)
    assert {"sideways.jpg", "grey.jpg", "cat.bmp", "frame_720p.jpg"} <= set(taken)


def test_files_opencv_would_guess_at_are_left_to_pillow(images, tmp_path):
    """A half-written JPEG or BMP (a camera still copying into the replay folder) is
    refused with Pillow's clear error, not filled with grey by libjpeg; a CMYK JPEG is
    converted by Pillow, as in training."""
    for name in ("frame_000.jpg", "cat.bmp"):
        whole = (images / "cls" / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(whole[: len(whole) * 2 // 3])
        assert opencv_decode(cut) is None
        with pytest.raises(ImageError, match="cannot decode image"):
            load_image(cut)
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(images / "cls" / "frame_000.jpg").convert("CMYK").save(cmyk, quality=90)
    assert opencv_decode(cmyk) is None
    np.testing.assert_array_equal(load_image(cmyk), _pillow_rgb(cmyk))
