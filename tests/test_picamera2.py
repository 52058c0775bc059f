"""The picamera2 source at the model's size, against a fake ``picamera2`` (no Pi here).

tests/fake_picamera2 implements the calls device.picamera makes with picamera2's real
names, checks and buffer formats (Pi 4: lores only YUV420, one crop for all streams;
Pi 5: RGB lores, per-stream crops); the pixels the daemon gets from it are compared with
the scene the fake camera looks at, fitted the way training fits photos.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from device.capture import Capture, FrameSlot
from device.config import SourceConfig
from device.picamera import ModelInput, ModelSized, plan_lores, to_rgb, yuv420_to_rgb
from device.preprocess import InputSpec, Preprocessor, fit_frame, prepare
from device.sources import ReopeningSource, SourceError, make_source

FAKE = Path(__file__).parent / "fake_picamera2"
INPUT = {"index": 0, "dtype": np.uint8, "quantization": (0.0, 0)}  # raw pixels in


@pytest.fixture
def cam(monkeypatch):
    """The fake ``picamera2`` and ``libcamera`` on sys.path for one test, then gone."""
    monkeypatch.syspath_prepend(str(FAKE))
    for name in ("picamera2", "libcamera"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import picamera2

    monkeypatch.setattr(picamera2, "opened", [])
    yield picamera2
    for name in ("picamera2", "libcamera"):
        sys.modules.pop(name, None)


def source_for(cam, platform: str, model: ModelInput | None, **cfg):
    cam.PLATFORM = platform
    return make_source(SourceConfig(kind="picamera2", width=640, height=480, **cfg), model)


def expected(spec: InputSpec, cam) -> np.ndarray:
    """What training would make of the whole scene (full field, the bundle's crop)."""
    return fit_frame(cam.SCENE, spec)


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("platform", ["vc4", "pisp"])
@pytest.mark.parametrize("crop", ["center", "none"])
def test_lores_frames_match_the_training_fit(cam, platform, crop):
    spec = InputSpec(224, 224, crop=crop)
    source = source_for(cam, platform, ModelInput(224, 224, crop))
    source.open()
    main = source.read()
    sized = source.fitted
    (camera,) = cam.opened
    lores = camera.camera_config["lores"]
    if platform == "vc4":
        # The Pi 4 refuses an RGB lores: asked first, then YUV420 in BT.601.
        assert camera.configure_calls == 2 and lores["format"] == "YUV420"
        assert lores["stride"] % 64 == 0 and lores["stride"] > lores["size"][0]
        assert camera.camera_config["colour_space"].name == "SMPTE170M"
        # One crop for both streams there: centre crop in software, main untouched.
        want = (300, 224) if crop == "center" else (224, 224)
        assert lores["size"] == want and lores["preserve_ar"] is False  # the default
    else:
        assert camera.configure_calls == 1 and lores["format"] == "BGR888"
        assert lores["size"] == (224, 224) and lores["preserve_ar"] is (crop == "center")
    assert "ScalerCrop" not in camera.camera_config["controls"]  # main keeps the full field
    assert main.shape == (480, 640, 3) and main.dtype == np.uint8
    assert diff(main, fit_frame(cam.SCENE, InputSpec(640, 480))) < 2
    assert isinstance(sized, ModelSized) and sized.fits(224, 224, crop)
    assert sized.pixels.shape == (224, 224, 3)
    # ISP scaling and YUV rounding against Pillow's antialiased resize: close, not equal.
    assert diff(sized.pixels, expected(spec, cam)) < 4
    # ... and far from the other crop or from swapped channels.
    other = InputSpec(224, 224, crop="none" if crop == "center" else "center")
    assert diff(sized.pixels, expected(other, cam)) > 8
    assert diff(sized.pixels[..., ::-1], expected(spec, cam)) > 8
    assert camera.released == 1  # every request goes back to the camera
    source.close()
    assert camera.closed and source.fitted is None


def test_red_is_red_in_every_format(cam):
    """picamera2's format names are register order: BGR888 holds R,G,B bytes."""
    red = np.zeros((4, 6, 3), np.uint8)
    red[..., 0] = 200
    for fmt, array in {
        "BGR888": red,
        "RGB888": red[..., ::-1],
        "XBGR8888": np.concatenate([red, np.full((4, 6, 1), 7, np.uint8)], -1),
        "XRGB8888": np.concatenate([red[..., ::-1], np.full((4, 6, 1), 7, np.uint8)], -1),
    }.items():
        assert np.array_equal(to_rgb(array, fmt, 6, 4), red), fmt


def test_yuv420_without_opencv_matches_opencv(cam, monkeypatch):
    """A Pi venv may lack OpenCV: the numpy conversion gives the same pixels (±1)."""
    from picamera2 import rgb_to_i420

    import device.picamera as picamera

    rng = np.random.default_rng(1)
    # 2x2 blocks of one colour: chroma subsampling loses nothing, only rounding is left.
    rgb = rng.integers(16, 236, (112, 150, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    planes = rgb_to_i420(rgb, 384)
    with_cv2 = yuv420_to_rgb(planes, 300, 224)
    monkeypatch.setattr(picamera, "opencv", lambda: None)
    without = yuv420_to_rgb(planes, 300, 224)
    assert with_cv2.shape == without.shape == (224, 300, 3)
    assert np.abs(with_cv2.astype(int) - without.astype(int)).max() <= 1
    assert np.abs(without.astype(int) - rgb.astype(int)).max() <= 3  # rounding only


def test_plan_for_odd_and_wide_models():
    assert plan_lores(ModelInput(225, 225, "none"), (640, 480), False).size == (226, 226)
    wide = plan_lores(ModelInput(320, 240, "center"), (1280, 720), False)
    assert wide.size == (428, 240) and wide.centre_view
    assert plan_lores(ModelInput(224, 224, "center"), (640, 480), True).preserve_ar is True


def test_prepare_takes_the_lores_frame_and_only_for_its_model(cam):
    """Through the capture thread: a frame carries both arrays; ``prepare`` converts the
    model-size one without fitting, and fits the main frame for any other model."""
    spec = InputSpec(224, 224, crop="center")
    cam.PLATFORM = "vc4"
    config = SourceConfig(kind="picamera2", width=640, height=480, fps=1000)
    got = threading.Event()
    frames = []

    def keep(frame):
        frames.append(frame)
        got.set()

    stop = threading.Event()
    capture = Capture(config, FrameSlot(), keep, stop, model=ModelInput(224, 224, "center"))
    capture.start()
    assert got.wait(10)
    stop.set()
    capture.release()
    capture.join(5)
    frame = frames[0]
    assert frame.image.shape == (480, 640, 3) and frame.model_sized is not None
    pre = Preprocessor(spec, INPUT)
    prepare(frame, pre)
    assert frame.fitted is frame.model_sized.pixels  # no fit: the camera's pixels
    floats = Preprocessor(spec, {"index": 0, "dtype": np.float32, "quantization": (0.0, 0)})
    prepare(frame, floats)  # a float model: the lookup table on the camera's pixels
    assert frame.fitted is frame.model_sized.pixels
    assert np.array_equal(frame.tensor[0], (frame.fitted.astype(np.float32) - 127.5) / 127.5)
    other = Preprocessor(InputSpec(224, 224, crop="none"), INPUT)
    prepare(frame, other)  # a model loaded since: fitted from the main frame
    assert frame.fitted is not frame.model_sized.pixels
    assert np.array_equal(frame.fitted, fit_frame(frame.image, other.spec))


def test_roi_or_no_model_means_no_lores(cam):
    from device.config import Roi

    with_roi = source_for(cam, "pisp", ModelInput(224, 224, "none"), roi=Roi(x=0, y=0, w=64, h=64))
    with_roi.open()
    with_roi.read()
    assert with_roi.fitted is None and cam.opened[-1].camera_config["lores"] is None
    bare = source_for(cam, "vc4", None)
    wrapper = ReopeningSource(bare)
    assert wrapper.read().shape == (480, 640, 3)
    assert wrapper.fitted is None and cam.opened[-1].configure_calls == 1


def test_a_camera_that_fails_is_one_line(cam, monkeypatch):
    source = source_for(cam, "vc4", ModelInput(224, 224, "none"))

    def broken():
        raise OSError("Camera __init__ sequence did not complete.")

    monkeypatch.setattr(cam, "Picamera2", broken)
    with pytest.raises(Exception) as err:
        source.open()
    assert str(err.value).startswith("picamera2: cannot open the camera (")
    with pytest.raises(Exception, match="not open"):
        source.read()


def test_without_picamera2_the_hint_is_kept(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off a Pi
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        make_source(SourceConfig(kind="picamera2"), ModelInput(224, 224))
