"""`sightwire classify` and `sightwire run` given what a stranger's machine holds: broken
and changing image files, a model or labels that are not what they say, bad config files,
a keep folder that cannot be written. Expected each time: one clear line, the daemon
keeps running, nothing already recorded is lost. And the flags' values that the verbs
check after parsing: a usage error, exit 2 (docs/contracts.md, "Command line").
"""

from __future__ import annotations

import os

import pytest

from device.config import ConfigError, load_config
from tests.test_exit_status import one_line, sightwire, status_of

# --- a flag's value checked after parsing: exit 2 ------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "{tmp}/m.tflite", "--set", "a.b"], "--set 'a.b': expected KEY="),
        (["run", "--model", "{tmp}/m.tflite", "--set", "=3"], "--set '=3': expected KEY=VALUE"),
        (["bench", "{tmp}/m.tflite", "--plot", "{tmp}/there.json"], "expected a .png file name"),
        (
            ["fleet", "rollout", "{tmp}/b.zip", "--devices", "*", "--http-port", "70000"],
            "--http-port 70000: not a port number",
        ),
        (
            ["review", "{tmp}", "--data", "{tmp}", "--host", "not a host!", "--no-browser"],
            "--host 'not a host!': expected an IPv4 or IPv6 address or a host name",
        ),
        (
            ["review", "{tmp}", "--data", "{tmp}", "--host", "999.1.1.1", "--no-browser"],
            "--host '999.1.1.1': expected",
        ),
    ],
)
def test_a_flag_value_found_wrong_after_parsing_exits_2(tmp_path, capsys, argv, message):
    """Each was exit 1: ``--set`` not KEY=VALUE (while a bad value was 2 already), a
    ``--plot`` name that is not a .png but is a file there, a port over 65535 (a
    traceback once the broker answered), a ``--host`` no resolver can take."""
    (tmp_path / "there.json").write_text("{}")
    code, err = status_of(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert code == 2, err
    assert message in one_line(err, argv[0]), err
    assert (tmp_path / "there.json").read_text() == "{}"


# --- files that are not images, and config sections that are not tables ---------------


def test_classify_says_empty_missing_or_a_folder_not_cannot_decode(model, reference, tmp_path):
    """Each was ``cannot decode image ([Errno 2] No such file or directory: ...)`` or
    ``(cannot identify image file ...)`` for a zero-byte file: words that send one
    looking at the codec. The photo after them is still classified."""
    empty, folder, gone = tmp_path / "empty.jpg", tmp_path / "dir.jpg", tmp_path / "gone.jpg"
    empty.write_bytes(b"")
    folder.mkdir()
    cat = reference / "cat.bmp"
    proc = sightwire("classify", model, empty, folder, gone, cat, "-k", "1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"sightwire classify: {empty}: the file is empty (0 bytes)",
        f"sightwire classify: {folder}: a folder, not an image file",
        f"sightwire classify: {gone}: no such file",
    ]
    assert proc.stdout.startswith(f"{cat}: Egyptian cat ")


def test_classify_refuses_a_pipe_instead_of_waiting_for_it(model, reference, tmp_path):
    """A named pipe no one writes to: opening it would wait for ever."""
    pipe = tmp_path / "frame.jpg"
    os.mkfifo(pipe)
    proc = sightwire("classify", model, pipe, reference / "cat.bmp", "-k", "1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"sightwire classify: {pipe}: a pipe, not an image file"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('model = "m.tflite"\n', "model: expected a table of keys, [model] (got 'm.tflite')"),
        (
            '[model]\npath = "m.tflite"\n[[source]]\nkind = "folder"\n',
            "source: expected a table of keys, [source] (got an array of tables)",
        ),
    ],
)
def test_a_section_written_as_a_value_is_named_as_toml_says_it(tmp_path, text, said):
    """Was ``Input should be a valid dictionary or instance of ModelConfig``: a class
    name of the code, not a word of the file."""
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value) == f"{config}: {said}"


def test_an_empty_model_file_is_said_so(tmp_path, capsys):
    """Was the runtime's ``mmap of size 0 requested.The model allocation is null/empty``."""
    empty = tmp_path / "m.tflite"
    empty.write_bytes(b"")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    code, err = status_of(capsys, "classify", str(empty), str(tmp_path / "x.jpg"))
    assert code == 1, err
    assert one_line(err, "classify").endswith(f"error: {empty}: the model file is empty (0 bytes)")
