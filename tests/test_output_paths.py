"""Command-line values that cannot work are refused in one line before the work: an
output path that is a folder (or under a file), a thread count no board has. A
benchmark or an evaluation that runs for minutes must not end in a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from device.bundle import write_bundle
from device.cli import main, os_error_line
from device.preprocess import InputSpec


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile.txt"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "{model}", "--no-loop", "--json", "{tmp}"], "--json {tmp} is a folder"),
        (
            ["bench", "{model}", "--no-loop", "--json", "{afile}/x.json"],
            "{afile} is a file, not a folder",
        ),
        (["bench", "{model}", "--no-loop", "--plot", "{tmp}/p.png/"], "is a folder"),
        (["evaluate", "{model}", "{tmp}", "--json", "{tmp}"], "--json {tmp} is a folder"),
        (["evaluate", "{model}", "{tmp}", "--out", "{afile}"], "--out {afile} is a file"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_first(
    tmp_path, afile, model, capsys, argv, message
):
    (tmp_path / "p.png").mkdir()
    values = {"model": str(model), "tmp": str(tmp_path), "afile": str(afile)}
    code = main([arg.format(**values) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 1
    assert message.format(**values) in err.strip()
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""  # refused first: no table of a benchmark or an evaluation came before


@pytest.fixture
def bundle_and_data(tmp_path, model, reference):
    """A manifest bundle of the reference model, with a training report's picture, and a
    labelled folder of one photo: enough for evaluate and bench to run to the end."""
    labels = (model.parent / "labels.txt").read_text().splitlines()
    # ImageNet names two classes "crane" (and "maillot"): a manifest needs names of their own.
    labels = [name if labels.index(name) == i else f"{name} ({i})" for i, name in enumerate(labels)]
    bundle = tmp_path / "bundle"
    spec = InputSpec(224, 224)
    write_bundle(bundle, "cats", labels, spec, {"int8": model.read_bytes()})
    (bundle / "report").mkdir()
    (bundle / "report" / "confusion_int8.png").write_bytes(b"the training report's picture")
    data = tmp_path / "data"
    (data / "Egyptian cat").mkdir(parents=True)
    shutil.copy(reference / "cat.bmp", data / "Egyptian cat")
    return bundle, data


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["evaluate", "{bundle}", "{data}", "--json", "{bundle}/manifest.json"], "--json"),
        (
            ["evaluate", "{bundle}/model_int8.tflite", "{data}", "--json", "{bundle}/m.json"],
            "--json",
        ),
        # An empty folder: before the check, the old code drew a 1001-class matrix there.
        (["evaluate", "{bundle}", "{empty}", "--out", "{bundle}/report"], "--out"),
        (["evaluate", "{bundle}", "{empty}", "--out", "{bundle}"], "--out"),
        (
            ["bench", "{bundle}", "--no-loop", "--runs", "2", "--json", "{bundle}/manifest.json"],
            "--json",
        ),
        (
            ["bench", "{bundle}", "--no-loop", "--runs", "2", "--plot", "{bundle}/report/p.png"],
            "--plot",
        ),
    ],
)
def test_an_output_inside_the_bundle_being_read_is_a_usage_error(
    bundle_and_data, capsys, argv, flag
):
    """``--json B/manifest.json`` replaced the manifest (it ends in .json, the only rule),
    ``--out B/report`` the training report's confusion matrices: the bundle broke."""
    bundle, data = bundle_and_data
    empty = data.parent / "empty"
    empty.mkdir()
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    code = main([arg.format(bundle=bundle, data=data, empty=empty) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert f"sightwire {argv[0]}: error: {flag} {bundle}" in err
    assert f"is inside the bundle {bundle} being read" in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    json.loads((bundle / "manifest.json").read_text())  # still the manifest


@pytest.fixture
def three_classes(tmp_path):
    """A float bundle of a tiny three-class Keras model and a photo of each class: the
    reference model's 1001-class confusion chart takes minutes to draw."""
    import keras
    import tensorflow as tf
    from PIL import Image

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    bundle, data = tmp_path / "small", tmp_path / "photos"
    labels = ["red", "green", "blue"]
    write_bundle(bundle, "small", labels, InputSpec(32, 32), {"float": tflite})
    for k, name in enumerate(labels):
        (data / name).mkdir(parents=True)
        colour = [0, 0, 0]
        colour[k] = 255
        Image.new("RGB", (32, 32), tuple(colour)).save(data / name / "a.png")
    return bundle, data


def test_evaluate_writes_its_outputs_where_the_checks_looked(
    three_classes, tmp_path, monkeypatch, capsys
):
    """``--json`` in a folder not made yet passed the check and failed after the whole
    evaluation; ``--json=~/e.json`` and ``--out=~/charts`` (no shell expands a ``~`` after
    ``=``) were checked in the home folder and written into a folder named ``~`` here."""
    bundle, data = three_classes
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", str(bundle), str(data), "--no-progress"]
    assert main([*argv, "--json", str(tmp_path / "new" / "e.json")]) == 0, capsys.readouterr()
    assert json.loads((tmp_path / "new" / "e.json").read_text())["results"]["float"]["n"] == 3
    assert main([*argv, "--json=~/e.json", "--out=~/charts"]) == 0, capsys.readouterr()
    assert (home / "e.json").is_file()
    assert (home / "charts" / "confusion_float.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "{model}", "{model}", "--threads", "0"],
        ["bench", "{model}", "--no-loop", "--threads", "1,1000"],
        ["evaluate", "{model}", "{tmp}", "--threads", "-2"],
    ],
)
def test_a_thread_count_no_board_has_is_a_usage_error(tmp_path, model, capsys, argv):
    values = {"model": str(model), "tmp": str(tmp_path)}
    with pytest.raises(SystemExit) as exit_:
        main([arg.format(**values) for arg in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "expected" in err and "1..64" in err
    assert "TFLite" not in err  # not blamed on the model


def test_an_os_error_reads_as_one_line_naming_the_file():
    assert os_error_line(IsADirectoryError(21, "Is a directory", "out")) == "out: is a directory"
    assert os_error_line(OSError("disk on fire")) == "disk on fire"


@pytest.mark.parametrize(("make", "kind"), [("folder", "folder"), ("video", "opencv")])
def test_a_source_path_without_source_says_which_source(tmp_path, model, capsys, make, kind):
    """``--source-path frames/`` alone used to be dropped for the default picamera2
    source, whose error ("install picamera2") said nothing about the path."""
    path = tmp_path / "frames"
    if make == "folder":
        path.mkdir()
    else:
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"\x00")
    argv = ["run", "--model", str(model), "--source-path", str(path), "--print-config"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f'kind = "{kind}"' in printed and str(path) in printed


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_duration_that_never_ends_or_never_starts_is_refused(model, capsys, value):
    code = main(["run", "--model", str(model), "--no-mqtt", f"--duration={value}"])
    assert code == 2  # a flag's value: a usage error
    assert "--duration must be a positive number of seconds" in capsys.readouterr().err


def test_a_negative_pixel_limit_is_a_usage_error(model, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["classify", str(model), str(model), "--max-pixels", "-5"])
    assert exit_.value.code == 2 and "0 (no limit) or more" in capsys.readouterr().err
