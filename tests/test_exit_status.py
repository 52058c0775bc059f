"""Exit status as docs/contracts.md gives it: 2 for a command line that cannot work as
typed (a flag's value out of its range or format, flags that contradict each other),
whether argparse finds it or a verb's own check after parsing; 1 for a file or folder
that is missing or cannot be used; each one line ``sightwire VERB: error: ...``. And
``evaluate`` prints its result, the tables, on stdout: ``> result.txt`` keeps them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from device.cli import main
from device.errors import SightwireError, UsageError

REPO = Path(__file__).resolve().parents[1]


def sightwire(*args: str | Path) -> subprocess.CompletedProcess:
    """The real command, as a shell runs it: its own process and exit status."""
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def status_of(capsys, *argv: str | Path) -> tuple[int, list[str]]:
    """Run the CLI in-process: its exit status (argparse's own exits included) and the
    lines it wrote on stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse: usage, then "prog: error: ..."
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def one_line(err: list[str], verb: str) -> str:
    assert len(err) == 1, err
    assert err[0].startswith(f"sightwire {verb}: error: "), err
    return err[0]


def photos(root: Path, classes: tuple[str, ...] = ("daisy", "tulip"), per_class: int = 6) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (c * 40 + i, 200, 90)).save(root / name / f"{i}.png")
    return root


def test_a_usage_error_is_a_sightwire_error():
    """Code that catches ``SightwireError`` (the daemon, ``python -m trainer.study``)
    still catches a usage error."""
    assert issubclass(UsageError, SightwireError)


# --- a flag's value checked after parsing: 2, one line, the message as it was -------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--head-epochs", "0"], "--head-epochs must be at least 1, got 0"),
        (["--alpha", "0"], "--alpha must be above 0, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--dropout", "1"], "--dropout must be at least 0 and below 1, got 1"),
        (["--input-size", "50"], "--input-size must be between 96 and 512, got 50"),
        (["--val", "0.95"], "--val must be between 0 and 0.9, got 0.95"),
        (["--val", "0.5", "--test", "0.5"], "--val + --test must leave photos to train on"),
        (["--folds", "1"], "--folds must be 0 (off) or at least 2, got 1"),
        (["--target-precision", "0"], "--target-precision must be above 0 and at most 1"),
        (["--max-pool", "--no-multiscale"], "--max-pool adds to the multi-scale head"),
    ],
)
def test_train_flag_values_out_of_range_are_usage_errors(tmp_path, capsys, extra, message):
    data = photos(tmp_path / "ds")
    code, err = status_of(capsys, "train", data, "--out", tmp_path / "new", *extra)
    assert code == 2, err
    assert message in one_line(err, "train")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["doctor", "{data}", "--border", "0.9"], "--border must be between 0.02 and 0.4"),
        (["doctor", "{data}", "--per-class", "0"], "--per-class must be at least 1, got 0"),
        (["doctor", "{data}", "--input-size", "600"], "--input-size must be between"),
        (["classify", "{tmp}/m.tflite", "{tmp}/a.jpg", "--top-k", "0"], "--top-k must be at"),
        (["classify", "{tmp}/m.tflite", "{tmp}/a.jpg", "--threshold", "2"], "--threshold must"),
        (["bench", "{tmp}/m.tflite", "--plot", "{tmp}/plot.txt"], "expected a .png file name"),
        (["bench", "{tmp}/m.tflite", "--compare", "{tmp}/a.json"], "--compare takes JSON files"),
        (["bench", "{tmp}/m.tflite", "--runs", "0"], "--runs must be at least 1"),
        (["bench", "{tmp}/m.tflite", "--source-fps", "0"], "--source-fps must be in (0, 1000]"),
        (["run", "--model", "{tmp}/m.tflite", "--max-frames", "0"], "--max-frames must be at"),
        (["run", "--model", "{tmp}/m.tflite", "--broker", "h:x"], "port 'x' is not a number"),
        (["review", "{tmp}", "--data", "{data}", "--port", "70000"], "not a port number"),
        (
            ["fleet", "rollout", "{tmp}/b.zip", "--devices", "*", "--canary", "-1"],
            "--canary and --max-failures must be",
        ),
        (["fleet", "status", "--prefix", "a/#"], "--prefix: must be a topic path"),
        (["compile-edgetpu", "{tmp}/b.zip"], "unzip it and pass the folder"),
        (["compile-edgetpu", "{tmp}/m.tflite", "--timeout", "0"], "--timeout must be above 0"),
    ],
)
def test_other_verbs_flag_values_are_usage_errors(tmp_path, capsys, argv, message):
    """Each is refused before a file it names is read (the model files do not exist)."""
    data = photos(tmp_path / "ds")
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    code, err = status_of(capsys, *argv)
    assert code == 2, err
    assert message in one_line(err, argv[0])


# --- --threads: the same status and message in every verb that has it ------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "{data}", "--out", "{tmp}/new"],
        ["evaluate", "{tmp}/bundle", "{data}"],
        ["export", "{tmp}/bundle"],
        ["classify", "{tmp}/m.tflite", "{tmp}/a.jpg"],
    ],
)
def test_threads_0_is_the_same_usage_error_in_every_verb(tmp_path, capsys, argv):
    data = photos(tmp_path / "ds")
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    code, err = status_of(capsys, *argv, "--threads", "0")
    assert code == 2, err
    assert err[-1] == f"sightwire {argv[0]}: error: argument --threads: 0: expected 1..64", err
    assert not (tmp_path / "new").exists()


def test_threads_0_exits_2_from_train_and_evaluate_as_processes(tmp_path):
    data = photos(tmp_path / "ds")
    train = sightwire("train", data, "--out", tmp_path / "new", "--threads", "0")
    evaluate = sightwire("evaluate", tmp_path / "bundle", data, "--threads", "0")
    assert train.returncode == evaluate.returncode == 2, (train.stderr, evaluate.stderr)
    lines = [p.stderr.strip().splitlines()[-1] for p in (train, evaluate)]
    assert [re.sub(r"^sightwire \w+: ", "", line) for line in lines] == [
        "error: argument --threads: 0: expected 1..64"
    ] * 2, lines
    assert "Traceback" not in train.stderr + evaluate.stderr


def test_a_train_flag_value_exits_2_as_a_process(tmp_path):
    data = photos(tmp_path / "ds")
    proc = sightwire("train", data, "--out", tmp_path / "new", "--head-epochs", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "sightwire train: error: --head-epochs must be at least 1, got 0"


# --- what is missing or cannot be used stays 1 -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "{tmp}/nope", "--out", "{tmp}/new"], "dataset folder not found"),
        (["evaluate", "{tmp}/bundle", "{tmp}/nope"], "dataset folder not found"),
        (["doctor", "{tmp}/nope"], "dataset folder not found"),
        (["train", "{data}", "--out", "{full}"], "is not empty: pass --force"),
        (["train", "{data}", "--out", "{tmp}/new", "--weights", "{tmp}/w.h5"], "weights file not"),
        (["export", "{tmp}/bundle"], "bundle folder not found"),
    ],
)
def test_a_missing_or_unusable_path_is_still_exit_1(tmp_path, capsys, argv, message):
    data = photos(tmp_path / "ds")
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.txt").write_text("kept")
    argv = [a.format(data=data, tmp=tmp_path, full=full) for a in argv]
    code, err = status_of(capsys, *argv)
    assert code == 1, err
    assert message in one_line(err, argv[0])
    assert (full / "old.txt").is_file()


def test_a_missing_data_folder_exits_1_as_a_process(tmp_path):
    proc = sightwire("train", tmp_path / "nope", "--out", tmp_path / "new", "--head-epochs", "5")
    assert proc.returncode == 1, proc.stderr
    missing = tmp_path / "nope"
    assert proc.stderr.strip() == f"sightwire train: error: dataset folder not found: {missing}"


# --- evaluate: the tables are the result, on stdout ------------------------------------


@pytest.fixture
def labelled(tmp_path: Path, reference: Path) -> Path:
    """Two photos in folders named after the reference model's labels, and one that
    does not decode."""
    root = tmp_path / "labelled"
    for label, name in (("Egyptian cat", "cat.bmp"), ("macaw", "parrot.jpg")):
        (root / label).mkdir(parents=True)
        os.symlink(reference / name, root / label / name)
    (root / "macaw" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_evaluate_prints_its_tables_on_stdout(model, labelled, tmp_path):
    result = tmp_path / "e.json"
    proc = sightwire("evaluate", model, labelled, "--json", result)
    assert proc.returncode == 0, proc.stderr
    # The result: the table (title, header, the classes' rows) on stdout ...
    assert re.search(r"int8: accuracy \d+\.\d\d%, balanced \d+\.\d\d% on 2 images", proc.stdout)
    for word in ("precision", "recall", "support", "Egyptian cat", "macaw"):
        assert word in proc.stdout, word
    # ... not on stderr, which keeps the progress bar and the note on the broken photo.
    assert "accuracy" not in proc.stderr and "precision" not in proc.stderr
    assert "evaluating int8" in proc.stderr
    assert "skipped unreadable image" in proc.stderr
    assert "broken.jpg" in "".join(proc.stderr.split())  # rich wraps at 80 columns
    assert "broken.jpg" not in proc.stdout
    # --json is as it was: every figure, the files read.
    record = json.loads(result.read_text())
    assert record["results"]["int8"]["n"] == 2
    assert record["files"] == ["Egyptian cat/cat.bmp", "macaw/parrot.jpg"]
