"""``sightwire train``'s (and ``doctor``'s) pre-checks: each bad argument is one line and
exit 1 (a path that cannot be used) or 2 (a flag's value out of range: a usage error)
before TensorFlow is imported or anything is deleted (a check that let one through would
start a training run, and the test would fail on its message); the dataset scan reads
only the class folders' photos and says what it leaves out."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from PIL import Image

from device.cli import VERBS, main, verb_parser
from trainer.checks import INPUT_SIZES
from trainer.dataset import DatasetError, scan

REPO = Path(__file__).resolve().parents[1]


def png(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 90)).save(path)
    return path


def photos(root: Path, classes: tuple[str, ...] = ("daisy", "tulip"), per_class: int = 6) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            png(root / name / f"{name}_{i}.png", shade=c * 40 + i)  # all different
    return root


def refused(capsys, *argv: str | Path, status: int = 1) -> str:
    """Run the CLI in-process; it must exit ``status`` with one error line, returned."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == status and len(err) == 1, (rc, err)
    assert err[0].startswith(f"sightwire {argv[0]}: error: "), err
    return err[0]


# --- 1. --out is the --baseline bundle -------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
def test_out_that_is_the_baseline_is_refused_and_kept(tmp_path, capsys, force):
    data = photos(tmp_path / "ev")
    baseline = tmp_path / "bb"
    png(baseline / "report" / "keep.png")
    argv = ["train", data, "--out", baseline, "--baseline", baseline, "--weights", "none"]
    line = refused(capsys, *argv, *(["--force"] if force else []))
    assert f"--out {baseline} is the --baseline bundle: write the new bundle to another" in line
    assert (baseline / "report" / "keep.png").is_file()


def test_out_that_holds_the_baseline_is_refused(tmp_path, capsys):
    data = photos(tmp_path / "ev")
    png(tmp_path / "bundles" / "old" / "model.png")
    argv = ["train", data, "--out", tmp_path / "bundles", "--force"]
    line = refused(capsys, *argv, "--baseline", tmp_path / "bundles" / "old")
    assert "holds the --baseline bundle" in line


# --- 2. --out inside the dataset -------------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize("verb", ["train", "doctor"])
def test_out_inside_the_dataset_is_refused(tmp_path, capsys, verb, force):
    data = photos(tmp_path / "ds" / "in")
    out = data / "bundle"
    png(out / "old.png")  # an earlier run's output, with or without --force
    line = refused(capsys, verb, data, "--out", out, *(["--force"] if force else []))
    assert f"--out {out} is inside the dataset folder {data}" in line
    assert (out / "old.png").is_file()


def test_new_out_inside_the_dataset_is_refused(tmp_path, capsys):
    data = photos(tmp_path / "ds")
    line = refused(capsys, "train", data, "--out", data / "daisy" / "bundle")
    assert "is inside the dataset folder" in line


# --- 3. --out under a file ---------------------------------------------------------------


def test_out_under_a_file_is_refused(tmp_path, capsys):
    data = photos(tmp_path / "ds")
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    line = refused(capsys, "train", data, "--out", afile / "sub")
    assert line.endswith(f"--out {afile / 'sub'}: {afile} is a file, not a folder")


def test_a_zipped_dataset_is_told_to_be_unpacked(tmp_path, capsys):
    archive = tmp_path / "photos.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    line = refused(capsys, "train", archive, "--out", tmp_path / "b")
    assert line.endswith("(an archive: unpack it and give the folder it holds)"), line


# --- 4. a user split without training images of a class ----------------------------------


def test_user_split_class_without_train_images_is_refused(tmp_path):
    root = tmp_path / "ds"
    photos(root / "train", ("daisy", "tulip"))
    photos(root / "test", ("daisy", "tulip", "sunflower"))
    with pytest.raises(DatasetError, match=r"class 'sunflower' has no images in train/"):
        scan(root, show_progress=False)


# --- 5. numbers checked before TensorFlow ------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dropout", "1.5", "--dropout must be at least 0 and below 1, got 1.5"),
        ("--dropout", "1", "--dropout must be at least 0 and below 1, got 1"),
        ("--dropout", "-0.1", "--dropout must be at least 0 and below 1, got -0.1"),
        ("--batch-size", "0", "--batch-size must be at least 1, got 0"),
        ("--representative", "0", "--representative must be at least 1, got 0"),
        ("--representative", "-5", "--representative must be at least 1, got -5"),
        # Each of these got past the checks once: --head-epochs 0 ended in a traceback
        # after minutes of work, --alpha 0 and --folds 1 trained and said nothing.
        ("--head-epochs", "0", "--head-epochs must be at least 1, got 0"),
        ("--min-per-class", "0", "--min-per-class must be at least 1, got 0"),
        ("--fine-tune-epochs", "-1", "--fine-tune-epochs must be at least 0, got -1"),
        ("--augment-copies", "-1", "--augment-copies must be at least 0, got -1"),
        ("--augment-strength", "-3", "--augment-strength must be at least 0, got -3"),
        ("--search", "-1", "--search must be at least 0, got -1"),
        ("--max-recall-drop", "-1", "--max-recall-drop must be at least 0, got -1"),
        ("--alpha", "0", "--alpha must be above 0, got 0"),
        ("--head-lr", "-1", "--head-lr must be above 0, got -1"),
        ("--fine-tune-lr", "nan", "--fine-tune-lr must be above 0, got nan"),
        ("--search-minutes", "-1", "--search-minutes must be above 0, got -1"),
        ("--target-precision", "2", "--target-precision must be above 0 and at most 1, got 2"),
        ("--folds", "1", "--folds must be 0 (off) or at least 2, got 1"),
        # numpy refused these with a ValueError traceback, after TensorFlow was imported.
        ("--seed", "-1", "--seed must be 0..4294967295, got -1"),
        ("--seed", "4294967296", "--seed must be 0..4294967295, got 4294967296"),
    ],
)
def test_bad_numbers_are_one_line_naming_the_flag(tmp_path, capsys, flag, value, message):
    data = photos(tmp_path / "ds")
    line = refused(capsys, "train", data, "--out", tmp_path / "new", flag, value, status=2)
    assert line.endswith(message), line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--seed", "-1", "--seed must be 0..4294967295, got -1"),
        ("--seed", "4294967296", "--seed must be 0..4294967295, got 4294967296"),
        ("--alpha", "0", "--alpha must be above 0, got 0"),
        ("--alpha", "nan", "--alpha must be above 0, got nan"),
        ("--min-per-class", "0", "--min-per-class must be at least 1, got 0"),
    ],
)
def test_the_doctors_bad_numbers_are_usage_errors_as_trains(tmp_path, capsys, flag, value, message):
    """``doctor --seed -1`` ended in numpy's traceback; ``--alpha 0`` exited 1 after
    loading TensorFlow (or ran, with ``--weights none``), though a usage error."""
    data = photos(tmp_path / "ds")
    line = refused(capsys, "doctor", data, "--weights", "none", flag, value, status=2)
    assert line.endswith(message), line


def test_max_pool_without_the_multiscale_head_is_refused(tmp_path, capsys):
    """The maxima are taken from the multi-scale taps: without them the flag would do
    nothing, silently."""
    data = photos(tmp_path / "ds")
    line = refused(
        capsys, "train", data, "--out", tmp_path / "new", "--max-pool", "--no-multiscale", status=2
    )
    assert line.endswith("--max-pool adds to the multi-scale head: drop --no-multiscale"), line


def test_force_never_deletes_the_weights_file_the_run_needs(tmp_path, capsys):
    data = photos(tmp_path / "ds")
    out = tmp_path / "wdir"
    weights = out / "w.weights.h5"
    out.mkdir()
    weights.write_bytes(b"the user's only copy")
    line = refused(capsys, "train", data, "--out", out, "--force", "--weights", weights)
    assert f"--out {out} holds the --weights file {weights}: --force would delete it" in line
    assert weights.read_bytes() == b"the user's only copy"


def test_good_arguments_get_past_the_checks(tmp_path):
    """The control: the same checks pass good arguments (nothing refused, nothing made)."""
    from trainer.verbs import train as train_verb

    data = photos(tmp_path / "ds")
    parser = verb_parser(VERBS["train"], train_verb)
    argv = [data, "--out", tmp_path / "new", "--dropout", "0", "--threads", "2", "--max-pool"]
    train_verb.check(parser.parse_args([str(a) for a in argv]))
    train_verb.check(parser.parse_args([str(a) for a in [*argv, "--seed", "4294967295"]]))
    assert not (tmp_path / "new").exists()


# --- 6. help and docs say what the code does --------------------------------------------


def _train_help() -> str:
    verb = VERBS["train"]
    parser = verb_parser(verb, importlib.import_module(verb.module))
    return " ".join(parser.format_help().split())


def _option_help(text: str, flag: str) -> str:
    """The help of ``flag``: from it to the next option in the help text."""
    start = text.index(f" {flag} ")
    following = text.find(" --", start + len(flag) + 2)
    return text[start : following if following > 0 else None]


def test_train_help_shows_defaults_as_they_are():
    text = _train_help()
    assert "(default: True)" not in text  # --no-doctor: the doctor runs unless given
    assert "runs by default" in _option_help(text, "--no-doctor")
    for flag, default in (
        ("--seed", "0"),
        ("--dropout", "0.2"),
        ("--batch-size", "32"),
        ("--min-per-class", "5"),
    ):
        metavar = flag[2:].upper().replace("-", "_")
        assert f"(default: {default})" in _option_help(text, f"{flag} {metavar}"), flag
    assert "(default: the runtime's own)" in _option_help(text, "--threads THREADS")
    # what trainer.compare.judge accepts: accuracy not lower, no recall drop too large
    assert (
        "exit 3 unless the new one's accuracy is no lower and no class's recall fell by more "
        "than --max-recall-drop" in text
    )


def test_docs_give_the_input_sizes_the_cli_takes():
    docs = (REPO / "docs" / "training.md").read_text()
    sizes = f"`--input-size` {INPUT_SIZES.start}..{INPUT_SIZES.stop - 1}"
    assert sizes in " ".join(docs.split())


# --- 7. what the scan reads and what it lists -------------------------------------------


def test_hidden_folders_in_a_class_are_not_read(tmp_path):
    root = photos(tmp_path / "ds")
    png(root / "daisy" / ".cache" / "c.png", shade=200)
    png(root / "daisy" / "more" / "d.png", shade=201)  # a visible sub-folder is read
    ds = scan(root, show_progress=False)
    assert ds.counts() == {"daisy": 7, "tulip": 6}
    assert not [it for it in ds.items if ".cache" in it.path.parts]


def test_macosx_and_hidden_top_folders_are_not_classes(tmp_path):
    root = photos(tmp_path / "ds")
    png(root / "__MACOSX" / "daisy" / "._daisy_0.png", shade=210)
    png(root / ".thumbnails" / "t.png", shade=211)
    ds = scan(root, show_progress=False)
    assert ds.classes == ["daisy", "tulip"]


def test_macosx_beside_a_user_split_keeps_it_a_user_split(tmp_path):
    root = tmp_path / "ds"
    photos(root / "train")
    photos(root / "test", per_class=2)
    png(root / "__MACOSX" / "train" / "daisy" / "._daisy_0.png", shade=220)
    ds = scan(root, show_progress=False)
    assert ds.user_split and ds.classes == ["daisy", "tulip"]


def test_images_beside_the_class_folders_are_listed_as_ignored(tmp_path):
    root = photos(tmp_path / "ds")
    stray = png(root / "stray.png", shade=230)
    (root / ".DS_Store").write_bytes(b"mac")
    ds = scan(root, show_progress=False)
    assert ds.ignored == [stray]
    assert ds.counts() == {"daisy": 6, "tulip": 6}


@pytest.mark.parametrize("name", [" crazing", "pitted ", "tab\there"])
def test_a_class_name_labels_txt_cannot_hold_is_refused_by_the_scan(tmp_path, name):
    """labels.txt is one name per line, read back stripped: such a name would train for
    minutes, then fail as "labels.txt disagrees with the labels in manifest.json"."""
    data = photos(tmp_path / "d", classes=("ok", name))
    with pytest.raises(DatasetError, match="rename the folder"):
        scan(data, show_progress=False)


def test_evaluate_reads_the_same_photos_as_the_trainer(tmp_path):
    """``evaluate`` and ``--baseline`` list a folder with ``device.labelled``: a Mac zip's
    ``__MACOSX`` and hidden folders are no classes and no photos there either."""
    from device.labelled import list_labelled

    data = photos(tmp_path / "d")
    png(data / "__MACOSX" / "daisy" / "._0.png")
    png(data / "daisy" / ".thumbs" / "t.png")
    paths, names = list_labelled(data)
    ds = scan(data, show_progress=False)
    assert sorted(set(names)) == ds.classes == ["daisy", "tulip"]
    assert sorted(paths) == sorted(item.path for item in ds.items)


def test_evaluate_never_writes_over_a_photo_or_into_the_dataset(tmp_path, capsys):
    """``--json`` once replaced a dataset photo with JSON, and ``--out`` put the charts
    in a class folder, where the next training read them as photos of that class."""
    data = photos(tmp_path / "ds")
    photo = data / "daisy" / "daisy_0.png"
    before = photo.read_bytes()
    line = refused(capsys, "evaluate", tmp_path / "bundle", data, "--json", photo)
    assert line.endswith(
        f"--json {photo} exists and is not a .json file: name a new file (it is never overwritten)"
    ), line
    assert photo.read_bytes() == before
    line = refused(capsys, "evaluate", tmp_path / "bundle", data, "--out", data / "daisy")
    assert f"--out {data / 'daisy'} is inside the dataset folder {data}" in line
    assert sorted(p.name for p in (data / "daisy").iterdir()) == [
        f"daisy_{i}.png" for i in range(6)
    ]


def test_a_user_split_without_validation_photos_of_a_class_says_so(tmp_path, capsys):
    """Training went on with ``val 0`` in the table and nothing else said: early stopping
    and the thresholds were tuned without that class."""
    import numpy as np

    from trainer.tables import print_dataset

    root = tmp_path / "ds"
    photos(root / "train", ("daisy", "iris"))
    photos(root / "val", ("daisy",), per_class=2)
    photos(root / "test", ("daisy", "iris"), per_class=2)
    ds = scan(root, show_progress=False)
    parts = {
        side: np.array([i for i, it in enumerate(ds.items) if it.split == side], dtype=int)
        for side in ("train", "val", "test")
    }
    print_dataset(ds, parts)
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "no val photos of iris: early stopping and every choice made on validation" in out
    assert "add some to val/iris" in out
    assert "no test photos" not in out


def test_classes_named_like_split_folders_are_explained(tmp_path):
    root = photos(tmp_path / "ds", ("train", "test"))
    with pytest.raises(DatasetError, match=r"test/, train/ are read as the folders of your own"):
        scan(root, show_progress=False)
