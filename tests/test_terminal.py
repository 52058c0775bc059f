"""What a user reads in the terminal: no library chatter unless ``-v``, one progress
style (Keras epochs included), a closing summary, argument errors before TensorFlow,
``-v`` after the verb, defaults in ``--help``, ``--out`` guarded by ``--force``, and
``classify`` deciding as the daemon does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.classifier import Classifier
from device.cli import VERBS, verb_parser
from device.config import InferenceConfig
from device.images import load_image
from device.postprocess import PostProcessor
from device.stderr import is_chatter
from tests.conftest import imagenet_labels
from trainer.checks import check_out_dir, empty_out_dir

REPO = Path(__file__).resolve().parents[1]
# Runs the CLI, then says whether TensorFlow was imported by the time it returned.
PROBE = (
    "import sys; from device.cli import main; rc = main(sys.argv[1:]); "
    "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); "
    "sys.exit(rc)"
)


def sightwire(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


# --- no chatter by default --------------------------------------------------------


def test_litert_delegate_line_only_with_v_after_the_verb(model, reference):
    cat = str(reference / "cat.bmp")
    quiet = sightwire("classify", str(model), cat)
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and quiet.stderr.strip() == ""
    loud = sightwire("classify", str(model), cat, "-v")  # -v after the verb
    assert loud.returncode == 0, loud.stderr
    assert "Created TensorFlow Lite XNNPACK delegate" in loud.stderr
    assert loud.stdout == quiet.stdout


def test_chatter_filter_keeps_real_errors():
    assert is_chatter("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert is_chatter(
        "I0000 00:00:1796220877.601613   11688 cudart_stub.cc:31] Could not find cuda drivers"
    )
    assert is_chatter("WARNING: All log messages before absl::InitializeLog() is called are ...")
    assert not is_chatter("sightwire train: error: dataset folder not found: x\n")
    assert not is_chatter("Traceback (most recent call last):\n")


IMPORT_TF = (
    "import logging, sys; from device.cli import main; "
    "logging.basicConfig(level=logging.DEBUG if sys.argv[1] == '-v' else logging.INFO); "
    "from trainer.console import import_tensorflow; import_tensorflow(); "
    "import tensorflow; print('ok', file=sys.stderr)"
)


def _import_tensorflow(flag: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_TF, flag], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


@pytest.mark.slow
def test_tensorflow_start_up_notes_only_with_v():
    """The trainer verbs import TensorFlow through ``import_tensorflow``: its oneDNN,
    CUDA and CPU-flag lines (C++ writes, before absl is set up) stay off the terminal;
    with -v they are all there."""
    quiet = _import_tensorflow("-q")
    assert quiet.strip() == "ok", quiet
    loud = _import_tensorflow("-v")
    assert any(is_chatter(line) for line in loud.splitlines()), loud


# --- argument errors before TensorFlow --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message", "status"),  # 2: a flag's value out of range (a usage error)
    [
        (["train", "{data}", "--out", "{out}", "--input-size", "600"], "--input-size must be", 2),
        (["train", "{tmp}/nope", "--out", "{out}"], "dataset folder not found", 1),
        (["train", "{data}", "--out", "{out}", "--weights", "/x.h5"], "weights file not found", 1),
        (["train", "{data}", "--out", "{full}"], "is not empty: pass --force", 1),
        (["train", "{data}", "--out", "{tmp}", "--force"], "--force would delete it", 1),
        (["train", "{data}", "--out", "{out}", "--val", "0.5", "--test", "0.5"], "--val +", 2),
        (["doctor", "{data}", "--input-size", "600"], "--input-size must be", 2),
        (["doctor", "{data}", "--out", "{full}"], "is not empty: pass --force", 1),
        (["export", "{full}"], "Keras model not found", 1),
        (["evaluate", "{full}", "{tmp}/nope"], "dataset folder not found", 1),
    ],
)
def test_argument_errors_come_in_one_line_before_tensorflow(tmp_path, argv, message, status):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "stale.txt").write_text("from before")
    names = {"data": data, "out": tmp_path / "new", "full": full, "tmp": tmp_path}
    proc = probe(*(a.format(**names) for a in argv))
    assert proc.returncode == status, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], proc.stderr
    assert err[0].startswith(f"sightwire {argv[0]}: error: ")
    assert proc.stdout.strip() == "no tensorflow"
    assert (full / "stale.txt").exists()  # nothing deleted on the way to the error


# --- --out and --force --------------------------------------------------------------


def test_force_empties_the_folder_and_never_a_folder_holding_the_data(tmp_path):
    out = tmp_path / "bundle"
    (out / "report").mkdir(parents=True)
    (out / "report" / "old.html").write_text("stale")
    (out / "model_edgetpu.tflite").write_bytes(b"stale")
    check_out_dir(tmp_path / "new", force=False)  # a new folder needs no --force
    with pytest.raises(Exception, match="not empty: pass --force"):
        check_out_dir(out, force=False)
    check_out_dir(out, force=True)
    empty_out_dir(out)
    assert out.is_dir() and not any(out.iterdir())
    data = tmp_path / "photos"
    data.mkdir()
    (data / "x.jpg").write_bytes(b"x")
    with pytest.raises(Exception, match="--force would delete it"):
        check_out_dir(tmp_path, force=True, keep_safe=(data,))


# --- -v and --help ------------------------------------------------------------------


def _help_of(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    return formatter._get_help_string(action) or ""


def _parsers(parser: argparse.ArgumentParser):
    """The verb's parser and those of its sub-commands (``fleet status``)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", sorted(VERBS))
def test_every_verb_shows_its_defaults_and_takes_v(name):
    import importlib

    verb = VERBS[name]
    parser = verb_parser(verb, importlib.import_module(verb.module))
    assert "-v, --verbose" in parser.format_help()
    for each in _parsers(parser):
        for action in each._actions:
            unset = action.default in (None, False, argparse.SUPPRESS, [])
            if unset or not action.option_strings:
                continue
            shown = _help_of(action, each)
            said = "default" in shown or f"({action.default})" in shown  # "invokes (100)"
            assert said, (name, each.prog, action.option_strings)
        text = each.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text
        assert "(default: [])" not in text


def test_v_is_taken_after_the_verb_and_after_a_sub_command():
    from device.cli import without_verbose

    assert without_verbose(["DATA", "-v", "--out", "B"]) == (["DATA", "--out", "B"], True)
    assert without_verbose(["status", "--verbose"]) == (["status"], True)
    assert without_verbose(["x", "--", "-v"]) == (["x", "--", "-v"], False)


def test_train_help_shows_defaults(tmp_path):
    proc = sightwire("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "96..512; above 224" in text and "(default: 224)" in text and "(default: 0.15)" in text


# --- classify decides as the daemon does -------------------------------------------


def _daemon_label(model: Path, image: Path, threshold: float | None, manifest: float | None):
    clf = Classifier.open(model, "int8")
    post = PostProcessor(clf.labels, InferenceConfig(threshold=threshold), manifest)
    return post.vote([clf.classify(load_image(image))])


def test_classify_applies_the_threshold_as_the_daemon_does(model, reference):
    cat = reference / "cat.bmp"
    decision = _daemon_label(model, cat, 0.8, None)
    score = decision.top[0][1]
    assert decision.label == InferenceConfig().unknown_label and 0.5 < score < 0.8
    proc = sightwire("classify", str(model), str(cat), "--threshold", "0.8", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    (second, s2) = decision.top[1]
    assert proc.stdout.splitlines() == [
        f"{cat}: {decision.label} (Egyptian cat {score:.3f} < 0.800)  {second} {s2:.3f}"
    ]
    raw = sightwire("classify", str(model), str(cat), "--threshold", "0.8", "-k", "2", "--raw")
    assert raw.stdout.splitlines() == [f"{cat}: Egyptian cat {score:.3f}  {second} {s2:.3f}"]


def test_classify_uses_the_bundles_own_threshold(model, reference, tmp_path):
    """A bundle with a calibrated threshold in its manifest: classify, without
    --threshold, answers what the daemon would publish, in text and JSON."""
    from device.bundle import write_bundle
    from device.preprocess import InputSpec

    bundle = tmp_path / "bundle"
    labels = imagenet_labels(reference)
    models = {"int8": model.read_bytes()}
    write_bundle(bundle, "cat", labels, InputSpec(224, 224), models, {"threshold": 0.9})
    cat, parrot = reference / "cat.bmp", reference / "parrot.jpg"
    proc = sightwire("classify", str(bundle), str(cat), str(parrot), "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    for record, image in zip(records, (cat, parrot), strict=True):
        expected = _daemon_label(bundle, image, None, 0.9)
        assert record["decision"] == expected.label
        assert record["threshold"] == 0.9
        assert record["below_threshold"] == (expected.top[0][1] < 0.9)
    assert records[0]["decision"] == InferenceConfig().unknown_label  # cat: 0.75 < 0.9
    assert records[1]["decision"] == "macaw"  # parrot: 0.99
    text = sightwire("classify", str(bundle), str(cat), "-k", "1").stdout
    assert text.startswith(f"{cat}: {InferenceConfig().unknown_label} (Egyptian cat 0.")
    assert "< 0.900)" in text


# --- progress and summary -----------------------------------------------------------


def test_keras_epochs_show_on_the_common_bar_not_keras_own_lines(capsys):
    import keras

    from trainer.console import show_progress
    from trainer.fit import EpochBar

    show_progress(True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).random((16, 4)), np.arange(16) % 2
    model.fit(
        x, y, epochs=3, validation_data=(x, y), verbose=0, callbacks=[EpochBar("stage 1: head", 9)]
    )
    err = capsys.readouterr().err
    assert "stage 1: head" in err and "3/3" in err and "val_loss" in err
    assert "Epoch 1/" not in err and "step" not in err


def test_summary_says_why_fine_tuning_was_kept_or_not():
    from trainer.tables import fine_tune_verdict

    reverted = {"fine_tune": {"loss": [1, 1], "val_loss": [0.5, 0.45], "reverted": [0.4, 0.45]}}
    text = fine_tune_verdict(reverted, False, 30, False)
    assert text.startswith("fine-tuning: not kept, it did not lower the validation loss")
    assert "0.4000 after stage 1, best 0.4500 in 2 epochs" in text and "stage 1's head" in text
    kept = {"fine_tune": {"loss": [1], "val_loss": [0.3], "stage1_val_loss": [0.4]}}
    assert fine_tune_verdict(kept, True, 30, False) == (
        "fine-tuning: kept, it lowered the validation loss "
        "(validation loss 0.4000 after stage 1, best 0.3000 in 1 epochs)"
    )
    assert "off" in fine_tune_verdict({}, False, 0, False)
    assert "--weights none" in fine_tune_verdict({}, True, 30, True)


@pytest.mark.slow
def test_train_output_and_force_on_a_previous_bundle(tmp_path, imagenet_weights):
    """A real small training run into a folder holding an earlier bundle: refused without
    --force; with it, no file of the earlier bundle survives, the terminal shows no
    TensorFlow line and no Keras epoch line, and the summary names the verdict and paths."""
    from trainer.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", classes=2, per_class=12, size=64)
    out = tmp_path / "bundle"
    (out / "report").mkdir(parents=True)
    stale = [out / "model_edgetpu.tflite", out / "report" / "old-report.html"]
    for path in stale:
        path.write_text("from an earlier training")
    args = ["train", str(data), "--out", str(out), "--weights", str(imagenet_weights)]
    args += ["--input-size", "96", "--head-epochs", "5", "--fine-tune-epochs", "2"]
    args += ["--augment-copies", "0", "--representative", "20"]
    refused = sightwire(*args)
    assert refused.returncode == 1 and "pass --force" in refused.stderr
    proc = sightwire(*args, "--force", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(p.exists() for p in stale)
    assert (out / "manifest.json").is_file() and (out / "report" / "index.html").is_file()
    err = proc.stderr
    assert not [line for line in err.splitlines() if is_chatter(line)], err[-3000:]
    assert "Epoch 1/" not in err and "oneDNN" not in err and "cuda" not in err.lower()
    assert "stage 1: head" in err and "stage 2: fine-tune" in err
    assert "fine-tuning: kept" in err or "fine-tuning: not kept" in err
    text = " ".join(err.split())
    assert f"bundle: {out}" in text and f"report: {out / 'report' / 'index.html'}" in text


def test_train_results_show_how_often_int8_gives_floats_label():
    from trainer.console import console
    from trainer.tables import print_results

    per_class = {"a": {"recall": 1.0}, "b": {"recall": 0.75}}
    report = {
        "evaluated_on": "test",
        "test": {
            "float": {"accuracy": 0.9, "balanced_accuracy": 0.875, "per_class": per_class},
            "int8": {
                "accuracy": 0.85,
                "balanced_accuracy": 0.8,
                "per_class": per_class,
                "agreement_with_float": 0.9512,
            },
        },
        "baseline_linear_head": {"test_accuracy": 0.8, "test_balanced_accuracy": 0.78},
        "timings_s": {"export": 3.0},
    }
    width = console.width
    console.width = 160  # one line per row, whatever the terminal
    try:
        with console.capture() as captured:
            print_results(report)
    finally:
        console.width = width
    text = captured.get()
    assert "same label as float" in " ".join(text.split())
    int8_row = next(line for line in text.splitlines() if line.strip("│ ").startswith("int8"))
    assert "95.1%" in int8_row and "b 0.75" in int8_row


@pytest.mark.parametrize(
    ("cal", "expected"),
    [
        (
            {"target_precision": 0.95, "global_threshold": 0.62, "suggested_threshold": 0.62,
             "coverage_at_suggested": 0.92},
            "threshold 0.62: 8% of validation photos would be published as uncertain "
            "(the lowest that keeps 95% precision there)",
        ),
        (
            {"target_precision": 0.95, "global_threshold": None, "suggested_threshold": 0.9,
             "coverage_at_suggested": 0.0},
            "threshold 0.9: 100% of validation photos would be published as uncertain; no "
            "score kept 95% precision on validation, so this is a default: more photos, or a "
            "lower --target-precision",
        ),
    ],
)  # fmt: skip
def test_train_says_what_its_threshold_costs(cal, expected):
    """A threshold that no score reached left every validation photo "uncertain" while
    the output said nothing; the report alone told."""
    from trainer.console import console
    from trainer.tables import threshold_line

    with console.capture() as captured:
        console.print(threshold_line(cal), highlight=False, soft_wrap=True)
    assert " ".join(captured.get().split()) == expected
