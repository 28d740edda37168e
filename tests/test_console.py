"""ConsoleLogger: plain periodic lines off a terminal, a rich live table on one."""

from __future__ import annotations

import io

from fanlog import ConsoleLogger


def test_plain_lines_when_not_a_tty(tmp_path):
    stream = io.StringIO()
    console = ConsoleLogger(savedir=tmp_path, log_freq="batch", interval=0.0, stream=stream, run_name="demo")
    with console.start_logging():
        for i in range(3):
            console.log(float(i), "train/loss")
            console.flush()
        console.log("note", "notes", kind="text")
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("[fanlog demo]") and "train/loss=2" in line for line in lines)
    assert lines[-1].startswith("[fanlog demo] finished: 4 records")
    assert "[fanlog] notes: note" in lines


def test_live_table_in_a_terminal(tmp_path):
    stream = io.StringIO()
    console = ConsoleLogger(
        savedir=tmp_path, log_freq="batch", live=True, stream=stream, total_epochs=2, run_name="live"
    )
    with console.start_logging():
        console.log(0.25, "val/acc")
        console.end_epoch()
        console.log(0.5, "val/acc")
    output = stream.getvalue()
    assert "val/acc" in output and "0.5" in output and "epoch 1/2" in output
