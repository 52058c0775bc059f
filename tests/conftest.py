"""Fixtures every test suite shares: the shared data, a real broker, synthetic datasets."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.mqtt_helpers import MOSQUITTO_HINT, Broker, Recorder, find_mosquitto
from trainer.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = "tf2_mobilenet_v2_1.0_224_ptq.tflite"  # Coral's int8 MobileNetV2, known answers
# Set where the shared data is always present (``.ci/run``): a test that would skip for
# want of it fails instead, so a moved or missing folder cannot turn 124 tests into skips.
REQUIRE_SHARED = "SIGHTWIRE_REQUIRE_SHARED"


def shared_required() -> bool:
    return os.environ.get(REQUIRE_SHARED, "") not in ("", "0")


def missing_shared(reason: str) -> NoReturn:
    """Skip for want of shared data, or fail where ``$SIGHTWIRE_REQUIRE_SHARED`` is set."""
    if shared_required():
        pytest.fail(f"{reason} ({REQUIRE_SHARED} is set)", pytrace=False)
    pytest.skip(reason)


def shared_path() -> Path | None:
    """``$SIGHTWIRE_SHARED``, else ``../shared`` beside the repository, else None."""
    env = os.environ.get("SIGHTWIRE_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared")
    return next((p for p in candidates if (p / "reference").is_dir()), None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Where shared data is required, a skip that names a path in it (a dataset a test
    looks for itself) is a failure as well."""
    report = yield
    root = shared_path()
    if report.skipped and shared_required() and root is not None and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if str(root) in reason:
            report.outcome = "failed"
            report.longrepr = f"{reason} ({REQUIRE_SHARED} is set)"
    return report


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_path()
    if path is None:
        missing_shared("shared data not found: set SIGHTWIRE_SHARED or put shared/ beside the repo")
    return path


@pytest.fixture(scope="session")
def reference(shared: Path) -> Path:
    return shared / "reference"


def imagenet_labels(reference: Path) -> list[str]:
    """Coral's 1001 ImageNet labels as a bundle's manifest may hold them: the file names
    two classes "crane" (135, the bird; 518, the machine), and the class names of a
    manifest must differ (docs/contracts.md), so the second is "crane (518)"."""
    labels = [x for x in (reference / "imagenet_labels.txt").read_text().splitlines() if x]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            labels[i] = f"{label} ({i})"
    return labels


def write_imagenet_labels(folder: Path, reference: Path) -> list[str]:
    """``imagenet_labels`` written to ``folder/labels.txt``, and returned."""
    labels = imagenet_labels(reference)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return labels


@pytest.fixture(scope="session")
def imagenet_weights(shared: Path) -> Path:
    path = shared / "models" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    if not path.is_file():
        missing_shared(f"ImageNet weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(MOSQUITTO_HINT)  # never a skip: CI must run the MQTT tests
    return binary


@pytest.fixture
def broker(tmp_path: Path, mosquitto_binary: str):
    """A fresh mosquitto on a free loopback port, stopped after the test."""
    b = Broker(tmp_path / "broker", mosquitto_binary).start()
    yield b
    b.stop()


@pytest.fixture
def recorder(broker: Broker):
    """Subscribed to everything on ``broker`` before the test acts."""
    r = Recorder(broker, "#")
    yield r
    r.close()


@pytest.fixture
def model(tmp_path: Path, reference: Path) -> Path:
    """A private copy of the reference model (with its labels) that tests may break."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(reference / REFERENCE_MODEL, folder / REFERENCE_MODEL)
    shutil.copy(reference / "imagenet_labels.txt", folder / "labels.txt")
    return folder / REFERENCE_MODEL


@pytest.fixture
def cats(tmp_path: Path, reference: Path) -> Path:
    """A folder source with one photo: Coral's cat (the reference models say 286)."""
    folder = tmp_path / "cats"
    folder.mkdir()
    os.symlink(reference / "cat.bmp", folder / "cat.bmp")
    return folder


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> Path:
    """Three classes of drawn shapes, 24 images each, 64x64 (session-wide, read-only)."""
    return make_dataset(tmp_path_factory.mktemp("shapes"), classes=3, per_class=24, size=64)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("256k")``: a real small disk, to fill or make read-only (mounting needs
    root: CI runs as root; elsewhere the test is skipped). Unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        made = subprocess.run(argv, capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
