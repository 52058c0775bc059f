"""Command-line values that cannot work are refused in one line before the work: an
output path that is a folder (or under a file), a thread count no board has. A
benchmark or an evaluation that runs for minutes must not end in a traceback."""

from __future__ import annotations

import time

import pytest

from device.cli import main, os_error_line


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
    started = time.monotonic()
    code = main([arg.format(**values) for arg in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert message.format(**values) in err
    assert len(err.splitlines()) == 1, err
    assert time.monotonic() - started < 30  # refused, not benchmarked first


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
